"""Shared fixtures: a real media node on a free port, and real synthesised speech."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from functools import cache

import numpy as np
import pytest
from aiohttp import web

from model.base import InteractionModel
from model.catalog import create_model
from model.tts import FliteSynthesizer
from service.app import NODE, MediaNode, NodeConfig, create_app
from service.client import AgentClient
from service.microturn import SAMPLE_RATE, PcmArray
from tests.redis_server import redis_server


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """Torch on one thread: training and stepping are deterministic on one, and the box is shared.
    Modules that want it say ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A real Redis of the tests' own (see tests/redis_server.py)."""
    with redis_server() as url:
        yield url


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RunningNode:
    url: str
    node: MediaNode


NodeFactory = Callable[..., Awaitable[RunningNode]]


@pytest.fixture
async def start_node() -> AsyncIterator[NodeFactory]:
    """Factory: ``await start_node(model=..., max_sessions=...)`` serves a node; all are stopped after."""
    runners: list[web.AppRunner] = []

    async def start(model: InteractionModel | None = None, **config: object) -> RunningNode:
        cfg = NodeConfig(**config)  # type: ignore[arg-type]
        app = create_app(cfg, model if model is not None else create_model(cfg.model))
        runner = web.AppRunner(app)
        await runner.setup()
        runners.append(runner)
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        return RunningNode(url=f"http://127.0.0.1:{port}", node=app[NODE])

    yield start
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
async def connect() -> AsyncIterator[Callable[[str], Awaitable[AgentClient]]]:
    """Factory: ``await connect(url)`` opens a client session; all are closed after."""
    clients: list[AgentClient] = []

    async def open_client(url: str) -> AgentClient:
        client = AgentClient(url)
        clients.append(client)
        await client.connect()
        return client

    yield open_client
    for client in clients:
        with contextlib.suppress(Exception):
            await client.close()


@cache
def speech(text: str, voice: str = "slt") -> PcmArray:
    """flite speech of ``text``, 16 kHz mono int16 (cached: tests say the same sentences)."""
    return FliteSynthesizer(voice).synthesize(text)


def silence(seconds: float) -> PcmArray:
    return np.zeros(int(seconds * SAMPLE_RATE), dtype=np.int16)
