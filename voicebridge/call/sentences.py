"""Split a streamed reply into sentences so speech can start on the first one."""

from __future__ import annotations

import re

# A sentence ends at . ! ? (or a run of them) followed by whitespace; "Dr. Rao" style splits are
# harmless here: they only make the first spoken chunk shorter.
_BOUNDARY = re.compile(r"(?<=[.!?])[\"')\]]*\s+")


class SentenceSplitter:
    """Accumulates text deltas and hands back whole sentences as they complete."""

    def __init__(self) -> None:
        self._buffer = ""

    def feed(self, delta: str) -> list[str]:
        """Add a delta; return the sentences it completed."""
        self._buffer += delta
        parts = _BOUNDARY.split(self._buffer)
        self._buffer = parts.pop()
        return [part.strip() for part in parts if part.strip()]

    def flush(self) -> list[str]:
        """Whatever is left once the reply is complete."""
        rest, self._buffer = self._buffer.strip(), ""
        return [rest] if rest else []


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
