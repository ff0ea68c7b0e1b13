"""AI backends behind one interface (echo built in; node and openai follow)."""

from voicebridge.backends.base import Backend, BackendError, CallInfo, ConversationTurn
from voicebridge.backends.echo import EchoBackend
from voicebridge.config import BackendConfig


def build_backend(config: BackendConfig) -> Backend:
    """The backend named by `backend.kind`."""
    if config.kind == "echo":
        return EchoBackend()
    raise BackendError(f"backend kind {config.kind!r} is not available in this build yet; use 'echo'")


__all__ = ["Backend", "BackendError", "CallInfo", "ConversationTurn", "EchoBackend", "build_backend"]
