"""Allow `python -m voicebridge`."""

from voicebridge.cli.app import main

main()
