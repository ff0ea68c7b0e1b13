"""Allow `python -m voicebridge`."""

from voicebridge.cli import main

main()
