"""Model workers as separate processes behind Redis: round trip, failover after SIGKILL, no worker."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis

from service.remote_worker import HEARTBEAT_TTL_S, Keys, ModelWorkersUnavailable
from tests.processes import stop_process
from tests.redis_server import redis_server

from .conftest import NodeFactory

REPO = Path(__file__).resolve().parent.parent
WORKER_READY_S = 60.0  # a worker loads and warms its model (≈ 8 s here, more on a loaded 2-core machine)
QUESTION = "What is the capital of France?"
KEYS = Keys()

WorkerFactory = Callable[[str], Awaitable[subprocess.Popen[bytes]]]


@pytest.fixture
def own_redis() -> Iterator[str]:
    """A Redis of this test alone: no worker registered by another test can answer here.

    Request it before ``start_node`` so that it is stopped after the node (fixtures stop in reverse order).
    """
    with redis_server() as url:
        yield url


@pytest.fixture
async def model_worker(own_redis: str) -> AsyncIterator[WorkerFactory]:
    """Factory: ``await model_worker("w1")`` starts `microturn worker` and returns once it is registered."""
    procs: list[subprocess.Popen[bytes]] = []
    r = aioredis.Redis.from_url(own_redis, decode_responses=True)

    async def start(worker_id: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "worker", "--redis-url", own_redis, "--model", "reactive",
             "--capacity", "4", "--worker-id", worker_id],
            cwd=REPO,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        procs.append(proc)
        give_up = time.monotonic() + WORKER_READY_S
        while not await r.exists(KEYS.worker(worker_id)):
            assert proc.poll() is None, f"worker {worker_id} exited with {proc.returncode}"
            assert time.monotonic() < give_up, f"worker {worker_id} did not register in {WORKER_READY_S} s"
            await asyncio.sleep(0.1)
        return proc

    yield start
    await r.aclose()
    for proc in procs:
        stop_process(proc)


async def healthz(url: str) -> dict[str, object]:
    async with aiohttp.ClientSession() as http, http.get(f"{url}/healthz") as resp:
        assert resp.status == 200
        return dict(await resp.json())


async def test_typed_question_is_answered_by_a_worker_process(
    own_redis: str, model_worker: WorkerFactory, start_node: NodeFactory, connect
) -> None:
    await model_worker("w1")
    node = await start_node(redis_url=own_redis, model_workers="redis", background_workers=0)
    client = await connect(node.url)
    await client.wait_for("session.started", timeout=5)
    sent = time.monotonic()
    client.send({"type": "input.text", "text": QUESTION})
    await client.wait_for("response.text", timeout=30, after=sent,
                          match=lambda e: "paris" in e["text"].lower())
    await client.wait_for("response.audio.stopped", timeout=30, after=sent)
    assert client.received.first_audible(after=sent) is not None, "the worker's speech is heard"
    turns = len(client.events_of("turn"))
    await asyncio.sleep(0.6)
    assert len(client.events_of("turn")) > turns, "micro-turns keep coming"
    worker = (await healthz(node.url))["worker"]
    assert isinstance(worker, dict)
    assert worker["mode"] == "redis" and [w["id"] for w in worker["live_workers"]] == ["w1"]


async def test_session_moves_to_another_worker_when_its_worker_is_killed(
    own_redis: str, model_worker: WorkerFactory, start_node: NodeFactory, connect
) -> None:
    started = await asyncio.gather(model_worker("w1"), model_worker("w2"))
    workers = dict(zip(("w1", "w2"), started, strict=True))
    node = await start_node(redis_url=own_redis, model_workers="redis", background_workers=0)
    client = await connect(node.url)
    await client.wait_for("session.started", timeout=5)
    assert client.location is not None
    session_key = KEYS.session(client.location.rsplit("/", 1)[-1])
    r = aioredis.Redis.from_url(own_redis, decode_responses=True)
    try:
        await client.wait_for("turn", timeout=5)
        owner = await r.get(session_key)
        assert owner in workers, owner
        workers[owner].send_signal(signal.SIGKILL)
        killed = time.monotonic()
        turns = len(client.events_of("turn"))
        # The node notices when the dead worker's heartbeat key expires, and moves the session.
        while (new_owner := await r.get(session_key)) == owner:
            assert time.monotonic() - killed < HEARTBEAT_TTL_S + 3, "the session was not moved"
            await asyncio.sleep(0.1)
        assert new_owner in workers and new_owner != owner
        assert len(client.events_of("turn")) - turns >= 10, "the session ticked on while its worker was dead"
        asked = time.monotonic()
        client.send({"type": "input.text", "text": QUESTION})
        await client.wait_for("response.text", timeout=30, after=asked,
                              match=lambda e: "paris" in e["text"].lower())
    finally:
        await r.aclose()
    worker = (await healthz(node.url))["worker"]
    assert isinstance(worker, dict)
    assert [w["id"] for w in worker["live_workers"]] == [new_owner]
    assert worker["timeouts"] > 0, "micro-turns sent to the dead worker went unanswered, and were counted"


async def test_no_live_worker_means_no_answers_but_no_crash(
    own_redis: str, start_node: NodeFactory, connect
) -> None:
    node = await start_node(redis_url=own_redis, model_workers="redis", background_workers=0)
    client = await connect(node.url)
    await client.wait_for("session.started", timeout=5)
    client.send({"type": "input.text", "text": QUESTION})
    await asyncio.sleep(1.5)
    assert len(client.events_of("turn")) >= 5, "the ticks go on without a worker"
    assert not client.events_of("response.text")
    health = await healthz(node.url)
    assert health["status"] == "degraded"
    worker = health["worker"]
    assert isinstance(worker, dict)
    assert worker["live_workers"] == [] and "no live model worker" in worker["problem"]
    assert worker["timeouts"] >= 5


async def test_redis_workers_without_redis_url_are_refused(start_node: NodeFactory) -> None:
    with pytest.raises(ModelWorkersUnavailable, match="redis-url"):
        await start_node(model_workers="redis")
