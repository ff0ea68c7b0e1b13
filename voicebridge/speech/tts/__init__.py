"""Text-to-speech engines: Piper (local, the default) and Azure (cloud)."""
