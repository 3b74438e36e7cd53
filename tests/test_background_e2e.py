"""Two-model coordination end to end: WebRTC session -> Redis job queue -> background worker -> spoken."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.processes import stop_process
from tests.redis_server import redis_server

from .conftest import NodeFactory, free_port

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def background_worker(redis_url: str) -> Iterator[subprocess.Popen[bytes]]:
    """A separate `microturn background` process on the test Redis."""
    command = ["-m", "service.cli", "background", "--redis-url", redis_url, "--consumer", "test-worker"]
    proc = subprocess.Popen(
        [sys.executable, *command],
        cwd=REPO,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    yield proc
    stop_process(proc)


async def metric(url: str, name: str) -> float:
    async with aiohttp.ClientSession() as http, http.get(f"{url}/metrics") as resp:
        text = await resp.text()
    match = re.search(rf"^{re.escape(name)} ([0-9.e+]+)$", text, re.MULTILINE)
    assert match, f"{name} not in /metrics"
    return float(match.group(1))


async def test_tool_question_goes_through_a_separate_worker_and_is_spoken(
    start_node: NodeFactory, connect, redis_url: str, background_worker: subprocess.Popen[bytes]
) -> None:
    node = await start_node(redis_url=redis_url, background_workers=0)
    assert node.node.jobs is not None and node.node.jobs.mode == "redis"
    client = await connect(node.url)
    await client.wait_for("session.started", timeout=5)
    sent = time.monotonic()
    client.send({"type": "input.text", "text": "what is twelve times thirteen"})
    # The user asks something else meanwhile; the session answers it without waiting for the job.
    await asyncio.sleep(0.3)
    client.send({"type": "input.text", "text": "What is the capital of France?"})
    _, done = await client.wait_for("background.update", timeout=60, match=lambda e: e["status"] == "done")
    statuses = [e["status"] for e in client.events_of("background.update") if e["job_id"] == done["job_id"]]
    assert statuses[0] in ("queued", "running") and statuses[-1] == "done"
    assert "partial" in statuses
    await client.wait_for("response.text", timeout=30, match=lambda e: "156" in e["text"])
    said = [e["text"] for e in client.events_of("response.text")]
    assert any("paris" in text.lower() for text in said), said
    assert client.received.first_audible(after=sent) is not None
    await client.wait_for("response.audio.stopped", timeout=20, after=time.monotonic())
    # The tick kept its deadline while the background worked (allow 1 % for a loaded machine).
    ticks = await metric(node.url, "microturn_ticks_total")
    misses = await metric(node.url, "microturn_deadline_misses_total")
    assert ticks > 20 and misses <= 0.01 * ticks, (misses, ticks)
    # A finished job leaves nothing behind in the session: a long session keeps no old jobs.
    (session,) = node.node.sessions.values()
    assert not session._job_of_call and not session._call_of_job


async def test_timer_is_confirmed_then_announced_on_time(
    start_node: NodeFactory, connect, redis_url: str
) -> None:
    node = await start_node(redis_url=redis_url, background_workers=1)
    client = await connect(node.url)
    await client.wait_for("session.started", timeout=5)
    asked = time.monotonic()
    client.send({"type": "input.text", "text": "set a timer for 3 seconds"})
    await client.wait_for("response.text", timeout=30, match=lambda e: "set for" in e["text"])
    finished, _ = await client.wait_for("response.text", timeout=15, match=lambda e: "is done" in e["text"])
    # Said when the timer ends: 3 s after it was set, plus at most a micro-turn or two of stepping.
    assert 3.0 <= finished - asked <= 4.5, finished - asked


async def test_never_mind_cancels_a_pending_timer(start_node: NodeFactory, connect, redis_url: str) -> None:
    node = await start_node(redis_url=redis_url, background_workers=1)
    client = await connect(node.url)
    await client.wait_for("session.started", timeout=5)
    client.send({"type": "input.text", "text": "set a timer for 4 seconds"})
    await client.wait_for("response.text", timeout=30, match=lambda e: "set for" in e["text"])
    client.send({"type": "input.text", "text": "never mind"})
    await client.wait_for("response.text", timeout=10, match=lambda e: "cancelled" in e["text"].lower())
    await asyncio.sleep(5)
    assert not [e for e in client.events_of("response.text") if "is done" in e["text"]]


async def test_redis_lost_mid_session_then_back(start_node: NodeFactory, connect) -> None:
    port = free_port()
    with contextlib.ExitStack() as first:
        url = first.enter_context(redis_server(port=port))
        node = await start_node(redis_url=url, background_workers=1)
        client = await connect(node.url)
        await client.wait_for("session.started", timeout=5)
        first.close()  # Redis goes down (it keeps nothing on disk)
        turns = len(client.events_of("turn"))
        lost = time.monotonic()
        client.send({"type": "input.text", "text": "what is two plus two"})
        _, error = await client.wait_for("error", timeout=15, after=lost)
        assert error["code"] == "background_unavailable"
        await client.wait_for("response.text", timeout=15, match=lambda e: "could not finish" in e["text"])
        assert len(client.events_of("turn")) > turns, "the session keeps stepping without Redis"
        with redis_server(port=port):  # ... and comes back
            back = time.monotonic()
            client.send({"type": "input.text", "text": "what is three plus three"})
            await client.wait_for("response.text", timeout=40, after=back, match=lambda e: "6" in e["text"])
