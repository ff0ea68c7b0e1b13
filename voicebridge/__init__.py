"""voicebridge: bridge phone calls (Exotel, Twilio) to local speech recognition, an AI backend and TTS."""

__version__ = "0.1.0"
