"""Prometheus metrics for one daemon, on a registry of its own (no process-global collectors)."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0)


class Metrics:
    """Every metric the daemon exports; created once per app and passed to whoever records."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        # One call per metric, each on this registry: name, help text, then the labels it is broken down by.
        counter = partial(Counter, registry=self.registry)
        gauge = partial(Gauge, registry=self.registry)
        # Calls, their turns and what the providers asked of us.
        self.calls_active = gauge("voicebridge_calls_active", "Calls currently connected")
        self.calls_total = counter(
            "voicebridge_calls_total", "Calls ended, by outcome", ["outcome", "provider"]
        )
        self.calls_rejected = counter(
            "voicebridge_calls_rejected_total", "Calls refused before they started, by reason", ["reason"]
        )
        self.webhooks = counter(
            "voicebridge_webhooks_total", "Webhook requests, by endpoint and result", ["endpoint", "result"]
        )
        self.stage_latency = Histogram(
            "voicebridge_stage_latency_seconds",
            "Per-turn latency by stage (eot_to_stt_done, stt, backend, tts_first_audio, voice_to_voice)",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.turns_total = counter("voicebridge_turns_total", "Caller turns answered")
        self.barge_ins = counter("voicebridge_barge_ins_total", "Replies interrupted by the caller")
        self.overlaps_ignored = counter(
            "voicebridge_overlaps_ignored_total",
            "Speech over the bot with fewer than turn.barge_in_min_words words: the reply played on",
        )
        self.false_interruptions = counter(
            "voicebridge_false_interruptions_total",
            "Barge-ins with no words or only back-channel words: the cut reply resumed",
        )
        self.reprompts = counter("voicebridge_reprompts_total", "Re-prompts said to a silent caller")
        self.fillers = counter("voicebridge_fillers_total", "Filler lines said while the backend thought")
        self.speculation = counter(
            "voicebridge_speculative_transcriptions_total",
            "Transcriptions started during the end-of-turn pause, by fate (used, discarded)",
            ["fate"],
        )
        # Outbound calls: who answered (our detector's verdict, or the provider's when it gave one).
        self.answering_machine = counter(
            "voicebridge_answering_machine_total",
            "Outbound calls by who answered (human, machine, unknown)",
            ["answered_by"],
        )
        self.amd_decision = Histogram(
            "voicebridge_answering_machine_decision_seconds",
            "Audio seconds from the answer to the answering-machine verdict, by verdict",
            ["answered_by"],
            buckets=(0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0, 6.0, 8.0, 10.0, 15.0, 30.0),
            registry=self.registry,
        )

        # Media frames each way; a late one is a gap the caller heard.
        self.frames_in = counter("voicebridge_frames_in_total", "Media frames received")
        self.frames_out = counter("voicebridge_frames_out_total", "Media frames sent")
        self.late_frames = counter(
            "voicebridge_late_frames_total", "Outbound frames sent after the caller's audio ran dry"
        )

        # Speech engines and faults.
        self.stt_queue_depth = gauge("voicebridge_stt_queue_depth", "Utterances waiting for an STT worker")
        # With the stt stage's time less its queueing, the share of STT capacity in use (deploy/'s dashboard).
        self.stt_workers = gauge("voicebridge_stt_workers", "Utterances the STT engine decodes at once")
        self.tts_fallbacks = counter(
            "voicebridge_tts_fallbacks_total",
            "Sentences spoken by the fallback TTS because the primary failed or is cooling down",
            ["reason"],
        )
        self.stt_fallbacks = counter(
            "voicebridge_stt_fallbacks_total",
            "Turns transcribed by the local model because the remote STT failed or is cooling down",
            ["reason"],
        )
        self.cluster_unreachable = counter(
            "voicebridge_cluster_unreachable_total",
            "Shared-state (Redis) requests that failed, by what they were for "
            "(rate_limit, heartbeat, nodes, call_facts, placement, routing)",
            ["what"],
        )
        # Labelled by node id: a cluster has a handful of nodes, named in its own config.
        self.calls_placed = counter(
            "voicebridge_calls_placed_total",
            "New calls this node's webhooks placed, by the node chosen to serve them",
            ["node"],
        )
        self.cluster_refusals = counter(
            "voicebridge_cluster_messages_refused_total",
            "Messages from the shared state not acted on (not of the documented shape), by reason",
            ["reason"],
        )
        self.errors = counter("voicebridge_errors_total", "Errors, by kind", ["kind"])
        # No language label: the language comes from a business's answer, and labels must stay bounded.
        self.language_fallbacks = counter(
            "voicebridge_stt_language_fallbacks_total",
            "Transcriptions in the configured language because the model cannot do the call's",
        )
        self.unhandled = counter(
            "voicebridge_unhandled_exceptions_total",
            "Exceptions that reached the event loop's handler (each one is a bug)",
        )

        # Input refused at the door: each one a 4xx or a counted refusal, never a 500.
        # `surface`: the door a request came in by (server/access.py's surface_of; "http": malformed HTTP).
        by_surface = partial(counter, labelnames=["surface", "reason"])
        self.auth_failures = by_surface(
            "voicebridge_auth_failures_total", "Requests refused by authentication, by surface and reason"
        )
        self.http_rejections = by_surface(
            "voicebridge_http_rejections_total",
            "HTTP requests refused for what they carry (body, sid, malformed HTTP), by surface and reason",
        )
        self.connections_refused = counter(
            "voicebridge_connections_refused_total",
            "Connections cut before a request: per-address cap, global ceiling, slow request head or body",
            ["reason"],
        )
        self.protocol_rejections = counter(
            "voicebridge_protocol_rejections_total",
            "Inbound WebSocket messages rejected or ignored, by kind",
            ["kind"],
        )
        self.context_dropped = counter(
            "voicebridge_context_dropped_total",
            "Custom parameters left out of a call's context, by reason (bad_key, bad_value, too_long, ...)",
            ["reason"],
        )
        self.control_refusals = counter(
            "voicebridge_control_refusals_total",
            "Control-socket request lines refused, by code (bad_request, too_large, unknown_op, ...)",
            ["code"],
        )

        # Call records.
        self.outbox_records = gauge(
            "voicebridge_outbox_records",
            "Stored call records by state (pending, parked, delivered, local), as of the last delivery pass",
            ["state"],
        )
        self.records_unstored = counter(
            "voicebridge_records_unstored_total",
            "Call records that could not be stored in the outbox even after retries (each one is lost)",
        )

    def track_stt_queue(self, depth: Callable[[], int]) -> None:
        """Read the STT queue depth at scrape time rather than on every change."""
        self.stt_queue_depth.set_function(lambda: float(depth()))

    def render(self) -> bytes:
        """The text exposition format for /metrics."""
        return generate_latest(self.registry)
