"""Word error rate, for tests and benchmarks: Levenshtein distance over normalised words."""

from __future__ import annotations

import re

_NUMBER_WORDS = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen twenty"
).split()


def normalise_words(text: str) -> list[str]:
    """Lower-case words, no punctuation; numbers spelled out ("10" is "ten", "456" is "four five six")."""
    words: list[str] = []
    for word in re.findall(r"[a-z0-9']+", text.lower().replace("-", " ")):
        if word.isdigit():
            number = int(word)
            words += [_NUMBER_WORDS[number]] if number <= 20 else [_NUMBER_WORDS[int(d)] for d in word]
        else:
            words.append(word.strip("'"))
    return words


def word_error_rate(reference: str, hypothesis: str) -> float:
    """(substitutions + deletions + insertions) / reference words."""
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
