"""Split a streamed reply into sentences so speech can start on the first one."""

from __future__ import annotations

import re

# A sentence ends at . ! ? (or a run of them) followed by whitespace; "Dr. Rao" style splits are
# harmless here: they only make the first spoken chunk shorter.
_BOUNDARY = re.compile(r"(?<=[.!?])[\"')\]]*\s+")
# A clause ends at , ; : or a dash followed by whitespace.
_CLAUSE = re.compile(r"(?<=[,;:\u2013\u2014])\s+")
# The caller waits for the first chunk only, and Piper renders a chunk whole before its first frame: an
# 18-word first sentence took 206 ms to its first audio at 8 kHz on 2 cores, its 4-word first clause
# 45 ms. So a first sentence longer than this is spoken from its first clause of at least
# FIRST_CLAUSE_MIN_WORDS words ("You said:" stays with what follows); later sentences play while the one
# before them is heard, and stay whole for their prosody.
# Shorter leads were tried (2026-12-07): a 1-2 word lead ("You said:", 26-33 ms) cut one call's
# voice-to-voice by ~80 ms, but under load (5 calls beside the test suite on 2 cores) the rest was not
# rendered before the lead's half second had played: 2-3 late frames, a gap the caller hears.
FIRST_CHUNK_MAX_WORDS = 10
FIRST_CLAUSE_MIN_WORDS = 4


class SentenceSplitter:
    """Accumulates text deltas and hands back whole sentences as they complete."""

    def __init__(self) -> None:
        self._buffer = ""
        self._first = True

    def feed(self, delta: str) -> list[str]:
        """Add a delta; return the sentences it completed (the first one perhaps as its first clause)."""
        self._buffer += delta
        parts = _BOUNDARY.split(self._buffer)
        self._buffer = parts.pop()
        done = [part.strip() for part in parts if part.strip()]
        if self._first:
            if done and (cut := first_clause(done[0])) is not None:
                done[0:1] = list(cut)
            elif not done and (cut := first_clause(self._buffer)) is not None:
                done, self._buffer = [cut[0]], cut[1]  # the sentence still streams in: its clause goes now
            self._first = not done
        return done

    @property
    def pending(self) -> str:
        """Text received that is not yet a whole sentence (the last one, until the reply ends)."""
        return self._buffer.strip()

    def flush(self) -> list[str]:
        """Whatever is left once the reply is complete."""
        rest, self._buffer = self._buffer.strip(), ""
        if self._first and (cut := first_clause(rest)) is not None:
            return list(cut)
        return [rest] if rest else []


def first_clause(text: str) -> tuple[str, str] | None:
    """(first clause, the rest) when `text` is longer than FIRST_CHUNK_MAX_WORDS words and has a clause
    boundary after at least FIRST_CLAUSE_MIN_WORDS of them; else None."""
    if len(text.split()) <= FIRST_CHUNK_MAX_WORDS:
        return None
    for boundary in _CLAUSE.finditer(text):
        head, rest = text[: boundary.start()].strip(), text[boundary.end() :].strip()
        if len(head.split()) >= FIRST_CLAUSE_MIN_WORDS and rest:
            return head, rest
    return None


def heard_text(sentences: list[tuple[str, float]], heard_seconds: float) -> str:
    """The part of a reply the caller heard, given each sentence's audio length, cut at a word boundary."""
    heard: list[str] = []
    elapsed = 0.0
    for text, seconds in sentences:
        if elapsed + seconds <= heard_seconds:
            heard.append(text)
            elapsed += seconds
            continue
        words = text.split()
        fraction = (heard_seconds - elapsed) / seconds if seconds > 0 else 0.0
        partial = words[: int(len(words) * max(0.0, fraction))]
        if partial:
            heard.append(" ".join(partial))
        break
    return " ".join(heard)
