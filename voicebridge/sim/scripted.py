"""Scripted calls for `voicebridge simulate`: recorded turns played against a daemon, one call or many.

A call goes as the provider would place it: the incoming webhook hands out the stream URL, the caller
listens to the greeting, then speaks each turn and waits for the reply to be played (its mark).
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from urllib.parse import urlencode

import aiohttp

from voicebridge.sim.caller import CallerLog, Provider, SimulatedCaller

# A barged-in reply counts as interrupted if the daemon clears it within this long of the caller speaking.
CLEAR_WINDOW_S = 3.0


class SimulationError(Exception):
    """The daemon could not be reached or answered a webhook badly (one line)."""


@dataclass(frozen=True, slots=True)
class CallScript:
    """What one simulated caller does: its turns (PCM16 at `sample_rate`) and how it behaves."""

    turns: list[tuple[str, bytes]]
    provider: Provider = "exotel"
    sample_rate: int = 8000
    realtime: bool = True
    use_webhook: bool = True
    barge_in_after: float | None = None
    dtmf: str = ""
    from_number: str = "+919876543210"
    to_number: str = "+918047491899"
    timeout: float = 30.0


@dataclass(slots=True)
class CallReport:
    """How one simulated call went; `log` has every frame for saving the audio."""

    call_sid: str
    # What the call played: its provider, sample rate and turns.
    script: CallScript
    ok: bool = True
    error: str = ""
    greeting_s: float | None = None
    greeting_pcm16: bytes = b""
    greeting_text: str = ""
    turns: list[TurnReport] = field(default_factory=list)
    close_code: int | None = None
    log: CallerLog = field(default_factory=CallerLog)
    started_at: float = 0.0

    def fail(self, error: str) -> None:
        if self.ok:
            self.ok, self.error = False, error


@dataclass(slots=True)
class TurnReport:
    """One caller turn and the reply it got."""

    number: int
    label: str
    # Voice-to-voice: the turn's last speech sample sent → the reply's first frame received (None: no reply).
    latency_s: float | None
    reply_pcm16: bytes
    reply_s: float
    barged_in: bool = False
    reply_text: str = ""
    cut_in_at: float | None = None


async def stream_url(session: aiohttp.ClientSession, http: str, script: CallScript, call_sid: str) -> str:
    """Ask the daemon's incoming webhook for the stream URL, as Exotel's Voicebot applet or Twilio does."""
    form = {"CallSid": call_sid, "From": script.from_number, "To": script.to_number}
    if script.provider == "exotel" and script.sample_rate != 8000:
        form["sample-rate"] = str(script.sample_rate)
    url = f"{http}/webhooks/{script.provider}/incoming"
    try:
        async with session.post(url, data=form, timeout=aiohttp.ClientTimeout(total=10)) as response:
            body = await response.text()
            if response.status != 200:
                raise SimulationError(f"{url} answered {response.status}: {body.strip()[:120]}")
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise SimulationError(f"cannot reach the daemon at {http}: {exc or type(exc).__name__}") from None
    try:
        if script.provider == "exotel":
            found = re.search(r'"url"\s*:\s*"([^"]+)"', body)
            if found:
                return found.group(1)
        else:
            stream = ElementTree.fromstring(body).find(".//Stream")
            if stream is not None and stream.get("url"):
                return str(stream.get("url"))
    except ElementTree.ParseError:
        pass
    raise SimulationError(f"{url} gave no stream URL: {body.strip()[:120]}")


def direct_stream_url(http: str, script: CallScript, call_sid: str) -> str:
    """The stream URL without a webhook (the daemon accepts streams it was not told about)."""
    base = http.replace("https://", "wss://", 1).replace("http://", "ws://", 1)
    rate = script.sample_rate
    query = f"?{urlencode({'sample-rate': rate})}" if script.provider == "exotel" and rate != 8000 else ""
    return f"{base}/ws/stream/{call_sid}{query}"


async def run_call(http: str, script: CallScript, call_sid: str | None = None) -> CallReport:
    """Place one scripted call; never raises for what the daemon does (it is in the report)."""
    call_sid = call_sid or f"CA-sim-{uuid.uuid4().hex[:16]}"
    report = CallReport(call_sid, script)
    async with aiohttp.ClientSession() as session:
        try:
            url = (
                await stream_url(session, http, script, call_sid)
                if script.use_webhook
                else direct_stream_url(http, script, call_sid)
            )
        except SimulationError as exc:
            report.fail(str(exc))
            return report
    caller = SimulatedCaller(
        url,
        provider=script.provider,
        sample_rate=script.sample_rate,
        call_sid=call_sid,
        from_number=script.from_number,
        to_number=script.to_number,
        realtime=script.realtime,
    )
    report.log = caller.log
    try:
        await caller.connect()
    except (aiohttp.ClientError, OSError) as exc:
        report.fail(f"cannot open the stream {url}: {exc or type(exc).__name__}")
        await caller.hangup()
        return report
    report.started_at = caller.started_at
    try:
        await _play(caller, script, report)
    finally:
        if not caller.closed.is_set():
            await caller.stop()
        await caller.hangup()
        report.close_code = caller.close_code
    _confirm_barge_ins(report)
    return report


async def _play(caller: SimulatedCaller, script: CallScript, report: CallReport) -> None:
    greeting_mark = await caller.listen_until_mark(timeout=script.timeout)
    first = caller.log.first_frame_after(caller.started_at)
    if first is not None:
        report.greeting_s = first - caller.started_at
        report.greeting_pcm16 = caller.log.audio_between(caller.started_at, (greeting_mark or first) + 0.001)
    if caller.closed.is_set():
        report.fail(_closed_message(caller, "before the first turn"))
        return
    for digit in script.dtmf:
        await caller.dtmf(digit)
        await asyncio.sleep(0.2)
    for index, (label, pcm16) in enumerate(script.turns):
        if caller.closed.is_set():
            report.fail(_closed_message(caller, f"before turn {index + 1} of {len(script.turns)}"))
            return
        barge = script.barge_in_after is not None and index < len(script.turns) - 1
        # The line carries silence after the turn until the reply has played, as a real line does.
        speech_end = await caller.say(pcm16, trailing_silence_s=script.timeout)
        if barge:
            turn = await _reply_until_barge_in(caller, script, index, label, speech_end)
        else:
            mark_at = await caller.wait_for_mark(speech_end, script.timeout)
            first = caller.log.first_frame_after(speech_end)
            reply = caller.log.audio_between(speech_end, (mark_at or time.monotonic()) + 0.001)
            turn = TurnReport(
                index + 1,
                label,
                None if first is None else first - speech_end,
                reply,
                _seconds(reply, caller),
            )
            await caller.end_trailing_silence()
            if mark_at is None:
                report.turns.append(turn)
                where = f"during turn {index + 1} of {len(script.turns)}"
                report.fail(
                    _closed_message(caller, where)
                    if caller.closed.is_set()
                    else f"no complete reply to turn {index + 1} within {script.timeout:.0f}s"
                )
                return
        report.turns.append(turn)
    if caller.closed.is_set():
        report.fail(_closed_message(caller, "after the last turn"))


async def _reply_until_barge_in(
    caller: SimulatedCaller, script: CallScript, index: int, label: str, speech_end: float
) -> TurnReport:
    """Let the reply start and play `barge_in_after` seconds, then give the line to the next turn."""
    assert script.barge_in_after is not None
    deadline = time.monotonic() + script.timeout
    first = caller.log.first_frame_after(speech_end)
    while first is None and time.monotonic() < deadline and not caller.closed.is_set():
        await asyncio.sleep(0.02)
        first = caller.log.first_frame_after(speech_end)
    if first is not None:
        await asyncio.sleep(max(0.0, first + script.barge_in_after - time.monotonic()))
    interrupted_at = time.monotonic()
    await caller.end_trailing_silence()
    reply = caller.log.audio_between(speech_end, interrupted_at)
    return TurnReport(
        index + 1,
        label,
        None if first is None else first - speech_end,
        reply,
        _seconds(reply, caller),
        # Whether the daemon really stopped talking is judged once the call is over.
        cut_in_at=interrupted_at if first is not None else None,
    )


def _confirm_barge_ins(report: CallReport) -> None:
    """A barge-in counts only if the daemon cleared the reply soon after the caller cut in."""
    for turn in report.turns:
        if turn.cut_in_at is not None:
            turn.barged_in = any(
                turn.cut_in_at <= at <= turn.cut_in_at + CLEAR_WINDOW_S for at in report.log.clears
            )


def _seconds(pcm16: bytes, caller: SimulatedCaller) -> float:
    return len(pcm16) / 2 / caller.sample_rate


def _closed_message(caller: SimulatedCaller, where: str) -> str:
    return f"the daemon ended the call {where} (close code {caller.close_code})"


async def run_calls(
    http: str, script: CallScript, calls: int, ramp_s: float = 0.0
) -> tuple[list[CallReport], float]:
    """Place `calls` copies of the script, starts spread over `ramp_s`; return reports and wall time."""
    started = time.monotonic()

    async def delayed(index: int) -> CallReport:
        await asyncio.sleep(ramp_s * index / calls)
        return await run_call(http, script)

    reports = await asyncio.gather(*(delayed(index) for index in range(calls)))
    return list(reports), time.monotonic() - started


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))]
