"""Adaptive end of turn: how long a caller's pause may last, judged from what the speculative transcript
of that pause says (`turn.end_of_turn = "adaptive"`).

A fixed silence both answers late and cuts people off: 500 ms is a long wait after a finished question,
and too short for someone reading a number in groups ("nine eight seven six … five four three two", a
700 ms pause) or hesitating ("I want to book a table for … four people"). The call already transcribes
every pause speculatively 100 ms in, so the words are there before the fixed wait would end. Rules, not a
model: each one is a thing people do on the phone, and every rule is visible here.

Whisper punctuates what it hears as if the audio were all there is: a caller who stops after "Can you tell
me" gets "Can you tell me?", after "I would like to order" gets "I would like to order." So a full stop is
not enough: the words must not leave a verb waiting for its object, and a very short statement ("Thank
you.", "I need milk.") is often the first item of more, so it is "unsure" (turn.unsure_turn_ms) unless it
answers the question the bot just asked ("Yes.", "No.", "Okay.").
"""

from __future__ import annotations

import re
from typing import Literal

from voicebridge.config.schema import TurnConfig

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
# Verbs that leave the turn waiting for what they act on when they end it ("I would like to order", "Can I
# get"), unless the turn asks about that very thing ("What do you want?").
OBJECT_VERBS = frozenset(
    """
    order book buy get know find make have reserve change check want need take bring send tell give add
    update ask say mean see speak talk pick choose enter share provide
    """.split()
)
# "Can you tell me", "Please send me": a verb with its first object, the second still to come.
SECOND_OBJECT_VERBS = frozenset(
    "tell give send show let bring get offer pass hand teach email text ask".split()
)
OBJECT_PRONOUNS = frozenset("me us you him her them".split())
# Thinking aloud: the caller holds the turn while looking something up ("Hmm, let me see,").
THINKING_PHRASES = (
    ("let", "me", "see"),
    ("let", "me", "think"),
    ("let", "me", "check"),
    ("i", "mean"),
    ("you", "know"),
    ("one", "second"),
    ("one", "minute"),
    ("just", "a", "second"),
)
# Said alone, these open a turn and say nothing yet ("Actually … I want to cancel it.").
DISCOURSE_OPENERS = frozenset("actually basically well so anyway listen look see honestly now".split())
# A turn that is only a subordinate clause ("Because the last time") waits for the clause it hangs on.
SUBORDINATORS = frozenset("because cause if although though since while unless whether".split())
# What makes the word before it a verb, not the noun it can also be ("to order" but "my order").
VERB_LEADS = frozenset("to i we you they can could will would should please just also ll d".split())
QUESTION_WORDS = frozenset("what which who whom whose where when why how".split())
# Words that answer a question whole: after the bot asked one, these end the turn at once.
ANSWER_WORDS = frozenset(
    "yes yeah yep yup no nope nah okay ok sure right correct exactly fine alright haan nahi ji".split()
)
# A statement this short ends the turn only as an answer; otherwise it is "unsure".
SHORT_TURN_WORDS = 3
NUMBER_WORDS = frozenset("zero oh one two three four five six seven eight nine double triple".split())
# Phone numbers in India have 10 digits (12 with +91): a shorter run of digits is a group read so far.
FULL_NUMBER_DIGITS = 10
_WORD = re.compile(r"[^\W_]+")
_TRAILING_PUNCTUATION = re.compile(r"[\s\"')\]]*$")


def judge_pause(text: str, bot_asked: bool = False) -> PauseKind:
    """What the words of a turn so far say about the pause after them; `bot_asked`: the bot's last line
    was a question, so a one-word answer is a whole turn."""
    stripped = _TRAILING_PUNCTUATION.sub("", text)
    words = _WORD.findall(stripped.lower())
    if not words:
        return "unsure"  # no words (noise, a cough): nothing to judge by
    if stripped.endswith((",", ";", ":", "-", "\u2013", "\u2014", "...", "\u2026")):
        return "incomplete"
    if words[-1] in CONTINUING_WORDS or _short_number_run(words) or _verb_waits(words):
        return "incomplete"
    if _holds_the_turn(words, stripped):
        return "incomplete"
    if not stripped.endswith((".", "?", "!", "\u0964")):  # ।: the Devanagari full stop
        return "unsure"
    if len(words) <= SHORT_TURN_WORDS and not (bot_asked and _answers(words)):
        return "unsure"
    return "complete"


def _holds_the_turn(words: list[str], text: str) -> bool:
    """Thinking aloud, a lone opener, a bare subordinate clause, a request with no verb yet ("Could you
    please"), or a last word cut short to one letter ("Yes, n")."""
    if any(tuple(words[-len(phrase) :]) == phrase for phrase in THINKING_PHRASES):
        return True
    if len(words) == 1 and words[0] in DISCOURSE_OPENERS:
        return True
    if words[0] in SUBORDINATORS and "," not in text:
        return True
    if len(words) >= 2 and words[-1] == "please" and words[-2] in VERB_LEADS:
        return True
    # Latin letters only: \w leaves out the vowel signs of Indic scripts, so their words come in pieces.
    last = words[-1]
    return len(last) == 1 and "a" <= last <= "z" and last not in ("a", "i")


def _verb_waits(words: list[str]) -> bool:
    """The turn ends on a verb still missing what it acts on, and does not ask about that."""
    if words[0] in QUESTION_WORDS:
        return False
    if len(words) >= 2 and words[-1] in OBJECT_VERBS and words[-2] in VERB_LEADS:
        return True
    return len(words) >= 2 and words[-1] in OBJECT_PRONOUNS and words[-2] in SECOND_OBJECT_VERBS


def _answers(words: list[str]) -> bool:
    """A short answer: a yes, a no, an okay, or digits."""
    return words[0] in ANSWER_WORDS or all(w.isdigit() or w in NUMBER_WORDS for w in words)


def _short_number_run(words: list[str]) -> bool:
    """The turn ends on digits ("9876", "nine eight seven six"), two or more but fewer than a phone number."""
    digits = 0
    for word in reversed(words):
        if word.isdigit():
            digits += len(word)
        elif word in NUMBER_WORDS:
            digits += 1
        else:
            break
    # One number word is a count or a time ("after six"); a number read in groups has 2-5 digits a group.
    return 1 < digits < FULL_NUMBER_DIGITS


def pause_limit_ms(kind: PauseKind, turn: TurnConfig) -> int:
    """How long this pause may last before it ends the turn."""
    return {"complete": turn.complete_turn_ms, "incomplete": turn.incomplete_turn_ms}.get(
        kind, turn.unsure_turn_ms
    )
