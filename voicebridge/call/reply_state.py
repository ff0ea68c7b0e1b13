"""What is known of one reply of a call as it runs: its task, its gate, the sentences it queued (and how
long each plays), the line it speaks in the conversation, and what a filler or a resume shifts of it.
The pipeline that runs it is reply.py."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from voicebridge.backends.base import ReplyAction
from voicebridge.call.conversation import Conversation, Entry
from voicebridge.speech.base import Transcript


@dataclass(slots=True)
class Reply:
    """The reply task of one turn and what is known of what it said."""

    # Set by the call right after the reply is built; None only until then.
    task: asyncio.Task[None] | None
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    played: asyncio.Event = field(default_factory=asyncio.Event)
    sentences: list[tuple[str, float]] = field(default_factory=list)
    mark: str = ""
    caller_text: str = ""
    action: ReplyAction | None = None
    # This reply's bot line in the conversation, once it plays.
    line: Entry | None = None
    transcription: asyncio.Future[Transcript] | None = None
    # Its first audio (or its filler) went out: the call is speaking it.
    started: bool = False
    # The backend has yielded text for it (a filler is no longer due).
    first_text: bool = False
    # Sentences received but not yet queued as audio, in order (a resumed reply says them too).
    unspoken: list[str] = field(default_factory=list)
    # Text received after them that is not yet a whole sentence: the splitter keeps the last sentence
    # until the backend's stream ends, and the stream is read only as the pacer has room.
    unsplit: str = ""
    # The line's sentences heard in full before this reply's audio (a reply resumed after a false
    # interruption goes on from them), and the seconds of audio before its own words (the filler).
    before: list[tuple[str, float]] = field(default_factory=list)
    lead_in_s: float = 0.0

    def spoken(self) -> list[tuple[str, float]]:
        """The line's sentences with their audio lengths: those heard before this reply's, then its own."""
        return [*self.before, *self.sentences]

    def shelve(self, conversation: Conversation) -> None:
        """A finished turn whose answer has not started playing keeps its words for the caller's next turn;
        not a guess the caller spoke on from (it is re-transcribed whole), nor a reply already heard."""
        if self.gate.is_set() and self.line is None:
            conversation.shelve(self.caller_text, self.transcription)

    def settle(self, conversation: Conversation, heard_seconds: float | None) -> None:
        """The call ended: what was said stays said. The line being played keeps what was heard (when it
        was playing: `heard_seconds`); the words of a turn not yet answered (even a guess, since the call's
        end ends the turn) stay, transcribed or still being."""
        if heard_seconds is not None:
            self.keep_heard(conversation, heard_seconds, barge_in=False)
        self.gate.set()  # no one speaks on after the end: a speculative turn is the caller's last
        self.shelve(conversation)
        # Whoever waits for this reply to be heard (a transfer or goodbye line) stops waiting now.
        self.played.set()

    def keep_heard(self, conversation: Conversation, heard_seconds: float, barge_in: bool) -> None:
        """Cut short: the reply's line keeps what the caller heard of it."""
        if self.line is not None:
            # The pacer counts from the reply's first frame: the filler's, which is not the line's words.
            heard = heard_seconds - self.lead_in_s + sum(seconds for _, seconds in self.before)
            conversation.keep_heard(self.line, self.spoken(), heard, barge_in)
