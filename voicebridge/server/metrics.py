"""Prometheus metrics for one daemon, on a registry of its own (no process-global collectors)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0)


class Metrics:
    """Every metric the daemon exports; created once per app and passed to whoever records."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.calls_active = Gauge("voicebridge_calls_active", "Calls currently connected", registry=r)
        self.calls_total = Counter(
            "voicebridge_calls_total", "Calls ended, by outcome", ["outcome", "provider"], registry=r
        )
        self.calls_rejected = Counter(
            "voicebridge_calls_rejected_total",
            "Calls refused before they started, by reason",
            ["reason"],
            registry=r,
        )
        self.stage_latency = Histogram(
            "voicebridge_stage_latency_seconds",
            "Per-turn latency by stage (eot_to_stt_done, stt, backend, tts_first_audio, voice_to_voice)",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.turns_total = Counter("voicebridge_turns_total", "Caller turns answered", registry=r)
        self.barge_ins = Counter(
            "voicebridge_barge_ins_total", "Replies interrupted by the caller", registry=r
        )
        self.speculation = Counter(
            "voicebridge_speculative_transcriptions_total",
            "Transcriptions started during the end-of-turn pause, by fate (used, discarded)",
            ["fate"],
            registry=r,
        )
        self.frames_in = Counter("voicebridge_frames_in_total", "Media frames received", registry=r)
        self.frames_out = Counter("voicebridge_frames_out_total", "Media frames sent", registry=r)
        self.late_frames = Counter(
            "voicebridge_late_frames_total",
            "Outbound frames sent after the caller's audio ran dry",
            registry=r,
        )
        self.stt_queue_depth = Gauge(
            "voicebridge_stt_queue_depth", "Utterances waiting for an STT worker", registry=r
        )
        self.errors = Counter("voicebridge_errors_total", "Errors, by kind", ["kind"], registry=r)
        self.auth_failures = Counter(
            "voicebridge_auth_failures_total",
            "Requests refused by authentication, by surface and reason",
            ["surface", "reason"],
            registry=r,
        )
        self.tts_fallbacks = Counter(
            "voicebridge_tts_fallbacks_total",
            "Sentences spoken by the fallback TTS because the primary failed or is cooling down",
            ["reason"],
            registry=r,
        )
        self.unhandled = Counter(
            "voicebridge_unhandled_exceptions_total",
            "Exceptions that reached the event loop's handler (each one is a bug)",
            registry=r,
        )
        self.connections_refused = Counter(
            "voicebridge_connections_refused_total",
            "Connections cut before a request: per-address cap, global ceiling, slow request head or body",
            ["reason"],
            registry=r,
        )
        self.protocol_rejections = Counter(
            "voicebridge_protocol_rejections_total",
            "Inbound WebSocket messages rejected or ignored, by kind",
            ["kind"],
            registry=r,
        )
        self.webhooks = Counter(
            "voicebridge_webhooks_total",
            "Webhook requests, by endpoint and result",
            ["endpoint", "result"],
            registry=r,
        )
        self.http_rejections = Counter(
            "voicebridge_http_rejections_total",
            "HTTP requests refused for what they carry (body, sid, malformed HTTP), by surface and reason",
            ["surface", "reason"],
            registry=r,
        )
        self.outbox_records = Gauge(
            "voicebridge_outbox_records",
            "Stored call records by state (pending, parked, delivered, local), as of the last delivery pass",
            ["state"],
            registry=r,
        )
        self.records_unstored = Counter(
            "voicebridge_records_unstored_total",
            "Call records that could not be stored in the outbox even after retries (each one is lost)",
            registry=r,
        )
        self.control_refusals = Counter(
            "voicebridge_control_refusals_total",
            "Control-socket request lines refused, by code (bad_request, too_large, unknown_op, ...)",
            ["code"],
            registry=r,
        )

    def track_stt_queue(self, depth: Callable[[], int]) -> None:
        """Read the STT queue depth at scrape time rather than on every change."""
        self.stt_queue_depth.set_function(lambda: float(depth()))

    def render(self) -> bytes:
        """The text exposition format for /metrics."""
        return generate_latest(self.registry)
