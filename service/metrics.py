"""Prometheus metrics of one media node (and its in-process worker), and of a ``microturn worker`` process.

Each app gets its own registry so that several nodes can run in one process (tests, embedding).
:class:`StepMetrics` is what stepping a model records, wherever it steps: a node's in-process worker
(:class:`NodeMetrics`) or a model worker process (:class:`WorkerMetrics`), under the same names.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# Step-time buckets around the 200 ms deadline: fine below it, coarse above.
STEP_SECONDS_BUCKETS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.0)


class StepMetrics:
    """Batched model steps: how many, how long, how big, how many micro-turns failed."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.steps = Counter("microturn_worker_steps", "Batched model steps", registry=r)
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
        self.model_errors = Counter(
            "microturn_model_errors_total", "Micro-turns the model failed on", registry=r
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)


class NodeMetrics(StepMetrics):
    def __init__(self) -> None:
        super().__init__()
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
        self.deadline_misses = Counter(
            "microturn_deadline_misses_total",
            "Batches whose outputs came back later than one micro-turn after their window closed",
            registry=r,
        )
        self.lost_samples = Counter(
            "microturn_audio_lost_samples_total", "Inbound samples that never arrived in time", registry=r
        )
        self.late_samples = Counter(
            "microturn_audio_late_samples_total",
            "Inbound samples that arrived after their window",
            registry=r,
        )


class WorkerMetrics(StepMetrics):
    """A ``microturn worker`` process (``--metrics-port``): its steps, plus what it holds and sends."""

    def __init__(self) -> None:
        super().__init__()
        r = self.registry
        self.sessions = Gauge("microturn_worker_sessions", "Sessions this worker holds model state of",
                              registry=r)
        self.replies = Counter("microturn_worker_replies", "Outputs sent back to media nodes", registry=r)
        self.transport_errors = Counter(
            "microturn_worker_transport_errors",
            "Redis reads or writes that failed (the micro-turns concerned go unanswered)",
            registry=r,
        )
        self.restores = Counter(
            "microturn_worker_restores",
            "Sessions rebuilt from the shared conversation context (moved here from another worker)",
            registry=r,
        )
        self.releases = Counter(
            "microturn_worker_releases",
            "Sessions released without a closing micro-turn (moved away, or gone idle)",
            registry=r,
        )
