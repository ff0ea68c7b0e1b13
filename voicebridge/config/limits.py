"""The `[limits]` section: how much a peer (a provider's stream, an HTTP client) may send, and how long it
may stay quiet, before it is cut off. Each bound keeps one bad or broken peer from costing other calls."""

from __future__ import annotations

from pydantic import Field, model_validator

from voicebridge.config.section import Section


class LimitsConfig(Section):
    # A provider message is a JSON line of at most one chunk of audio; far beyond is not a provider.
    max_message_bytes: int = Field(1 << 20, ge=4096, le=16 << 20)
    # Caller audio in one media message (Exotel sends 20-100 ms; 2 s at 24 kHz is 96 kB).
    max_media_seconds: float = Field(2.0, gt=0, le=10)
    # Messages per second one stream may send (Exotel's 20 ms chunks are 50/s); the excess is dropped.
    max_messages_per_second: int = Field(200, ge=10)
    # Bad or dropped messages after which the stream is closed (1008), other calls unaffected.
    max_bad_messages: int = Field(100, ge=1)
    # Bot audio queued ahead of the line; a longer reply waits for the caller to hear the start.
    max_pending_audio_s: float = Field(20.0, ge=1)
    # Exotel documents media about every 100 ms, and Twilio streams have been seen to send it all through
    # a call: a stream silent this long is half-open, the call dropped. Raise it for a provider whose
    # silence suppression is on (it then sends nothing while the caller is quiet).
    inbound_idle_s: float = Field(10.0, ge=1, le=600)
    # A WebSocket that has not sent `start` this long after the upgrade is closed.
    start_timeout_s: float = Field(5.0, ge=1, le=120)
    # WebSocket ping after this long without a message; a peer that does not answer within half of it is
    # cut (1006). Keep 1.5 x this below inbound_idle_s, or the silence rule always cuts first and the ping
    # never fires. 0 turns pings off.
    ws_heartbeat_s: float = Field(5.0, ge=0, le=600)
    # Each mark we send must be echoed this long after the audio before it should have finished playing;
    # otherwise the provider stopped reading (or playing) and the connection is cut. 0 turns this off.
    mark_echo_timeout_s: float = Field(5.0, ge=0, le=120)
    # An HTTP connection must deliver a request's head, and then its body, within these many seconds.
    request_head_timeout_s: float = Field(10.0, ge=0.5, le=300)
    request_body_timeout_s: float = Field(10.0, ge=0.5, le=300)
    # Open connections from one client address (0: 2 x server.max_concurrent_calls + 16); addresses in
    # server.trusted_proxies are exempt, since everything behind a proxy arrives from its address, and so
    # are loopback peers (a TLS proxy on the same host, a local tool) unless cap_loopback_per_address.
    max_connections_per_address: int = Field(0, ge=0, le=100_000)
    cap_loopback_per_address: bool = False
    # Open connections in all, from every address (0: 4 x server.max_concurrent_calls + 256): keeps the
    # process's file descriptors for its calls when many addresses connect at once.
    max_connections: int = Field(0, ge=0, le=1_000_000)

    @model_validator(mode="after")
    def _watchdogs_that_can_fire(self) -> LimitsConfig:
        # Tiny non-zero values would ping in a tight loop or cut every stream at once.
        if 0 < self.ws_heartbeat_s < 1:
            raise ValueError("ws_heartbeat_s must be 0 (off) or at least 1")
        if 0 < self.mark_echo_timeout_s < 0.25:
            raise ValueError("mark_echo_timeout_s must be 0 (off) or at least 0.25")
        if self.ws_heartbeat_s and self.ws_heartbeat_s * 1.5 >= self.inbound_idle_s:
            raise ValueError(
                "ws_heartbeat_s x 1.5 must stay below inbound_idle_s, or the silence rule always cuts first"
            )
        return self
