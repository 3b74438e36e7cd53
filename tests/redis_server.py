"""A throwaway Redis for tests: a real ``redis-server`` on a free port, or ``MICROTURN_TEST_REDIS_URL``.

Usage (a fixture in the test module, or in ``tests/conftest.py`` once more than one module needs it)::

    @pytest.fixture(scope="module")
    def redis_url() -> Iterator[str]:
        with redis_server() as url:
            yield url

The server keeps nothing on disk (``--save "" --appendonly no``, working directory in a temp dir) and only
the process started here is stopped afterwards. Tests isolate themselves with a unique key prefix, so the
same server (or a shared one given by URL) serves every test of a module.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator

import pytest

from tests.processes import stop_process

TEST_REDIS_URL_ENV = "MICROTURN_TEST_REDIS_URL"
STARTUP_TIMEOUT_S = 10.0  # redis-server answers PING within ~50 ms; slow CI machines get slack
PING_INTERVAL_S = 0.02
STOP_TIMEOUT_S = 5.0  # SIGTERM → exit; SIGKILL after this


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _answers_ping(port: int) -> bool:
    """One raw RESP PING, so this helper needs no client library and no event loop."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@contextlib.contextmanager
def redis_server(port: int | None = None) -> Iterator[str]:
    """Yield the URL of a Redis to test against: ``$MICROTURN_TEST_REDIS_URL``, else a fresh server.

    With ``port`` always a fresh server on that port (a test that restarts Redis needs one it owns).
    """
    given = os.environ.get(TEST_REDIS_URL_ENV)
    if given and port is None:
        yield given
        return
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip(f"redis-server is not installed (scripts/setup.sh installs it) and ${TEST_REDIS_URL_ENV} "
                    "is not set")
    with tempfile.TemporaryDirectory(prefix="microturn-redis-") as workdir:
        port = port or _free_port()
        # The port can in principle be taken between _free_port() and the bind; the server would then exit
        # at once, which the wait below reports instead of hanging.
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", workdir, "--logfile", os.path.join(workdir, "redis.log")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            give_up = time.monotonic() + STARTUP_TIMEOUT_S
            while not _answers_ping(port):
                if proc.poll() is not None or time.monotonic() > give_up:
                    log_path = os.path.join(workdir, "redis.log")
                    log_tail = ""
                    if os.path.exists(log_path):
                        with open(log_path) as f:
                            log_tail = f.read()[-2000:]
                    raise RuntimeError(f"redis-server on port {port} did not start:\n{log_tail}")
                time.sleep(PING_INTERVAL_S)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            stop_process(proc, STOP_TIMEOUT_S)
