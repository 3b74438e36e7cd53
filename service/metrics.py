"""Prometheus metrics of one media node (and its in-process worker).

Each app gets its own registry so that several nodes can run in one process (tests, embedding).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# Step-time buckets around the 200 ms deadline: fine below it, coarse above.
STEP_SECONDS_BUCKETS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.0)


class NodeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.sessions_active = Gauge("microturn_sessions_active", "Sessions currently open", registry=r)
        self.sessions_total = Counter("microturn_sessions_total", "Sessions created", registry=r)
        self.sessions_rejected = Counter(
            "microturn_sessions_rejected_total", "Session requests refused", ["reason"], registry=r
        )
        self.ticks = Counter("microturn_ticks_total", "Micro-turn ticks cut", registry=r)
        self.tick_late_seconds = Histogram(
            "microturn_tick_late_seconds",
            "How late a tick started after its boundary (event-loop lag)",
            buckets=STEP_SECONDS_BUCKETS,
            registry=r,
        )
        self.step_seconds = Histogram(
            "microturn_worker_step_seconds",
            "Wall time of one batched model step",
            buckets=STEP_SECONDS_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "microturn_worker_batch_size",
            "Micro-turns per batched step",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
            registry=r,
        )
        self.deadline_misses = Counter(
            "microturn_deadline_misses_total",
            "Batches whose outputs came back later than one micro-turn after their window closed",
            registry=r,
        )
        self.model_errors = Counter(
            "microturn_model_errors_total", "Micro-turns the model failed on", registry=r
        )
        self.lost_samples = Counter(
            "microturn_audio_lost_samples_total", "Inbound samples that never arrived in time", registry=r
        )
        self.late_samples = Counter(
            "microturn_audio_late_samples_total",
            "Inbound samples that arrived after their window",
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
