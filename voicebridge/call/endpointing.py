"""Adaptive end of turn: how long a caller's pause may last, judged from what the speculative transcript
of that pause says (`turn.end_of_turn = "adaptive"`).

A fixed silence both answers late and cuts people off: 500 ms is a long wait after a finished question,
and too short for someone reading a number in groups ("nine eight seven six … five four three two", a
700 ms pause) or hesitating ("I want to book a table for … four people"). The call already transcribes
every pause speculatively 200 ms in, so the words are there before the fixed wait would end. Rules, not a
model: each one is a thing people do on the phone, and every rule is visible here.
"""

from __future__ import annotations

import re
from typing import Literal

PauseKind = Literal["complete", "incomplete", "unsure"]

# A turn that stops on one of these words has more to come: fillers, conjunctions, prepositions,
# articles, possessives and copulas ("my number is …"), in English and the Hindi heard on Indian lines.
CONTINUING_WORDS = frozenset(
    """
    um umm uh uhh er erm hmm mm ah
    and or but so because cause like then also plus than
    the a an to of for with from in on at by about into my your our his her their its this that these
    is are was were am be will would can could should if when which who whose where what
    aur ya lekin toh to matlab ki ke ka ko se mein par jo
    """.split()
)
NUMBER_WORDS = frozenset("zero oh one two three four five six seven eight nine double triple".split())
# Phone numbers in India have 10 digits (12 with +91): a shorter run of digits is a group read so far.
FULL_NUMBER_DIGITS = 10
_WORD = re.compile(r"[^\W_]+")
_TRAILING_PUNCTUATION = re.compile(r"[\s\"')\]]*$")


def judge_pause(text: str) -> PauseKind:
    """What the words of a turn so far say about the pause after them."""
    stripped = _TRAILING_PUNCTUATION.sub("", text)
    words = _WORD.findall(stripped.lower())
    if not words:
        return "unsure"  # no words (noise, a cough): the pause decides as a fixed one would
    if stripped.endswith((",", ";", ":", "-", "\u2013", "\u2014", "...", "\u2026")):
        return "incomplete"
    if words[-1] in CONTINUING_WORDS:
        return "incomplete"
    if _short_number_run(words):
        return "incomplete"
    if stripped.endswith((".", "?", "!", "\u0964")):  # ।: the Devanagari full stop
        return "complete"
    return "unsure"


def _short_number_run(words: list[str]) -> bool:
    """The turn ends on digits ("9876", "nine eight seven six") that are fewer than a phone number."""
    digits = 0
    for word in reversed(words):
        if word.isdigit():
            digits += len(word)
        elif word in NUMBER_WORDS:
            digits += 1
        else:
            break
    return 0 < digits < FULL_NUMBER_DIGITS


def pause_limit_ms(kind: PauseKind, complete_ms: int, incomplete_ms: int, fixed_ms: int) -> int:
    """How long this pause may last before it ends the turn."""
    return {"complete": complete_ms, "incomplete": incomplete_ms, "unsure": fixed_ms}[kind]
