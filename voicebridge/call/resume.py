"""False interruptions: a barge-in that turns out to say nothing (a cough, a door, line noise, or only a
back-channel "hmm" / "haan" / "ok") resumes the reply it cut, from the start of the sentence it was cut
in, instead of leaving the caller in silence.

The barge-in itself cannot wait for the words (the caller would talk over the bot while Whisper runs), so
the reply is still cut at once; what it had said is kept here. The turn the barge-in opened is
transcribed as any turn is: when it is confirmed over and its words are none or only back-channel words,
the reply pipeline speaks the kept remainder (call/reply.py) and its line in the conversation goes on
(conversation.py: `resumed`). Real words drop what was kept, and the backend answers them as before.

Only the text the reply had received by the cut can be resumed (including a last sentence the splitter
still held): its backend stream was closed then, so what it had not yet sent is not asked for again.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass

from voicebridge.call.reply_state import Reply
from voicebridge.config.schema import TurnConfig

# Anything but letters, digits and apostrophes separates words ("Hmm..." is "hmm", "uh-huh" "uh huh").
_NOT_WORD = re.compile(r"[^\w']+")
# A kept reply is resumed only by the turn the barge-in opened, which ends within the longest utterance
# and the pause after it; one older than that (its utterance came to nothing) is stale.
STALE_AFTER_S = 5.0


def words_of(text: str) -> list[str]:
    return [word.strip("'") for word in _NOT_WORD.split(text.lower()) if word.strip("'")]


@dataclass(frozen=True, slots=True)
class Interrupted:
    """A reply cut by the caller's speech, and how much of its audio had been heard."""

    reply: Reply
    heard_s: float
    at: float


def remainder(cut: Interrupted) -> tuple[list[tuple[str, float]], list[str]]:
    """(the sentences heard in full, with their audio lengths; the text still to say, from the start of
    the sentence being heard at the cut), for a reply cut after `heard_s` of its audio."""
    reply = cut.reply
    heard = cut.heard_s - reply.lead_in_s
    elapsed, whole = 0.0, 0
    for _, seconds in reply.sentences:
        if elapsed + seconds > heard:
            break
        elapsed += seconds
        whole += 1
    rest = [text for text, _ in reply.sentences[whole:]] + list(reply.unspoken)
    if reply.unsplit:
        rest.append(reply.unsplit)
    return [*reply.before, *reply.sentences[:whole]], rest


class FalseInterruptions:
    """One call's last cut reply, until the turn that cut it is known to say something or nothing."""

    def __init__(self, turn: TurnConfig) -> None:
        self._backchannel = frozenset(turn.backchannel_words)
        self._stale_s = turn.max_utterance_s + STALE_AFTER_S
        self._last: Interrupted | None = None

    def interrupted(self, reply: Reply, heard_s: float) -> None:
        """The caller's speech cut `reply` after `heard_s` of its audio (only a reply with a line goes on)."""
        now = asyncio.get_running_loop().time()
        self._last = Interrupted(reply, heard_s, now) if reply.line is not None else None

    def forget(self) -> None:
        """Something else is said or asked for (a keypress, a phrase): the cut reply is not resumed."""
        self._last = None

    @property
    def pending(self) -> bool:
        return self._last is not None

    def take(self) -> Interrupted | None:
        """The cut reply, once, for the turn that follows the barge-in (None when stale or none)."""
        last, self._last = self._last, None
        if last is None or asyncio.get_running_loop().time() - last.at > self._stale_s:
            return None
        return last

    def says_nothing(self, text: str) -> bool:
        """No words, or only back-channel words."""
        return all(word in self._backchannel for word in words_of(text))
