"""The demo page in a real browser against the real server: speak a question, hear an answer.

Headless Chromium's fake microphone plays a flite-synthesised question into the page; the test clicks
Connect and reads what the page itself shows and records (``data-state``, transcript elements and
``window.microturn``), so the server needs no test-only hooks.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import time
import wave
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import numpy as np
import pytest

from tests.browser import Page, fake_microphone_flags, launch_chromium, stop_process_group

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("MICROTURN_CHROMIUM") or shutil.which("chromium")
QUESTION = "what is the capital of france"
SERVER_READY_TIMEOUT = 90  # the model loads and warms up before /healthz answers
SCREENSHOT = REPO / "docs" / "img" / "demo.png"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tail(path: Path, chars: int = 6000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else ""


@pytest.fixture
def question_wav(tmp_path: Path) -> Path:
    """The spoken question with 1.5 s of silence before and 4 s after, 16 kHz mono s16.

    The leading silence covers the call setup (the fake microphone starts playing at getUserMedia, before
    the peer connection is up); the trailing silence lets the recogniser hear that the utterance ended.
    Chromium resamples the file to the capture rate itself.
    """
    speech = tmp_path / "speech.wav"
    subprocess.run(["flite", "-voice", "slt", "-t", QUESTION, "-o", str(speech)], check=True)
    with wave.open(str(speech)) as w:
        rate = w.getframerate()
        assert (w.getnchannels(), w.getsampwidth()) == (1, 2), "flite is expected to write mono s16"
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
    padded = np.concatenate([np.zeros(int(1.5 * rate), np.int16), pcm, np.zeros(4 * rate, np.int16)])
    out = tmp_path / "question.wav"
    with wave.open(str(out), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(padded.tobytes())
    return out


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[str]:
    """``microturn serve`` on a free port; yields its base URL once /healthz answers 200."""
    port = _free_port()
    log = tmp_path / "server.log"
    executable = Path(sys.executable).with_name("microturn")
    with log.open("wb") as log_file:
        proc = subprocess.Popen(
            [str(executable), "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=REPO,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_READY_TIMEOUT
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
            while True:
                if proc.poll() is not None:
                    pytest.fail(f"microturn serve exited with {proc.returncode}:\n{_tail(log)}")
                try:
                    async with http.get(f"{base}/healthz") as response:
                        if response.status == 200:
                            break
                except aiohttp.ClientError:
                    pass  # not listening yet
                if time.monotonic() > deadline:
                    pytest.fail(f"/healthz not ready after {SERVER_READY_TIMEOUT} s:\n{_tail(log)}")
                await asyncio.sleep(0.5)
        yield base
    finally:
        await asyncio.to_thread(stop_process_group, proc)
        # Shown by pytest only when the test failed.
        print(f"--- server log ({log}) ---\n{_tail(log)}")


@pytest.fixture
async def page(tmp_path: Path, question_wav: Path) -> AsyncIterator[Page]:
    assert CHROMIUM is not None
    async with launch_chromium(CHROMIUM, tmp_path, fake_microphone_flags(question_wav)) as page:
        try:
            yield page
        finally:
            print("--- page console ---", *page.console, sep="\n")


async def _sessions(base: str) -> int:
    async with aiohttp.ClientSession() as http, http.get(f"{base}/healthz") as response:
        return int((await response.json())["sessions"])


def _count(selector: str) -> str:
    return f"document.querySelectorAll({selector!r}).length"


async def test_voice_and_text_conversation(server: str, page: Page) -> None:
    await page.navigate(f"{server}/")
    assert await page.evaluate("document.body.dataset.state") == "new"
    # Typed before connecting: the page sends it as session.update once the events channel opens.
    await page.type_into("#instructions", "You are a concise geography tutor.")

    await page.click("#connect")
    await page.wait_for("document.body.dataset.state === 'connected'", 20, "the call to connect")
    started = await page.wait_for(
        "microturn.events.find(e => e.type === 'session.started')", 10, "session.started"
    )
    assert started["micro_turn_ms"] == 200

    # The fake microphone asks the question.
    user_text = await page.wait_for(
        "document.querySelector('#transcript .entry.user.final .text')?.textContent",
        30,
        "a final user transcript",
    )
    # The recogniser need not get every word, but a wrong capture rate or channel layout anywhere between
    # the fake microphone and the node would garble the key word too.
    assert "capital" in user_text.lower()
    agent_text = await page.wait_for(
        "document.querySelector('#transcript .entry.agent .text')?.textContent", 30, "the agent's reply"
    )
    # -40 dBFS: far above the near-silence of an idle track, far below speech.
    await page.wait_for("microturn.receivedAudioPeak > 0.01", 30, "audible agent audio")
    await page.wait_for(
        "microturn.events.some(e => e.type === 'response.audio.stopped')", 30, "the spoken reply to end"
    )

    # A typed question gets an answer too.
    await page.type_into("#text-input", "And the capital of Italy?")
    await page.click("#text-form button[type=submit]")
    assert await page.evaluate(_count("#transcript .entry.user.typed")) == 1
    typed_reply = await page.wait_for(
        "document.querySelectorAll('#transcript .entry.agent .text')[1]?.textContent",
        30,
        "the reply to the typed question",
    )
    turns = await page.evaluate(_count("#strip .cell"))
    peak = await page.evaluate("microturn.receivedAudioPeak")
    print(
        f"user said {user_text!r}; agent said {agent_text!r}, then {typed_reply!r}; "
        f"remote audio peak {peak:.3f}; {turns} micro-turns"
    )
    assert turns > 0
    # Neither the instructions nor the typed message were rejected, and nothing else went wrong.
    assert await page.evaluate("microturn.lastError") is None

    if os.environ.get("MICROTURN_SCREENSHOT") == "1":
        # Let the answer finish so the picture shows whole exchanges and a settled activity strip.
        await page.wait_for(
            "microturn.events.filter(e => e.type === 'response.audio.stopped').length >= 2",
            30,
            "the second reply to end",
        )
        await page.screenshot(SCREENSHOT)

    # Hanging up DELETEs the session: the node's session count drops back to zero.
    await page.click("#connect")
    await page.wait_for("document.body.dataset.state === 'closed'", 5, "the call to close")
    deadline = time.monotonic() + 10
    while await _sessions(server) != 0:
        assert time.monotonic() < deadline, "the session was not released after hang-up"
        await asyncio.sleep(0.2)
