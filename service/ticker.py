"""The micro-turn clock of a media node: every 200 ms it cuts every session's window and steps them.

All sessions share one tick grid so that one tick's windows form one batch for the worker. A session's
clock starts at the tick boundary before it was created, so its window ``k`` ends exactly on a tick.
Batches are stepped strictly in order; if the worker falls behind, later batches queue up (and count as
deadline misses) rather than being dropped -- a lost micro-turn would desynchronise the model's view
of time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable
from typing import Protocol

from service.metrics import NodeMetrics
from service.microturn import MICRO_TURN, MicroTurn, MicroTurnOutput
from service.worker import Worker

log = logging.getLogger(__name__)

MAX_QUEUED_BATCHES = 25  # 5 s of micro-turns: past that the worker is hopelessly behind; shed load


class TickedSession(Protocol):
    """What the ticker needs of a session."""

    id: str
    epoch: float  # monotonic time of window 0's start, on the tick grid

    def cut(self, index: int, closing: bool) -> MicroTurn: ...

    def apply(self, output: MicroTurnOutput) -> None: ...


class Ticker:
    def __init__(
        self,
        worker: Worker,
        metrics: NodeMetrics,
        period: float = MICRO_TURN,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.worker = worker
        self.metrics = metrics
        self.period = period
        self.clock = clock
        self.origin = clock()
        self._sessions: dict[str, TickedSession] = {}
        self._next_index: dict[str, int] = {}
        self._closing: list[MicroTurn] = []
        self._queue: asyncio.Queue[tuple[float, list[MicroTurn]]] = asyncio.Queue(MAX_QUEUED_BATCHES)
        self._tasks: list[asyncio.Task[None]] = []

    def grid_start(self, t: float) -> float:
        """The tick boundary at or before monotonic time ``t``."""
        return self.origin + math.floor((t - self.origin) / self.period) * self.period

    def add(self, session: TickedSession) -> None:
        self._sessions[session.id] = session
        self._next_index[session.id] = 0

    def remove(self, session: TickedSession) -> None:
        """Stop ticking a session; its last window goes to the worker with ``closing=True``."""
        if self._sessions.pop(session.id, None) is None:
            return
        index = self._next_index.pop(session.id)
        self._closing.append(session.cut(index, closing=True))

    @property
    def session_count(self) -> int:
        return len(self._sessions)

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._tick_loop(), name="microturn-ticks"),
            asyncio.create_task(self._step_loop(), name="microturn-steps"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    async def _tick_loop(self) -> None:
        boundary = self.grid_start(self.clock()) + self.period
        while True:
            await asyncio.sleep(max(0.0, boundary - self.clock()))
            now = self.clock()
            self.metrics.tick_late_seconds.observe(max(0.0, now - boundary))
            self.metrics.ticks.inc()
            for batch in self._cut_due(now):
                if self._queue.full():
                    log.error("worker is %d batches behind: dropping the oldest", self._queue.qsize())
                    self._queue.get_nowait()
                self._queue.put_nowait((boundary, batch))
            # After a stall, skip to the next boundary in the future instead of ticking in a burst; the
            # windows missed meanwhile were cut above, in order.
            boundary = self.grid_start(self.clock()) + self.period

    def _cut_due(self, now: float) -> list[list[MicroTurn]]:
        """Cut every window that has ended; batch ``j`` holds each session's ``j``-th due window."""
        batches: list[list[MicroTurn]] = []
        if self._closing:
            batches.append(self._closing)
            self._closing = []
        for sid, session in self._sessions.items():
            index = self._next_index[sid]
            j = 0
            # A tiny tolerance: the sleep may wake a hair before the boundary in float arithmetic.
            while session.epoch + (index + 1) * self.period <= now + 1e-6:
                if len(batches) <= j:
                    batches.append([])
                batches[j].append(session.cut(index, closing=False))
                index += 1
                j += 1
            self._next_index[sid] = index
        return [batch for batch in batches if batch]

    async def _step_loop(self) -> None:
        while True:
            boundary, batch = await self._queue.get()
            try:
                outputs = await self.worker.step(batch)
            except Exception:
                log.exception("worker failed to step a batch of %d", len(batch))
                continue
            if self.clock() > boundary + self.period:
                self.metrics.deadline_misses.inc()
            for out in outputs:
                session = self._sessions.get(out.session_id)
                if session is not None:
                    session.apply(out)
