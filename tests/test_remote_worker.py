"""Model workers as separate processes behind Redis: round trip, failover after SIGKILL with the conversation
kept, slow workers, rebalancing, worker metrics, no worker."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
import redis.asyncio as aioredis

from service.client import AgentClient
from service.metrics import NodeMetrics
from service.microturn import (
    MICRO_TURN,
    MICRO_TURN_MS,
    SAMPLES_PER_TURN,
    MicroTurn,
    MicroTurnOutput,
    TextInput,
)
from service.remote_worker import (
    HEARTBEAT_TTL_S,
    QUIET_S,
    REBALANCE_INTERVAL_S,
    SLOW_WORKER_MISSES,
    Keys,
    ModelWorkersUnavailable,
    RedisWorkerClient,
    serve_model_worker,
)
from tests.processes import stop_process
from tests.redis_server import redis_server
from tests.worker_models import ECHO_MODEL, SLOW_STEP_S, EchoModel

from .conftest import NodeFactory, RunningNode, free_port

REPO = Path(__file__).resolve().parent.parent
WORKER_READY_S = 60.0  # a worker loads and warms its model (≈ 8 s here, more on a loaded 2-core machine)
QUESTION = "What is the capital of France?"
NAME = "My name is Alice."
TOOL_QUESTION = "what is twelve times thirteen"
KEYS = Keys()

WorkerFactory = Callable[..., Awaitable[subprocess.Popen[bytes]]]


@pytest.fixture
def own_redis() -> Iterator[str]:
    """A Redis of this test alone: no worker registered by another test can answer here.

    Request it before ``start_node`` so that it is stopped after the node (fixtures stop in reverse order).
    """
    with redis_server() as url:
        yield url


@pytest.fixture
async def model_worker(own_redis: str) -> AsyncIterator[WorkerFactory]:
    """Factory: ``await model_worker("w1")`` starts `microturn worker` and returns once it is registered.

    ``model="echo"`` runs the light test model of tests/worker_models.py (no weights, can be made slow).
    """
    procs: list[subprocess.Popen[bytes]] = []
    r = aioredis.Redis.from_url(own_redis, decode_responses=True)

    async def start(worker_id: str, model: str = "reactive", capacity: int = 4,
                    extra: Sequence[str] = ()) -> subprocess.Popen[bytes]:
        # The echo model is registered by the tests' own entry point, which is `microturn` otherwise.
        entry = "tests.worker_models" if model == ECHO_MODEL else "service.cli"
        proc = subprocess.Popen(
            [sys.executable, "-m", entry, "worker", "--redis-url", own_redis, "--model", model,
             "--capacity", str(capacity), "--worker-id", worker_id, *extra],
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


async def healthz(url: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http, http.get(f"{url}/healthz") as resp:
        assert resp.status == 200
        return dict(await resp.json())


async def scrape(url: str) -> dict[str, float]:
    """Prometheus text from ``url`` as ``{'name{labels}': value}``."""
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        assert resp.status == 200
        text = await resp.text()
    return {m.group(1): float(m.group(2))
            for m in re.finditer(r"^([a-z_]+(?:\{[^}]*\})?) (\S+)$", text, re.MULTILINE)}


async def until(what: str, check: Callable[[], Awaitable[bool]], timeout: float) -> float:
    """Poll ``check`` every 50 ms until it holds; returns the seconds it took."""
    t0 = time.monotonic()
    while not await check():
        assert time.monotonic() - t0 < timeout, f"{what}: not within {timeout} s"
        await asyncio.sleep(0.05)
    return time.monotonic() - t0


Connect = Callable[[str], Awaitable[AgentClient]]


async def redis_worker_session(own_redis: str, start_node: NodeFactory,
                               connect: Connect) -> tuple[RunningNode, AgentClient]:
    """A node stepping on the Redis model workers (no background worker), and a session on it."""
    node = await start_node(redis_url=own_redis, model_workers="redis", background_workers=0)
    client = await connect(node.url)
    await client.wait_for("session.started", timeout=5)
    return node, client


def session_id(client: AgentClient) -> str:
    assert client.location is not None
    return str(client.location.rsplit("/", 1)[-1])


async def test_typed_question_is_answered_by_a_worker_process(
    own_redis: str, model_worker: WorkerFactory, start_node: NodeFactory, connect
) -> None:
    await model_worker("w1")
    node, client = await redis_worker_session(own_redis, start_node, connect)
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


async def test_session_moves_to_another_worker_when_its_worker_is_killed_and_keeps_its_conversation(
    own_redis: str, model_worker: WorkerFactory, start_node: NodeFactory, connect
) -> None:
    started = await asyncio.gather(model_worker("w1"), model_worker("w2"))
    workers = dict(zip(("w1", "w2"), started, strict=True))
    node, client = await redis_worker_session(own_redis, start_node, connect)
    session_key = KEYS.session(session_id(client))
    r = aioredis.Redis.from_url(own_redis, decode_responses=True)
    try:
        told = time.monotonic()
        client.send({"type": "input.text", "text": NAME})
        await client.wait_for("response.text", timeout=30, after=told)  # the model heard it and replies
        owner = await r.get(session_key)
        assert owner in workers, owner
        workers[owner].send_signal(signal.SIGKILL)
        killed = time.monotonic()
        turns = len(client.events_of("turn"))
        # Typed while the session's worker is dead: nobody answers it there.
        client.send({"type": "input.text", "text": TOOL_QUESTION})

        async def moved() -> bool:
            return await r.get(session_key) != owner

        # Its micro-turns go unanswered: the node moves the session after a second of that, at the latest
        # when the dead worker's heartbeat key expires.
        await until("the session moves", moved, HEARTBEAT_TTL_S + 3)
        new_owner = await r.get(session_key)
        assert new_owner in workers and new_owner != owner
        moved_after = time.monotonic() - killed
        assert len(client.events_of("turn")) - turns >= 3, "the session ticked on while its worker was dead"

        # The new worker asked the background model the question typed during the outage, with the
        # conversation so far: it knows what was said on the dead worker.
        async def submitted() -> bool:
            return bool(await r.xlen("microturn:jobs"))

        await until("the question typed during the outage goes to the background model", submitted, 10)
        (_, entry), = await r.xrange("microturn:jobs")
        payload = json.loads(entry["job"])["payload"]
        assert payload["question"] == TOOL_QUESTION
        said = [(m["role"], m["content"]) for m in payload["conversation"]]
        assert said[0] == ("user", NAME) and said[1][0] == "assistant", said
        assert all(isinstance(m["t_ms"], int) for m in payload["conversation"])

        asked = time.monotonic()
        client.send({"type": "input.text", "text": QUESTION})
        await client.wait_for("response.text", timeout=30, after=asked,
                              match=lambda e: "paris" in e["text"].lower())
    finally:
        await r.aclose()

    async def only_the_new_owner_is_live() -> bool:
        worker = (await healthz(node.url))["worker"]
        return [w["id"] for w in worker["live_workers"]] == [new_owner]

    await until("the dead worker is dropped", only_the_new_owner_is_live, HEARTBEAT_TTL_S + 2)
    worker = (await healthz(node.url))["worker"]
    assert worker["timeouts"] > 0, "micro-turns sent to the dead worker went unanswered, and were counted"
    assert moved_after < HEARTBEAT_TTL_S + 1, moved_after


async def test_a_slow_worker_process_loses_its_session_to_a_live_one(
    own_redis: str, model_worker: WorkerFactory, start_node: NodeFactory, connect
) -> None:
    # The most free capacity gets the session: the worker that will be slow.
    slow = await model_worker("slow", model=ECHO_MODEL, capacity=8)
    await model_worker("spare", model=ECHO_MODEL, capacity=4)
    node, client = await redis_worker_session(own_redis, start_node, connect)
    session_key = KEYS.session(session_id(client))
    r = aioredis.Redis.from_url(own_redis, decode_responses=True)
    try:
        for text in ("remember tulip", "go slow"):
            sent = time.monotonic()
            client.send({"type": "input.text", "text": text})
            await client.wait_for("response.text", timeout=5, after=sent,
                                  match=lambda e, text=text: e["text"] == f"heard: {text}")
        assert await r.get(session_key) == "slow"

        async def on_spare() -> bool:
            return await r.get(session_key) == "spare"

        # SLOW_WORKER_MISSES micro-turns unanswered in a row, on a loaded machine a few more.
        await until("the session leaves the slow worker", on_spare, SLOW_WORKER_MISSES * MICRO_TURN + 3)
        assert slow.poll() is None and await r.exists(KEYS.worker("slow")), "moved for being slow, not dead"
        live = {w["id"]: w for w in (await healthz(node.url))["worker"]["live_workers"]}
        assert live["slow"]["slow"] and not live["spare"]["slow"]

        asked = time.monotonic()
        client.send({"type": "input.text", "text": "what did I say?"})
        await client.wait_for("response.text", timeout=5, after=asked,
                              match=lambda e: e["text"] == "you said: remember tulip; go slow")

        async def released() -> bool:
            return await r.hget(KEYS.worker("slow"), "sessions") == "0"

        # Through its backlog (SLOW_STEP_S a micro-turn), the slow worker reads the release and lets go.
        await until("the slow worker releases the session", released, 30 * SLOW_STEP_S)
    finally:
        await r.aclose()
    metrics = await scrape(f"{node.url}/metrics")
    assert metrics['microturn_worker_moves_total{reason="slow"}'] == 1


async def test_worker_process_serves_prometheus_metrics(
    own_redis: str, model_worker: WorkerFactory, start_node: NodeFactory, connect
) -> None:
    port = free_port()
    await model_worker("w1", model=ECHO_MODEL, extra=["--metrics-port", str(port)])
    _, client = await redis_worker_session(own_redis, start_node, connect)
    sent = time.monotonic()
    client.send({"type": "input.text", "text": "hello"})
    await client.wait_for("response.text", timeout=5, after=sent, match=lambda e: e["text"] == "heard: hello")
    url = f"http://127.0.0.1:{port}/metrics"

    async def counted() -> bool:
        # The worker counts a reply once Redis has taken it: the node may have relayed it by then.
        return (await scrape(url))["microturn_worker_replies_total"] >= 1

    await until("the worker counts its reply", counted, 5)
    metrics = await scrape(url)
    assert metrics["microturn_worker_steps_total"] >= 1
    assert metrics["microturn_worker_step_seconds_count"] == metrics["microturn_worker_steps_total"]
    assert metrics["microturn_worker_batch_size_count"] == metrics["microturn_worker_steps_total"]
    assert metrics["microturn_worker_sessions"] == 1
    assert metrics["microturn_model_errors_total"] == 0
    assert metrics["microturn_worker_transport_errors_total"] == 0
    assert metrics["microturn_worker_restores_total"] == 0


async def test_no_live_worker_means_no_answers_but_no_crash(
    own_redis: str, start_node: NodeFactory, connect
) -> None:
    node, client = await redis_worker_session(own_redis, start_node, connect)
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


# ---------------------------------------------------------------------------------------------------------
# The node's RedisWorkerClient against workers on this test's own event loop: real Redis, real stepping,
# hand-made micro-turns, so that the order of what happens is exact.


def turn(session: str, index: int, *texts: str) -> MicroTurn:
    t_ms = index * MICRO_TURN_MS
    return MicroTurn(session, index, t_ms, np.zeros(SAMPLES_PER_TURN, dtype=np.int16),
                     texts=[TextInput(t_ms + 10, text) for text in texts])


@pytest.fixture
async def in_loop_workers(redis_url: str) -> AsyncIterator[tuple[str, Callable[..., Awaitable[EchoModel]]]]:
    """``(prefix, start)``: ``await start("w1", capacity)`` serves an EchoModel worker as a task here."""
    prefix = f"test-{uuid.uuid4().hex[:8]}:"
    keys = Keys(prefix)
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []
    r = aioredis.Redis.from_url(redis_url, decode_responses=True)

    async def start(worker_id: str, capacity: int) -> EchoModel:
        model = EchoModel()
        tasks.append(asyncio.create_task(
            serve_model_worker(redis_url, model, worker_id, capacity, prefix=prefix, stop=stop)))

        async def registered() -> bool:
            return bool(await r.exists(keys.worker(worker_id)))

        await until(f"worker {worker_id} registers", registered, 10)
        return model

    yield prefix, start
    stop.set()
    await asyncio.gather(*tasks)
    await r.aclose()


async def test_a_slow_worker_s_session_moves_and_the_new_worker_answers_what_it_missed(
    redis_url: str, in_loop_workers: tuple[str, Callable[..., Awaitable[EchoModel]]]
) -> None:
    prefix, start = in_loop_workers
    slow_model = await start("slow", 4)
    await start("spare", 2)
    client = RedisWorkerClient(redis_url, NodeMetrics(), prefix=prefix)
    await client.start()
    r = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        for index, text in enumerate(("remember tulip", "go slow")):
            assert [o.text for o in await client.step([turn("s", index, text)])] == [f"heard: {text}"]
        # From here on the slow worker misses every deadline: this text is never answered there.
        outputs = await client.step([turn("s", 2, "typed while it is slow")])
        assert outputs[0].text == ""
        index = 3
        while await r.get(Keys(prefix).session("s")) == "slow":
            assert index < 2 + SLOW_WORKER_MISSES + 2, "the session did not leave the slow worker"
            outputs = await client.step([turn("s", index)])
            index += 1
        # The micro-turn that moved answers what the slow worker never answered...
        assert outputs[0].text == "heard: typed while it is slow"
        # ...and the new worker knows the whole conversation.
        outputs = await client.step([turn("s", index, "what did I say")])
        assert outputs[0].text == "you said: remember tulip; go slow; typed while it is slow"
        moves = client.metrics.registry.get_sample_value("microturn_worker_moves_total", {"reason": "slow"})
        assert moves == 1
        assert [w["slow"] for w in client.describe()["live_workers"]] == [True, False]

        async def released() -> bool:
            return "s" not in slow_model.typed

        await until("the slow worker releases the session", released, 30 * SLOW_STEP_S)
    finally:
        await r.aclose()
        await client.close()


async def test_a_worker_that_joins_takes_one_quiet_session_and_nothing_flaps(
    redis_url: str, in_loop_workers: tuple[str, Callable[..., Awaitable[EchoModel]]]
) -> None:
    prefix, start = in_loop_workers
    await start("a", 2)
    client = RedisWorkerClient(redis_url, NodeMetrics(), prefix=prefix)
    await client.start()
    r = aioredis.Redis.from_url(redis_url, decode_responses=True)
    sessions = ("s1", "s2")

    async def tick(index: int, *texts: str) -> list[MicroTurnOutput]:
        outputs = await client.step([turn(s, index, *texts) for s in sessions])
        await asyncio.sleep(MICRO_TURN / 2)  # time passes as between ticks (half: the test is not real time)
        return outputs

    def moves() -> float:
        return client.metrics.registry.get_sample_value("microturn_worker_moves_total",
                                                        {"reason": "rebalance"}) or 0.0

    try:
        index = 0
        await tick(index, "hello")  # both sessions on "a": it is full
        index += 1
        await start("b", 4)
        give_up = time.monotonic() + QUIET_S + REBALANCE_INTERVAL_S + 5
        while moves() == 0:
            assert time.monotonic() < give_up, "no session moved to the new worker"
            await tick(index)
            index += 1
        owners = [await r.get(Keys(prefix).session(s)) for s in sessions]
        assert sorted(owners) == ["a", "b"], owners
        # Free capacity now differs by 2 (a: 1, b: 3): below the gap that moves sessions. Nothing moves on.
        settle = time.monotonic() + 2 * REBALANCE_INTERVAL_S + 1
        while time.monotonic() < settle:
            await tick(index)
            index += 1
        assert moves() == 1
        assert [await r.get(Keys(prefix).session(s)) for s in sessions] == owners
        outputs = await tick(index, "what did I say")
        assert [o.text for o in outputs] == ["you said: hello"] * 2, "the moved session kept its conversation"
    finally:
        await r.aclose()
        await client.close()
