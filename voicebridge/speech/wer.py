"""Word error rate, for tests and benchmarks: Levenshtein distance over normalised words."""

from __future__ import annotations

import re

_SMALL = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen twenty"
).split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
# Spellings Whisper and people choose freely; counting them as errors would measure style, not hearing.
_SAME = {
    "i'm": "i am",
    "you're": "you are",
    "we're": "we are",
    "they're": "they are",
    "it's": "it is",
    "that's": "that is",
    "what's": "what is",
    "i've": "i have",
    "i'll": "i will",
    "can't": "can not",
    "cannot": "can not",
    "won't": "will not",
    "dr": "doctor",
    "mr": "mister",
    "ok": "okay",
}


def _number(digits: str) -> list[str]:
    """0-99 and round hundreds as words ("10" is "ten"); other numbers digit by digit, as read out."""
    value = int(digits)
    if len(digits) in (3, 4) and digits[0] != "0" and value % 100 == 0 and value < 2000:
        return [_SMALL[value // 100], "hundred"] if value != 1000 else ["one", "thousand"]
    if len(digits) > 2 or (len(digits) == 2 and digits[0] == "0"):
        return [_SMALL[int(digit)] for digit in digits]
    if value <= 20:
        return [_SMALL[value]]
    return [_TENS[value // 10]] + ([_SMALL[value % 10]] if value % 10 else [])


def normalise_words(text: str) -> list[str]:
    """Lower-case words without punctuation, contractions expanded and numbers spelled out."""
    words: list[str] = []
    for word in re.findall(r"[a-z0-9']+", text.lower().replace("-", " ")):
        word = word.strip("'")
        if word.isdigit():
            words += _number(word)
        elif word.endswith("n't") and word not in _SAME:
            words += [word[:-3], "not"]
        elif word:
            words += _SAME.get(word, word).split()
    return words


def word_error_rate(reference: str, hypothesis: str) -> float:
    """(substitutions + deletions + insertions) / reference words; any words against "" count 1.0."""
    ref, hyp = normalise_words(reference), normalise_words(hypothesis)
    if not ref:
        return 0.0 if not hyp else 1.0
    previous = list(range(len(hyp) + 1))
    for i, ref_word in enumerate(ref, start=1):
        current = [i]
        for j, hyp_word in enumerate(hyp, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ref_word != hyp_word)))
        previous = current
    return previous[-1] / len(ref)
