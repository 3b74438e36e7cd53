"""The background job queue: the same cases against the in-process queue and a real redis-server.

Workers here run real (small) handlers through serve_jobs; a worker process is SIGKILLed mid-job to
check that its job is reclaimed and finished by another.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, cast

import pytest
import redis.asyncio as aioredis

from service import jobs
from service.jobs import (
    CONNECT_TIMEOUT_S,
    InProcessJobQueue,
    Job,
    JobPartial,
    JobQueue,
    JobQueueConfig,
    JobQueueUnavailable,
    JobRejected,
    JobStatus,
    JobUpdate,
    QueueFull,
    RedisJobQueue,
    follow_job,
    open_job_queue,
    serve_jobs,
)
from service.jobs import _Entry as InProcessEntry
from tests.conftest import free_port
from tests.redis_server import redis_server

REPO_ROOT = Path(__file__).resolve().parent.parent
WAIT_S = 5.0  # longest any single job in these tests may take to reach its final update


QueueFactory = Callable[..., Awaitable[JobQueue]]


def unique_prefix() -> str:
    return f"test:{uuid.uuid4().hex[:8]}:"


async def delete_prefix(url: str, prefix: str) -> None:
    """Remove a test's keys: the job stream has no TTL, and $MICROTURN_TEST_REDIS_URL may be shared."""
    client = aioredis.Redis.from_url(url, decode_responses=True)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@pytest.fixture(params=["in-process", "redis"])
async def make_queue(request: pytest.FixtureRequest) -> AsyncIterator[QueueFactory]:
    """Factory: ``await make_queue(**config)`` opens a queue with a prefix unique to the test."""
    url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    prefix = unique_prefix()
    queues: list[JobQueue] = []

    async def make(**config: Any) -> JobQueue:
        cfg = JobQueueConfig(prefix=prefix, **config)
        queue: JobQueue = await RedisJobQueue.connect(url, cfg) if url else InProcessJobQueue(cfg)
        queues.append(queue)
        return queue

    yield make
    for queue in queues:
        await queue.close()
    if url:
        await delete_prefix(url, prefix)


@pytest.fixture
async def raw_redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    await client.aclose()


# -- handlers: real async generators, each kind a behaviour


class Handlers:
    def __init__(self) -> None:
        self.closed: dict[str, asyncio.Event] = {}  # job id → set when its generator was closed

    async def __call__(self, job: Job) -> AsyncGenerator[str | JobPartial, None]:
        closed = self.closed.setdefault(job.id, asyncio.Event())
        try:
            if job.kind == "echo":  # a few partials with small sleeps
                for i in range(3):
                    await asyncio.sleep(0.01)
                    yield f"{job.payload.get('q', '')} part {i}"
            elif job.kind == "tool":  # structured partials, as a tool-using agent streams them
                yield JobPartial(data={"tool_call": {"name": "calculator", "result": "156"}})
                yield JobPartial("12 times 13 is 156.", {"final_answer": True})
            elif job.kind == "quick":
                for i in range(3):
                    yield f"part {i}"
            elif job.kind == "forever":  # keeps streaming until stopped
                for i in range(10_000):
                    await asyncio.sleep(0.05)
                    yield f"part {i}"
            elif job.kind == "slow":  # long silences between partials: longer than the claim idle time
                for i in range(3):
                    await asyncio.sleep(job.payload["pause_s"])
                    yield f"part {i}"
            elif job.kind == "hang":
                yield "thinking"
                await asyncio.Event().wait()
            elif job.kind == "stubborn":  # swallows its cancellation and unwinds slowly
                yield "thinking"
                try:
                    await asyncio.Event().wait()
                except asyncio.CancelledError:
                    await asyncio.sleep(1.0)
            elif job.kind == "raise":
                yield "about to fail"
                raise RuntimeError("tool exploded")
        finally:
            closed.set()


@contextlib.asynccontextmanager
async def workers(queue: JobQueue, handler: Handlers, count: int = 1) -> AsyncIterator[None]:
    stop = asyncio.Event()
    tasks = [asyncio.create_task(serve_jobs(queue, f"w{i}", handler, block_ms=100, stop=stop))
             for i in range(count)]
    try:
        yield
    finally:
        # A graceful stop: each worker finishes (and acks) the job it holds, then leaves at its next claim.
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=WAIT_S)


async def collect(queue: JobQueue, job: Job, timeout_s: float = WAIT_S) -> list[JobUpdate]:
    async with asyncio.timeout(timeout_s):
        return [u async for u in follow_job(queue, job)]


def statuses(updates: list[JobUpdate]) -> list[str]:
    return [u.status.value for u in updates]


# depth() and inject() look inside the queues (private attributes): what they check is not in the API.


async def depth(queue: JobQueue) -> int:
    """Entries on the queue, queued or delivered but not acked (acked ones are deleted)."""
    if isinstance(queue, RedisJobQueue):
        key = f"{queue.config.prefix}jobs"
        pending = await queue._r.xpending(key, "workers")
        length = await queue._r.xlen(key)
        assert pending["pending"] <= length
        return length
    assert isinstance(queue, InProcessJobQueue)
    return len(queue._queued) + len(queue._pending)


async def inject(queue: JobQueue, raw: str) -> None:
    """Put an entry on the queue the way a foreign (buggy) writer would, bypassing submit."""
    if isinstance(queue, RedisJobQueue):
        await queue._r.xadd(f"{queue.config.prefix}jobs", {"job": raw})
    else:
        assert isinstance(queue, InProcessJobQueue)
        queue._queued.append(InProcessEntry(f"foreign-{uuid.uuid4().hex}", raw, int(time.time() * 1000)))


# -- the lifecycle


async def test_partials_arrive_in_order_then_done(make_queue: QueueFactory) -> None:
    queue = await make_queue()
    async with workers(queue, Handlers()):
        job = await queue.submit("s1", "echo", {"q": "weather"})
        updates = await collect(queue, job)
    assert statuses(updates) == ["queued", "running", "partial", "partial", "partial", "done"]
    assert [u.seq for u in updates] == [1, 2, 3, 4, 5, 6]
    assert [u.text for u in updates[2:5]] == ["weather part 0", "weather part 1", "weather part 2"]
    assert updates[0].data == {"kind": "echo"}
    assert updates[1].data == {"attempt": 1, "consumer": "w0"}
    assert all(u.session_id == "s1" and u.job_id == job.id for u in updates)
    assert await queue.status(job.id) is JobStatus.DONE
    assert await depth(queue) == 0


async def test_structured_partials_carry_data(make_queue: QueueFactory) -> None:
    queue = await make_queue()
    async with workers(queue, Handlers()):
        job = await queue.submit("s1", "tool", {})
        updates = await collect(queue, job)
    assert statuses(updates) == ["queued", "running", "partial", "partial", "done"]
    assert [(u.text, u.data) for u in updates[2:4]] == [
        (None, {"tool_call": {"name": "calculator", "result": "156"}}),
        ("12 times 13 is 156.", {"final_answer": True}),
    ]


async def test_status_lifecycle_through_claim_publish_ack(make_queue: QueueFactory) -> None:
    queue = await make_queue()
    assert await queue.claim("w", block_ms=0) is None
    payload: dict[str, Any] = {"q": [1, 2]}
    job = await queue.submit("s1", "echo", payload, deadline_s=5)
    payload["q"].append(3)  # the queued job is a copy: mutating the caller's dict changes nothing
    assert await queue.status(job.id) is JobStatus.QUEUED

    claimed = await queue.claim("w", block_ms=500)
    assert claimed is not None
    assert (claimed.id, claimed.kind, claimed.payload, claimed.attempt) == (job.id, "echo", {"q": [1, 2]}, 1)
    assert claimed.deadline_ms == job.deadline_ms
    assert await queue.status(job.id) is JobStatus.RUNNING
    assert await queue.publish(claimed, JobStatus.PARTIAL, "half")
    assert await queue.status(job.id) is JobStatus.PARTIAL
    assert await queue.publish(claimed, JobStatus.DONE, data={"tokens": 12})
    assert await queue.status(job.id) is JobStatus.DONE
    assert not await queue.publish(claimed, JobStatus.PARTIAL, "too late")  # final is final
    with pytest.raises(ValueError, match="partial, done or failed"):
        await queue.publish(claimed, JobStatus.RUNNING)
    assert await depth(queue) == 1
    await queue.ack(claimed)
    assert await depth(queue) == 0
    updates = await collect(queue, job)
    assert statuses(updates) == ["queued", "running", "partial", "done"]
    assert updates[-1].data == {"tokens": 12}
    assert await queue.status("no-such-job") is None


async def test_final_status_expires_after_result_ttl(make_queue: QueueFactory) -> None:
    queue = await make_queue(result_ttl_s=0.2)
    job = await queue.submit("s1", "echo", {})
    assert await queue.cancel(job.id)
    assert await queue.status(job.id) is JobStatus.CANCELLED
    await asyncio.sleep(0.3)
    assert await queue.status(job.id) is None


# -- cancel


async def test_cancelled_queued_job_is_skipped_and_acked(make_queue: QueueFactory) -> None:
    queue = await make_queue()
    first = await queue.submit("s1", "echo", {})
    second = await queue.submit("s1", "echo", {})
    assert await queue.cancel(first.id)
    assert not await queue.cancel(first.id)  # already final
    assert not await queue.cancel("no-such-job")
    assert await queue.is_cancelled(first.id)
    assert await queue.status(first.id) is JobStatus.CANCELLED

    claimed = await queue.claim("w", block_ms=500)
    assert claimed is not None and claimed.id == second.id  # the cancelled one was skipped
    await queue.ack(claimed)
    assert await depth(queue) == 0
    assert statuses(await collect(queue, first)) == ["queued", "cancelled"]


async def test_cancel_stops_a_running_handler(make_queue: QueueFactory) -> None:
    queue = await make_queue()
    handlers = Handlers()
    async with workers(queue, handlers):
        job = await queue.submit("s1", "forever", {})
        seen: list[JobUpdate] = []
        async with asyncio.timeout(WAIT_S):
            async for update in follow_job(queue, job):
                seen.append(update)
                if update.status is JobStatus.PARTIAL and statuses(seen).count("partial") == 2:
                    t_cancel = time.monotonic()
                    assert await queue.cancel(job.id)
        await asyncio.wait_for(handlers.closed[job.id].wait(), 1.0)  # its next publish was refused
        assert time.monotonic() - t_cancel < 0.5
        assert statuses(seen) == ["queued", "running", "partial", "partial", "cancelled"]

        await asyncio.sleep(0.2)  # nothing the worker still had in flight may land after "cancelled"
        assert statuses(await collect(queue, job))[-1] == "cancelled"
        assert await queue.status(job.id) is JobStatus.CANCELLED

        after = await queue.submit("s1", "echo", {})  # the worker goes on
        assert statuses(await collect(queue, after))[-1] == "done"
    assert await depth(queue) == 0


async def test_cancel_reaches_a_handler_that_is_busy_between_partials(make_queue: QueueFactory) -> None:
    queue = await make_queue()
    handlers = Handlers()
    async with workers(queue, handlers):
        job = await queue.submit("s1", "hang", {})  # one partial, then silence: no publish to refuse
        async with asyncio.timeout(WAIT_S):
            async for update in follow_job(queue, job):
                if update.status is JobStatus.PARTIAL:
                    t_cancel = time.monotonic()
                    assert await queue.cancel(job.id)
        await asyncio.wait_for(handlers.closed[job.id].wait(), 1.0)
        assert time.monotonic() - t_cancel < jobs.CANCEL_POLL_S + 0.3  # noticed by the watcher's poll
    assert await depth(queue) == 0


# -- failures


async def test_hung_job_times_out_as_failed(make_queue: QueueFactory) -> None:
    queue = await make_queue()
    handlers = Handlers()
    async with workers(queue, handlers):
        t0 = time.monotonic()
        job = await queue.submit("s1", "hang", {}, deadline_s=0.5)
        updates = await collect(queue, job)
        elapsed = time.monotonic() - t0
        assert statuses(updates) == ["queued", "running", "partial", "failed"]
        assert updates[-1].text is not None and "deadline exceeded" in updates[-1].text
        assert 0.4 < elapsed < 1.5
        await asyncio.wait_for(handlers.closed[job.id].wait(), 1.0)  # the hung handler was cancelled
        after = await queue.submit("s1", "echo", {})
        assert statuses(await collect(queue, after))[-1] == "done"
    assert await depth(queue) == 0


async def test_handler_ignoring_cancellation_is_abandoned(
    make_queue: QueueFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(jobs, "CANCEL_GRACE_S", 0.1)
    queue = await make_queue()
    handlers = Handlers()
    async with workers(queue, handlers):
        job = await queue.submit("s1", "stubborn", {}, deadline_s=0.3)
        assert statuses(await collect(queue, job)) == ["queued", "running", "partial", "failed"]
        after = await queue.submit("s1", "echo", {})  # served while the stubborn handler still unwinds
        assert statuses(await collect(queue, after))[-1] == "done"
        assert not handlers.closed[job.id].is_set()
        await asyncio.wait_for(handlers.closed[job.id].wait(), 2.0)
    assert await depth(queue) == 0


async def test_requester_sees_failed_when_nothing_arrives_by_the_deadline(make_queue: QueueFactory) -> None:
    queue = await make_queue(deadline_grace_ms=100)
    t0 = time.monotonic()
    job = await queue.submit("s1", "echo", {}, deadline_s=0.3)  # and no worker at all
    updates = await collect(queue, job)
    assert 0.35 < time.monotonic() - t0 < 1.5
    assert statuses(updates) == ["queued", "failed"]
    assert updates[-1].text is not None and "deadline exceeded" in updates[-1].text
    assert await queue.status(job.id) is JobStatus.FAILED
    # A worker that turns up later skips the dead job instead of running it.
    assert await queue.claim("late", block_ms=200) is None
    assert await depth(queue) == 0


async def test_status_alone_reports_a_missed_deadline(make_queue: QueueFactory) -> None:
    queue = await make_queue(deadline_grace_ms=50)
    job = await queue.submit("s1", "echo", {}, deadline_s=0.1)
    assert await queue.status(job.id) is JobStatus.QUEUED
    await asyncio.sleep(0.25)
    assert await queue.status(job.id) is JobStatus.FAILED


async def test_handler_that_raises_fails_its_job_and_the_worker_goes_on(make_queue: QueueFactory) -> None:
    queue = await make_queue()
    async with workers(queue, Handlers()):
        bad = await queue.submit("s1", "raise", {})
        good = await queue.submit("s1", "echo", {})
        bad_updates = await collect(queue, bad)
        good_updates = await collect(queue, good)
    assert statuses(bad_updates) == ["queued", "running", "partial", "failed"]
    assert bad_updates[-1].text == "RuntimeError: tool exploded"
    assert statuses(good_updates)[-1] == "done"
    assert await depth(queue) == 0


async def test_malformed_entries_are_acked_skipped_and_failed(
    make_queue: QueueFactory, caplog: pytest.LogCaptureFixture
) -> None:
    queue = await make_queue()
    await inject(queue, "not json at all")
    await inject(queue, json.dumps({"id": "foreign-1", "session_id": "s-foreign", "kind": "echo",
                                    "payload": "not an object", "created_ms": 0, "deadline_s": 5}))
    job = await queue.submit("s1", "echo", {})
    with caplog.at_level(logging.ERROR, logger="service.jobs"):
        claimed = await queue.claim("w", block_ms=500)
    assert claimed is not None and claimed.id == job.id
    assert sum("malformed job entry" in r.getMessage() for r in caplog.records) == 2
    await queue.ack(claimed)
    assert await depth(queue) == 0  # both bad entries were acked, not left to poison the queue

    # The entry that named a job and a session is recorded as failed for that session's requester.
    assert await queue.status("foreign-1") is JobStatus.FAILED
    async with asyncio.timeout(WAIT_S), contextlib.aclosing(queue.updates("s-foreign")) as updates:
        update = await anext(updates)
    assert (update.job_id, update.status) == ("foreign-1", JobStatus.FAILED)
    assert update.text is not None and "malformed job entry" in update.text


async def test_bad_submissions_are_rejected(make_queue: QueueFactory) -> None:
    queue = await make_queue(max_payload_bytes=1024, default_deadline_s=5, max_deadline_s=30)
    with pytest.raises(JobRejected, match=r"payload is \d+ bytes of JSON, more than the 1024 allowed"):
        await queue.submit("s1", "echo", {"blob": "x" * 1024})
    with pytest.raises(JobRejected, match="not JSON-serialisable"):
        await queue.submit("s1", "echo", {"f": object()})
    with pytest.raises(JobRejected, match="not JSON-serialisable"):
        await queue.submit("s1", "echo", {"x": float("nan")})
    with pytest.raises(JobRejected, match="payload must be a dict"):
        await queue.submit("s1", "echo", ["a"])  # type: ignore[arg-type]
    with pytest.raises(JobRejected, match="deadline_s"):
        await queue.submit("s1", "echo", {}, deadline_s=0)
    with pytest.raises(JobRejected, match="deadline_s"):
        await queue.submit("s1", "echo", {}, deadline_s=31)
    with pytest.raises(JobRejected, match="session_id"):
        await queue.submit("", "echo", {})
    with pytest.raises(JobRejected, match="kind"):
        await queue.submit("s1", "k" * 129, {})
    assert await queue.claim("w", block_ms=0) is None  # nothing was queued

    job = await queue.submit("s1", "echo", {"blob": "x" * 900})  # just under the limit
    claimed = await queue.claim("w", block_ms=500)
    assert claimed is not None and claimed.id == job.id
    with pytest.raises(JobRejected, match="update is"):
        await queue.publish(claimed, JobStatus.PARTIAL, "y" * 2000)


async def test_submit_refuses_when_the_queue_is_full(make_queue: QueueFactory) -> None:
    queue = await make_queue(max_queued=3)
    for _ in range(3):
        await queue.submit("s1", "echo", {})
    with pytest.raises(QueueFull, match="3 jobs are queued or running"):
        await queue.submit("s1", "echo", {})
    claimed = await queue.claim("w", block_ms=500)
    assert claimed is not None
    with pytest.raises(QueueFull):  # running still counts: it is not finished
        await queue.submit("s1", "echo", {})
    await queue.ack(claimed)
    await queue.submit("s1", "echo", {})


# -- dead workers


async def test_abandoned_job_is_reclaimed_and_the_old_worker_fenced_off(make_queue: QueueFactory) -> None:
    queue = await make_queue(claim_idle_ms=200)
    job = await queue.submit("s1", "echo", {})
    dead = await queue.claim("dead", block_ms=500)  # claims, then never extends, publishes nor acks
    assert dead is not None and dead.attempt == 1
    assert await queue.claim("alive", block_ms=0) is None  # not idle long enough yet
    t0 = time.monotonic()
    alive = await queue.claim("alive", block_ms=1000)
    assert alive is not None and alive.id == job.id and alive.attempt == 2
    assert 0.1 < time.monotonic() - t0 < 0.6

    assert not await queue.publish(dead, JobStatus.PARTIAL, "zombie")  # fenced: an older attempt
    assert not await queue.extend(dead)
    await queue.ack(dead)  # not its job any more: a no-op
    assert await depth(queue) == 1
    assert await queue.publish(alive, JobStatus.DONE)
    await queue.ack(alive)
    assert await depth(queue) == 0
    updates = await collect(queue, job)
    assert statuses(updates) == ["queued", "running", "running", "done"]
    assert [u.data for u in updates[1:3]] == [{"attempt": 1, "consumer": "dead"},
                                              {"attempt": 2, "consumer": "alive"}]


async def test_a_slow_but_live_job_keeps_its_lease(make_queue: QueueFactory) -> None:
    queue = await make_queue(claim_idle_ms=300)
    async with workers(queue, Handlers(), count=2):
        job = await queue.submit("s1", "slow", {"pause_s": 0.45})  # silent 1.5 × claim_idle_ms at a time
        updates = await collect(queue, job)
    assert statuses(updates) == ["queued", "running", "partial", "partial", "partial", "done"]


async def test_job_that_keeps_killing_workers_fails_after_max_attempts(make_queue: QueueFactory) -> None:
    queue = await make_queue(claim_idle_ms=100, max_attempts=2)
    job = await queue.submit("s1", "echo", {})
    for consumer in ("a", "b"):
        claimed = await queue.claim(consumer, block_ms=1000)
        assert claimed is not None and claimed.id == job.id
    assert await queue.claim("c", block_ms=400) is None
    updates = await collect(queue, job)
    assert statuses(updates) == ["queued", "running", "running", "failed"]
    assert updates[-1].text == "gave up after 2 attempts: its workers died"
    assert await depth(queue) == 0


WORKER_PROCESS = """
import asyncio, sys
from service.jobs import JobQueueConfig, RedisJobQueue, serve_jobs

async def handler(job):
    yield "step 1"
    print("mid-job", flush=True)
    await asyncio.sleep(3600)

async def main():
    config = JobQueueConfig(prefix=sys.argv[2], claim_idle_ms=int(sys.argv[3]))
    queue = await RedisJobQueue.connect(sys.argv[1], config)
    await serve_jobs(queue, "doomed", handler, block_ms=100)

asyncio.run(main())
"""


async def test_job_of_a_killed_worker_process_is_reclaimed_and_finished(redis_url: str) -> None:
    config = JobQueueConfig(prefix=unique_prefix(), claim_idle_ms=500)
    queue = await RedisJobQueue.connect(redis_url, config)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", WORKER_PROCESS, redis_url, config.prefix, str(config.claim_idle_ms),
        stdout=asyncio.subprocess.PIPE, cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT),
                                                                      os.environ.get("PYTHONPATH")]))},
    )
    try:
        job = await queue.submit("s1", "echo", {"q": "rescued"}, deadline_s=20)
        assert proc.stdout is not None
        async with asyncio.timeout(10):
            assert (await proc.stdout.readline()).strip() == b"mid-job"
        assert await queue.status(job.id) is JobStatus.PARTIAL
        proc.kill()  # SIGKILL: no cleanup, no ack; its job stays pending under "doomed"
        await proc.wait()

        async with workers(queue, Handlers()):
            updates = await collect(queue, job)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert statuses(updates) == ["queued", "running", "partial", "running",
                                 "partial", "partial", "partial", "done"]
    assert [u.seq for u in updates] == list(range(1, 9))  # nothing lost, nothing out of order
    assert updates[2].text == "step 1"
    assert [u.data for u in (updates[1], updates[3])] == [{"attempt": 1, "consumer": "doomed"},
                                                          {"attempt": 2, "consumer": "w0"}]
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        assert (await client.xpending(f"{config.prefix}jobs", "workers"))["pending"] == 0
        assert await client.xlen(f"{config.prefix}jobs") == 0
    finally:
        await client.aclose()
        await queue.close()
        await delete_prefix(redis_url, config.prefix)


async def test_worker_and_reader_ride_out_a_redis_restart(caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()
    seen: asyncio.Queue[JobUpdate] = asyncio.Queue()

    async def read(queue: JobQueue) -> None:
        async for update in queue.updates("s1"):
            seen.put_nowait(update)

    async def until_done(job: Job) -> None:
        async with asyncio.timeout(WAIT_S):
            while not ((u := await seen.get()).job_id == job.id and u.status is JobStatus.DONE):
                pass

    with contextlib.ExitStack() as first, contextlib.ExitStack() as second, \
            caplog.at_level(logging.INFO, logger="service.jobs"):
        url = first.enter_context(redis_server(port=port))
        queue = await RedisJobQueue.connect(url, JobQueueConfig(prefix=unique_prefix()))
        reader = asyncio.create_task(read(queue))
        try:
            async with workers(queue, Handlers()):
                await until_done(await queue.submit("s1", "echo", {}))
                first.close()  # Redis goes away, with everything in it (no persistence) ...
                await asyncio.sleep(0.3)  # ... long enough for the worker and the reader to notice ...
                second.enter_context(redis_server(port=port))  # ... and comes back, empty
                await until_done(await queue.submit("s1", "echo", {}))
        finally:
            reader.cancel()
            # Bounded, as in Session.close: redis-py sometimes ignores a cancel that lands in a blocking
            # read across a server restart.
            await asyncio.wait([reader], timeout=2)
            await queue.close()
    messages = [r.getMessage() for r in caplog.records]
    assert any("had no consumer group; recreating it" in m for m in messages)
    assert any("job updates of session s1 available again" in m for m in messages)


# -- bounds (Redis)


async def stream_node_max_entries(client: aioredis.Redis) -> int:
    """Entries per stream node: how far ~ (approximate) trimming may overshoot a bound."""
    config = cast(dict[str, str], await client.config_get("stream-node-max-entries"))
    return int(config["stream-node-max-entries"])


@pytest.mark.parametrize("make_queue", ["redis"], indirect=True)
async def test_every_key_has_a_ttl_and_streams_stay_bounded(
    make_queue: QueueFactory, raw_redis: aioredis.Redis
) -> None:
    queue = await make_queue(session_updates_maxlen=20, result_ttl_s=60)
    prefix = queue.config.prefix
    async with workers(queue, Handlers(), count=2):
        jobs = [await queue.submit(f"s{i % 2}", "quick", {}) for i in range(40)]  # 5 updates each
        for job in jobs:
            assert statuses(await collect(queue, job))[-1] == "done"
    node_max = await stream_node_max_entries(raw_redis)
    keys = sorted(cast(list[str], await raw_redis.keys(f"{prefix}*")))
    assert keys  # job hashes and both sessions' update streams
    for key in keys:
        if key == f"{prefix}jobs":
            assert await raw_redis.xlen(key) == 0  # acked entries are deleted
            continue
        ttl_ms = await raw_redis.pttl(key)
        assert 0 < ttl_ms <= queue.config.session_ttl_ms, key
        if await raw_redis.type(key) == "stream":
            assert await raw_redis.xlen(key) <= 20 + node_max, key  # ~ trimming: one node of slack
        elif key.startswith(f"{prefix}job:"):
            assert ttl_ms <= 60_000, key  # final: result_ttl_s


@pytest.mark.parametrize("make_queue", ["redis"], indirect=True)
async def test_stale_entries_are_trimmed_from_the_job_stream(
    make_queue: QueueFactory, raw_redis: aioredis.Redis
) -> None:
    queue = await make_queue(default_deadline_s=0.1, max_deadline_s=0.2, deadline_grace_ms=50)
    node_max = await stream_node_max_entries(raw_redis)
    for _ in range(node_max + 50):  # no worker: they all stay queued
        await queue.submit("s1", "echo", {})
    await asyncio.sleep(0.4)  # now every entry is past max_deadline_s + grace
    await queue.submit("s1", "echo", {})
    length = await raw_redis.xlen(f"{queue.config.prefix}jobs")
    assert length <= 1 + node_max  # at least the first whole node was trimmed


# -- choosing an implementation


async def test_unreachable_redis_url_refuses_fast_without_leaking_the_password() -> None:
    url = f"redis://:sekret@127.0.0.1:{free_port()}/0"  # nothing listens there
    t0 = time.monotonic()
    with pytest.raises(JobQueueUnavailable, match="unreachable") as info:
        await open_job_queue(url)
    assert time.monotonic() - t0 < CONNECT_TIMEOUT_S + 0.5
    assert "sekret" not in str(info.value) and "127.0.0.1" in str(info.value)


async def test_no_url_and_no_default_redis_falls_back_to_in_process(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="service.jobs"):
        queue = await open_job_queue(None, default_url=f"redis://127.0.0.1:{free_port()}/0")
    assert isinstance(queue, InProcessJobQueue) and queue.mode == "in-process"
    assert any("job queue: in-process" in r.getMessage() for r in caplog.records)
    await queue.close()


async def test_no_url_uses_redis_on_the_default_address(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    config = JobQueueConfig(prefix=unique_prefix())
    with caplog.at_level(logging.INFO, logger="service.jobs"):
        queue = await open_job_queue(None, config, default_url=redis_url)
    assert queue.mode == "redis"
    assert any("found Redis on the default address" in r.getMessage() for r in caplog.records)
    await queue.close()
    await delete_prefix(redis_url, config.prefix)


async def test_reachable_redis_url_gives_a_redis_queue(redis_url: str) -> None:
    config = JobQueueConfig(prefix=unique_prefix())
    queue = await open_job_queue(redis_url, config)
    assert isinstance(queue, RedisJobQueue) and queue.mode == "redis"
    await queue.close()
    await delete_prefix(redis_url, config.prefix)
