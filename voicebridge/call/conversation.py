"""One call's conversation, kept once: the lines said (bot lines trimmed to what the caller heard), the
caller's keypresses, and the caller's words still waiting for an answer.

The call record's transcript is this log as it stands; the backend's history is read from it. Keeping the
two side by side (as the call once did) let them drift apart whenever one update was missed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from voicebridge.backends.base import ConversationTurn
from voicebridge.call.sentences import heard_text
from voicebridge.server.metrics import Metrics
from voicebridge.speech.base import SpeechEngineError, Transcript

# What the conversation log says the caller said when speech recognition failed on their turn.
UNRECOGNISED = "[speech not recognised]"
# Teardown waits this long for the caller's last words still being transcribed. Short: a transcription of one
# turn takes well under a second when the engine is not overloaded, and when it is, the record (and the slot)
# must not wait on it; past this the log says the words were not transcribed instead of losing them quietly.
TRANSCRIPTION_WAIT_S = 2.0
# What the conversation log says the caller said when the call ended before their words were transcribed.
NOT_TRANSCRIBED = "[not transcribed: call ended]"

# One entry of the log as the call record keeps it: a line ("role", "text", "at", and for a bot line cut
# short "heard"), a keypress ("dtmf"), or the note of a barge-in ("heard", "barge_in").
Entry = dict[str, Any]


class Conversation:
    """What was said on one call, in order, and what the caller said that has not been answered yet."""

    def __init__(self, metrics: Metrics, log: logging.LoggerAdapter[logging.Logger]) -> None:
        self.entries: list[Entry] = []
        self.turns = 0
        self.last_caller_text = ""
        # Words of a turn cut off before its answer played: they prefix the caller's next turn.
        self.unanswered = ""
        # Transcriptions of committed turns the caller talked over before they were done, oldest first.
        self._carried: list[asyncio.Future[Transcript]] = []
        self._metrics = metrics
        self._log = log

    def history(self) -> list[ConversationTurn]:
        """The conversation as the backend sees it: every line, a bot line as far as it was heard."""
        return [
            ConversationTurn(entry["role"], entry.get("heard", entry["text"]))
            for entry in self.entries
            if "text" in entry
        ]

    def bot_asked(self) -> bool:
        """Whether the bot's last line, as far as it was heard, was a question."""
        for entry in reversed(self.entries):
            if entry["role"] == "bot" and (line := entry.get("heard", entry.get("text"))) is not None:
                return line.rstrip().endswith("?")
        return False

    def keypress(self, digit: str) -> None:
        self.entries.append({"role": "caller", "dtmf": digit, "at": time.time()})

    def answering(self, caller_text: str) -> Entry:
        """A reply starts playing: the caller's turn is answered and the bot's line opens, empty."""
        self.turns += 1
        self.last_caller_text = caller_text
        self.unanswered = ""
        self._add("caller", caller_text)
        return self.open_line("")

    def open_line(self, text: str) -> Entry:
        """A bot line enters the log as it starts playing, not when it is done: whatever cuts it short, the
        next backend request and the record still have it."""
        return self._add("bot", text)

    def extend_line(self, line: Entry, sentences: list[tuple[str, float]]) -> None:
        """The line grows with each sentence queued, not once at the end: a barge-in, stop or hangup during
        synthesis leaves history and the record with what had been said so far."""
        line["text"] = " ".join(sentence for sentence, _ in sentences)

    def keep_heard(
        self, line: Entry, sentences: list[tuple[str, float]], heard_seconds: float, barge_in: bool
    ) -> None:
        """An interrupted line: history keeps what the caller heard; the transcript both."""
        said = heard_text(sentences, heard_seconds)
        line["heard"] = said
        # A separate entry, not a flag on the line: the record keeps when the caller cut in, and
        # conversation_turns() folds it into the line it follows as heard + barge_in.
        if barge_in:
            self.entries.append({"role": "bot", "heard": said, "at": time.time(), "barge_in": True})

    def note_filler(self, line: Entry, filler: str) -> None:
        """The filler line played before this line's words: the record says so; history never has it."""
        line["filler"] = filler

    def resumed(self, line: Entry, words: str) -> None:
        """The caller's barge-in on `line` said nothing (`words`: none, or only back-channel words) and the
        line goes on from the sentence it was cut in: it is no longer cut short. Its barge-in note goes, or
        the record would fold it back in as `heard`; the line keeps what the caller said over it instead."""
        at = next((index for index, entry in enumerate(self.entries) if entry is line), None)
        if at is None:
            return
        for index in range(len(self.entries) - 1, at, -1):
            if self.entries[index].get("barge_in"):
                del self.entries[index]
                break
        line.pop("heard", None)
        line.setdefault("false_interruptions", []).append(words)

    def shelve(self, words: str, transcription: asyncio.Future[Transcript] | None) -> None:
        """A finished turn cut off before its answer started playing is not lost: its words (or, while
        still being transcribed, their transcription) prefix the caller's next turn."""
        if words:
            self.unanswered = words
        elif transcription is not None and transcription not in self._carried:
            self._carried.append(transcription)

    def carries(self, transcription: asyncio.Future[Transcript]) -> bool:
        """Whether a shelved turn still waits for this transcription (so it must not be cancelled)."""
        return transcription in self._carried

    def record_unanswered(self) -> None:
        """The caller's words that never got an answer go into the log when a keypad entry or the backend
        fallback is answered in their place (at the end of the call: settle_unanswered)."""
        words = [self.unanswered]
        self.unanswered = ""
        self._log_caller_words(words)

    async def take_carried(self) -> None:
        """The words of earlier turns the caller talked over join the unanswered text, in order."""
        while self._carried:
            transcription = self._carried[0]
            try:
                # Shielded: a speculative reply dropped meanwhile must not cancel an earlier turn's words.
                transcript = await asyncio.shield(transcription)
            except SpeechEngineError as exc:
                self._metrics.errors.labels(kind="stt").inc()
                self._log.warning("speech recognition failed on an interrupted turn: %s", exc)
                words = ""
            else:
                words = transcript.text
            if transcription in self._carried:
                self._carried.remove(transcription)
            self.unanswered = f"{self.unanswered} {words}".strip()

    async def settle_unanswered(self) -> None:
        """The caller's words that never got an answer go into the log. Turns still being transcribed are
        waited for, within TRANSCRIPTION_WAIT_S; past that their line says so, counted, never dropped."""
        pending = [transcription for transcription in self._carried if not transcription.done()]
        if pending:
            await asyncio.wait(pending, timeout=TRANSCRIPTION_WAIT_S)
        words = [self.unanswered]
        for transcription in self._carried:
            if not transcription.done():
                transcription.cancel()
                self._metrics.errors.labels(kind="not_transcribed").inc()
                self._log.warning("the call ended before the caller's last words were transcribed")
                words.append(NOT_TRANSCRIBED)
            elif transcription.cancelled() or transcription.exception() is not None:
                words.append(UNRECOGNISED)
            else:
                words.append(transcription.result().text)
        self._carried.clear()
        self.unanswered = ""
        self._log_caller_words(words)

    def _log_caller_words(self, words: list[str]) -> None:
        if text := " ".join(word for word in words if word):
            self._add("caller", text)

    def _add(self, role: str, text: str) -> Entry:
        entry: Entry = {"role": role, "text": text, "at": time.time()}
        self.entries.append(entry)
        return entry
