"""Plug the two leaks piper-tts 1.8's espeak bridge has on every sentence it phonemizes.

- `espeakbridge.get_phonemes` appends each clause tuple to its result list without dropping its own
  reference, so every tuple and its phoneme string live for ever (about 0.7 KB a sentence);
- `espeakbridge.set_voice`, which Piper calls before every sentence, makes espeak-ng copy its voice
  into a command queue that only espeak's own audio output frees, and Piper never runs it (about
  1.4 KB of native memory a call).

A busy line speaks several sentences a second, so this is hundreds of MB a month. The fix wraps the
two functions once per process: the surplus reference is returned, and the voice is set only when it
changes (espeak-ng keeps it; Piper holds its phonemizer lock around both calls).
"""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from piper import PiperVoice

_PLUGGED = "_voicebridge_plugged"
# A prototype of our own: setting argtypes on the shared ctypes.pythonapi.Py_DecRef would change it
# for every other user in the process.
_decref = ctypes.PYFUNCTYPE(None, ctypes.py_object)(("Py_DecRef", ctypes.pythonapi))


def plug_espeak_leaks(voice: PiperVoice) -> None:
    """Wrap piper's espeak bridge, once per process, before `voice` (just loaded) synthesises anything."""
    from piper import espeakbridge
    from piper.config import PhonemeType

    # Voices that phonemize without espeak never start it, and the bridge must not run unstarted.
    if voice.config.phoneme_type != PhonemeType.ESPEAK or getattr(espeakbridge, _PLUGGED, False):
        return
    # Piper starts espeak-ng on the first sentence; the bridge must not be called before that.
    voice.phonemize("Hello.")
    leaky = _leaks_clause_tuples(espeakbridge)
    espeakbridge.set_voice = _set_voice_on_change(espeakbridge.set_voice)
    if leaky:
        espeakbridge.get_phonemes = _return_surplus_references(espeakbridge.get_phonemes)
    # On the module: a fixed piper keeps its builtin get_phonemes, which takes no attributes.
    setattr(espeakbridge, _PLUGGED, True)


def _set_voice_on_change(set_voice: Callable[[str], None]) -> Callable[[str], None]:
    current = ""

    def set_voice_on_change(voice: str) -> None:
        nonlocal current
        if voice != current:
            set_voice(voice)
            current = voice

    return set_voice_on_change


def _leaks_clause_tuples(espeakbridge: ModuleType) -> bool:
    """True when a returned clause tuple carries a reference nobody owns (piper-tts 1.8.0)."""
    clauses = espeakbridge.get_phonemes("a.")
    # Owned by the list, plus getrefcount's argument: 2. The bridge's lost reference makes it 3.
    leaky = bool(clauses) and sys.getrefcount(clauses[0]) > 2
    if leaky:
        _drop_surplus(clauses)
    return leaky


def _return_surplus_references(get_phonemes: Callable[[str], list[Any]]) -> Callable[[str], list[Any]]:
    def get_phonemes_without_leak(text: str) -> list[Any]:
        clauses = get_phonemes(text)
        _drop_surplus(clauses)
        return clauses

    return get_phonemes_without_leak


def _drop_surplus(clauses: list[Any]) -> None:
    for clause in clauses:
        _decref(clause)
