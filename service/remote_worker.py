"""The model worker as a separate process behind Redis: the node side and the worker side.

The media node keeps ticking exactly as with the embedded :class:`~service.worker.InProcessWorker`; only the
:class:`~service.worker.Worker` it steps with changes. Every tick the node's :class:`RedisWorkerClient`
sends each session's :class:`MicroTurn` to the worker that owns the session and waits at most one micro-turn
for the :class:`MicroTurnOutput`; ``microturn worker`` processes (:func:`serve_model_worker`, typically one
per GPU) step whatever arrived together as one batch.

- **Affinity.** A session is placed at its first micro-turn on the live worker with the most free capacity
  (``capacity - sessions`` as the worker last reported it) and stays there: the model's per-session state
  (recogniser, reply being spoken, conversation so far) lives in that worker's memory.
- **Deadline.** A session whose output is not back ``REPLY_TIMEOUT_S`` after the step began gets an output
  with no action (silent) for that micro-turn: the tick never waits. Late replies are dropped. Both are
  counted (``microturn_worker_timeouts_total``, ``microturn_worker_late_replies_total``) and logged.
- **Heartbeats and failover.** A worker refreshes its key every ``HEARTBEAT_INTERVAL_S``; the key expires
  ``HEARTBEAT_TTL_S`` after the last refresh. A session whose worker's key is gone is placed again at its
  next micro-turn, on another live worker, which starts it with *fresh* per-session state: the model's
  conversation state (what was said so far, a reply half spoken) is lost, and the micro-turns sent to the
  dead worker until its key expired get no action. The next step is to rebuild that state on the new worker
  from the shared conversation context. Redis errors make the step's outputs silent, never an exception.

Redis key layout (``{P}`` = ``prefix``, ``microturn:`` by default)
----------------------------------------------------------------
============================== ====== ==============================================================
key                            type   what, and how it is bounded
============================== ====== ==============================================================
``{P}mw:workers``              zset   Registered worker ids (score: registration time, ms). A node
                                      removes members whose worker key has expired; PEXPIRE
                                      ``HEARTBEAT_TTL_S`` on every heartbeat, so it vanishes with the
                                      last worker.
``{P}mw:worker:{wid}``         hash   ``capacity``, ``sessions`` (how many it holds), ``model``,
                                      ``pid``. PEXPIRE ``HEARTBEAT_TTL_S`` at every heartbeat: its
                                      existence *is* the worker's liveness.
``{P}mw:worker:{wid}:in``      stream MicroTurns for the worker: ``reply`` (the node's reply stream key)
                                      and ``mt`` (JSON of ``MicroTurn.to_dict``). MAXLEN ~
                                      ``STREAM_MAXLEN``, PEXPIRE ``STREAM_TTL_S`` on every XADD. Deleted
                                      by the worker when it starts (a new incarnation starts empty).
``{P}mw:node:{nid}:replies``   stream MicroTurnOutputs for one node: ``out`` (JSON of
                                      ``MicroTurnOutput.to_dict``). MAXLEN ~ ``STREAM_MAXLEN``, PEXPIRE
                                      ``STREAM_TTL_S`` on every XADD; deleted when the node starts/stops.
``{P}mw:session:{sid}``        string The id of the worker owning the session. PEXPIRE
                                      ``AFFINITY_TTL_S`` at every micro-turn; deleted when it closes.
============================== ====== ==============================================================

Streams are read with plain XREAD (no consumer group): each stream has exactly one reader, and a lost
entry is a lost micro-turn, not a lost job, so there is nothing to acknowledge or reclaim.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import socket
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import redis.asyncio as aioredis
from prometheus_client import Counter
from redis.exceptions import RedisError

from model.base import InteractionModel
from service.jobs import DEFAULT_PREFIX, _redact
from service.metrics import NodeMetrics
from service.microturn import MICRO_TURN, MicroTurn, MicroTurnOutput
from service.stats import percentiles
from service.worker import RECENT_STEPS, InProcessWorker

log = logging.getLogger(__name__)

REPLY_TIMEOUT_S = MICRO_TURN  # 200 ms: an output later than one micro-turn is worthless to the tick
HEARTBEAT_INTERVAL_S = 1.0  # how often a worker refreshes its key
HEARTBEAT_TTL_S = 3.0  # a worker silent this long is dead: three missed heartbeats, not one slow one
AFFINITY_TTL_S = 60.0  # a session's placement outlives a stalled node by this much, then expires
STREAM_MAXLEN = 1000  # entries kept per stream: 200 s of one session, far more than any backlog
STREAM_TTL_S = 60.0  # a stream whose writer is gone (node or worker died) expires this long after
CONNECT_TIMEOUT_S = 2.0  # Redis must answer PING within this at start, else refuse to start
READ_BLOCK_MS = 1000  # worker: longest XREAD BLOCK, i.e. how fast it notices its stop event
READ_COUNT = 512  # entries per XREAD: a batch of many sessions plus any backlog
SESSION_IDLE_S = 30.0  # worker: a session not stepped for this long moved or ended without closing
RETRY_S = 1.0  # worker: pause after a Redis error before reading again
LOG_INTERVAL_S = 5.0  # node: at most one warning per this interval about unanswered micro-turns


_StreamsReply = list[tuple[str, list[tuple[str, dict[str, str]]]]]  # XREAD: [(stream, [(id, fields)])]


class ModelWorkersUnavailable(RuntimeError):
    """The node is configured for Redis model workers but cannot reach Redis."""


@dataclass(frozen=True)
class Keys:
    prefix: str = DEFAULT_PREFIX

    @property
    def workers(self) -> str:
        return f"{self.prefix}mw:workers"

    def worker(self, worker_id: str) -> str:
        return f"{self.prefix}mw:worker:{worker_id}"

    def inbox(self, worker_id: str) -> str:
        return f"{self.prefix}mw:worker:{worker_id}:in"

    def replies(self, node_id: str) -> str:
        return f"{self.prefix}mw:node:{node_id}:replies"

    def session(self, session_id: str) -> str:
        return f"{self.prefix}mw:session:{session_id}"


@dataclass
class LiveWorker:
    worker_id: str
    capacity: int
    sessions: int
    model: str

    @property
    def free(self) -> int:
        return self.capacity - self.sessions


async def _connect(redis_url: str) -> aioredis.Redis:
    client = aioredis.Redis.from_url(redis_url, decode_responses=True,
                                     socket_connect_timeout=CONNECT_TIMEOUT_S)
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT_S):
            await client.ping()
    except (RedisError, OSError, TimeoutError) as exc:
        await client.aclose()
        raise ModelWorkersUnavailable(
            f"Redis for the model workers at {_redact(redis_url)} is unreachable: "
            f"{str(exc) or type(exc).__name__}"
        ) from exc
    return client


# ---------------------------------------------------------------------------------------------------------
# Media node side


class RedisWorkerClient:
    """The :class:`~service.worker.Worker` of a node whose model runs in ``microturn worker`` processes."""

    def __init__(
        self,
        redis_url: str,
        metrics: NodeMetrics,
        *,
        prefix: str = DEFAULT_PREFIX,
        reply_timeout_s: float = REPLY_TIMEOUT_S,
    ) -> None:
        self.redis_url = redis_url
        self.metrics = metrics
        self.reply_timeout_s = reply_timeout_s
        self.node_id = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"
        self._keys = Keys(prefix)
        self._reply_key = self._keys.replies(self.node_id)
        self._reply_cursor = "0-0"  # the reply stream is new at start, so its first entry is ours
        self._r: aioredis.Redis | None = None
        self._affinity: dict[str, str] = {}  # session -> worker: a cache of the {P}mw:session:* keys
        self._live: dict[str, LiveWorker] = {}  # as of the last step
        self._steps = 0
        self._timeout_count = 0
        self._late_count = 0
        self._unanswered = 0  # micro-turns given no action since the last warning
        self._warned_at = float("-inf")
        self._recent_ms: deque[float] = deque(maxlen=RECENT_STEPS)
        # Registered on the node's own registry, next to the in-process worker's metrics.
        self._timeouts = Counter(
            "microturn_worker_timeouts",
            "Micro-turns whose output did not come back from a model worker within one micro-turn",
            registry=metrics.registry,
        )
        self._late = Counter(
            "microturn_worker_late_replies",
            "Model worker outputs that came back after their micro-turn was answered without them",
            registry=metrics.registry,
        )

    async def start(self) -> None:
        self._r = await _connect(self.redis_url)
        await self._r.delete(self._reply_key)
        log.info("model workers: redis at %s, replies on %s", _redact(self.redis_url), self._reply_key)

    async def close(self) -> None:
        if self._r is not None:
            with contextlib.suppress(RedisError, OSError):
                await self._r.delete(self._reply_key)
            await self._r.aclose()
            self._r = None

    async def step(self, batch: Sequence[MicroTurn]) -> list[MicroTurnOutput]:
        t0 = time.monotonic()
        answered: dict[int, MicroTurnOutput] = {}  # position in batch -> output
        try:
            await self._refresh_live_workers()
            pending = await self._send(batch)
            await self._collect(pending, answered, deadline=t0 + self.reply_timeout_s)
        except (RedisError, OSError) as exc:
            # Redis down or restarting: the tick goes on with silent outputs until it is back.
            self._warn(f"model worker transport failed: {str(exc) or type(exc).__name__}")
        unanswered = len(batch) - len(answered)
        if unanswered:
            self._timeouts.inc(unanswered)
            self._timeout_count += unanswered
            self._unanswered += unanswered
            self._warn(f"{self._unanswered} micro-turn(s) got no model output within "
                       f"{self.reply_timeout_s:.3f} s ({len(self._live)} live model worker(s))")
        elapsed = time.monotonic() - t0
        self._steps += 1
        self._recent_ms.append(elapsed * 1000)
        self.metrics.step_seconds.observe(elapsed)
        self.metrics.batch_size.observe(len(batch))
        return [answered.get(i) or MicroTurnOutput(session_id=mt.session_id, index=mt.index)
                for i, mt in enumerate(batch)]

    def _warn(self, message: str) -> None:
        # Every tick of an outage would log otherwise: five lines a second say nothing more than one.
        now = time.monotonic()
        if now - self._warned_at >= LOG_INTERVAL_S:
            log.warning("%s", message)
            self._warned_at = now
            self._unanswered = 0

    @property
    def _redis(self) -> aioredis.Redis:
        assert self._r is not None, "start() connects before the first step"
        return self._r

    async def _refresh_live_workers(self) -> None:
        worker_ids = cast(list[str], await self._redis.zrange(self._keys.workers, 0, -1))
        async with self._redis.pipeline(transaction=False) as pipe:
            for wid in worker_ids:
                pipe.hgetall(self._keys.worker(wid))
            infos = cast(list[dict[str, str]], await pipe.execute()) if worker_ids else []
        live: dict[str, LiveWorker] = {}
        gone: list[str] = []
        for wid, info in zip(worker_ids, infos, strict=True):
            if "capacity" not in info:
                gone.append(wid)  # the key expired: no heartbeat for HEARTBEAT_TTL_S
                continue
            live[wid] = LiveWorker(wid, int(info["capacity"]), int(info["sessions"]), info.get("model", "?"))
        if gone:
            await self._redis.zrem(self._keys.workers, *gone)
        for wid in set(self._live) - set(live):
            log.warning("model worker %s is gone (no heartbeat for %.0f s)", wid, HEARTBEAT_TTL_S)
        for wid in set(live) - set(self._live):
            log.info("model worker %s is live (capacity %d, model %s)", wid, live[wid].capacity,
                     live[wid].model)
        self._live = live

    async def _placement(self, batch: Sequence[MicroTurn]) -> dict[str, str]:
        """The live worker of each session of the batch; sessions that have none are left out."""
        unknown = [mt.session_id for mt in batch if mt.session_id not in self._affinity]
        if unknown:
            stored = cast(list[str | None], await self._redis.mget([self._keys.session(s) for s in unknown]))
            for sid, wid in zip(unknown, stored, strict=True):
                if wid is not None:
                    self._affinity[sid] = wid
        placed: dict[str, str] = {}
        for mt in batch:
            sid = mt.session_id
            owner = self._affinity.get(sid)
            if owner is not None and owner in self._live:
                placed[sid] = owner
                continue
            if mt.closing or not self._live:
                continue  # a closing micro-turn only releases state: a new worker has none to release
            best = max(self._live.values(), key=lambda w: w.free)
            if best.free <= 0:
                continue  # every worker is full: no answers until one has room (retried every micro-turn)
            best.sessions += 1  # so that the next new session of this batch sees it
            if owner is None:
                log.info("session %s placed on model worker %s", sid, best.worker_id)
            else:
                log.warning("session %s moves from model worker %s to %s at micro-turn %d: its model state "
                            "starts afresh", sid, owner, best.worker_id, mt.index)
            self._affinity[sid] = placed[sid] = best.worker_id
        return placed

    async def _send(self, batch: Sequence[MicroTurn]) -> dict[tuple[str, int], int]:
        """Send each micro-turn to its worker; returns ``(session, index) -> position`` of those sent."""
        placed = await self._placement(batch)
        pending: dict[tuple[str, int], int] = {}
        async with self._redis.pipeline(transaction=False) as pipe:
            for pos, mt in enumerate(batch):
                wid = placed.get(mt.session_id)
                if wid is None:
                    continue
                inbox = self._keys.inbox(wid)
                pipe.xadd(inbox, {"reply": self._reply_key, "mt": json.dumps(mt.to_dict())},
                          maxlen=STREAM_MAXLEN, approximate=True)
                pipe.pexpire(inbox, int(STREAM_TTL_S * 1000))
                if mt.closing:
                    pipe.delete(self._keys.session(mt.session_id))
                else:
                    pipe.set(self._keys.session(mt.session_id), wid, px=int(AFFINITY_TTL_S * 1000))
                pending[(mt.session_id, mt.index)] = pos
            if pending:
                await pipe.execute()
        for mt in batch:
            if mt.closing:
                self._affinity.pop(mt.session_id, None)
        return pending

    async def _collect(
        self, pending: dict[tuple[str, int], int], answered: dict[int, MicroTurnOutput], deadline: float
    ) -> None:
        """Read the reply stream until every pending micro-turn is answered or the deadline passes."""
        while pending:
            block_ms = int((deadline - time.monotonic()) * 1000)
            if block_ms <= 0:
                return
            reply = cast(_StreamsReply, await self._redis.xread(
                {self._reply_key: self._reply_cursor}, count=READ_COUNT, block=block_ms))
            for _, entries in reply:
                for entry_id, fields in entries:
                    self._reply_cursor = entry_id
                    out = MicroTurnOutput.from_dict(json.loads(fields["out"]))
                    pos = pending.pop((out.session_id, out.index), None)
                    if pos is None:
                        self._late.inc()  # its micro-turn already went on without it
                        self._late_count += 1
                    else:
                        answered[pos] = out

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "mode": "redis",
            "node_id": self.node_id,
            "steps": self._steps,
            "step_ms": percentiles(self._recent_ms),
            "timeouts": self._timeout_count,
            "late_replies": self._late_count,
            "sessions_placed": len(self._affinity),
            "live_workers": [
                {"id": w.worker_id, "model": w.model, "capacity": w.capacity, "sessions": w.sessions}
                for w in self._live.values()
            ],
        }
        if not self._live:
            info["problem"] = "no live model worker: sessions get no answers (start `microturn worker`)"
        return info


# ---------------------------------------------------------------------------------------------------------
# Worker side


async def serve_model_worker(
    redis_url: str,
    model: InteractionModel,
    worker_id: str,
    capacity: int,
    *,
    prefix: str = DEFAULT_PREFIX,
    stop: asyncio.Event | None = None,
) -> None:
    """Step the micro-turns sent to ``worker_id`` with ``model`` until ``stop`` is set.

    Registers (and heartbeats) only after the model is warm, so no node places a session on a worker that
    would miss its first deadlines; unregisters on a clean stop, so its nodes fail over at once.
    """
    stop = stop or asyncio.Event()
    keys = Keys(prefix)
    r = await _connect(redis_url)
    # The stepping, error isolation and session release of the embedded worker, on its own thread.
    stepper = InProcessWorker(model, NodeMetrics(), capacity)
    sessions: dict[str, float] = {}  # session -> monotonic time it was last stepped here
    try:
        await stepper.start()
        await r.delete(keys.inbox(worker_id))  # a restarted worker id must not replay its predecessor's input
        await _heartbeat(r, keys, worker_id, capacity, model.name, len(sessions))
        heartbeat = asyncio.create_task(_heartbeats(r, keys, worker_id, capacity, model.name, sessions, stop))
        log.info("model worker %s (%s, capacity %d) serving on %s", worker_id, model.name, capacity,
                 _redact(redis_url))
        try:
            await _serve(r, keys, worker_id, stepper, sessions, stop)
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
            with contextlib.suppress(RedisError, OSError):
                async with r.pipeline(transaction=False) as pipe:
                    pipe.delete(keys.worker(worker_id), keys.inbox(worker_id))
                    pipe.zrem(keys.workers, worker_id)
                    await pipe.execute()
    finally:
        await stepper.close()
        await r.aclose()
    log.info("model worker %s stopped", worker_id)


async def _heartbeat(r: aioredis.Redis, keys: Keys, worker_id: str, capacity: int, model: str,
                     sessions: int) -> None:
    ttl_ms = int(HEARTBEAT_TTL_S * 1000)
    async with r.pipeline(transaction=False) as pipe:
        pipe.hset(keys.worker(worker_id), mapping={"capacity": capacity, "sessions": sessions, "model": model,
                                                   "pid": os.getpid()})
        pipe.pexpire(keys.worker(worker_id), ttl_ms)
        pipe.zadd(keys.workers, {worker_id: int(time.time() * 1000)}, nx=True)
        pipe.pexpire(keys.workers, ttl_ms)
        await pipe.execute()


async def _heartbeats(r: aioredis.Redis, keys: Keys, worker_id: str, capacity: int, model: str,
                      sessions: dict[str, float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        await asyncio.sleep(HEARTBEAT_INTERVAL_S)
        try:
            await _heartbeat(r, keys, worker_id, capacity, model, len(sessions))
        except (RedisError, OSError) as exc:
            log.warning("model worker %s: heartbeat failed: %s", worker_id, exc)


async def _serve(r: aioredis.Redis, keys: Keys, worker_id: str, stepper: InProcessWorker,
                 sessions: dict[str, float], stop: asyncio.Event) -> None:
    inbox = keys.inbox(worker_id)
    cursor = "0-0"  # the inbox was deleted at start: everything on it is for this incarnation
    while not stop.is_set():
        try:
            reply = cast(_StreamsReply, await r.xread({inbox: cursor}, count=READ_COUNT, block=READ_BLOCK_MS))
        except (RedisError, OSError) as exc:
            log.warning("model worker %s: reading its input failed: %s", worker_id, exc)
            await asyncio.sleep(RETRY_S)
            continue
        received: list[tuple[str, MicroTurn]] = []  # (reply stream, micro-turn), in arrival order
        for _, entries in reply:
            for entry_id, fields in entries:
                cursor = entry_id
                try:
                    received.append((fields["reply"], MicroTurn.from_dict(json.loads(fields["mt"]))))
                except (KeyError, ValueError, TypeError) as exc:
                    log.error("model worker %s: dropping malformed entry %s: %s", worker_id, entry_id, exc)
        for batch in _batches(received):
            await _step_and_reply(r, keys, worker_id, stepper, batch, sessions)
        await _release_idle(stepper, sessions)


def _batches(received: list[tuple[str, MicroTurn]]) -> list[list[tuple[str, MicroTurn]]]:
    """Split what arrived together into batches with at most one micro-turn per session, keeping order.

    Normally that is one batch (one tick of every node); a backlog after a slow step holds several
    micro-turns of a session, which the model must see one step at a time, in order.
    """
    batches: list[list[tuple[str, MicroTurn]]] = []
    depth: dict[str, int] = {}
    for item in received:
        j = depth.get(item[1].session_id, 0)
        depth[item[1].session_id] = j + 1
        if len(batches) <= j:
            batches.append([])
        batches[j].append(item)
    return batches


async def _step_and_reply(r: aioredis.Redis, keys: Keys, worker_id: str, stepper: InProcessWorker,
                          batch: list[tuple[str, MicroTurn]], sessions: dict[str, float]) -> None:
    outputs = await stepper.step([mt for _, mt in batch])
    now = time.monotonic()
    held = len(sessions)
    for _, mt in batch:
        if mt.closing:
            sessions.pop(mt.session_id, None)  # the stepper released its model state
        else:
            sessions[mt.session_id] = now
    try:
        async with r.pipeline(transaction=False) as pipe:
            if len(sessions) != held:
                # Nodes place new sessions by this count: tell them now, not at the next heartbeat.
                pipe.hset(keys.worker(worker_id), "sessions", len(sessions))
                pipe.pexpire(keys.worker(worker_id), int(HEARTBEAT_TTL_S * 1000))
            for (reply_key, _), out in zip(batch, outputs, strict=True):
                pipe.xadd(reply_key, {"out": json.dumps(out.to_dict())}, maxlen=STREAM_MAXLEN,
                          approximate=True)
                pipe.pexpire(reply_key, int(STREAM_TTL_S * 1000))
            await pipe.execute()
    except (RedisError, OSError) as exc:
        # The node answers these micro-turns with no action by itself; the model state is still stepped.
        log.warning("model worker: writing %d output(s) failed: %s", len(outputs), exc)


async def _release_idle(stepper: InProcessWorker, sessions: dict[str, float]) -> None:
    """Forget sessions that stopped coming without a closing micro-turn (their node died, or moved them)."""
    cutoff = time.monotonic() - SESSION_IDLE_S
    for sid in [s for s, seen in sessions.items() if seen < cutoff]:
        del sessions[sid]
        await stepper.release_session(sid)
