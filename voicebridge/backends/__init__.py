"""AI backends behind one interface: echo (built in), node (the business's API) and openai."""

from voicebridge.backends.base import (
    Backend,
    BackendError,
    BudgetCheck,
    BudgetDecision,
    BusinessLookup,
    BusinessSettings,
    CallInfo,
    ConversationTurn,
    RecordSink,
    ReplyAction,
)
from voicebridge.backends.breaker import BackendUnavailable, CircuitBreaker
from voicebridge.backends.echo import EchoBackend
from voicebridge.backends.http import BackendHttp
from voicebridge.backends.node import NodeBackend
from voicebridge.backends.openai import OpenAIBackend, auth_headers
from voicebridge.config.schema import BackendConfig


def build_backend(config: BackendConfig) -> Backend:
    """The backend named by `backend.kind`; node and openai get their own HTTP client (call start())."""
    if config.kind == "node":
        return NodeBackend(config, BackendHttp(config))
    if config.kind == "openai":
        return OpenAIBackend(config, BackendHttp(config, auth_headers=auth_headers(config)))
    return EchoBackend()


__all__ = [
    "Backend",
    "BackendError",
    "BackendHttp",
    "BackendUnavailable",
    "BudgetCheck",
    "BudgetDecision",
    "BusinessLookup",
    "BusinessSettings",
    "CallInfo",
    "CircuitBreaker",
    "ConversationTurn",
    "EchoBackend",
    "NodeBackend",
    "OpenAIBackend",
    "RecordSink",
    "ReplyAction",
    "build_backend",
]
