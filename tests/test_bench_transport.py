"""The benchmark suite's transport pieces against real aiortc: packet impairment and the null server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import numpy as np
import pytest
from aiohttp import web

from bench.suite.cases import Network
from bench.suite.network import impair_outgoing_audio
from bench.suite.nullserver import create_null_app
from bench.suite.runner import FEED_AHEAD_S, feed
from service.client import AgentClient, CameraTrack
from service.microturn import SAMPLE_RATE, MicroTurn, MicroTurnOutput
from service.output_track import OutputAudioTrack
from tests.fakes import SilentModel

from .conftest import NodeFactory, free_port, speech

Connect = Callable[[str], Awaitable[AgentClient]]


async def lost_samples(url: str) -> float:
    async with aiohttp.ClientSession() as http, http.get(f"{url}/metrics") as resp:
        text = await resp.text()
    return sum(
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith("microturn_audio_lost_samples_total")
    )


async def test_outgoing_packets_are_dropped_and_delayed(start_node: NodeFactory, connect: Connect) -> None:
    node = await start_node(max_sessions=1)
    client = await connect(node.url)
    await client.wait_for("session.started", timeout=10)
    before = await lost_samples(node.url)
    stats = impair_outgoing_audio(client.pc, Network(loss=0.3, jitter_ms=20.0), seed=7)
    await asyncio.sleep(3.0)  # the microphone streams 50 packets a second, silence or not
    assert stats.packets >= 100
    assert 0.15 < stats.dropped / stats.packets < 0.45
    assert stats.delayed > 0.5 * (stats.packets - stats.dropped)
    assert await lost_samples(node.url) > before, "the server noticed the missing audio"


async def test_no_impairment_leaves_the_transport_alone(start_node: NodeFactory, connect: Connect) -> None:
    node = await start_node(max_sessions=1)
    client = await connect(node.url)
    await client.wait_for("session.started", timeout=10)
    stats = impair_outgoing_audio(client.pc, Network(), seed=7)
    await asyncio.sleep(0.5)
    assert stats.packets == 0  # not wrapped at all


class FrameCounter(SilentModel):
    """Counts the micro-turns that carried a camera frame."""

    def __init__(self) -> None:
        self.frames = 0

    def step_session(self, mt: MicroTurn) -> MicroTurnOutput:
        self.frames += mt.video is not None
        return super().step_session(mt)


async def test_impairment_leaves_the_camera_alone(start_node: NodeFactory) -> None:
    model = FrameCounter()
    node = await start_node(model, max_sessions=1)
    client = AgentClient(node.url, camera=CameraTrack(10.0, still=np.full((120, 160, 3), 128, np.uint8)))
    try:
        await client.connect()
        await client.wait_for("session.started", timeout=10)
        stats = impair_outgoing_audio(client.pc, Network(loss=1.0), seed=7)
        before = model.frames
        await asyncio.sleep(2.0)
        assert stats.packets >= 50 and stats.dropped == stats.packets  # the microphone's, all dropped
        assert model.frames - before >= 5  # while the camera's packets go through
    finally:
        await client.close()


@pytest.fixture
async def null_server() -> AsyncIterator[str]:
    runner = web.AppRunner(create_null_app())
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def test_null_server_falls_silent_when_the_user_speaks(null_server: str, connect: Connect) -> None:
    client = await connect(null_server)
    await client.wait_for("session.started", timeout=10)
    await client.wait_for("response.audio.started", timeout=10)
    await asyncio.sleep(1.0)
    assert client.received.first_audible() is not None, "its tone is heard"
    pcm = speech("stop")
    onset = client.say(pcm) - len(pcm) / SAMPLE_RATE
    await client.wait_for("response.audio.stopped", timeout=3, after=onset)
    await asyncio.sleep(0.8)
    last = client.received.last_audible(after=onset)
    assert last is not None and last - onset < 0.6, "the tone stopped within the transport's delay"
    assert time.monotonic() - onset < 5


async def test_a_time_line_longer_than_the_microphone_queue_is_played_whole() -> None:
    """The microphone track refuses more than 30 s: the runner feeds a long case a second at a time."""
    now = [0.0]
    microphone = OutputAudioTrack(clock=lambda: now[0])  # a fake clock: frames are due at once
    pcm = (np.arange(40 * SAMPLE_RATE) % 1000 + 1).astype(np.int16)  # 40 s, never silent
    head = FEED_AHEAD_S * SAMPLE_RATE
    microphone.enqueue(pcm[:head])
    feeder = asyncio.create_task(feed(microphone, pcm[head:]))
    played = []
    while sum(len(p) for p in played) < len(pcm):
        frame = await microphone.recv()
        now[0] += 0.02
        played.append(frame.to_ndarray().reshape(-1))
        await asyncio.sleep(0.001)  # 20 ms of audio per ms: the feeder keeps up anyway
    await feeder
    assert microphone.overflow_samples == 0
    assert np.array_equal(np.concatenate(played)[: len(pcm)], pcm)
