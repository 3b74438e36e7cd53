"""The demo page in a real browser against the real server: speak a question, hear an answer.

Headless Chromium's fake microphone plays a flite-synthesised question into the page; the test clicks the
call button of the page's <microturn-agent> widget and reads what the page itself shows and records
(``data-state``, transcript elements and ``window.microturn``), so the server needs no test-only hooks.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.browser import (
    CHROMIUM,
    QUESTION,
    Page,
    fake_microphone_flags,
    launch_chromium,
    node_sessions,
    serve_microturn,
    spoken_wav,
)
from tests.conftest import free_port

REPO = Path(__file__).resolve().parent.parent
SERVER_READY_TIMEOUT = 90  # the model loads and warms up before /healthz answers
SCREENSHOT = REPO / "docs" / "img" / "demo.png"
WIDGET = "microturn-agent"  # the demo page's call controls are the embeddable widget's (web/widget.js)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)"),
]


@pytest.fixture
def question_wav(tmp_path: Path) -> Path:
    return spoken_wav(QUESTION, tmp_path / "question.wav")


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[str]:
    """``microturn serve`` on a free port; yields its base URL once /healthz answers 200."""
    async with serve_microturn(tmp_path, free_port(), ready_timeout=SERVER_READY_TIMEOUT) as base:
        yield base


@pytest.fixture
async def page(tmp_path: Path, question_wav: Path) -> AsyncIterator[Page]:
    assert CHROMIUM is not None
    async with launch_chromium(CHROMIUM, tmp_path, fake_microphone_flags(question_wav)) as page:
        try:
            yield page
        finally:
            print("--- page console ---", *page.console, sep="\n")


def _count(selector: str) -> str:
    return f"document.querySelectorAll({selector!r}).length"


async def test_voice_and_text_conversation(server: str, page: Page) -> None:
    await page.navigate(f"{server}/")
    assert await page.evaluate("document.body.dataset.state") == "idle"
    # Typed before connecting: the page sends it as session.update once the events channel opens.
    await page.type_into("#instructions", "You are a concise geography tutor.")

    await page.click(f"{WIDGET} >>> .call")
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
    await page.click(f"{WIDGET} >>> .hangup")
    await page.wait_for("document.body.dataset.state === 'ended'", 5, "the call to end")
    deadline = time.monotonic() + 10
    while await node_sessions(server) != 0:
        assert time.monotonic() < deadline, "the session was not released after hang-up"
        await asyncio.sleep(0.2)
