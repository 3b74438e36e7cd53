"""The server processes benchmarks run against: start one on a free port, wait until healthy, stop it.

Shared by the suite (``microturn bench``), bench/latency.py and bench/background.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from tests.processes import stop_process

ROOT = Path(__file__).resolve().parent.parent.parent
READY_TIMEOUT_S = 180.0  # loading the LLM and building recognisers on a busy 2-core machine
STOP_GRACE_S = 15.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout: float = READY_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}")
            try:
                async with http.get(f"{url}/healthz") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.5)
    raise TimeoutError(f"server at {url} not healthy within {timeout} s")


@dataclass
class ServerProcess:
    url: str
    proc: subprocess.Popen[bytes]


@contextlib.asynccontextmanager
async def server_process(module: str, *args: str) -> AsyncIterator[ServerProcess]:
    """``python -m module ... --port P`` on a free port with this interpreter; stopped on exit."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", module, *args, "--port", str(port)], cwd=ROOT)
    try:
        server = ServerProcess(f"http://127.0.0.1:{port}", proc)
        await wait_healthy(server.url, proc)
        yield server
    finally:
        await asyncio.to_thread(stop_process, proc, STOP_GRACE_S)


def serve_model(
    model: str, extra: Sequence[str] = (), log_level: str = "WARNING"
) -> contextlib.AbstractAsyncContextManager[ServerProcess]:
    """A ``microturn serve --model MODEL`` node of its own."""
    return server_process("service.cli", "--log-level", log_level, "serve", "--model", model, *extra)


async def scrape_node(url: str) -> tuple[dict[str, float], dict[str, Any]]:
    """A node's Prometheus counters (/metrics, name with labels -> value) and its /healthz JSON."""
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{url}/metrics") as resp:
            text = await resp.text()
        async with http.get(f"{url}/healthz") as resp:
            health = await resp.json()
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values, health
