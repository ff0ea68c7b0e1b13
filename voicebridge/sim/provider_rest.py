"""Local fakes of Exotel's and Twilio's REST APIs for outbound calls: they answer the create-call request
as the providers do (Exotel: 200 `{"Call": {"Sid": …, "Status": "in-progress"}}` from Calls/connect.json;
Twilio: 201 `{"sid": "CA…", "status": "queued"}` from Calls.json), then, after the scripted ring delay,
either post the status callback (busy / no-answer / failed) or open the media stream to the URL they were
given and play the scripted caller turns (sim/caller.py), hang up, and post `completed`.

Scripted per number (`FakeProviderRest.script(number, Answer(...))`): the campaign tests reuse it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import re
import uuid
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import parse_qsl
from xml.etree import ElementTree

import aiohttp
from aiohttp import web

from voicebridge.sim.caller import SimulatedCaller, TurnResult

Outcome = Literal["answer", "busy", "no-answer", "failed"]


@dataclass(frozen=True)
class Answer:
    """What happens when a number is dialled."""

    outcome: Outcome = "answer"
    ring_s: float = 0.3
    # What the callee says on picking up, before the bot says anything (PCM16 at 8 kHz): a person's
    # "Hello? Yes, speaking." or a machine's greeting and beep. b"": the line stays silent.
    pick_up: bytes = b""
    # Caller turns after the bot's first line, PCM16 at 8 kHz, each answered before the next.
    turns: tuple[bytes, ...] = ()
    # A machine does not hang up: it records until the bot ends the call (or this many seconds pass).
    machine_records_s: float = 0.0
    # Seconds to wait for the bot's greeting mark before the first turn.
    greeting_timeout_s: float = 30.0


@dataclass
class FakeCall:
    """One call the fake placed, and what happened to it."""

    call_sid: str
    to_number: str
    form: dict[str, str]
    answer: Answer
    status: str = "queued"
    turns: list[TurnResult] = field(default_factory=list)
    # The daemon's close code when it refused or ended the stream; None while open or never opened.
    close_code: int | None = None
    greeted: bool = False
    # Everything the daemon played to the callee, PCM16 at 8 kHz (after the stream ended).
    heard: bytes = b""
    done: asyncio.Event = field(default_factory=asyncio.Event)
    error: str = ""


class FakeProviderRest:
    """`async with FakeProviderRest("exotel") as fake:` serves on a loopback port (`fake.url`)."""

    def __init__(
        self, provider: Literal["exotel", "twilio"], default: Answer | None = None, auth_token: str = ""
    ) -> None:
        self.provider = provider
        # Twilio signs every callback with the account's auth token (X-Twilio-Signature); "": unsigned.
        self.auth_token = auth_token
        self.default = default or Answer()
        self._scripts: dict[str, Answer] = {}
        self.calls: dict[str, FakeCall] = {}
        self.requests: list[dict[str, str]] = []
        self.authorizations: list[str] = []
        self.status_answers: list[int] = []
        # Calls ringing or streaming right now, and the most at once: a call counts from its create
        # request until its stream closed or its final status is about to be posted (inside the window
        # in which the daemon counts it, so what is seen here never exceeds what the daemon had).
        self.live = 0
        self.most_live = 0
        # Exotel's flow mode: the dynamic URL the flow's Voicebot applet asks for its stream URL (ours,
        # /webhooks/exotel/incoming, as the operator sets it in the flow); "": this fake has no flow.
        self.flow_voicebot_url = ""
        self._tasks: set[asyncio.Task[None]] = set()
        self._runner: web.AppRunner | None = None
        self.url = ""

    def script(self, number: str, answer: Answer) -> None:
        """What dialling `number` does from now on."""
        self._scripts[number] = answer

    async def __aenter__(self) -> FakeProviderRest:
        app = web.Application()
        app.router.add_post("/v1/Accounts/{account}/Calls/connect.json", self._exotel_create)
        app.router.add_post("/2010-04-01/Accounts/{account}/Calls.json", self._twilio_create)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for task in self._tasks:
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._runner is not None:
            await self._runner.cleanup()

    async def wait(self, call_sid: str, timeout: float = 60.0) -> FakeCall:
        """The call once it is over (status callback posted)."""
        call = self.calls[call_sid]
        await asyncio.wait_for(call.done.wait(), timeout)
        return call

    # --- the create-call endpoints ------------------------------------------------------------------

    async def _form(self, request: web.Request) -> dict[str, str] | None:
        self.authorizations.append(request.headers.get("Authorization", ""))
        if not request.headers.get("Authorization", "").startswith("Basic "):
            return None
        form = dict(parse_qsl(await request.text(), keep_blank_values=True))
        self.requests.append(form)
        return form

    async def _exotel_create(self, request: web.Request) -> web.Response:
        form = await self._form(request)
        if form is None:
            return web.json_response({"RestException": {"Status": 401}}, status=401)
        call_sid = uuid.uuid4().hex
        self._place(
            FakeCall(
                call_sid, form.get("From", ""), form, self._scripts.get(form.get("From", ""), self.default)
            )
        )
        body = {
            "Call": {
                "Sid": call_sid,
                "Status": "in-progress",
                "From": form.get("From"),
                "Direction": "outbound-api",
            }
        }
        return web.json_response(body)

    async def _twilio_create(self, request: web.Request) -> web.Response:
        form = await self._form(request)
        if form is None:
            return web.json_response({"code": 20003, "message": "Authenticate"}, status=401)
        call_sid = "CA" + uuid.uuid4().hex
        self._place(
            FakeCall(call_sid, form.get("To", ""), form, self._scripts.get(form.get("To", ""), self.default))
        )
        return web.json_response({"sid": call_sid, "status": "queued", "to": form.get("To")}, status=201)

    def _place(self, call: FakeCall) -> None:
        self.calls[call.call_sid] = call
        self.live += 1
        self.most_live = max(self.most_live, self.live)
        task = asyncio.create_task(self._run(call))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- what the platform does after answering -------------------------------------------------------

    async def _run(self, call: FakeCall) -> None:
        counted = True
        try:
            await asyncio.sleep(call.answer.ring_s)
            if call.answer.outcome != "answer":
                self.live, counted = self.live - 1, False
                await self._post_status(call, call.answer.outcome)
                return
            await self._stream(call)
            self.live, counted = self.live - 1, False
            await self._post_status(call, "completed")
        except Exception as exc:  # the test reads it from the call
            call.error = f"{type(exc).__name__}: {exc}"
        finally:
            if counted:
                self.live -= 1
            call.done.set()

    async def _stream_target(self, call: FakeCall) -> tuple[str, dict[str, str]]:
        """The URL to open, and (Twilio) the <Parameter>s of its TwiML."""
        if self.provider == "exotel":
            if "Url" in call.form and self.flow_voicebot_url:
                # The flow's Voicebot applet asks its dynamic URL, as Exotel does, with the call's fields.
                query = {
                    "CallSid": call.call_sid,
                    "CallFrom": call.to_number,
                    "CallTo": call.form["CallerId"],
                }
                async with (
                    aiohttp.ClientSession() as session,
                    session.get(self.flow_voicebot_url, params=query) as response,
                ):
                    return str((await response.json())["url"]), {}
            return call.form.get("StreamUrl", ""), {}
        stream = ElementTree.fromstring(call.form["Twiml"]).find("./Connect/Stream")
        if stream is None:
            return "", {}
        parameters = {p.get("name", ""): p.get("value", "") for p in stream.findall("Parameter")}
        return stream.get("url", ""), parameters

    async def _stream(self, call: FakeCall) -> None:
        url, parameters = await self._stream_target(call)
        if not url:  # Exotel's flow mode without a flow set up here
            return
        call.status = "in-progress"
        caller = SimulatedCaller(
            url,
            provider=self.provider,
            call_sid=call.call_sid,
            from_number=call.to_number,
            to_number=call.form.get("CallerId", call.form.get("From", "")),
        )
        if parameters:
            caller.wire.custom_parameters.update(parameters)  # type: ignore[attr-defined]
        async with caller:
            timeout = call.answer.greeting_timeout_s
            if call.answer.pick_up:
                # Said at once, as a person or a machine does; the line carries silence after it.
                picked_up = await caller.say(call.answer.pick_up, trailing_silence_s=timeout)
                call.greeted = await caller.wait_for_mark(picked_up, timeout=timeout) is not None
            else:
                call.greeted = await caller.listen_until_mark(timeout=timeout) is not None
            if call.greeted:
                for speech in call.answer.turns:
                    call.turns.append(await caller.turn(speech, timeout=30))
                    if caller.closed.is_set():
                        break
            if call.answer.machine_records_s and not caller.closed.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(call.answer.machine_records_s):
                        await caller.closed.wait()
            if not caller.closed.is_set():
                await caller.stop()
        call.close_code = caller.close_code
        call.heard = caller.log.audio_between(0.0)

    async def _post_status(self, call: FakeCall, status: str) -> None:
        call.status = status
        target = call.form.get("StatusCallback", "")
        if not re.match(r"https?://", target):
            return
        if self.provider == "exotel":
            fields = {"CallSid": call.call_sid, "Status": status, "DateUpdated": "2026-12-07 09:00:00"}
        else:
            fields = {"CallSid": call.call_sid, "CallStatus": status, "To": call.to_number}
        headers = (
            {"X-Twilio-Signature": twilio_signed(self.auth_token, target, fields)}
            if (self.provider == "twilio" and self.auth_token)
            else {}
        )
        async with (
            aiohttp.ClientSession() as session,
            session.post(target, data=fields, headers=headers) as response,
        ):
            self.status_answers.append(response.status)


def twilio_signed(auth_token: str, url: str, fields: dict[str, str]) -> str:
    """X-Twilio-Signature as Twilio's documentation computes it (twilio.com/docs/usage/security): the full
    URL, then each POST field's name and value sorted by name, HMAC-SHA1 with the auth token, base64.
    Written out here rather than taken from telephony/twilio.py, so the daemon's check is tested against
    the documented recipe, not against itself."""
    payload = url + "".join(name + fields[name] for name in sorted(fields))
    return base64.b64encode(hmac.new(auth_token.encode(), payload.encode(), hashlib.sha1).digest()).decode()
