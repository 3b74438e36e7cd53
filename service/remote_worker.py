"""The model worker as a separate process behind Redis: the node side and the worker side.

The media node keeps ticking exactly as with the embedded :class:`~service.worker.InProcessWorker`; only the
:class:`~service.worker.Worker` it steps with changes. Every tick the node's :class:`RedisWorkerClient`
sends each session's :class:`MicroTurn` to the worker that owns the session and waits at most one micro-turn
for the :class:`MicroTurnOutput`; ``microturn worker`` processes (:func:`serve_model_worker`, typically one
per GPU) step whatever arrived together as one batch.

- **Transport.** A node sends one stream entry per worker and tick, and a worker answers with one entry per
  node and step: a reader blocked on a stream wakes at its first entry, so one entry per micro-turn had the
  model step a tick's batch in pieces. Audio travels as raw bytes beside the JSON
  (:func:`~service.microturn.pack_batch`); the streams are read on a second, binary connection.

- **Affinity.** A session is placed at its first micro-turn on the live worker with the most free capacity
  (``capacity - sessions`` as the worker last reported it) and stays there: the model's per-session state
  (recogniser, reply being spoken, conversation so far) lives in that worker's memory.
- **Shared conversation context.** The node records each session's conversation as the micro-turns go out
  and the outputs come back (:class:`~service.conversation.ConversationRecord`: both sides' words with
  their session times, the instructions, background calls in flight and background news, and the inputs of
  micro-turns nobody answered) and keeps a copy in Redis, rewritten when it changes. A worker that gets a
  micro-turn of a session it holds no state of, past the session's first micro-turn, reads that copy before
  stepping it: the unanswered inputs are replayed into the micro-turn
  (:meth:`~service.microturn.ConversationContext.replay`) and the model rebuilds the session
  (:meth:`~model.base.InteractionModel.restore_session`). What is lost in a move is what was being heard or
  said at that moment: a half-recognised utterance, the rest of a half-spoken reply.
- **Deadline.** A session whose output is not back ``REPLY_TIMEOUT_S`` after the step began gets an output
  with no action (silent) for that micro-turn: the tick never waits. Late replies are dropped. Both are
  counted (``microturn_worker_timeouts_total``, ``microturn_worker_late_replies_total``) and logged.
- **Heartbeats and failover.** A worker refreshes its key every ``HEARTBEAT_INTERVAL_S``; the key expires
  ``HEARTBEAT_TTL_S`` after the last refresh. A session whose worker's key is gone is placed again at its
  next micro-turn, on another live worker, which continues it from the shared context. Redis errors make
  the step's outputs silent, never an exception.
- **Slow workers.** A worker that leaves micro-turns unanswered in ``SLOW_WORKER_MISSES`` steps in a row is
  *slow* for ``SLOW_WORKER_AVOID_S``: no session is placed on it while another worker can take it, and its
  sessions move to the live non-slow worker with the most free capacity, at most ``MAX_MOVES_PER_STEP``
  per step. (A dead worker is slow too, so its sessions move after ~1 s instead of waiting for its key to
  expire.) A session moved away is released on the old worker at once (a ``release`` entry on its inbox).
- **Rebalancing.** When the free capacities of two usable workers differ by ``REBALANCE_MIN_GAP`` or more
  (a worker joined, say), one session that has been quiet for ``QUIET_S`` (nothing said or heard) moves
  from the fuller to the emptier one, at most one every ``REBALANCE_INTERVAL_S`` per node. New sessions go
  to the emptiest worker anyway. A session moved voluntarily (slow, rebalance) is not moved voluntarily
  again within ``SESSION_MOVE_COOLDOWN_S``: no flapping. Moves are counted by reason
  (``microturn_worker_moves_total``).

Redis key layout (``{P}`` = ``prefix``, ``microturn:`` by default)
----------------------------------------------------------------
=================================== ====== =========================================================
key                                 type   what, and how it is bounded
=================================== ====== =========================================================
``{P}mw:workers``                   zset   Registered worker ids (score: registration time, ms). A
                                           node removes members whose worker key has expired;
                                           PEXPIRE ``HEARTBEAT_TTL_S`` on every heartbeat, so it
                                           vanishes with the last worker.
``{P}mw:worker:{wid}``              hash   ``capacity``, ``sessions`` (how many it holds),
                                           ``model``, ``pid``. PEXPIRE ``HEARTBEAT_TTL_S`` at every
                                           heartbeat: its existence *is* the worker's liveness.
``{P}mw:worker:{wid}:in``           stream For the worker: one entry per node and tick (``reply``: the
                                           node's reply stream key; ``batch`` and ``pcm``: the
                                           micro-turns as ``pack_batch`` packs them, JSON without the
                                           audio and the audio as raw s16le bytes), or ``release`` (a
                                           session id: drop its state, it moved away). MAXLEN ~
                                           ``STREAM_MAXLEN``, PEXPIRE ``STREAM_TTL_S`` on every XADD.
                                           Deleted by the worker when it starts (a new incarnation
                                           starts empty).
``{P}mw:node:{nid}:replies``        stream MicroTurnOutputs for one node, one entry per worker step:
                                           ``outs`` and ``pcm`` (``pack_batch``). MAXLEN ~
                                           ``STREAM_MAXLEN``, PEXPIRE ``STREAM_TTL_S`` on every XADD;
                                           deleted when the node starts/stops.
``{P}mw:session:{sid}``             string The id of the worker owning the session: set when it is
                                           placed or moves, PEXPIRE ``AFFINITY_TTL_S`` every
                                           ``KEY_REFRESH_S``; deleted when it closes.
``{P}mw:session:{sid}:context``     hash   The shared conversation context: ``context`` (JSON of
                                           ``ConversationContext.to_dict``, rewritten before the next
                                           micro-turn goes out when the conversation changed; bounded
                                           by ``service/conversation.py``: 32 messages, 16 news, 32
                                           jobs, 64 unanswered inputs) and ``answered_until`` (at most
                                           ``KEY_REFRESH_S`` old). PEXPIRE ``AFFINITY_TTL_S`` every
                                           ``KEY_REFRESH_S``, placed or not; deleted when it closes.
=================================== ====== =========================================================

Streams are read with plain XREAD (no consumer group): each stream has exactly one reader, and a lost
entry is a lost micro-turn, not a lost job, so there is nothing to acknowledge or reclaim.

Worker process metrics (``microturn worker --metrics-port``): :class:`~service.metrics.WorkerMetrics`.
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
from aiohttp import web
from prometheus_client import Counter
from redis.exceptions import RedisError

from model.base import InteractionModel
from service.conversation import ConversationRecord
from service.jobs import DEFAULT_PREFIX, _redact
from service.metrics import NodeMetrics, WorkerMetrics
from service.microturn import (
    MICRO_TURN,
    Action,
    ConversationContext,
    MicroTurn,
    MicroTurnOutput,
    pack_batch,
    unpack_batch,
)
from service.stats import percentiles
from service.worker import RECENT_STEPS, InProcessWorker

log = logging.getLogger(__name__)

REPLY_TIMEOUT_S = MICRO_TURN  # 200 ms: an output later than one micro-turn is worthless to the tick
HEARTBEAT_INTERVAL_S = 1.0  # how often a worker refreshes its key
HEARTBEAT_TTL_S = 3.0  # a worker silent this long is dead: three missed heartbeats, not one slow one
AFFINITY_TTL_S = 60.0  # a session's placement and context outlive a stalled node by this much, then expire
STREAM_MAXLEN = 1000  # entries kept per stream: 200 s of one node's ticks, far more than any backlog
STREAM_TTL_S = 60.0  # a stream whose writer is gone (node or worker died) expires this long after
CONNECT_TIMEOUT_S = 2.0  # Redis must answer PING within this at start, else refuse to start
READ_BLOCK_MS = 1000  # worker: longest XREAD BLOCK, i.e. how fast it notices its stop event
READ_COUNT = 512  # entries per XREAD: a batch of many sessions plus any backlog
SESSION_IDLE_S = 30.0  # worker: a session not stepped for this long moved or ended without closing
RETRY_S = 1.0  # worker: pause after a Redis error before reading again
LOG_INTERVAL_S = 5.0  # node: at most one warning per this interval about unanswered micro-turns
# node: the live workers and their loads are read this often, not every tick (two round trips each): a
# dead worker is noticed this much later at most, and new sessions are placed on loads this old.
LIVE_REFRESH_S = 0.5
# node: a session's unchanged context and affinity keys get their TTL (and answered_until) refreshed this
# often; a change of context or worker is written at once.
KEY_REFRESH_S = 1.0
# A worker leaving micro-turns unanswered in this many steps in a row (1 s) is slow: a user has heard
# nothing for a second, which one GC pause or scheduling hiccup does not cause.
SLOW_WORKER_MISSES = 5
SLOW_WORKER_AVOID_S = 30.0  # s a slow worker gets no sessions while others can take them
MAX_MOVES_PER_STEP = 2  # sessions moved off slow workers per step: a burst of restores would make the
# receiving worker slow in turn
SESSION_MOVE_COOLDOWN_S = 10.0  # s after a voluntary move before the same session may move voluntarily again
REBALANCE_MIN_GAP = 3  # free capacity two usable workers must differ by for a rebalancing move; one move
# narrows the gap by 2, so a move can never make the reverse move due
REBALANCE_INTERVAL_S = 2.0  # s between rebalancing moves of one node: the workers' reports catch up meanwhile
QUIET_S = 2.0  # s without speech either way before a session may be moved to rebalance load


# XREAD on a binary connection: [(stream, [(entry id, fields)])]. Streams are read raw because their audio is.
_StreamsReply = list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]]


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

    def context(self, session_id: str) -> str:
        return f"{self.prefix}mw:session:{session_id}:context"


@dataclass
class LiveWorker:
    worker_id: str
    capacity: int
    sessions: int
    model: str

    @property
    def free(self) -> int:
        return self.capacity - self.sessions


async def _connect(redis_url: str, *, binary: bool = False) -> aioredis.Redis:
    """A client answering ``str`` (or ``bytes`` with ``binary``, for the streams that carry raw audio)."""
    client = aioredis.Redis.from_url(redis_url, decode_responses=not binary,
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
        self._reply_cursor: bytes | str = "0-0"  # the reply stream is new at start: its first entry is ours
        self._r: aioredis.Redis | None = None
        self._rb: aioredis.Redis | None = None  # binary: reads the reply stream
        self._affinity: dict[str, str] = {}  # session -> worker: a cache of the {P}mw:session:* keys
        self._live: dict[str, LiveWorker] = {}  # as of the last step
        self._records: dict[str, ConversationRecord] = {}  # session -> its conversation
        self._stored: dict[str, _Stored] = {}  # session -> what its keys in Redis hold
        self._misses: dict[str, int] = {}  # worker -> steps in a row with unanswered micro-turns
        self._slow_until: dict[str, float] = {}  # worker -> monotonic time it is avoided until
        self._moved_at: dict[str, float] = {}  # session -> monotonic time of its last voluntary move
        self._busy_at: dict[str, float] = {}  # session -> monotonic time something was last said or heard
        self._releases: list[tuple[str, str]] = []  # (worker, session) moved away: sent with the next step
        self._next_rebalance = 0.0
        self._next_refresh = 0.0  # monotonic time the live workers are read again
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
        self._moves = Counter(
            "microturn_worker_moves",
            "Sessions placed on another model worker: failover (worker gone), slow, rebalance",
            ["reason"],
            registry=metrics.registry,
        )

    async def start(self) -> None:
        self._r = await _connect(self.redis_url)
        self._rb = await _connect(self.redis_url, binary=True)
        await self._r.delete(self._reply_key)
        log.info("model workers: redis at %s, replies on %s", _redact(self.redis_url), self._reply_key)

    async def close(self) -> None:
        if self._r is not None:
            with contextlib.suppress(RedisError, OSError):
                await self._r.delete(self._reply_key)
            await self._r.aclose()
            self._r = None
        if self._rb is not None:
            await self._rb.aclose()
            self._rb = None

    async def step(self, batch: Sequence[MicroTurn]) -> list[MicroTurnOutput]:
        t0 = time.monotonic()
        for mt in batch:
            # Recorded whether or not it reaches a worker: inputs nobody answered are replayed later.
            self._records.setdefault(mt.session_id, ConversationRecord()).sent(mt)
            self._busy_at.setdefault(mt.session_id, t0)
        answered: dict[int, MicroTurnOutput] = {}  # position in batch -> output
        sent_to: dict[int, str] = {}  # position in batch -> the worker it went to
        try:
            if t0 >= self._next_refresh:
                await self._refresh_live_workers()
                self._next_refresh = t0 + LIVE_REFRESH_S
            sent_to = await self._send(batch)
            pending = {(batch[pos].session_id, batch[pos].index): pos for pos in sent_to}
            await self._collect(pending, answered, deadline=t0 + self.reply_timeout_s)
        except (RedisError, OSError) as exc:
            # Redis down or restarting: the tick goes on with silent outputs until it is back. The workers
            # are not to blame for what went missing.
            self._warn(f"model worker transport failed: {str(exc) or type(exc).__name__}")
            sent_to = {}
        unanswered = len(batch) - len(answered)
        if unanswered:
            self._timeouts.inc(unanswered)
            self._timeout_count += unanswered
            self._unanswered += unanswered
            self._warn(f"{self._unanswered} micro-turn(s) got no model output within "
                       f"{self.reply_timeout_s:.3f} s ({len(self._live)} live model worker(s))")
        self._account(sent_to, answered)
        now = time.monotonic()
        for out in answered.values():
            self._records[out.session_id].answered(out)
            if out.action is not Action.SILENT or out.user_speaking or out.transcripts:
                self._busy_at[out.session_id] = now
        for mt in batch:
            if mt.closing:
                self._forget(mt.session_id)
        elapsed = now - t0
        self._steps += 1
        self._recent_ms.append(elapsed * 1000)
        self.metrics.steps.inc()
        self.metrics.step_seconds.observe(elapsed)
        self.metrics.batch_size.observe(len(batch))
        return [answered.get(i) or MicroTurnOutput(session_id=mt.session_id, index=mt.index)
                for i, mt in enumerate(batch)]

    def _forget(self, session_id: str) -> None:
        per_session: tuple[dict[str, Any], ...] = (
            self._affinity, self._records, self._stored, self._moved_at, self._busy_at
        )
        for entries in per_session:
            entries.pop(session_id, None)

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

    @property
    def _raw(self) -> aioredis.Redis:
        assert self._rb is not None, "start() connects before the first step"
        return self._rb

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
            self._misses.pop(wid, None)
            self._slow_until.pop(wid, None)
        for wid in set(live) - set(self._live):
            log.info("model worker %s is live (capacity %d, model %s)", wid, live[wid].capacity,
                     live[wid].model)
        self._live = live

    def _usable(self, now: float) -> dict[str, LiveWorker]:
        """Live workers that are not avoided as slow."""
        return {wid: w for wid, w in self._live.items() if self._slow_until.get(wid, 0.0) <= now}

    def _may_move(self, session_id: str, now: float) -> bool:
        return now - self._moved_at.get(session_id, float("-inf")) >= SESSION_MOVE_COOLDOWN_S

    def _move(self, session_id: str, old: str, new: LiveWorker, reason: str, index: int) -> None:
        new.sessions += 1  # so that the next placement of this step sees it
        if old in self._live:
            self._live[old].sessions -= 1
        # Release it on the old worker: a dead one never reads it (its inbox expires), a live one frees the
        # capacity now and cannot mistake stale state for current if the session ever comes back.
        self._releases.append((old, session_id))
        self._affinity[session_id] = new.worker_id
        self._moves.labels(reason).inc()
        log.warning("session %s moves from model worker %s to %s at micro-turn %d (%s); it continues from "
                    "the shared conversation context", session_id, old, new.worker_id, index, reason)

    async def _placement(self, batch: Sequence[MicroTurn]) -> dict[str, str]:
        """The live worker of each session of the batch; sessions that have none are left out."""
        unknown = [mt.session_id for mt in batch if mt.session_id not in self._affinity]
        if unknown:
            stored = cast(list[str | None], await self._redis.mget([self._keys.session(s) for s in unknown]))
            for sid, wid in zip(unknown, stored, strict=True):
                if wid is not None:
                    self._affinity[sid] = wid
        now = time.monotonic()
        usable = self._usable(now)
        placed: dict[str, str] = {}
        moves = 0
        for mt in batch:
            sid = mt.session_id
            owner = self._affinity.get(sid)
            if owner is not None and owner in self._live:
                target = None
                if owner not in usable and not mt.closing and moves < MAX_MOVES_PER_STEP \
                        and self._may_move(sid, now):
                    target = _emptiest(usable, exclude=owner)
                if target is None:
                    placed[sid] = owner
                    continue
                self._move(sid, owner, target, "slow", mt.index)
                self._moved_at[sid] = now
                moves += 1
                placed[sid] = target.worker_id
                continue
            if mt.closing or not self._live:
                continue  # a closing micro-turn only releases state: a new worker has none to release
            # Every live worker slow: one of them still answers sooner than none.
            best = _emptiest(usable) or _emptiest(self._live)
            if best is None:
                continue  # every worker is full: no answers until one has room (retried every micro-turn)
            if owner is None:
                best.sessions += 1
                self._affinity[sid] = best.worker_id
                log.info("session %s placed on model worker %s", sid, best.worker_id)
            else:
                self._move(sid, owner, best, "failover", mt.index)
            placed[sid] = best.worker_id
        self._rebalance(batch, placed, usable, now)
        return placed

    def _rebalance(self, batch: Sequence[MicroTurn], placed: dict[str, str], usable: dict[str, LiveWorker],
                   now: float) -> None:
        """Move one quiet session from the fullest usable worker to the emptiest, if they differ enough."""
        if now < self._next_rebalance or len(usable) < 2:
            return
        fullest = min(usable.values(), key=lambda w: w.free)
        emptiest = max(usable.values(), key=lambda w: w.free)
        if emptiest.free - fullest.free < REBALANCE_MIN_GAP:
            return
        for mt in batch:
            sid = mt.session_id
            if (placed.get(sid) == fullest.worker_id and not mt.closing and self._may_move(sid, now)
                    and now - self._busy_at.get(sid, now) >= QUIET_S):
                self._move(sid, fullest.worker_id, emptiest, "rebalance", mt.index)
                self._moved_at[sid] = now
                placed[sid] = emptiest.worker_id
                self._next_rebalance = now + REBALANCE_INTERVAL_S
                return

    def _account(self, sent_to: dict[int, str], answered: dict[int, MicroTurnOutput]) -> None:
        """Count each worker's steps with unanswered micro-turns in a row; mark the persistent ones slow."""
        short: dict[str, bool] = {}  # worker -> some micro-turn of this step went unanswered
        for pos, wid in sent_to.items():
            short[wid] = short.get(wid, False) or pos not in answered
        now = time.monotonic()
        for wid, missed in short.items():
            self._misses[wid] = self._misses.get(wid, 0) + 1 if missed else 0
            if self._misses[wid] >= SLOW_WORKER_MISSES and self._slow_until.get(wid, 0.0) <= now:
                self._slow_until[wid] = now + SLOW_WORKER_AVOID_S
                self._misses[wid] = 0
                log.warning("model worker %s left micro-turns unanswered in %d steps in a row: slow, its "
                            "sessions move to other workers and it gets no new ones for %.0f s", wid,
                            SLOW_WORKER_MISSES, SLOW_WORKER_AVOID_S)

    async def _send(self, batch: Sequence[MicroTurn]) -> dict[int, str]:
        """Store changed contexts, send each micro-turn to its worker; returns ``position -> worker``."""
        placed = await self._placement(batch)
        sent_to: dict[int, str] = {}
        by_worker: dict[str, list[MicroTurn]] = {}
        stored: dict[str, _Stored] = {}
        ttl_ms = int(AFFINITY_TTL_S * 1000)
        now = time.monotonic()
        async with self._redis.pipeline(transaction=False) as pipe:
            for pos, mt in enumerate(batch):
                sid = mt.session_id
                wid = placed.get(sid)
                if mt.closing:
                    pipe.delete(self._keys.context(sid), self._keys.session(sid))
                else:
                    # Before the micro-turn: a worker that reads it and needs the context finds it current.
                    # Unchanged keys are only refreshed now and then: per-session commands every tick were
                    # most of the transport's Redis work.
                    record, last = self._records[sid], self._stored.get(sid)
                    changed = last is None or last.version != record.version
                    if changed or last is None or last.owner != wid or now - last.at >= KEY_REFRESH_S:
                        fields: dict[str, str | int] = {"answered_until": record.answered_until}
                        if changed:
                            fields["context"] = json.dumps(record.context().to_dict())
                        pipe.hset(self._keys.context(sid), mapping=fields)  # type: ignore[arg-type]
                        pipe.pexpire(self._keys.context(sid), ttl_ms)
                        if wid is not None:
                            pipe.set(self._keys.session(sid), wid, px=ttl_ms)
                        stored[sid] = _Stored(record.version, wid, now)
                if wid is None:
                    continue
                by_worker.setdefault(wid, []).append(mt)
                sent_to[pos] = wid
            # One entry per worker: a worker blocked on its inbox wakes at the first entry, so one entry per
            # micro-turn would have it step the tick's batch in pieces (measured: 8 sessions as 1 + 7).
            for wid, turns in by_worker.items():
                header, pcm = pack_batch(turns)
                entry: dict[str, str | bytes] = {"reply": self._reply_key, "batch": header, "pcm": pcm}
                self._xadd(pipe, self._keys.inbox(wid), entry)
            for wid, sid in self._releases:
                self._xadd(pipe, self._keys.inbox(wid), {"release": sid})
            await pipe.execute()
        self._releases.clear()
        self._stored.update(stored)
        return sent_to

    @staticmethod
    def _xadd(pipe: Any, inbox: str, fields: dict[str, str | bytes]) -> None:
        pipe.xadd(inbox, fields, maxlen=STREAM_MAXLEN, approximate=True)
        pipe.pexpire(inbox, int(STREAM_TTL_S * 1000))

    async def _collect(
        self, pending: dict[tuple[str, int], int], answered: dict[int, MicroTurnOutput], deadline: float
    ) -> None:
        """Read the reply stream until every pending micro-turn is answered or the deadline passes."""
        while pending:
            block_ms = int((deadline - time.monotonic()) * 1000)
            if block_ms <= 0:
                # One last look without waiting: replies that arrived in time while this event loop was
                # busy elsewhere are not late.
                self._take(await self._raw.xread({self._reply_key: self._reply_cursor}, count=READ_COUNT),
                           pending, answered)
                return
            self._take(await self._raw.xread({self._reply_key: self._reply_cursor}, count=READ_COUNT,
                                             block=block_ms), pending, answered)

    def _take(
        self, reply: Any, pending: dict[tuple[str, int], int], answered: dict[int, MicroTurnOutput]
    ) -> None:
        for _, entries in cast(_StreamsReply, reply):
            for entry_id, fields in entries:
                self._reply_cursor = entry_id
                for d, pcm in unpack_batch(fields[b"outs"], fields[b"pcm"]):
                    out = MicroTurnOutput.from_dict(d, pcm)
                    pos = pending.pop((out.session_id, out.index), None)
                    if pos is None:
                        self._late.inc()  # its micro-turn already went on without it
                        self._late_count += 1
                    else:
                        answered[pos] = out

    def describe(self) -> dict[str, Any]:
        now = time.monotonic()
        info: dict[str, Any] = {
            "mode": "redis",
            "node_id": self.node_id,
            "steps": self._steps,
            "step_ms": percentiles(self._recent_ms),
            "timeouts": self._timeout_count,
            "late_replies": self._late_count,
            "sessions_placed": len(self._affinity),
            "live_workers": [
                {"id": w.worker_id, "model": w.model, "capacity": w.capacity, "sessions": w.sessions,
                 "slow": self._slow_until.get(w.worker_id, 0.0) > now}
                for w in self._live.values()
            ],
        }
        if not self._live:
            info["problem"] = "no live model worker: sessions get no answers (start `microturn worker`)"
        return info


@dataclass
class _Stored:
    """What a session's keys in Redis were last set to."""

    version: int  # ConversationRecord.version of the context stored
    owner: str | None  # the worker in the affinity key (None: not placed then)
    at: float  # monotonic time of the write: TTLs and answered_until are refreshed KEY_REFRESH_S after


def _emptiest(workers: dict[str, LiveWorker], exclude: str | None = None) -> LiveWorker | None:
    """The worker with the most free capacity, if it has any."""
    best = max((w for wid, w in workers.items() if wid != exclude), key=lambda w: w.free, default=None)
    return best if best is not None and best.free > 0 else None


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
    metrics_port: int = 0,
    metrics_host: str = "127.0.0.1",
) -> None:
    """Step the micro-turns sent to ``worker_id`` with ``model`` until ``stop`` is set.

    Registers (and heartbeats) only after the model is warm, so no node places a session on a worker that
    would miss its first deadlines; unregisters on a clean stop, so its nodes fail over at once. With
    ``metrics_port`` (0: none) it serves Prometheus text on ``http://{metrics_host}:{metrics_port}/metrics``.
    """
    stop = stop or asyncio.Event()
    r = await _connect(redis_url)
    rb = await _connect(redis_url, binary=True)
    worker = _ModelWorker(r, rb, Keys(prefix), worker_id, capacity, model)
    metrics_site = None
    try:
        if metrics_port:
            metrics_site = await _serve_metrics(worker.metrics, metrics_host, metrics_port)
        await worker.stepper.start()
        await r.delete(worker.keys.inbox(worker_id))  # a restarted id must not replay its predecessor's input
        await worker.heartbeat()
        heartbeat = asyncio.create_task(worker.heartbeats(stop))
        log.info("model worker %s (%s, capacity %d) serving on %s", worker_id, model.name, capacity,
                 _redact(redis_url))
        try:
            await worker.serve(stop)
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
            with contextlib.suppress(RedisError, OSError):
                async with r.pipeline(transaction=False) as pipe:
                    pipe.delete(worker.keys.worker(worker_id), worker.keys.inbox(worker_id))
                    pipe.zrem(worker.keys.workers, worker_id)
                    await pipe.execute()
    finally:
        await worker.stepper.close()
        await r.aclose()
        await rb.aclose()
        if metrics_site is not None:
            await metrics_site.cleanup()
    log.info("model worker %s stopped", worker_id)


async def _serve_metrics(metrics: WorkerMetrics, host: str, port: int) -> web.AppRunner:
    async def render(request: web.Request) -> web.Response:
        return web.Response(body=metrics.render(), content_type="text/plain", charset="utf-8")

    app = web.Application()
    app.router.add_get("/metrics", render)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    log.info("model worker metrics on http://%s:%d/metrics", host, port)
    return runner


@dataclass
class _Held:
    """A session this worker holds model state of."""

    index: int  # the last micro-turn stepped
    seen: float  # monotonic time it was stepped


class _ModelWorker:
    """One worker's loop: read its inbox, restore sessions new to it, step, reply, release."""

    def __init__(self, r: aioredis.Redis, rb: aioredis.Redis, keys: Keys, worker_id: str, capacity: int,
                 model: InteractionModel) -> None:
        self.r = r
        self.rb = rb  # binary: reads the inbox, whose audio is raw bytes
        self.keys = keys
        self.worker_id = worker_id
        self.capacity = capacity
        self.model_name = model.name
        self.metrics = WorkerMetrics()
        # The stepping, error isolation and session release of the embedded worker, on its own thread.
        self.stepper = InProcessWorker(model, self.metrics, capacity)
        self.sessions: dict[str, _Held] = {}
        self._reported = 0  # the session count in the worker's key

    async def heartbeat(self) -> None:
        ttl_ms = int(HEARTBEAT_TTL_S * 1000)
        key = self.keys.worker(self.worker_id)
        async with self.r.pipeline(transaction=False) as pipe:
            pipe.hset(key, mapping={"capacity": self.capacity, "sessions": len(self.sessions),
                                    "model": self.model_name, "pid": os.getpid()})
            pipe.pexpire(key, ttl_ms)
            pipe.zadd(self.keys.workers, {self.worker_id: int(time.time() * 1000)}, nx=True)
            pipe.pexpire(self.keys.workers, ttl_ms)
            await pipe.execute()
        self._reported = len(self.sessions)

    async def heartbeats(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await asyncio.sleep(HEARTBEAT_INTERVAL_S)
            try:
                await self.heartbeat()
            except (RedisError, OSError) as exc:
                self.metrics.transport_errors.inc()
                log.warning("model worker %s: heartbeat failed: %s", self.worker_id, exc)

    async def serve(self, stop: asyncio.Event) -> None:
        inbox = self.keys.inbox(self.worker_id)
        cursor: bytes | str = "0-0"  # the inbox was deleted at start: all on it is for this incarnation
        while not stop.is_set():
            try:
                reply = cast(_StreamsReply, await self.rb.xread({inbox: cursor}, count=READ_COUNT,
                                                                block=READ_BLOCK_MS))
            except (RedisError, OSError) as exc:
                self.metrics.transport_errors.inc()
                log.warning("model worker %s: reading its input failed: %s", self.worker_id, exc)
                await asyncio.sleep(RETRY_S)
                continue
            received: list[tuple[str, MicroTurn]] = []  # (reply stream, micro-turn), in arrival order
            for _, entries in reply:
                for entry_id, fields in entries:
                    cursor = entry_id
                    if b"release" in fields:
                        # In order: what arrived before the release is stepped first.
                        await self._step_all(received)
                        received = []
                        await self._release(fields[b"release"].decode(), "moved to another worker")
                        continue
                    try:
                        reply_key = fields[b"reply"].decode()
                        received += [(reply_key, MicroTurn.from_dict(d, pcm))
                                     for d, pcm in unpack_batch(fields[b"batch"], fields[b"pcm"])]
                    except (KeyError, ValueError, TypeError) as exc:
                        log.error("model worker %s: dropping malformed entry %s: %s", self.worker_id,
                                  entry_id, exc)
            await self._step_all(received)
            cutoff = time.monotonic() - SESSION_IDLE_S
            for sid in [s for s, held in self.sessions.items() if held.seen < cutoff]:
                # It stopped coming without a closing micro-turn: its node died, or moved it.
                await self._release(sid, f"idle for {SESSION_IDLE_S:.0f} s")
            await self._report_sessions()

    async def _step_all(self, received: list[tuple[str, MicroTurn]]) -> None:
        for batch in _batches(received):
            await self._step_and_reply(batch)

    async def _release(self, session_id: str, why: str) -> None:
        if self.sessions.pop(session_id, None) is None:
            return
        await self.stepper.release_session(session_id)
        self.metrics.releases.inc()
        self.metrics.sessions.set(len(self.sessions))
        log.info("model worker %s: released session %s (%s)", self.worker_id, session_id, why)

    async def _report_sessions(self) -> None:
        # Nodes place new sessions by this count: tell them now, not at the next heartbeat.
        if len(self.sessions) == self._reported:
            return
        try:
            async with self.r.pipeline(transaction=False) as pipe:
                pipe.hset(self.keys.worker(self.worker_id), "sessions", len(self.sessions))
                pipe.pexpire(self.keys.worker(self.worker_id), int(HEARTBEAT_TTL_S * 1000))
                await pipe.execute()
            self._reported = len(self.sessions)
        except (RedisError, OSError) as exc:
            self.metrics.transport_errors.inc()
            log.warning("model worker %s: reporting its sessions failed: %s", self.worker_id, exc)

    async def _restore(self, batch: list[tuple[str, MicroTurn]]) -> None:
        """Rebuild the sessions of ``batch`` this worker has no current state of from the shared context."""
        stale = [mt for _, mt in batch
                 if not mt.closing and _needs_context(self.sessions.get(mt.session_id), mt)]
        if not stale:
            return
        try:
            async with self.r.pipeline(transaction=False) as pipe:
                for mt in stale:
                    pipe.hgetall(self.keys.context(mt.session_id))
                stored = cast(list[dict[str, str]], await pipe.execute())
        except (RedisError, OSError) as exc:
            self.metrics.transport_errors.inc()
            log.warning("model worker %s: reading %d conversation context(s) failed, those sessions go on "
                        "without: %s", self.worker_id, len(stale), exc)
            return
        for mt, fields in zip(stale, stored, strict=True):
            try:
                context = ConversationContext.from_dict(json.loads(fields["context"]))
                context.answered_until = max(context.answered_until, int(fields.get("answered_until", 0)))
            except (KeyError, ValueError, TypeError) as exc:
                log.warning("model worker %s: session %s at micro-turn %d has no usable conversation context "
                            "(%s): it starts afresh", self.worker_id, mt.session_id, mt.index, exc)
                continue
            context.replay(mt)
            if await self.stepper.restore_session(mt.session_id, context):
                self.metrics.restores.inc()
                log.info("model worker %s: session %s continues at micro-turn %d from its conversation "
                         "context (%d messages)", self.worker_id, mt.session_id, mt.index,
                         len(context.messages))

    async def _step_and_reply(self, batch: list[tuple[str, MicroTurn]]) -> None:
        await self._restore(batch)
        outputs = await self.stepper.step([mt for _, mt in batch])
        now = time.monotonic()
        for _, mt in batch:
            if mt.closing:
                self.sessions.pop(mt.session_id, None)  # the stepper released its model state
            else:
                self.sessions[mt.session_id] = _Held(mt.index, now)
        self.metrics.sessions.set(len(self.sessions))
        by_node: dict[str, list[MicroTurnOutput]] = {}  # reply stream -> its outputs
        for (reply_key, _), out in zip(batch, outputs, strict=True):
            by_node.setdefault(reply_key, []).append(out)
        try:
            async with self.r.pipeline(transaction=False) as pipe:
                # One entry per node, for the reason the node sends one entry per worker.
                for reply_key, outs in by_node.items():
                    header, pcm = pack_batch(outs)
                    pipe.xadd(reply_key, {"outs": header, "pcm": pcm}, maxlen=STREAM_MAXLEN, approximate=True)
                    pipe.pexpire(reply_key, int(STREAM_TTL_S * 1000))
                await pipe.execute()
            self.metrics.replies.inc(len(outputs))
        except (RedisError, OSError) as exc:
            # The node answers these micro-turns with no action by itself; the model state is still stepped.
            self.metrics.transport_errors.inc()
            log.warning("model worker: writing %d output(s) failed: %s", len(outputs), exc)
        await self._report_sessions()


def _needs_context(held: _Held | None, mt: MicroTurn) -> bool:
    """Whether ``mt``'s session was stepped elsewhere before: it comes here past its first micro-turn.

    A session held here that skips micro-turns (a send failed, the node shed a batch) keeps its state:
    it missed some audio, which restoring would not bring back. State that went stale because the session
    moved away is gone already: a node moving a session sends a ``release`` to its old worker.
    """
    return held is None and mt.index > 0


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
