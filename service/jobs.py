"""Background jobs: slow work (LLM reasoning, tool use) queued off the 200 ms tick, results streamed back.

The micro-turn model must answer every 200 ms, so anything that takes longer is *submitted* as a
:class:`Job` and run by a worker; the requester (the media node) follows the updates (:class:`JobUpdate`)
of its session's jobs. Two implementations share one interface, :class:`JobQueue`, and one set of
semantics:

- :class:`RedisJobQueue` — Redis Streams with a consumer group, for workers in other processes/machines.
- :class:`InProcessJobQueue` — asyncio only, the embedded default when no Redis is configured or reachable.

:func:`open_job_queue` picks one; :func:`serve_jobs` is the worker loop around a handler.

Lifecycle
---------
``queued → running → partial … → done | failed | cancelled``. ``done``, ``failed`` and ``cancelled`` are
final: once a job has one, every later transition is refused (so a late worker cannot resurrect a cancelled
or timed-out job). A reclaimed job (its worker died) goes ``running`` again with ``attempt`` + 1 and its
partials start over; updates of an older attempt are refused from then on (fencing by attempt number).
Every update carries ``seq``, 1, 2, 3 … per job, in the order they were applied.

- **Deadline**: a job must end by ``created_ms + deadline_s`` (queueing time included: an answer that comes
  too late is worthless in a conversation). The worker gives up at the deadline and publishes ``failed``;
  if no worker does, the requester's :meth:`JobQueue.updates` reader (or :meth:`JobQueue.status`) marks it
  ``failed`` ``DEADLINE_GRACE_MS`` later. Deadlines are wall-clock times, so the grace also absorbs clock
  skew between machines (keep them NTP-synced).
- **Cancel**: :meth:`JobQueue.cancel` makes the job ``cancelled`` at once; a worker notices between
  partials (the publish is refused) or within ``CANCEL_POLL_S`` while the handler is busy, and stops; a
  queued job that was cancelled is skipped and acked when claimed.
- **Crashed workers**: a claimed job stays pending until acked; a worker extends its lease every
  ``claim_idle_ms / 3`` while it runs, so a job idle for ``claim_idle_ms`` belongs to a dead worker and the
  next :meth:`JobQueue.claim` takes it over (XAUTOCLAIM). After ``max_attempts`` claims it fails, so a
  job that kills its workers cannot cycle forever.
- **Bad input**: :meth:`JobQueue.submit` rejects malformed or oversized payloads (:class:`JobRejected`);
  a malformed entry someone else wrote on the stream is logged, acked and, if it names a job and session,
  recorded as ``failed`` for that session, so it can never block the queue.

Redis key layout (``{P}`` = ``JobQueueConfig.prefix``, ``microturn:`` by default)
------------------------------------------------------------------------------------
============================== ====== ==============================================================
key                            type   what, and how it is bounded
============================== ====== ==============================================================
``{P}jobs``                    stream The queue; consumer group ``workers``. An entry is deleted when
                                      acked (XACK + XDEL); MINID trimming at every submit drops entries
                                      older than ``max_deadline_s`` + grace (their jobs are failed by
                                      then); submit refuses with :class:`QueueFull` at ``max_queued``
                                      entries. No TTL: the key holds the consumer group.
``{P}job:{job_id}``            hash   ``status``, ``session_id``, ``deadline_ms``, ``seq``,
                                      ``attempts``. PEXPIRE on every write: until the deadline + grace
                                      + ``result_ttl_s`` while live, ``result_ttl_s`` once final.
``{P}session:{sid}:updates``   stream JobUpdates of all the session's jobs, read with XREAD BLOCK.
                                      MAXLEN ~ ``session_updates_maxlen`` and PEXPIRE
                                      ``session_ttl_s`` on every XADD.
``{P}session:{sid}:deadlines`` zset   The session's live jobs by deadline (ms), for the requester-side
                                      deadline check. Members leave on their final update; PEXPIRE to
                                      the latest member's deadline + grace + ``result_ttl_s``.
============================== ====== ==============================================================

``~`` trimming is approximate: a stream may exceed its bound by one node (``stream-node-max-entries``,
100 by default). All multi-key changes happen in Lua scripts, so a status, its update and its TTLs change
atomically. Needs Redis ≥ 6.2 (XAUTOCLAIM, MINID); single-instance (the scripts touch keys of several
hash slots).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import time
import uuid
from collections import deque
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol, cast
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "microturn:"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"  # probed when REDIS_URL is not set
MAX_PAYLOAD_BYTES = 256 * 1024  # 256 KiB of JSON per job payload and per update body
MAX_NAME_CHARS = 128  # session ids and job kinds: they become parts of Redis keys and log lines
DEFAULT_DEADLINE_S = 60.0
MAX_DEADLINE_S = 600.0  # 10 min: longer than any conversation waits for a background answer
MAX_QUEUED_JOBS = 1000  # queued + running jobs before submit refuses (backpressure, bounds memory)
CLAIM_IDLE_MS = 30_000  # a claimed job idle this long (no lease extension) belongs to a dead worker
MAX_ATTEMPTS = 3  # claims of one job before it fails: a job that crashes every worker must not cycle
DEADLINE_GRACE_MS = 1000  # requester waits this long past a deadline for the worker's own verdict
RESULT_TTL_S = 600.0  # 10 min: a final status stays readable this long
SESSION_TTL_S = 3600.0  # 1 h after a session's last update its update stream expires
SESSION_UPDATES_MAXLEN = 1000  # updates kept per session: far more than a reader falls behind by
CONNECT_TIMEOUT_S = 2.0  # an explicit REDIS_URL must answer PING within this, else refuse to start
PROBE_TIMEOUT_S = 0.3  # the default-URL probe: local Redis answers in < 1 ms, so absent means absent
UPDATES_BLOCK_MS = 1000  # longest XREAD BLOCK of an updates reader: it re-checks deadlines this often
RECLAIM_POLL_MS = 1000  # a waiting Redis claim looks for dead workers' jobs at least this often
UPDATES_BATCH = 100  # updates read per XREAD
CLAIM_BLOCK_MS = 1000  # serve_jobs: longest wait for work, i.e. how fast it notices its stop event
CANCEL_POLL_S = 0.2  # a running job notices cancellation within one micro-turn even between partials
CANCEL_GRACE_S = 2.0  # a cancelled handler gets this long to unwind before it is abandoned
MAX_ERROR_CHARS = 2000  # a handler's error message in its failed update (a traceback-sized message fits)
RETRY_S = 1.0  # serve_jobs: pause after a queue error (e.g. Redis restarting) before claiming again
PURGE_INTERVAL_MS = 1000  # in-process: how often expired records are swept (each sweep is O(records))
GROUP = "workers"
MIN_REDIS_VERSION = (6, 2)


class JobStatus(StrEnum):
    """Where a job is in its lifecycle (see the module docstring); the last three are final."""

    QUEUED = "queued"
    RUNNING = "running"
    PARTIAL = "partial"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        return self in _FINAL


_FINAL = frozenset({JobStatus.DONE, JobStatus.FAILED, JobStatus.CANCELLED})
_WORKER_STATUSES = frozenset({JobStatus.PARTIAL, JobStatus.DONE, JobStatus.FAILED})


class JobRejected(ValueError):
    """A job or update the queue refuses: malformed, oversized or out of range."""


class QueueFull(RuntimeError):
    """``max_queued`` jobs are queued or running: the requester should back off (or answer without)."""


class JobQueueUnavailable(RuntimeError):
    """``REDIS_URL`` was given but Redis cannot be used: the service must not start on a broken queue."""


@dataclass
class Job:
    id: str
    session_id: str
    kind: str  # what to do, e.g. "llm.answer"; the handler dispatches on it
    payload: dict[str, Any]  # JSON: the worker sees what json.loads gives back (tuples become lists)
    created_ms: int  # Unix epoch ms (wall clock) at submit
    deadline_s: float  # the job must end by created_ms + deadline_s, queueing time included
    attempt: int = 0  # set by claim: 1 for the first worker, +1 for each reclaim after a worker died
    consumer: str = ""  # set by claim: the worker that holds the job
    receipt: str = field(default="", repr=False)  # set by claim: the queue's handle for ack (entry id)

    @property
    def deadline_ms(self) -> int:
        return self.created_ms + round(self.deadline_s * 1000)


@dataclass(frozen=True)
class JobUpdate:
    job_id: str
    session_id: str
    seq: int  # 1, 2, 3 … per job, in the order applied
    status: JobStatus
    text: str | None
    data: dict[str, Any] | None
    unix_ms: int  # wall clock when applied (not the session clock of MicroTurn.t_ms)


@dataclass(frozen=True)
class JobPartial:
    """A partial result with structured data (a tool call, a timer to set), for handlers that need more
    than text; a handler yields plain ``str`` for text alone."""

    text: str | None = None
    data: dict[str, Any] | None = None


# A worker's code for one job: yields its partials in order; returning means done, raising means failed.
JobHandler = Callable[[Job], AsyncGenerator[str | JobPartial, None]]


@dataclass(frozen=True)
class JobQueueConfig:
    prefix: str = DEFAULT_PREFIX  # Redis key prefix; tests use a unique one each
    max_payload_bytes: int = MAX_PAYLOAD_BYTES
    default_deadline_s: float = DEFAULT_DEADLINE_S
    max_deadline_s: float = MAX_DEADLINE_S
    max_queued: int = MAX_QUEUED_JOBS
    claim_idle_ms: int = CLAIM_IDLE_MS
    max_attempts: int = MAX_ATTEMPTS
    deadline_grace_ms: int = DEADLINE_GRACE_MS
    result_ttl_s: float = RESULT_TTL_S
    session_ttl_s: float = SESSION_TTL_S
    session_updates_maxlen: int = SESSION_UPDATES_MAXLEN

    def __post_init__(self) -> None:
        # A session's update stream must outlive any job of the session, or a reader could miss a verdict.
        if self.session_ttl_s * 1000 < self.max_deadline_s * 1000 + self.deadline_grace_ms:
            raise ValueError("session_ttl_s must exceed max_deadline_s plus the deadline grace")
        if not 0 < self.default_deadline_s <= self.max_deadline_s:
            raise ValueError("default_deadline_s must be in (0, max_deadline_s]")
        if min(self.max_payload_bytes, self.max_queued, self.claim_idle_ms, self.max_attempts,
               self.session_updates_maxlen) < 1 or self.result_ttl_s <= 0 or self.max_deadline_s <= 0:
            raise ValueError(f"job queue limits must be positive: {self}")

    @property
    def retention_ms(self) -> int:
        """How long a job entry can matter: after this its job is past deadline and grace, i.e. failed."""
        return round(self.max_deadline_s * 1000) + self.deadline_grace_ms

    def live_ttl_ms(self, deadline_ms: int, now_ms: int) -> int:
        """TTL of a live job's record: through its deadline and grace, then readable for result_ttl_s."""
        return max(deadline_ms - now_ms, 0) + self.deadline_grace_ms + self.result_ttl_ms

    @property
    def result_ttl_ms(self) -> int:
        return round(self.result_ttl_s * 1000)

    @property
    def session_ttl_ms(self) -> int:
        return round(self.session_ttl_s * 1000)


class JobQueue(Protocol):
    """Requester side (media node): submit, cancel, status, updates. Worker side: claim, publish, extend,
    is_cancelled, ack — usually through :func:`serve_jobs`."""

    mode: str  # "redis" | "in-process"
    config: JobQueueConfig

    async def submit(
        self, session_id: str, kind: str, payload: dict[str, Any], deadline_s: float | None = None
    ) -> Job:
        """Queue a job (``deadline_s`` None: the config's default). Raises :class:`JobRejected` for bad
        input, :class:`QueueFull` under backpressure."""

    async def cancel(self, job_id: str) -> bool:
        """Cancel a job that is not final yet; False if it already was (or is unknown/expired)."""

    def updates(self, session_id: str) -> AsyncGenerator[JobUpdate, None]:
        """Every update of the session's jobs, oldest retained first, then live; never ends by itself
        (close it, or cancel its task) and rides out Redis outages. Also fails the session's jobs that
        passed their deadline (plus grace) with no final update."""

    async def status(self, job_id: str) -> JobStatus | None:
        """The job's status (``failed`` once past deadline and grace), None if unknown or expired."""

    async def claim(self, consumer: str, block_ms: int) -> Job | None:
        """Take the next job for ``consumer`` (a name unique per worker), reclaiming a dead worker's job
        first; publishes ``running``. Waits up to ``block_ms`` (0: return at once); None if no work."""

    async def publish(
        self, job: Job, status: JobStatus, text: str | None = None, data: dict[str, Any] | None = None
    ) -> bool:
        """A worker's ``partial``, ``done`` or ``failed``. False when refused: the job is final (cancelled,
        timed out) or was reclaimed by another worker — stop working on it."""

    async def extend(self, job: Job) -> bool:
        """Renew the lease on a running job; False if another worker has taken it over."""

    async def is_cancelled(self, job_id: str) -> bool: ...

    async def ack(self, job: Job) -> None:
        """Remove the job from the queue; a no-op unless ``job.consumer`` still holds it."""

    async def close(self) -> None: ...


# ---------------------------------------------------------------------------------------------------------
# Shared: validation and serialisation


def _unix_ms() -> int:
    return time.time_ns() // 1_000_000


def _dumps(obj: object) -> str:
    # allow_nan=False: NaN/Infinity are not JSON and other languages' parsers reject them.
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _check_name(what: str, value: object) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_NAME_CHARS:
        raise JobRejected(f"{what} must be a non-empty string of at most {MAX_NAME_CHARS} characters")
    return value


def _new_job(config: JobQueueConfig, session_id: str, kind: str, payload: dict[str, Any],
             deadline_s: float | None) -> tuple[Job, str]:
    """Validate a submission; returns the job and its JSON entry."""
    if deadline_s is None:
        deadline_s = config.default_deadline_s
    _check_name("session_id", session_id)
    _check_name("kind", kind)
    if not isinstance(payload, dict):
        raise JobRejected(f"payload must be a dict, got {type(payload).__name__}")
    if not 0 < deadline_s <= config.max_deadline_s:
        raise JobRejected(f"deadline_s must be in (0, {config.max_deadline_s}] s, got {deadline_s}")
    try:
        size = len(_dumps(payload).encode())
    except (TypeError, ValueError) as exc:
        raise JobRejected(f"payload is not JSON-serialisable: {exc}") from exc
    if size > config.max_payload_bytes:
        raise JobRejected(f"payload is {size} bytes of JSON, more than the {config.max_payload_bytes} "
                          "allowed")
    job = Job(uuid.uuid4().hex, session_id, kind, payload, _unix_ms(), float(deadline_s))
    entry = _dumps({"id": job.id, "session_id": session_id, "kind": kind, "payload": payload,
                    "created_ms": job.created_ms, "deadline_s": job.deadline_s})
    return job, entry


def _parse_job(raw: object) -> Job:
    """A job entry from the queue; raises JobRejected naming what is wrong."""
    if not isinstance(raw, str):
        raise JobRejected("entry has no 'job' field")
    try:
        d = json.loads(raw)
    except ValueError as exc:
        raise JobRejected(f"entry is not JSON: {exc}") from exc
    if not isinstance(d, dict):
        raise JobRejected("entry is not a JSON object")
    try:
        job = Job(_check_name("id", d["id"]), _check_name("session_id", d["session_id"]),
                  _check_name("kind", d["kind"]), d["payload"], d["created_ms"], d["deadline_s"])
    except KeyError as exc:
        raise JobRejected(f"entry lacks {exc}") from exc
    if not isinstance(job.payload, dict):
        raise JobRejected("entry's payload is not an object")
    if not isinstance(job.created_ms, int) or not isinstance(job.deadline_s, int | float):
        raise JobRejected("entry's created_ms/deadline_s are not numbers")
    return job


def _job_ref(raw: object) -> tuple[str, str] | None:
    """(job id, session id) of a malformed entry when it names both, so its requester can learn it failed."""
    try:
        d = json.loads(raw) if isinstance(raw, str) else None
        if isinstance(d, dict):
            return _check_name("id", d.get("id")), _check_name("session_id", d.get("session_id"))
    except ValueError:  # not JSON, or JobRejected (a ValueError) for bad names
        pass
    return None


def _body(config: JobQueueConfig, text: str | None, data: dict[str, Any] | None) -> str:
    try:
        body = _dumps({"text": text, "data": data})
    except (TypeError, ValueError) as exc:
        raise JobRejected(f"update is not JSON-serialisable: {exc}") from exc
    if len(body.encode()) > config.max_payload_bytes:
        raise JobRejected(f"update is {len(body.encode())} bytes, more than the {config.max_payload_bytes} "
                          "allowed")
    return body


# ---------------------------------------------------------------------------------------------------------
# Redis

# Shared by the scripts below: apply a new status and append its update to the session's stream.
_LUA_EMIT = """
local FINAL = {done = true, failed = true, cancelled = true}
local function emit(job_key, updates_key, job_id, status, now_ms, body, maxlen, session_ttl_ms)
  local seq = redis.call('HINCRBY', job_key, 'seq', 1)
  redis.call('HSET', job_key, 'status', status)
  redis.call('XADD', updates_key, 'MAXLEN', '~', maxlen, '*',
             'job_id', job_id, 'seq', seq, 'status', status, 'unix_ms', now_ms, 'body', body)
  redis.call('PEXPIRE', updates_key, session_ttl_ms)
end
"""

# KEYS: jobs stream, job hash, session updates, session deadlines.
# ARGV: entry JSON, job id, session id, deadline_ms, now_ms, max_queued, retention_ms, live ttl ms,
#       updates maxlen, session ttl ms, queued-update body.  Returns 1, or 0 when the queue is full.
_LUA_SUBMIT = _LUA_EMIT + """
local t = redis.call('TIME')  -- entry ids are server time, so trim by server time, not ours
local server_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('XTRIM', KEYS[1], 'MINID', '~', server_ms - tonumber(ARGV[7]))
if redis.call('XLEN', KEYS[1]) >= tonumber(ARGV[6]) then return 0 end
redis.call('HSET', KEYS[2], 'status', 'queued', 'session_id', ARGV[3], 'deadline_ms', ARGV[4],
           'seq', 0, 'attempts', 0)
redis.call('PEXPIRE', KEYS[2], ARGV[8])
redis.call('ZADD', KEYS[4], ARGV[4], ARGV[2])
if redis.call('PTTL', KEYS[4]) < tonumber(ARGV[8]) then redis.call('PEXPIRE', KEYS[4], ARGV[8]) end
emit(KEYS[2], KEYS[3], ARGV[2], 'queued', ARGV[5], ARGV[11], ARGV[9], ARGV[10])
redis.call('XADD', KEYS[1], '*', 'job', ARGV[1])
return 1
"""

# KEYS: job hash, session updates, session deadlines.
# ARGV: job id, new status, fence attempt ('' = none), now_ms, body, live ttl ms, result ttl ms,
#       updates maxlen, session ttl ms, session id to record the job under if it is unknown ('' = don't).
# Returns {'ok', attempt} | {'gone'} | {'final', status} | {'fenced', attempt}.
_LUA_TRANSITION = _LUA_EMIT + """
local cur = redis.call('HGET', KEYS[1], 'status')
if not cur then
  if ARGV[10] == '' then return {'gone'} end
  redis.call('HSET', KEYS[1], 'status', 'queued', 'session_id', ARGV[10], 'deadline_ms', ARGV[4],
             'seq', 0, 'attempts', 0)
  cur = 'queued'
end
if FINAL[cur] then return {'final', cur} end
local attempts = redis.call('HGET', KEYS[1], 'attempts')
if ARGV[3] ~= '' and attempts ~= ARGV[3] then return {'fenced', attempts} end
if ARGV[2] == 'running' then attempts = tostring(redis.call('HINCRBY', KEYS[1], 'attempts', 1)) end
emit(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[4], ARGV[5], ARGV[8], ARGV[9])
if FINAL[ARGV[2]] then
  redis.call('ZREM', KEYS[3], ARGV[1])
  redis.call('PEXPIRE', KEYS[1], ARGV[7])
else
  redis.call('PEXPIRE', KEYS[1], ARGV[6])
end
return {'ok', attempts}
"""

# KEYS: jobs stream.  ARGV: group, consumer, entry id, 'ack' | 'extend'.
# Only the consumer that holds the entry may ack or extend it: a worker that lost its job to a reclaim
# must neither remove it from under the new owner nor steal it back.  Returns 1 if done, 0 if not held.
_LUA_LEASE = """
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if #p == 0 or p[1][2] ~= ARGV[2] then return 0 end
if ARGV[4] == 'ack' then
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
  redis.call('XDEL', KEYS[1], ARGV[3])
else
  redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'JUSTID')
end
return 1
"""


# redis-py types replies as bytes | str; with decode_responses=True they are str, as these say.
_Entries = list[tuple[str, dict[str, str]]]
_StreamsReply = list[tuple[str, _Entries]]


def _redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


class RedisJobQueue:
    """:class:`JobQueue` on Redis Streams; create with :meth:`connect`."""

    mode = "redis"

    def __init__(self, client: aioredis.Redis, config: JobQueueConfig) -> None:
        self.config = config
        self._r = client
        self._jobs_key = f"{config.prefix}jobs"
        self._submit = client.register_script(_LUA_SUBMIT)
        self._transition_script = client.register_script(_LUA_TRANSITION)
        self._lease = client.register_script(_LUA_LEASE)
        self._autoclaim_cursor = "0-0"  # XAUTOCLAIM scans the pending list in pages; where to go on

    def _job_key(self, job_id: str) -> str:
        return f"{self.config.prefix}job:{job_id}"

    def _updates_key(self, session_id: str) -> str:
        return f"{self.config.prefix}session:{session_id}:updates"

    def _deadlines_key(self, session_id: str) -> str:
        return f"{self.config.prefix}session:{session_id}:deadlines"

    async def _hmget(self, key: str, *fields: str) -> list[str | None]:
        return cast(list[str | None], await self._r.hmget(key, list(fields)))

    @classmethod
    async def connect(cls, url: str, config: JobQueueConfig | None = None,
                      timeout_s: float = CONNECT_TIMEOUT_S) -> RedisJobQueue:
        """Connect, check the server and create the consumer group; :class:`JobQueueUnavailable` if not."""
        client = aioredis.Redis.from_url(url, decode_responses=True, socket_connect_timeout=timeout_s)
        try:
            # The client retries failed commands with backoff; the outer timeout keeps startup fast anyway.
            async with asyncio.timeout(timeout_s):
                info = await client.info("server")
            version = tuple(int(x) for x in str(info["redis_version"]).split(".")[:2])
            if version < MIN_REDIS_VERSION:
                raise JobQueueUnavailable(
                    f"Redis at {_redact(url)} is {info['redis_version']}; the job queue needs "
                    f"≥ {'.'.join(map(str, MIN_REDIS_VERSION))} (XAUTOCLAIM, MINID)")
            queue = cls(client, config or JobQueueConfig())
            await queue._ensure_group()
        except (RedisError, OSError, TimeoutError) as exc:
            await client.aclose()
            raise JobQueueUnavailable(
                f"Redis at {_redact(url)} is unreachable: {str(exc) or type(exc).__name__}"
            ) from exc
        except BaseException:
            await client.aclose()
            raise
        return queue

    async def _ensure_group(self) -> None:
        # From id 0, not $: jobs submitted before any worker ever started must still be run.
        try:
            await self._r.xgroup_create(self._jobs_key, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def _transition(self, job_id: str, session_id: str, status: JobStatus, *, fence: int | None = None,
                          text: str | None = None, data: dict[str, Any] | None = None,
                          deadline_ms: int = 0, record_if_unknown: bool = False) -> tuple[str, int]:
        """Apply ``status`` atomically with its update; (outcome, attempt) as the Lua script returns it."""
        now = _unix_ms()
        cfg = self.config
        result = await self._transition_script(
            keys=[self._job_key(job_id), self._updates_key(session_id), self._deadlines_key(session_id)],
            args=[job_id, status.value, "" if fence is None else fence, now, _body(cfg, text, data),
                  cfg.live_ttl_ms(deadline_ms, now), cfg.result_ttl_ms, cfg.session_updates_maxlen,
                  cfg.session_ttl_ms, session_id if record_if_unknown else ""],
        )
        return str(result[0]), int(result[1]) if result[0] in ("ok", "fenced") else 0

    # -- requester side

    async def submit(self, session_id: str, kind: str, payload: dict[str, Any],
                     deadline_s: float | None = None) -> Job:
        cfg = self.config
        job, entry = _new_job(cfg, session_id, kind, payload, deadline_s)
        accepted = await self._submit(
            keys=[self._jobs_key, self._job_key(job.id), self._updates_key(session_id),
                  self._deadlines_key(session_id)],
            args=[entry, job.id, session_id, job.deadline_ms, job.created_ms, cfg.max_queued,
                  cfg.retention_ms, cfg.live_ttl_ms(job.deadline_ms, job.created_ms),
                  cfg.session_updates_maxlen, cfg.session_ttl_ms, _body(cfg, None, {"kind": kind})],
        )
        if not accepted:
            raise QueueFull(f"{cfg.max_queued} jobs are queued or running; job {kind!r} refused")
        return job

    async def cancel(self, job_id: str) -> bool:
        (session_id,) = await self._hmget(self._job_key(job_id), "session_id")
        if session_id is None:
            return False
        outcome, _ = await self._transition(job_id, session_id, JobStatus.CANCELLED,
                                            text="cancelled by the requester")
        return outcome == "ok"

    async def status(self, job_id: str) -> JobStatus | None:
        status, session_id, deadline_ms = await self._hmget(
            self._job_key(job_id), "status", "session_id", "deadline_ms")
        if status is None or session_id is None or deadline_ms is None:
            return None
        if not JobStatus(status).final and _unix_ms() > int(deadline_ms) + self.config.deadline_grace_ms:
            await self._expire(job_id, session_id)
            (status,) = await self._hmget(self._job_key(job_id), "status")
        return JobStatus(status) if status is not None else None

    async def _expire(self, job_id: str, session_id: str) -> None:
        await self._transition(job_id, session_id, JobStatus.FAILED,
                               text="deadline exceeded: no result from a worker in time")

    async def _expire_overdue(self, session_id: str) -> int | None:
        """Fail the session's jobs past deadline + grace; ms until the next one is due, None if none."""
        key = self._deadlines_key(session_id)
        grace = self.config.deadline_grace_ms
        overdue = cast(list[str], await self._r.zrangebyscore(key, "-inf", _unix_ms() - grace))
        for job_id in overdue:
            await self._expire(job_id, session_id)
            await self._r.zrem(key, job_id)  # also when its record had already expired ('gone')
        nxt = cast(list[tuple[str, float]], await self._r.zrange(key, 0, 0, withscores=True))
        return int(nxt[0][1]) + grace - _unix_ms() if nxt else None

    async def updates(self, session_id: str) -> AsyncGenerator[JobUpdate, None]:
        key = self._updates_key(session_id)
        cursor = "0-0"
        outage = False
        while True:
            try:
                due_ms = await self._expire_overdue(session_id)
                block = UPDATES_BLOCK_MS if due_ms is None else min(max(due_ms, 1), UPDATES_BLOCK_MS)
                reply = cast(_StreamsReply, await self._r.xread({key: cursor}, count=UPDATES_BATCH,
                                                                block=block))
            except (RedisError, OSError) as exc:
                # The reader lives as long as its session: ride out a Redis restart at the same cursor
                # rather than make every caller restart it (and see the session's updates again).
                if not outage:
                    log.warning("job updates of session %s unavailable (%s); retrying every %.0f s",
                                session_id, exc, RETRY_S)
                outage = True
                await asyncio.sleep(RETRY_S)
                continue
            if outage:
                log.info("job updates of session %s available again", session_id)
                outage = False
            for _, entries in reply:
                for entry_id, fields in entries:
                    cursor = entry_id
                    update = _parse_update(session_id, fields)
                    if update is not None:
                        yield update

    # -- worker side

    async def claim(self, consumer: str, block_ms: int) -> Job | None:
        give_up = time.monotonic() + block_ms / 1000
        # XREADGROUP only wakes for new entries, so wait in slices and look for stale ones in between:
        # a dead worker's job is then taken over within claim_idle_ms + two slices, even by a busy loop.
        slice_ms = max(min(self.config.claim_idle_ms // 4, RECLAIM_POLL_MS), 1)
        while True:
            try:
                entry = await self._reclaim(consumer)
                if entry is None:
                    remaining_ms = int((give_up - time.monotonic()) * 1000)
                    entry = await self._read_new(consumer, min(remaining_ms, slice_ms))
            except ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                # The stream is gone (Redis restarted without persistence, FLUSHDB, a cleanup script):
                # recreate it and its group, or no worker would ever claim again.
                log.warning("job stream %s had no consumer group; recreating it", self._jobs_key)
                await self._ensure_group()
                self._autoclaim_cursor = "0-0"
                continue
            if entry is not None:
                job = await self._start(consumer, *entry)
                if job is not None:
                    return job
            elif time.monotonic() >= give_up:
                return None

    async def _reclaim(self, consumer: str) -> tuple[str, dict[str, str]] | None:
        reply: list[Any] = await self._r.xautoclaim(
            self._jobs_key, GROUP, consumer, self.config.claim_idle_ms, self._autoclaim_cursor, count=1)
        self._autoclaim_cursor = reply[0]
        if len(reply) > 2 and reply[2]:  # Redis ≥ 7 reports pending ids whose entries were trimmed
            log.warning("%d pending job entries were trimmed before completion (past their deadline): %s",
                        len(reply[2]), reply[2])
        if not reply[1]:
            return None
        entry_id, fields = cast(_Entries, reply[1])[0]
        log.warning("job entry %s idle for ≥ %d ms: its worker died; %s takes it over",
                    entry_id, self.config.claim_idle_ms, consumer)
        return entry_id, fields

    async def _read_new(self, consumer: str, block_ms: int) -> tuple[str, dict[str, str]] | None:
        # block=None returns at once; BLOCK 0 would wait forever.
        block = block_ms if block_ms > 0 else None
        reply = cast(_StreamsReply, await self._r.xreadgroup(
            GROUP, consumer, {self._jobs_key: ">"}, count=1, block=block))
        for _, entries in reply:
            for entry_id, fields in entries:
                return entry_id, fields
        return None

    async def _start(self, consumer: str, entry_id: str, fields: dict[str, str]) -> Job | None:
        """Turn a claimed entry into a running job, or settle it (ack, maybe fail) and return None."""
        try:
            job = _parse_job(fields.get("job"))
        except JobRejected as exc:
            log.error("malformed job entry %s skipped (%s): %.200r", entry_id, exc, fields)
            ref = _job_ref(fields.get("job"))
            if ref is not None:
                await self._transition(*ref, JobStatus.FAILED, text=f"malformed job entry: {exc}",
                                       record_if_unknown=True)
            await self._settle(consumer, entry_id, "ack")
            return None
        job.consumer, job.receipt = consumer, entry_id
        status, attempts = await self._hmget(self._job_key(job.id), "status", "attempts")
        if status is None or attempts is None:
            reason = "its record expired"
        elif JobStatus(status).final:
            reason = f"it is already {status}"
        elif _unix_ms() > job.deadline_ms:
            reason = "its deadline passed before a worker started it"
            await self._transition(job.id, job.session_id, JobStatus.FAILED, text=reason)
        elif int(attempts) >= self.config.max_attempts:
            reason = f"gave up after {attempts} attempts: its workers died"
            await self._transition(job.id, job.session_id, JobStatus.FAILED, text=reason)
        else:
            outcome, job.attempt = await self._transition(
                job.id, job.session_id, JobStatus.RUNNING,
                data={"attempt": int(attempts) + 1, "consumer": consumer}, deadline_ms=job.deadline_ms)
            if outcome == "ok":
                return job
            reason = f"it became {outcome} while being claimed"
        log.info("job %s skipped: %s", job.id, reason)
        await self.ack(job)
        return None

    async def publish(self, job: Job, status: JobStatus, text: str | None = None,
                      data: dict[str, Any] | None = None) -> bool:
        if status not in _WORKER_STATUSES:
            raise ValueError(f"workers publish partial, done or failed, not {status}")
        outcome, _ = await self._transition(job.id, job.session_id, status, fence=job.attempt, text=text,
                                            data=data, deadline_ms=job.deadline_ms)
        return outcome == "ok"

    async def _settle(self, consumer: str, entry_id: str, action: str) -> bool:
        """``ack`` or ``extend`` the entry if ``consumer`` holds it (see _LUA_LEASE)."""
        return bool(await self._lease(keys=[self._jobs_key], args=[GROUP, consumer, entry_id, action]))

    async def extend(self, job: Job) -> bool:
        return await self._settle(job.consumer, job.receipt, "extend")

    async def is_cancelled(self, job_id: str) -> bool:
        (status,) = await self._hmget(self._job_key(job_id), "status")
        return status == JobStatus.CANCELLED

    async def ack(self, job: Job) -> None:
        await self._settle(job.consumer, job.receipt, "ack")

    async def close(self) -> None:
        await self._r.aclose()


def _parse_update(session_id: str, fields: dict[str, str]) -> JobUpdate | None:
    try:
        body = json.loads(fields["body"])
        return JobUpdate(fields["job_id"], session_id, int(fields["seq"]), JobStatus(fields["status"]),
                         body["text"], body["data"], int(fields["unix_ms"]))
    except (KeyError, ValueError, TypeError) as exc:
        # Only our scripts write here; anything else is skipped rather than crashing every reader.
        log.error("malformed update in session %s skipped (%s): %.200r", session_id, exc, fields)
        return None


# ---------------------------------------------------------------------------------------------------------
# In-process


@dataclass
class _Entry:
    """A job entry as the in-process 'stream' holds it: raw JSON, like Redis, so the semantics match (a
    payload mutated after submit does not change the job; a malformed entry is handled the same way)."""

    receipt: str
    raw: str
    added_ms: int
    consumer: str = ""
    touched: float = 0.0  # time.monotonic() of the last claim or lease extension


@dataclass
class _Record:
    session_id: str
    deadline_ms: int
    expires_ms: int
    status: JobStatus = JobStatus.QUEUED
    seq: int = 0
    attempts: int = 0


@dataclass
class _SessionLog:
    expires_ms: int
    updates: deque[tuple[int, JobUpdate]]
    deadlines: dict[str, int] = field(default_factory=dict)  # live job id → deadline_ms
    changed: asyncio.Event = field(default_factory=asyncio.Event)


class InProcessJobQueue:
    """:class:`JobQueue` in this process's event loop: no Redis, nothing survives the process.

    Workers (:func:`serve_jobs`) run as tasks on the same loop, so handlers must keep blocking work (model
    inference) in threads. TTLs and bounds mirror :class:`RedisJobQueue`; expired records are swept at most
    every ``PURGE_INTERVAL_MS``.
    """

    mode = "in-process"

    def __init__(self, config: JobQueueConfig | None = None) -> None:
        self.config = config or JobQueueConfig()
        self._queued: deque[_Entry] = deque()  # not yet delivered, oldest first
        self._pending: dict[str, _Entry] = {}  # delivered, not acked: receipt → entry
        self._records: dict[str, _Record] = {}
        self._sessions: dict[str, _SessionLog] = {}
        self._receipts = itertools.count(1)
        self._update_ids = itertools.count(1)  # global, so a reader's cursor survives its log being swept
        self._work_added = asyncio.Event()
        self._next_purge_ms = 0

    def _log(self, session_id: str) -> _SessionLog:
        log_ = self._sessions.get(session_id)
        if log_ is None:
            log_ = _SessionLog(_unix_ms() + self.config.session_ttl_ms,
                               deque(maxlen=self.config.session_updates_maxlen))
            self._sessions[session_id] = log_
        return log_

    def _purge(self) -> None:
        now = _unix_ms()
        if now < self._next_purge_ms:
            return
        self._next_purge_ms = now + PURGE_INTERVAL_MS
        self._records = {k: r for k, r in self._records.items() if r.expires_ms > now}
        self._sessions = {k: s for k, s in self._sessions.items() if s.expires_ms > now}
        cutoff = now - self.config.retention_ms
        while self._queued and self._queued[0].added_ms < cutoff:
            self._queued.popleft()
        for receipt in [r for r, e in self._pending.items() if e.added_ms < cutoff]:
            log.warning("pending job entry %s dropped before completion (past its deadline)", receipt)
            del self._pending[receipt]

    def _transition(self, job_id: str, status: JobStatus, *, fence: int | None = None,
                    text: str | None = None, data: dict[str, Any] | None = None,
                    record_session: str | None = None) -> tuple[str, int]:
        """The same rules as _LUA_TRANSITION; see there."""
        # Serialised as for Redis: the same size and JSON checks, and readers get their own copy of data.
        body = _body(self.config, text, data)
        now = _unix_ms()
        rec = self._records.get(job_id)
        if rec is None or rec.expires_ms <= now:
            if record_session is None:
                return "gone", 0
            rec = self._records[job_id] = _Record(record_session, now, now)
        if rec.status.final:
            return "final", 0
        if fence is not None and rec.attempts != fence:
            return "fenced", rec.attempts
        if status is JobStatus.RUNNING:
            rec.attempts += 1
        rec.seq += 1
        rec.status = status
        session = self._log(rec.session_id)
        if status.final:
            session.deadlines.pop(job_id, None)
            rec.expires_ms = now + self.config.result_ttl_ms
        else:
            rec.expires_ms = now + self.config.live_ttl_ms(rec.deadline_ms, now)
        parsed = json.loads(body)
        session.updates.append((next(self._update_ids), JobUpdate(
            job_id, rec.session_id, rec.seq, status, parsed["text"], parsed["data"], now)))
        session.expires_ms = now + self.config.session_ttl_ms
        session.changed.set()
        return "ok", rec.attempts

    # -- requester side

    async def submit(self, session_id: str, kind: str, payload: dict[str, Any],
                     deadline_s: float | None = None) -> Job:
        self._purge()
        job, raw = _new_job(self.config, session_id, kind, payload, deadline_s)
        if len(self._queued) + len(self._pending) >= self.config.max_queued:
            raise QueueFull(f"{self.config.max_queued} jobs are queued or running; job {kind!r} refused")
        now = job.created_ms
        self._records[job.id] = _Record(session_id, job.deadline_ms,
                                        now + self.config.live_ttl_ms(job.deadline_ms, now))
        self._log(session_id).deadlines[job.id] = job.deadline_ms
        self._transition(job.id, JobStatus.QUEUED, data={"kind": kind})
        self._queued.append(_Entry(str(next(self._receipts)), raw, now))
        self._work_added.set()
        return job

    async def cancel(self, job_id: str) -> bool:
        return self._transition(job_id, JobStatus.CANCELLED, text="cancelled by the requester")[0] == "ok"

    async def status(self, job_id: str) -> JobStatus | None:
        rec = self._records.get(job_id)
        if rec is None or rec.expires_ms <= _unix_ms():
            return None
        if not rec.status.final and _unix_ms() > rec.deadline_ms + self.config.deadline_grace_ms:
            self._expire(job_id)
        return rec.status

    def _expire(self, job_id: str) -> None:
        self._transition(job_id, JobStatus.FAILED, text="deadline exceeded: no result from a worker in time")

    def _expire_overdue(self, session: _SessionLog) -> int | None:
        grace = self.config.deadline_grace_ms
        for job_id, deadline_ms in list(session.deadlines.items()):
            if deadline_ms + grace < _unix_ms():
                self._expire(job_id)
                session.deadlines.pop(job_id, None)  # also when its record had already expired ('gone')
        if not session.deadlines:
            return None
        return min(session.deadlines.values()) + grace - _unix_ms()

    async def updates(self, session_id: str) -> AsyncGenerator[JobUpdate, None]:
        cursor = 0
        while True:
            self._purge()
            session = self._log(session_id)
            due_ms = self._expire_overdue(session)
            fresh = [(i, u) for i, u in session.updates if i > cursor]  # a copy: yielding lets others append
            for i, update in fresh:
                cursor = i
                yield update
            if fresh:
                continue
            block = UPDATES_BLOCK_MS if due_ms is None else min(max(due_ms, 1), UPDATES_BLOCK_MS)
            session.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(session.changed.wait(), block / 1000)

    # -- worker side

    async def claim(self, consumer: str, block_ms: int) -> Job | None:
        give_up = time.monotonic() + block_ms / 1000
        while True:
            self._purge()
            entry = self._reclaim(consumer) or self._read_new(consumer)
            if entry is not None:
                job = self._start(consumer, entry)
                if job is not None:
                    return job
                continue
            now = time.monotonic()
            if now >= give_up:
                return None
            # Wake for new work, or when the stalest pending entry becomes reclaimable.
            idle_s = self.config.claim_idle_ms / 1000
            wake = min([give_up, *(e.touched + idle_s for e in self._pending.values())])
            self._work_added.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._work_added.wait(), max(wake - now, 0.001))

    def _reclaim(self, consumer: str) -> _Entry | None:
        idle_s = self.config.claim_idle_ms / 1000
        now = time.monotonic()
        for entry in self._pending.values():
            if now - entry.touched >= idle_s:
                log.warning("job entry %s idle for ≥ %d ms: its worker died; %s takes it over",
                            entry.receipt, self.config.claim_idle_ms, consumer)
                entry.consumer, entry.touched = consumer, now
                return entry
        return None

    def _read_new(self, consumer: str) -> _Entry | None:
        if not self._queued:
            return None
        entry = self._queued.popleft()
        entry.consumer, entry.touched = consumer, time.monotonic()
        self._pending[entry.receipt] = entry
        return entry

    def _start(self, consumer: str, entry: _Entry) -> Job | None:
        """The same decisions as RedisJobQueue._start."""
        try:
            job = _parse_job(entry.raw)
        except JobRejected as exc:
            log.error("malformed job entry %s skipped (%s): %.200r", entry.receipt, exc, entry.raw)
            ref = _job_ref(entry.raw)
            if ref is not None:
                self._transition(ref[0], JobStatus.FAILED, text=f"malformed job entry: {exc}",
                                 record_session=ref[1])
            self._pending.pop(entry.receipt, None)
            return None
        job.consumer, job.receipt = consumer, entry.receipt
        rec = self._records.get(job.id)
        if rec is None or rec.expires_ms <= _unix_ms():
            reason = "its record expired"
        elif rec.status.final:
            reason = f"it is already {rec.status}"
        elif _unix_ms() > job.deadline_ms:
            reason = "its deadline passed before a worker started it"
            self._transition(job.id, JobStatus.FAILED, text=reason)
        elif rec.attempts >= self.config.max_attempts:
            reason = f"gave up after {rec.attempts} attempts: its workers died"
            self._transition(job.id, JobStatus.FAILED, text=reason)
        else:
            _, job.attempt = self._transition(job.id, JobStatus.RUNNING,
                                              data={"attempt": rec.attempts + 1, "consumer": consumer})
            return job
        log.info("job %s skipped: %s", job.id, reason)
        self._pending.pop(entry.receipt, None)
        return None

    async def publish(self, job: Job, status: JobStatus, text: str | None = None,
                      data: dict[str, Any] | None = None) -> bool:
        if status not in _WORKER_STATUSES:
            raise ValueError(f"workers publish partial, done or failed, not {status}")
        return self._transition(job.id, status, fence=job.attempt, text=text, data=data)[0] == "ok"

    def _held(self, job: Job) -> _Entry | None:
        entry = self._pending.get(job.receipt)
        return entry if entry is not None and entry.consumer == job.consumer else None

    async def extend(self, job: Job) -> bool:
        entry = self._held(job)
        if entry is None:
            return False
        entry.touched = time.monotonic()
        return True

    async def is_cancelled(self, job_id: str) -> bool:
        rec = self._records.get(job_id)
        return rec is not None and rec.status is JobStatus.CANCELLED

    async def ack(self, job: Job) -> None:
        if self._held(job) is not None:
            del self._pending[job.receipt]

    async def close(self) -> None:
        self._queued.clear()
        self._pending.clear()


# ---------------------------------------------------------------------------------------------------------
# Choosing an implementation


async def open_job_queue(redis_url: str | None, config: JobQueueConfig | None = None, *,
                         default_url: str = DEFAULT_REDIS_URL) -> JobQueue:
    """The job queue the service runs with.

    ``redis_url`` given (``REDIS_URL``): Redis, or :class:`JobQueueUnavailable` within
    ``CONNECT_TIMEOUT_S`` — a node configured for Redis must not silently run without it (its workers
    elsewhere would never see its jobs). None or empty: Redis at ``default_url`` if it answers within
    ``PROBE_TIMEOUT_S``, else the in-process queue.
    """
    if redis_url:
        queue: JobQueue = await RedisJobQueue.connect(redis_url, config)
        log.info("job queue: redis at %s (REDIS_URL)", _redact(redis_url))
        return queue
    try:
        queue = await RedisJobQueue.connect(default_url, config, timeout_s=PROBE_TIMEOUT_S)
    except JobQueueUnavailable as exc:
        log.info("job queue: in-process (REDIS_URL not set and no Redis usable at %s: %s); jobs live and die "
                 "with this process", _redact(default_url), exc.__cause__ or exc)
        return InProcessJobQueue(config)
    log.info("job queue: redis at %s (REDIS_URL not set; found Redis on the default address)",
             _redact(default_url))
    return queue


# ---------------------------------------------------------------------------------------------------------
# Worker loop


async def follow_job(queue: JobQueue, job: Job) -> AsyncGenerator[JobUpdate, None]:
    """The updates of one job, through its final one (reads the session's updates and filters)."""
    async with contextlib.aclosing(queue.updates(job.session_id)) as updates:
        async for update in updates:
            if update.job_id == job.id:
                yield update
                if update.status.final:
                    return


async def serve_jobs(queue: JobQueue, consumer: str, handler: JobHandler, *, block_ms: int = CLAIM_BLOCK_MS,
                     stop: asyncio.Event | None = None) -> None:
    """Claim and run jobs one at a time until ``stop`` is set (the job in hand is finished first, the
    next claim wait ends within ``block_ms``) or the task is cancelled.

    Each partial the handler yields is published in order; when it returns, ``done``; when it raises,
    ``failed`` with the error; at the deadline it is cancelled and the job ``failed``; when the job is
    cancelled (or reclaimed by another worker) the handler is cancelled and its generator closed. The loop
    outlives all of these, and queue errors (Redis restarting) too. On cancellation of this task a running
    job is left pending, so another worker reclaims it after ``claim_idle_ms``.

    Run several for concurrency; ``consumer`` must be unique among all workers (e.g. host-pid-n), since
    only the holder of a job may ack or extend it. The handler runs on this event loop: blocking work
    (model inference) belongs in a thread, or it stalls the loop — in-process, the media node's loop.
    """
    while stop is None or not stop.is_set():
        try:
            job = await queue.claim(consumer, block_ms)
            if job is not None:
                await _run_job(queue, job, handler)
        except (RedisError, OSError) as exc:
            log.warning("job worker %s: queue error (%s); retrying in %.0f s", consumer, exc, RETRY_S)
            await asyncio.sleep(RETRY_S)
        except Exception:
            # Not a transient queue error but a bug: log its traceback, and keep looping all the same, as a
            # worker loop that died quietly in a background task would leave every later job to time out.
            # A job it held is reclaimed after claim_idle_ms.
            log.exception("job worker %s: unexpected error; retrying in %.0f s", consumer, RETRY_S)
            await asyncio.sleep(RETRY_S)


async def _run_job(queue: JobQueue, job: Job, handler: JobHandler) -> None:
    t0 = time.monotonic()
    work = asyncio.create_task(_stream_partials(queue, job, handler), name=f"job {job.id}")
    watch = asyncio.create_task(_watch(queue, job), name=f"job {job.id} watch")
    remaining_s = max(job.deadline_ms - _unix_ms(), 0) / 1000
    try:
        done, _ = await asyncio.wait({work, watch}, timeout=remaining_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        # Also on our own cancellation (shutdown): stop both, leave the job pending for another worker.
        await _cancel(watch, job)
        await _cancel(work, job)
    if work in done:
        # A handler may end in its own CancelledError (it awaited something that was cancelled): a failure.
        exc = asyncio.CancelledError("the handler was cancelled") if work.cancelled() else work.exception()
        if exc is None and work.result():
            await queue.publish(job, JobStatus.DONE)
            outcome = "finished"
        elif exc is None:
            outcome = "stopped (cancelled or taken over)"
        else:
            log.error("job %s (%s) failed", job.id, job.kind, exc_info=exc)
            await queue.publish(job, JobStatus.FAILED, text=f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS])
            outcome = "failed"
    elif watch in done:
        outcome = "stopped (cancelled or taken over)"
    else:
        await queue.publish(job, JobStatus.FAILED, text=f"deadline exceeded ({job.deadline_s:g} s)")
        outcome = "timed out"
    await queue.ack(job)
    log.info("job %s (%s) attempt %d %s after %.2f s", job.id, job.kind, job.attempt, outcome,
             time.monotonic() - t0)


async def _stream_partials(queue: JobQueue, job: Job, handler: JobHandler) -> bool:
    """Publish the handler's partials; True if it ran to completion, False if a publish was refused."""
    async with contextlib.aclosing(handler(job)) as partials:
        async for partial in partials:
            text, data = (partial, None) if isinstance(partial, str) else (partial.text, partial.data)
            if not await queue.publish(job, JobStatus.PARTIAL, text, data):
                return False
    return True


async def _watch(queue: JobQueue, job: Job) -> None:
    """Return when the job is cancelled or lost to another worker; keep its lease alive meanwhile."""
    extend_every_s = queue.config.claim_idle_ms / 3000  # two missed extensions still leave a margin
    next_extend = time.monotonic() + extend_every_s
    while True:
        await asyncio.sleep(min(CANCEL_POLL_S, extend_every_s))
        try:
            if await queue.is_cancelled(job.id):
                return
            if time.monotonic() >= next_extend:
                if not await queue.extend(job):
                    return
                next_extend = time.monotonic() + extend_every_s
        except (RedisError, OSError) as exc:
            # Transient (Redis restarting): keep running; the deadline still bounds the job, and a
            # publish that fails for good ends up in serve_jobs' retry loop.
            log.warning("job %s: cannot check cancellation or extend the lease: %s", job.id, exc)


async def _cancel(task: asyncio.Task[Any], job: Job) -> None:
    """Cancel a job's task (if still running) and wait for it, but not forever."""
    if task.done():
        return
    task.cancel()
    await asyncio.wait({task}, timeout=CANCEL_GRACE_S)
    if not task.done():
        # A handler that swallows cancellation (or awaits a thread that cannot be interrupted) must not
        # stall the worker: abandon it. Its later publishes are refused once the job is final or reclaimed.
        log.error("handler of job %s ignored cancellation for %.0f s; abandoned", job.id, CANCEL_GRACE_S)
    task.add_done_callback(_discard_outcome)


def _discard_outcome(task: asyncio.Task[Any]) -> None:
    # The outcome of a cancelled job task no longer matters; fetching it keeps asyncio from logging
    # "Task exception was never retrieved" for a handler that raised while unwinding.
    if not task.cancelled():
        task.exception()
