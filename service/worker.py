"""The model worker: steps batches of micro-turns with an :class:`InteractionModel`, off the event loop.

:class:`Worker` is what the media node talks to. :class:`InProcessWorker` is the embedded default: the
model lives in this process and steps on one dedicated thread, so the asyncio event loop (signalling,
WebRTC, pacing of the output track) never waits for ML. ``service/remote_worker.py`` implements the same
protocol over Redis, to move the model into separate (GPU) processes without the media node changing; each
such process steps with an :class:`InProcessWorker` of its own, which also rebuilds sessions moved to it
(:meth:`InProcessWorker.restore_session`) and releases those moved away.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from model.base import InteractionModel
from service.metrics import StepMetrics
from service.microturn import ConversationContext, MicroTurn, MicroTurnOutput
from service.stats import percentiles

log = logging.getLogger(__name__)

RECENT_STEPS = 3000  # step times kept for /healthz percentiles: 10 minutes of ticks


class Worker(Protocol):
    async def start(self) -> None:
        """Be ready to step: load and warm up the model."""

    async def step(self, batch: Sequence[MicroTurn]) -> list[MicroTurnOutput]:
        """Step one batch (at most one micro-turn per session); one output per input, same order."""

    async def close(self) -> None: ...

    def describe(self) -> dict[str, Any]:
        """What /healthz shows about the worker."""


class InProcessWorker:
    def __init__(self, model: InteractionModel, metrics: StepMetrics, max_sessions: int) -> None:
        self.model = model
        self.metrics = metrics
        self.max_sessions = max_sessions
        # One thread: model steps are sequential by contract, and torch/pocketsphinx use their own
        # threads inside a step where that pays.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="microturn-worker")
        self._steps = 0
        self._recent_ms: deque[float] = deque(maxlen=RECENT_STEPS)

    async def start(self) -> None:
        t0 = time.perf_counter()
        await asyncio.get_running_loop().run_in_executor(self._executor, self.model.warmup, self.max_sessions)
        log.info("model %s warmed up in %.1f s", self.model.name, time.perf_counter() - t0)

    async def step(self, batch: Sequence[MicroTurn]) -> list[MicroTurnOutput]:
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._step_sync, list(batch))

    def _step_sync(self, batch: list[MicroTurn]) -> list[MicroTurnOutput]:
        t0 = time.perf_counter()
        try:
            outputs = self.model.step(batch)
        except Exception as exc:
            # Models isolate per-session faults themselves (see PerSessionModel); a whole batch failing
            # is a model bug. Every session of the batch gets an error, the node keeps ticking.
            log.exception("model %s failed on a batch of %d", self.model.name, len(batch))
            outputs = [
                MicroTurnOutput(session_id=mt.session_id, index=mt.index, error=f"model step failed: {exc}")
                for mt in batch
            ]
        for mt in batch:
            if mt.closing:
                self.model.close_session(mt.session_id)
        elapsed = time.perf_counter() - t0
        self._steps += 1
        self._recent_ms.append(elapsed * 1000)
        self.metrics.steps.inc()
        self.metrics.step_seconds.observe(elapsed)
        self.metrics.batch_size.observe(len(batch))
        errors = sum(1 for out in outputs if out.error is not None)
        if errors:
            self.metrics.model_errors.inc(errors)
        log.debug("stepped %d micro-turns in %.1f ms", len(batch), elapsed * 1000)
        return outputs

    async def release_session(self, session_id: str) -> None:
        """Release a session that ended without a closing micro-turn (on the model thread, between steps)."""
        await asyncio.get_running_loop().run_in_executor(self._executor, self.model.close_session, session_id)

    async def restore_session(self, session_id: str, context: ConversationContext) -> bool:
        """Rebuild a session that was stepped elsewhere (on the model thread, between steps); ``False`` if
        the model failed to, in which case the session starts afresh rather than on half-restored state."""
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, self._restore_sync, session_id, context
        )

    def _restore_sync(self, session_id: str, context: ConversationContext) -> bool:
        try:
            self.model.restore_session(session_id, context)
        except Exception:
            log.exception("model %s failed to restore session %s", self.model.name, session_id)
            self.model.close_session(session_id)
            return False
        return True

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self.model.close)
        self._executor.shutdown(wait=True)

    def describe(self) -> dict[str, Any]:
        return {
            "mode": "in-process",
            "model": self.model.name,
            "steps": self._steps,
            "step_ms": percentiles(self._recent_ms),
        }
