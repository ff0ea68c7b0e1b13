"""Adaptive end of turn's two parts: the judgement of a pause from its words, and the turn detector letting
a pause last as long as that judgement says."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from voicebridge.audio.levels import trim_trailing_quiet
from voicebridge.audio.resample import resample_once
from voicebridge.audio.turn import PauseStarted, TurnDetector, TurnEnded
from voicebridge.call.endpointing import judge_pause, pause_limit_ms
from voicebridge.config.schema import TurnConfig

RATE = 16_000


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("What time do you open?", "complete"),
        ("I want to cancel my order.", "complete"),
        ("Thank you!", "unsure"),  # short: often the first words of more
        ("I would like to order.", "incomplete"),  # Whisper's full stop; the verb still waits
        ("Can you tell me?", "incomplete"),
        ("Do you have?", "incomplete"),
        ("What do you have?", "complete"),  # it asks about the very thing the verb is missing
        ("I want to cancel my order.", "complete"),  # "order" the noun
        ("Please call me back after six.", "complete"),  # one number word is a time, not a group
        ("The account number is 123.", "incomplete"),
        ("And let me see.", "incomplete"),  # thinking aloud
        ("Actually", "incomplete"),  # an opener alone
        ("Because the last time.", "incomplete"),  # a subordinate clause with nothing to hang on
        ("Because of the rain, I am late.", "complete"),
        ("Could you please?", "incomplete"),
        ("Yes, n.", "incomplete"),  # a last word cut short
        ("My booking reference is A B 3.", "complete"),
        ("मुझे टिकट चाहिए।", "complete"),
        ("My number is 98765", "incomplete"),
        ("my number is nine eight seven six", "incomplete"),
        ("Call me on 98765 43210", "unsure"),  # ten digits: a whole number has been read
        ("I want to book a table for", "incomplete"),
        ("I'd like the, um", "incomplete"),
        ("So, my order and", "incomplete"),
        ("Let me think,", "incomplete"),
        ("Well...", "incomplete"),
        ("okay", "unsure"),
        ("", "unsure"),
        ('  "  ', "unsure"),
    ],
)
def test_a_pause_is_judged_from_the_words_before_it(text: str, kind: str) -> None:
    assert judge_pause(text) == kind


@pytest.mark.parametrize(
    ("text", "asked", "kind"),
    [
        ("Yes.", True, "complete"),
        ("Yes.", False, "unsure"),
        ("Okay.", True, "complete"),
        ("I need milk.", True, "unsure"),
    ],
)
def test_a_short_answer_ends_the_turn_only_after_a_question(text: str, asked: bool, kind: str) -> None:
    assert judge_pause(text, bot_asked=asked) == kind


def test_each_judgement_picks_its_own_limit() -> None:
    turn = TurnConfig(complete_turn_ms=250, incomplete_turn_ms=1000, unsure_turn_ms=700)
    assert [pause_limit_ms(kind, turn) for kind in ("complete", "incomplete", "unsure")] == [250, 1000, 700]


def silence(seconds: float) -> bytes:
    return bytes(int(RATE * seconds) * 2)


@pytest.fixture(scope="module")
def utterance(speak: Callable[[str, int], bytes]) -> bytes:
    # Piper's own trailing quiet off, so that "the pause" is only the silence the tests add.
    return resample_once(trim_trailing_quiet(speak("I would like to book a table.", 8000)), 8000, RATE)


def paused(utterance: bytes) -> TurnDetector:
    """A detector 300 ms into the pause after an utterance (its fixed end of turn is 500 ms)."""
    detector = TurnDetector(TurnConfig(end_of_turn_silence_ms=500, speculative_ms=200))
    events = detector.feed(utterance + silence(0.3))
    assert any(isinstance(e, PauseStarted) for e in events) and detector.in_utterance
    return detector


def test_a_shorter_limit_already_passed_ends_the_turn_now(utterance: bytes) -> None:
    ended = paused(utterance).end_pause_after(250)
    assert isinstance(ended, TurnEnded) and not ended.forced
    assert 250 <= ended.silence_ms <= 320  # the pause so far (the VAD hears the last word fade), no more


def test_a_longer_limit_keeps_the_turn_open_past_the_fixed_silence(utterance: bytes) -> None:
    detector = paused(utterance)
    assert detector.end_pause_after(1000) is None
    assert not any(isinstance(e, TurnEnded) for e in detector.feed(silence(0.5)))  # 800 ms
    ended = [e for e in detector.feed(silence(0.3)) if isinstance(e, TurnEnded)]
    assert len(ended) == 1 and ended[0].silence_ms >= 1000


def test_a_limit_lasts_one_pause_only(utterance: bytes) -> None:
    """Speech resumed: the next pause is the fixed one again until its own words are judged."""
    detector = paused(utterance)
    assert detector.end_pause_after(1000) is None
    detector.feed(utterance)
    ended = [e for e in detector.feed(silence(0.6)) if isinstance(e, TurnEnded)]
    assert len(ended) == 1


def test_outside_a_pause_a_limit_does_nothing(utterance: bytes) -> None:
    detector = TurnDetector(TurnConfig(end_of_turn_silence_ms=500, speculative_ms=200))
    assert detector.end_pause_after(0) is None  # no utterance open
    detector.feed(utterance)
    assert detector.end_pause_after(0) is None  # still speaking
