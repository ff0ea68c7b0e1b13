"""Who answered an outbound call, before the bot says anything: the call's answering-machine step.

While it listens the call does not greet and turn detection is off (a machine's greeting is not a turn to
answer). On `human`, or `unknown` at the timeout, the call greets and goes on as any call. On `machine` it
waits for the message cue (the beep's end, or the greeting's end and a silence, or a cap) and leaves
`prompts.voicemail_message`, or hangs up at once (`amd.on_machine = "hangup"`); the outcome is `machine`.

The provider's verdict (Twilio's AnsweredBy, told by the dialler) overrides ours: `Call.provider_answered`.
A wall-clock watchdog keeps a stream that goes quiet (no audio, so no audio time) from waiting forever.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from voicebridge.audio.answering_machine import AmdVerdict, AnsweringMachineDetector, MessageCue
from voicebridge.audio.turn import DETECTOR_RATE
from voicebridge.call.actions import CallActions
from voicebridge.call.phrases import PhraseCache
from voicebridge.call.record import CallRecords
from voicebridge.call.services import CallServices
from voicebridge.config.amd import AmdConfig
from voicebridge.outbound.dialer import AnsweredBy
from voicebridge.server.metrics import Metrics
from voicebridge.telephony.events import Start

# Wall-clock slack over the audio-time limits: audio arrives in real time, give or take the network.
WATCHDOG_GRACE_S = 1.0
ANSWERED_BY: tuple[AnsweredBy, ...] = ("human", "machine", "unknown")


def twilio_answered_by(value: str) -> AnsweredBy:
    """Twilio's `AnsweredBy` (human, machine_start, machine_end_beep, machine_end_silence,
    machine_end_other, fax, unknown: docs/answering-machine.md) as ours; anything else is "unknown"."""
    if value == "human":
        return "human"
    if value.startswith("machine_") or value == "fax":
        return "machine"
    return "unknown"


@dataclass(frozen=True, slots=True)
class AnsweringHost:
    """What the step may do to its call; each callable returns at once (the call spawns what waits)."""

    leave_message: Callable[[], None]
    hang_up: Callable[[], None]
    # Who answered, after how many audio seconds, and why: for the call's records.
    answered: Callable[[AnsweredBy, float, str], None]


def outbound_greeting(start: Start, phrases: PhraseCache, greeting: str) -> str:
    """The greeting phrase an outbound call plays: `prompts.outbound_greeting` in place of the configured
    inbound one, when it is set; a business's own greeting stays."""
    if start.direction == "outbound" and greeting == "greeting" and phrases.text("outbound_greeting"):
        return "outbound_greeting"
    return greeting


class AnsweringMachineStep:
    """One outbound call's answering-machine detection, from the answer to the verdict (and the cue)."""

    def __init__(
        self,
        config: AmdConfig,
        metrics: Metrics,
        log: logging.LoggerAdapter[logging.Logger],
        host: AnsweringHost,
    ) -> None:
        self._c = config
        self._metrics = metrics
        self._log = log
        self._host = host
        # Fed the call's audio after the turn detector's resampling: one rate whatever the stream's.
        self._detector = AnsweringMachineDetector(config, DETECTOR_RATE)
        self._watchdog: asyncio.TimerHandle | None = None
        self._greet: Callable[[], None] = lambda: None
        self.verdict: AmdVerdict | None = None
        # True from the start until the call is handed on (greeted, or the message or hangup begun).
        self.listening = False

    @classmethod
    def for_call(
        cls,
        services: CallServices,
        start: Start,
        log: logging.LoggerAdapter[logging.Logger],
        actions: CallActions,
        records: CallRecords,
        spawn: Callable[[Coroutine[Any, Any, Any], str], asyncio.Task[Any] | None],
    ) -> AnsweringMachineStep | None:
        """The step for an outbound call with detection on; None for every other call. Its ways out are the
        call's own (actions.py), run as the call's tasks."""
        if start.direction != "outbound" or not services.settings.amd.detect:
            return None
        host = AnsweringHost(
            leave_message=lambda: spawn(actions.leave_voicemail(), "voicemail"),
            hang_up=lambda: spawn(actions.hangup("machine"), "machine"),
            answered=records.answered,
        )
        return cls(services.settings.amd, services.metrics, log, host)

    def start(self, greet: Callable[[], None]) -> None:
        """Listen from now on, and `greet` once the callee is judged a person (or unknown); the watchdog
        decides if the stream's audio stops coming."""
        self._greet = greet
        self.listening = True
        self._arm(self._c.decision_timeout_s)

    def stop(self) -> None:
        """The call ended: no watchdog fires into it."""
        self.listening = False
        if self._watchdog is not None:
            self._watchdog.cancel()

    def feed(self, pcm16: bytes) -> None:
        """Callee audio at the detector's rate (16 kHz)."""
        if not self.listening:
            return
        for event in self._detector.feed(pcm16):
            if isinstance(event, AmdVerdict):
                self._decided(event)
            elif isinstance(event, MessageCue):
                self._cued(event)
            if not self.listening:
                return

    def provider_answered(self, answered_by: AnsweredBy) -> None:
        """The provider's verdict replaces ours; after the call was handed on it only corrects the records
        (a person already greeted is not hung up on, nor a message cut short). A value that is none of
        ours (from outside, untyped at run time) counts as "unknown"."""
        if answered_by not in ANSWERED_BY:
            answered_by = "unknown"
        if not self.listening:
            if self.verdict is not None and answered_by != self.verdict.answered_by:
                ours = self.verdict.answered_by
                self._log.info("the provider says %s after our %s; recorded", answered_by, ours)
                self.verdict = AmdVerdict(answered_by, self.verdict.at_s, "provider")
                self._host.answered(answered_by, self.verdict.at_s, "provider")
            return
        if answered_by == "unknown" and self.verdict is None:
            return  # the provider does not know either: our detector goes on
        self._decided(self._detector.override(answered_by))

    def _decided(self, verdict: AmdVerdict) -> None:
        first = self.verdict is None
        self.verdict = verdict
        if first:
            self._metrics.answering_machine.labels(answered_by=verdict.answered_by).inc()
            self._metrics.amd_decision.labels(answered_by=verdict.answered_by).observe(verdict.at_s)
        self._log.info("answered by %s after %.2fs (%s)", verdict.answered_by, verdict.at_s, verdict.reason)
        self._host.answered(verdict.answered_by, verdict.at_s, verdict.reason)
        if verdict.answered_by != "machine":
            self._hand_on(self._greet)
        elif self._c.on_machine == "hangup":
            self._hand_on(self._host.hang_up)
        elif self._detector.cue is not None:
            self._cued(self._detector.cue)
        else:
            self._arm(self._c.max_wait_for_beep_s)

    def _cued(self, cue: MessageCue) -> None:
        self._log.info("leaving the message at %.2fs (%s)", cue.at_s, cue.reason)
        self._hand_on(self._host.leave_message)

    def _hand_on(self, then: Callable[[], None]) -> None:
        self.stop()
        then()

    def _arm(self, seconds: float) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
        self._watchdog = asyncio.get_running_loop().call_later(seconds + WATCHDOG_GRACE_S, self._timed_out)

    def _timed_out(self) -> None:
        if not self.listening:
            return
        if self.verdict is None:
            self._log.info("no audio to decide on: greeting as a person")
            self._decided(self._detector.override("unknown", "timeout"))
        else:
            self._cued(MessageCue(self.verdict.at_s + self._c.max_wait_for_beep_s, "cap"))
