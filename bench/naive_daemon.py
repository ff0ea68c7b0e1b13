"""The original design, kept for bench/suite.py's comparison: the daemon, with a Whisper model per call.

    python bench/naive_daemon.py --config daemon.toml

Serves exactly as `voicebridge serve --config daemon.toml` does, except that each call loads a Whisper
model of its own, with one worker of its own, instead of sharing the daemon's engine and its scheduler.
That costs ~100 MB and a model load per call, so it is not a setting of the daemon: this entry hands the
per-call engine to the daemon through the same injection point tests use (voicebridge.speech.factory's
Engines). bench/suite.py starts it with voicebridge.sim.daemon.start_daemon(..., entry=NAIVE_ENTRY).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from voicebridge.config.load import ConfigError, load_settings
from voicebridge.config.schema import SttConfig
from voicebridge.server.serve import run_daemon
from voicebridge.speech.base import OwnSpeechToText
from voicebridge.speech.factory import Engines
from voicebridge.speech.models import ModelCache
from voicebridge.speech.stt import WhisperSTT

# What voicebridge.sim.daemon.start_daemon runs (given `--config <file>`) instead of `-m voicebridge serve`.
NAIVE_ENTRY = (str(Path(__file__).resolve()),)


def own_whisper(config: SttConfig, cache: ModelCache) -> WhisperSTT:
    """A Whisper engine with a model and one worker of its own, as each call had in the original design."""
    return WhisperSTT(config.model_copy(update={"workers": 1}), cache)


def model_per_call(config: SttConfig) -> Callable[[ModelCache], OwnSpeechToText]:
    """Builds each call's own engine; its load is added to the daemon's cache, so /health counts it."""

    def build(shared: ModelCache) -> OwnSpeechToText:
        own = ModelCache()
        engine = own_whisper(config, own)
        shared.loads.update(own.loads)
        return engine

    return build


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", type=Path, required=True, help="the daemon's TOML config")
    args = parser.parse_args(argv)
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    return run_daemon(settings, args.config, Engines(stt_per_call=model_per_call(settings.stt)))


if __name__ == "__main__":
    sys.exit(main())
