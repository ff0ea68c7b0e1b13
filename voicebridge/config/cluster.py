"""The `[cluster]` section: the shared state several daemons behind one balancer use (Redis or Valkey).
Without `redis_url` every daemon keeps its state in its own process, as on one machine."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator

from voicebridge.config.section import Section

# Node ids and the key prefix end up in Redis keys, logs and the management API.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")


class ClusterConfig(Section):
    # redis://[:password@]host:6379/0, rediss:// for TLS, unix:///path. A secret: it may carry a password.
    redis_url: SecretStr = SecretStr("")
    # This daemon's name in the shared state; "": <hostname>-<server.port>.
    node_id: str = ""
    key_prefix: str = "voicebridge"
    # Each node writes its load this often; a node not heard from for node_ttl_s drops out of the list.
    heartbeat_s: float = Field(2.0, gt=0, le=60)
    node_ttl_s: float = Field(6.0, gt=0, le=600)
    # Each Redis command gets this long; past it the shared state counts as unreachable for that request.
    timeout_s: float = Field(1.0, gt=0, le=30)

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: SecretStr) -> SecretStr:
        url = value.get_secret_value()
        if url and urlsplit(url).scheme not in ("redis", "rediss", "unix"):
            # Not quoted back: the URL may carry a password.
            raise ValueError("cluster.redis_url must be a redis://, rediss:// or unix:// URL")
        return value

    @field_validator("node_id", "key_prefix")
    @classmethod
    def _name(cls, value: str) -> str:
        if value and not _NAME.fullmatch(value):
            raise ValueError(
                "must be 1-64 letters, digits, '.', '_', ':' or '-', starting with a letter or digit"
            )
        return value

    @model_validator(mode="after")
    def _ttl_outlives_heartbeat(self) -> ClusterConfig:
        if self.node_ttl_s <= self.heartbeat_s:
            raise ValueError("cluster.node_ttl_s must be longer than cluster.heartbeat_s")
        if self.redis_url.get_secret_value() and not self.key_prefix:
            raise ValueError("cluster.key_prefix must not be empty")
        return self

    @property
    def enabled(self) -> bool:
        return bool(self.redis_url.get_secret_value())
