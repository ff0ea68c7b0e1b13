"""Message generators for fuzzing the provider translators and the live audio WebSocket.

One mutation engine serves both: `Mutator` takes a `Chooser` — `random.Random` for the seeded live
fuzzer, or `DrawChooser` (a Hypothesis `draw`) for the pure translator tests, which then shrink.
`WireFuzzer` turns that into connection plans (frames to send, how to end) with a realistic mix of
valid traffic, protocol abuse and garbage; `ws_frame` builds raw WebSocket frames for abuse that a
well-behaved client library refuses to send.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import random
import string
import struct
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeVar

from hypothesis import strategies as st

from voicebridge.sim.providers import ExotelCaller, TwilioCaller

T = TypeVar("T")

# --- vocabulary ------------------------------------------------------------------------------------

EVENT_NAMES = ("connected", "start", "media", "dtmf", "mark", "stop", "clear", "karaoke", "")
# Keys either translator looks at, so random structures hit the interesting branches.
WIRE_KEYS = (
    "event",
    "Event",
    "media",
    "payload",
    "track",
    "start",
    "stop",
    "dtmf",
    "digit",
    "digits",
    "mark",
    "name",
    "reason",
    "call_sid",
    "callSid",
    "CallSid",
    "stream_sid",
    "streamSid",
    "account_sid",
    "accountSid",
    "from",
    "to",
    "From",
    "To",
    "media_format",
    "mediaFormat",
    "sample_rate",
    "sampleRate",
    "encoding",
    "tracks",
    "custom_parameters",
    "customParameters",
    "sequence_number",
    "sequenceNumber",
)
WEIRD_TEXT = (
    "",
    " ",
    "\x00",
    "\u0000media",
    "\ud800",  # a lone surrogate, as JSON's "\ud800" escape decodes
    "\udfff\ud800",
    "\u202eevil",  # right-to-left override
    "é",
    "ǅ",
    "ß",
    "İ",
    "ﬁ",
    "١٢٣",  # Arabic-Indic digits
    "８０００",  # full-width digits
    "🙂" * 3,
    "\t\n\r",
    "null",
    "NaN",
    '"5"',
    "'",
    "\\",
    "%s%n",
    "../../etc/passwd",
    "A" * 300,
)
# Sample rates: valid, lenient, and hostile (huge, negative, fractional, non-ASCII digits, wrong type).
# Past 4300 digits Python's int() raises a plain ValueError: the translators must turn it into a violation.
SAMPLE_RATES: tuple[object, ...] = (
    8000,
    16000,
    24000,
    "8000",
    "16000Hz",
    " 24000 hz ",
    "8000HZ",
    0,
    -8000,
    "-8000",
    8000.0,
    8000.5,
    "8000.0",
    1e308,
    float("inf"),
    float("nan"),
    2**63,
    -(2**63),
    10**400,
    "9" * 4000,
    "9" * 5000,
    "٨٠٠٠",
    "８０００",
    "0x1F40",
    "1.6e4",
    "",
    None,
    True,
    [8000],
    {"hz": 8000},
    "11025",
)
ENCODINGS = ("audio/x-raw", "audio/x-mulaw", "linear16", "PCMU", "audio/x-alaw", "opus", "", "MULAW")
DTMF_GARBAGE: tuple[object, ...] = (
    "x",
    "",
    "##",
    "10",
    '"',
    '""',
    "١",
    "E",
    "a",
    "*#",
    None,
    5,
    5.5,
    True,
    [],
    {},
    ["5"],
    {"digit": "5"},
    "5" * 1000,
)


class Chooser(Protocol):
    """The randomness the mutation engine needs; `random.Random` has exactly these methods."""

    def choice(self, seq: Sequence[T]) -> T: ...

    def randint(self, a: int, b: int) -> int: ...

    def random(self) -> float: ...


class DrawChooser:
    """A `Chooser` over a Hypothesis `draw`, so generated messages shrink to minimal failing ones."""

    def __init__(self, draw: Callable[[st.SearchStrategy[Any]], Any]) -> None:
        self._draw = draw

    def choice(self, seq: Sequence[T]) -> T:
        return self._draw(st.sampled_from(seq))

    def randint(self, a: int, b: int) -> int:
        return self._draw(st.integers(a, b))

    def random(self) -> float:
        return self._draw(st.floats(0, 1, exclude_max=True))


def random_bytes(chooser: Chooser, size: int) -> bytes:
    """`size` bytes from the chooser (cheap for random.Random, shrinkable under Hypothesis)."""
    if isinstance(chooser, random.Random):
        return chooser.randbytes(size)
    return bytes(chooser.randint(0, 255) for _ in range(size))


def utf8_safe(text: str) -> str:
    """`text` with lone surrogates replaced, so a WebSocket client can send it as a text frame."""
    return text.encode("utf-8", "replace").decode("utf-8")


# --- Hypothesis strategies for arbitrary JSON-ish values -----------------------------------------

ANY_CHARS = st.characters(codec=None, exclude_categories=())  # includes lone surrogates and controls
json_scalars: st.SearchStrategy[Any] = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(ANY_CHARS, max_size=30)
    | st.sampled_from(EVENT_NAMES + WEIRD_TEXT)
)
json_keys = st.sampled_from(WIRE_KEYS) | st.text(ANY_CHARS, max_size=12)


def json_values(max_leaves: int = 25) -> st.SearchStrategy[Any]:
    """Arbitrary JSON-shaped values: scalars, lists and dicts nested a few levels."""
    return st.recursive(
        json_scalars,
        lambda children: st.lists(children, max_size=5) | st.dictionaries(json_keys, children, max_size=6),
        max_leaves=max_leaves,
    )


def wire_shaped() -> st.SearchStrategy[dict[str, Any]]:
    """Dicts that look like provider messages (an event name, a section) with arbitrary contents."""
    section = st.dictionaries(json_keys, json_values(10), max_size=6)
    return st.fixed_dictionaries(
        {"event": st.sampled_from(EVENT_NAMES) | json_scalars},
        optional={
            "media": section | json_scalars,
            "start": st.fixed_dictionaries(
                {},
                optional={
                    "call_sid": json_scalars,
                    "callSid": json_scalars,
                    "stream_sid": json_scalars,
                    "tracks": json_values(4),
                    "media_format": section | st.sampled_from(SAMPLE_RATES),
                    "mediaFormat": st.fixed_dictionaries(
                        {},
                        optional={
                            "encoding": st.sampled_from(ENCODINGS) | json_scalars,
                            "sampleRate": st.sampled_from(SAMPLE_RATES) | json_scalars,
                        },
                    )
                    | json_scalars,
                    "customParameters": json_values(8),
                },
            )
            | json_scalars,
            "dtmf": section | json_scalars,
            "mark": section | json_scalars,
            "stop": section | json_scalars,
            "streamSid": json_scalars,
            "Event": json_scalars,
        },
    )


# --- valid messages -------------------------------------------------------------------------------

WireCaller = ExotelCaller | TwilioCaller


def make_caller(provider: str, call_sid: str, stream_sid: str, rate: int = 8000) -> WireCaller:
    """Exotel's or Twilio's side of a stream, as the simulator uses it."""
    if provider == "twilio":
        return TwilioCaller(call_sid, stream_sid)
    return ExotelCaller(call_sid, stream_sid, sample_rate=rate)


def silence_pcm(rate: int, ms: int) -> bytes:
    """PCM16 silence of `ms` milliseconds."""
    return bytes(rate * ms // 1000 * 2)


def valid_messages(caller: WireCaller, rate: int) -> list[dict[str, Any]]:
    """One decoded message of every kind the provider sends, in call order."""
    return [
        json.loads(text)
        for text in (
            caller.connected(),
            caller.start(),
            caller.media(silence_pcm(rate, 20)),
            caller.media(struct.pack("<4h", 1000, -1000, 32767, -32768) * 40),
            caller.dtmf("5"),
            caller.mark("greeting"),
            caller.stop(),
        )
    ]


def base_messages() -> list[dict[str, Any]]:
    """Valid messages of both providers at every rate: the seeds the mutations start from."""
    messages: list[dict[str, Any]] = []
    for provider, rate in (("exotel", 8000), ("exotel", 16000), ("exotel", 24000), ("twilio", 8000)):
        messages += valid_messages(make_caller(provider, "CAbase", "MZbase", rate), rate)
    return messages


# --- the mutation engine --------------------------------------------------------------------------

Path = tuple[Any, Any]  # (container, key or index)


def _slots(value: Any) -> Iterator[Path]:
    """Every (container, key) in a nested JSON value, outermost first."""
    if isinstance(value, dict):
        for key in list(value):
            yield value, key
            yield from _slots(value[key])
    elif isinstance(value, list):
        for index in range(len(value)):
            yield value, index
            yield from _slots(value[index])


class Mutator:
    """Corrupts valid messages the ways real clients and attackers do; all draws go through a Chooser."""

    def __init__(self, chooser: Chooser) -> None:
        self.c = chooser

    # Values ------------------------------------------------------------------------------------

    def text(self) -> str:
        c = self.c
        pick = c.randint(0, 3)
        if pick == 0:
            return c.choice(WEIRD_TEXT)
        if pick == 1:
            return "".join(c.choice(string.printable) for _ in range(c.randint(0, 20)))
        if pick == 2:
            return "".join(chr(c.randint(0, 0x10FFFF)) for _ in range(c.randint(1, 8)))
        return c.choice(EVENT_NAMES)

    def scalar(self) -> Any:
        c = self.c
        pick = c.randint(0, 6)
        if pick == 0:
            return None
        if pick == 1:
            return c.choice((True, False))
        if pick == 2:
            return c.choice((0, -1, 1, 2**31, -(2**63), 2**64 + 1, 10**100))
        if pick == 3:
            return c.choice((0.0, -0.0, 0.5, 1e308, -1e308, float("inf"), float("nan"), 5e-324))
        if pick == 4:
            return c.choice(SAMPLE_RATES)
        return self.text()

    def value(self, depth: int = 0) -> Any:
        """An arbitrary JSON value, at most a few levels deep."""
        c = self.c
        pick = c.randint(0, 9) if depth < 3 else 0
        if pick <= 5:
            return self.scalar()
        if pick <= 7:
            return [self.value(depth + 1) for _ in range(c.randint(0, 3))]
        return {self.c.choice(WIRE_KEYS): self.value(depth + 1) for _ in range(c.randint(0, 3))}

    def payload(self, original: str) -> Any:
        """A corrupted base64 media payload."""
        c = self.c
        try:
            raw = base64.b64decode(original)
        except ValueError:
            raw = b""
        options: list[Callable[[], Any]] = [
            lambda: base64.b64encode(raw[: max(0, len(raw) - 1)] or b"\x01").decode(),  # odd length
            lambda: base64.b64encode(random_bytes(c, 2 * c.randint(0, 40) + 1)).decode(),
            lambda: original[: c.randint(0, max(0, len(original) - 1))],  # truncated base64
            lambda: original[:-2] + "==" if len(original) > 4 else "=",
            lambda: original.replace("A", "-", 1) + "_",  # url-safe alphabet: not accepted
            lambda: "@@" + original,
            lambda: " " + original + "\n",
            lambda: original[:8] + " " + original[8:],
            lambda: "",
            lambda: "====",
            lambda: c.choice(WEIRD_TEXT),
            lambda: base64.b64encode(b"\x00" * c.choice((1, 3, 159, 161))).decode(),
            lambda: base64.b64encode(raw).decode() * 3,
            lambda: self.value(),
        ]
        return c.choice(options)()

    def mutate_value(self, key: Any, value: Any) -> Any:
        """A replacement for one value; knows the fields that matter (payload, rates, digits, events)."""
        c = self.c
        if key == "payload" and isinstance(value, str) and c.random() < 0.7:
            return self.payload(value)
        if key in ("sample_rate", "sampleRate") and c.random() < 0.8:
            return c.choice(SAMPLE_RATES)
        if key in ("digit", "digits") and c.random() < 0.8:
            return c.choice(DTMF_GARBAGE)
        if key == "encoding" and c.random() < 0.7:
            return c.choice(ENCODINGS)
        if key in ("event", "Event") and c.random() < 0.8:
            name = c.choice(EVENT_NAMES)
            return c.choice((name, name.upper(), f"  {name}\t", name.title(), name + "\x00", self.scalar()))
        if key == "track" and c.random() < 0.7:
            return c.choice(("inbound", "outbound", "inbound_track", "both", "", None, 1))
        pick = c.randint(0, 7)
        if isinstance(value, str) and pick <= 2:
            if pick == 0:
                return value[: c.randint(0, len(value))]
            if pick == 1:
                return value + self.text()
            return value * c.randint(2, 50)
        if pick == 3:
            return str(value) if not isinstance(value, str) else c.choice((0, None, [value], {"v": value}))
        if pick == 4:
            return [value] if c.random() < 0.5 else {"nested": value}
        return self.value()

    def mutate(self, message: dict[str, Any], max_edits: int = 3) -> dict[str, Any]:
        """A corrupted deep copy of `message`: keys dropped or added, values replaced or retyped."""
        c = self.c
        result = copy.deepcopy(message)
        for _ in range(c.randint(1, max_edits)):
            slots = list(_slots(result))
            op = c.randint(0, 9)
            if op == 0 or not slots:
                result[c.choice(WIRE_KEYS)] = self.value()
                continue
            container, key = c.choice(slots)
            if op <= 2 and isinstance(container, dict):
                del container[key]  # drop a key
            elif op == 3 and isinstance(container, dict) and isinstance(container[key], dict):
                container[key] = list(container[key].values())  # object → array
            else:
                container[key] = self.mutate_value(key, container[key])
        return result


# --- raw WebSocket frames ---------------------------------------------------------------------------


def ws_frame(
    opcode: int,
    payload: bytes,
    fin: bool = True,
    rsv: int = 0,
    masked: bool = True,
    declared_length: int | None = None,
) -> bytes:
    """One RFC 6455 frame as a client sends it; every field may be wrong on purpose."""
    length = len(payload) if declared_length is None else declared_length
    head = bytes([(0x80 if fin else 0) | (rsv & 7) << 4 | (opcode & 0x0F)])
    mask_bit = 0x80 if masked else 0
    if length < 126:
        head += bytes([mask_bit | length])
    elif length < 1 << 16:
        head += bytes([mask_bit | 126]) + struct.pack("!H", length)
    else:
        head += bytes([mask_bit | 127]) + struct.pack("!Q", length)
    if not masked:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


# --- connection plans for the live fuzzer ----------------------------------------------------------

Frame = tuple[str, str | bytes]  # (kind label, text or binary payload)
Ending = Literal["close", "linger", "abort"]

OVERSIZE_BYTES = 2 * 1024 * 1024  # the daemon's limit is 1 MiB
HUGE_PAYLOAD_BYTES = 600 * 1024  # decoded; its base64 message stays just under 1 MiB


@dataclass
class Plan:
    """What one fuzz connection does: its URL query, the frames it sends and how it ends."""

    scenario: str
    frames: list[Frame] = field(default_factory=list)
    query: str = ""
    raw: bool = False  # frames are raw WebSocket bytes written to a bare TCP socket
    ending: Ending = "close"
    pause_every: int = 0  # yield to the loop every N frames (lets the reader see a close)


class WireFuzzer:
    """A seeded source of connection plans: valid calls salted with garbage, and pure abuse."""

    SCENARIOS: tuple[tuple[str, int], ...] = (
        ("garbage_before_start", 14),
        ("call_with_garbage", 30),
        ("mutated_starts", 10),
        ("binary_and_bytes", 6),
        ("stop_then_more", 6),
        ("flood_media", 5),
        ("oversize", 3),
        ("huge_payloads", 3),
        ("deep_nesting", 4),
        ("talker", 1),
        ("bad_handshake", 3),
        ("raw_frames", 8),
    )

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.m = Mutator(self.rng)
        self._calls = 0
        self._names = [name for name, _ in self.SCENARIOS]
        self._weights = [weight for _, weight in self.SCENARIOS]
        self._bases = base_messages()

    def plan(self) -> Plan:
        """The next connection's plan."""
        name = self.rng.choices(self._names, self._weights)[0]
        plan: Plan = getattr(self, f"_{name}")()
        plan.scenario = name
        return plan

    # Building blocks -----------------------------------------------------------------------------

    def _new_call(self) -> tuple[WireCaller, int, str]:
        self._calls += 1
        provider = self.rng.choice(("exotel", "exotel", "twilio"))
        rate = 8000 if provider == "twilio" else self.rng.choice((8000, 16000, 24000))
        sid = f"CA-fuzz-{self.seed}-{self._calls}"  # unique across workers and runs
        # The rate travels in the query for Exotel, as the dynamic URL says.
        query = f"sample-rate={rate}" if provider == "exotel" and rate != 8000 else ""
        return make_caller(provider, sid, f"MZ-fuzz-{self.seed}-{self._calls}", rate), rate, query

    def _media(self, caller: WireCaller, rate: int) -> Frame:
        return "media_silence", caller.media(silence_pcm(rate, self.rng.choice((20, 20, 40, 100))))

    def garbage(self, caller: WireCaller | None = None, rate: int = 8000) -> Frame:
        """One bad message of a randomly chosen kind."""
        r, m = self.rng, self.m
        base = json.loads(caller.media(silence_pcm(rate, 20))) if caller else r.choice(self._bases)
        valid_text = json.dumps(base)
        kind = r.choice(
            (
                "malformed_json",
                "truncated",
                "not_object",
                "unknown_event",
                "mutated",
                "mutated",
                "mutated",
                "odd_pcm",
                "bad_base64",
                "mark_unknown",
                "dtmf_garbage",
                "random_text",
                "duplicate_start",
                "weird_event_key",
                "huge_number",
            )
        )
        if kind == "malformed_json":
            return kind, r.choice(
                (
                    "{",
                    "}",
                    "{not json",
                    '{"event": ',
                    "nul",
                    "[1,2",
                    '{"a":1,}',
                    "{'event': 'media'}",
                    "\ufeff{}",
                )
            )
        if kind == "truncated":
            return kind, valid_text[: r.randint(0, len(valid_text) - 1)]
        if kind == "not_object":
            return kind, json.dumps(r.choice(([], [base], 1, -1.5, "media", None, True, ["event", "media"])))
        if kind == "unknown_event":
            return kind, json.dumps({"event": m.text(), "stream_sid": "MZ", "x": m.value()})
        if kind == "mutated":
            return kind, json.dumps(m.mutate(r.choice(self._bases)))
        if kind == "odd_pcm":
            pcm = bytes(2 * r.randint(0, 200) + 1)
            return kind, json.dumps({"event": "media", "media": {"payload": base64.b64encode(pcm).decode()}})
        if kind == "bad_base64":
            payload = m.payload(base64.b64encode(bytes(320)).decode())
            return kind, json.dumps({"event": "media", "media": {"payload": payload}})
        if kind == "mark_unknown":
            return kind, json.dumps({"event": "mark", "mark": {"name": r.choice((m.text(), m.value()))}})
        if kind == "dtmf_garbage":
            return kind, json.dumps({"event": "dtmf", "dtmf": {"digit": r.choice(DTMF_GARBAGE)}})
        if kind == "random_text":
            return kind, utf8_safe(m.text() * r.randint(1, 30))
        if kind == "duplicate_start":
            return kind, caller.start() if caller else json.dumps(r.choice(self._bases[1::7]))
        if kind == "weird_event_key":
            return kind, json.dumps({"Event": r.choice(("MEDIA", " Stop ", "Start", 5, None)), "media": {}})
        # Big numbers, some past Python's 4300-digit limit on int() (a ValueError json.loads raises).
        return kind, '{"event": "media", "sequence_number": ' + "7" * r.randint(20, 6000) + "}"

    def _start_frames(self, caller: WireCaller) -> list[Frame]:
        frames: list[Frame] = []
        if self.rng.random() < 0.8:
            frames.append(("connected", caller.connected()))
        frames.append(("start", caller.start()))
        return frames

    # Scenarios -----------------------------------------------------------------------------------

    def _garbage_before_start(self) -> Plan:
        r = self.rng
        caller, rate, query = self._new_call()
        frames: list[Frame] = []
        for _ in range(r.randint(5, 80)):
            pick = r.random()
            if pick < 0.3:
                frames.append(("media_before_start", caller.media(silence_pcm(rate, 20))))
            elif pick < 0.4:
                frames.append(
                    ("event_before_start", r.choice((caller.dtmf("1"), caller.mark("m"), caller.stop())))
                )
            else:
                frames.append(self.garbage(caller, rate))
        if r.random() < 0.3:  # and sometimes a start after all
            frames += self._start_frames(caller) + [self._media(caller, rate) for _ in range(5)]
        return Plan("", frames, query, pause_every=r.choice((0, 10)))

    def _call_with_garbage(self) -> Plan:
        r = self.rng
        caller, rate, query = self._new_call()
        frames = self._start_frames(caller)
        for _ in range(r.randint(20, 200)):
            pick = r.random()
            if pick < 0.45:
                frames.append(self._media(caller, rate))
            elif pick < 0.5:
                frames.append(("dtmf", caller.dtmf(r.choice("0123456789*#"))))
            elif pick < 0.53:
                frames.append(("mark_echo", caller.mark(r.choice(("greeting", "turn-1", "reply-1")))))
            else:
                frames.append(self.garbage(caller, rate))
        ending: Ending = r.choice(("close", "close", "linger"))
        if r.random() < 0.3:
            frames.append(("stop", caller.stop()))
            ending = "linger"
        return Plan("", frames, query, ending=ending, pause_every=r.choice((0, 5, 25)))

    def _mutated_starts(self) -> Plan:
        r = self.rng
        caller, rate, query = self._new_call()
        frames: list[Frame] = []
        for _ in range(r.randint(1, 12)):
            start = json.loads(caller.start())
            frames.append(("mutated_start", json.dumps(self.m.mutate(start, max_edits=2))))
            frames.append(self._media(caller, rate))
        return Plan(
            "", frames, r.choice((query, "", "sample-rate=16000")), ending=r.choice(("close", "linger"))
        )

    def _binary_and_bytes(self) -> Plan:
        r = self.rng
        caller, rate, query = self._new_call()
        frames = self._start_frames(caller) if r.random() < 0.5 else []
        for _ in range(r.randint(5, 60)):
            pick = r.random()
            if pick < 0.4:
                frames.append(("binary", r.randbytes(r.randint(0, 4000))))
            elif pick < 0.55:
                frames.append(("binary_json", caller.media(silence_pcm(rate, 20)).encode()))
            elif pick < 0.8:
                text = r.randbytes(r.randint(1, 300)).decode("latin-1")
                frames.append(("random_bytes_text", text))
            else:
                frames.append(self._media(caller, rate))
        return Plan("", frames, query)

    def _stop_then_more(self) -> Plan:
        r = self.rng
        caller, rate, query = self._new_call()
        frames = self._start_frames(caller) + [self._media(caller, rate) for _ in range(r.randint(0, 10))]
        frames.append(("stop", caller.stop()))
        frames += [self._media(caller, rate) for _ in range(r.randint(1, 30))]
        frames += [("stop", caller.stop()), ("start_after_stop", caller.start())]
        return Plan("", frames, query, ending="linger")

    def _flood_media(self) -> Plan:
        r = self.rng
        caller, rate, query = self._new_call()
        frames = self._start_frames(caller) + [self._media(caller, rate) for _ in range(r.randint(200, 600))]
        return Plan("", frames, query, ending=r.choice(("close", "linger")))

    def _oversize(self) -> Plan:
        r = self.rng
        caller, rate, query = self._new_call()
        frames = self._start_frames(caller) if r.random() < 0.5 else []
        big = r.choice(
            (
                '{"event": "media", "media": {"payload": "' + "A" * OVERSIZE_BYTES + '"}}',
                " " * OVERSIZE_BYTES,
                "x" * OVERSIZE_BYTES,
            )
        )
        frames.append(("oversize_text" if r.random() < 0.7 else "oversize_binary", big))
        if frames[-1][0] == "oversize_binary":
            frames[-1] = ("oversize_binary", big.encode())
        frames += [self._media(caller, rate) for _ in range(3)]
        return Plan("", frames, query, ending="linger")

    def _huge_payloads(self) -> Plan:
        r = self.rng
        caller, rate, query = self._new_call()
        frames = self._start_frames(caller)
        for _ in range(r.randint(1, 3)):
            size = r.choice((HUGE_PAYLOAD_BYTES, HUGE_PAYLOAD_BYTES + 1, 200_001, 64 * 1024))
            payload = base64.b64encode(bytes(size)).decode()
            frames.append(("huge_payload", json.dumps({"event": "media", "media": {"payload": payload}})))
            frames.append(self._media(caller, rate))
        return Plan("", frames, query, ending=r.choice(("close", "linger")))

    def _deep_nesting(self) -> Plan:
        r = self.rng
        caller, rate, query = self._new_call()
        frames = self._start_frames(caller) if r.random() < 0.5 else []
        for _ in range(r.randint(1, 6)):
            depth = r.choice((50, 900, 1100, 5000, 100_000))
            text = r.choice(
                (
                    "[" * depth + "]" * depth,
                    '{"a":' * depth + "1" + "}" * depth,
                    '{"event": "media", "media": {"payload": ' + "[" * depth + "]" * depth + "}}",
                    "[" * depth,  # unterminated
                )
            )
            frames.append(("deep_nesting", text))
            frames.append(self._media(caller, rate))
        return Plan("", frames, query)

    def _talker(self) -> Plan:
        """A call that actually speaks (noise the VAD takes for speech): exercises STT and replies."""
        r = self.rng
        caller, rate, query = self._new_call()
        frames = self._start_frames(caller) + [self._media(caller, rate) for _ in range(5)]
        for _ in range(10):  # one second of loud noise in 100 ms chunks
            noise = struct.pack(f"<{rate // 10}h", *(r.randint(-12000, 12000) for _ in range(rate // 10)))
            frames.append(("media_noise", caller.media(noise)))
            frames.append(self.garbage(caller, rate))
        frames += [self._media(caller, rate) for _ in range(15)]
        return Plan("", frames, query, ending="close", pause_every=1)

    def _bad_handshake(self) -> Plan:
        query = self.rng.choice(
            (
                "sample-rate=11025",
                "sample-rate=abc",
                "sample-rate=-8000",
                "sample-rate=" + "9" * 5000,
                "sample-rate=%00",
                "sample-rate=١٦٠٠٠",
                "sample-rate=16000hz",
                "sample-rate=",
            )
        )
        return Plan("", [("connected", json.dumps({"event": "connected"}))], query)

    def _raw_frames(self) -> Plan:
        """Frames a library would refuse to send: bad UTF-8, reserved bits and opcodes, lies about length."""
        r = self.rng
        caller, rate, _ = self._new_call()
        text = caller.connected().encode()
        start = caller.start().encode()
        media = caller.media(silence_pcm(rate, 20)).encode()
        choices: list[tuple[str, list[bytes], Ending]] = [
            ("bad_utf8", [ws_frame(1, b'{"event": "\xff\xfe"}')], "linger"),
            ("reserved_opcode", [ws_frame(r.choice((3, 4, 5, 6, 7, 11, 15)), b"x")], "linger"),
            ("rsv_bits", [ws_frame(1, text, rsv=r.choice((1, 2, 4, 7)))], "linger"),
            ("orphan_continuation", [ws_frame(0, text)], "linger"),
            ("unmasked", [ws_frame(1, text, masked=False)], "linger"),
            ("big_ping", [ws_frame(9, bytes(200))], "linger"),
            ("fragmented_ping", [ws_frame(9, b"hi", fin=False)], "linger"),
            ("bad_close_payload", [ws_frame(8, b"\x03")], "linger"),
            (
                "bad_close_code",
                [ws_frame(8, struct.pack("!H", r.choice((0, 999, 1004, 1005, 1006, 5000))))],
                "linger",
            ),
            ("close_bad_utf8_reason", [ws_frame(8, struct.pack("!H", 1000) + b"\xff")], "linger"),
            ("huge_declared_length", [ws_frame(1, b"{", declared_length=1 << 40)], "linger"),
            ("half_header_abort", [ws_frame(1, text)[:1]], "abort"),
            ("half_payload_abort", [ws_frame(1, media)[: len(media) // 2]], "abort"),
            (
                "fragmented_ok",
                [
                    ws_frame(1, text[:5], fin=False),
                    ws_frame(9, b"p"),
                    ws_frame(0, text[5:]),
                    ws_frame(1, start),
                ],
                "abort",
            ),
            ("call_then_abort", [ws_frame(1, text), ws_frame(1, start)] + [ws_frame(1, media)] * 20, "abort"),
            ("interleaved_text", [ws_frame(1, text[:5], fin=False), ws_frame(1, text)], "linger"),
        ]
        name, frames, ending = r.choice(choices)
        return Plan("", [(f"raw_{name}", frame) for frame in frames], raw=True, ending=ending)
