"""Stopping the processes a test or benchmark started: politely first, then for sure."""

from __future__ import annotations

import subprocess

STOP_GRACE_S = 10.0  # SIGTERM -> exit; SIGKILL after this


def stop_process(proc: subprocess.Popen[bytes], grace: float = STOP_GRACE_S) -> None:
    """SIGTERM ``proc`` (one this code started), SIGKILL it if it is still there after ``grace`` s."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
