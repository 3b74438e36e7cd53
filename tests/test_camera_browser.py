"""What the camera sees, on the demo page: a headless Chromium whose fake camera plays a synthetic exercise
clip calls a node running the trained runtime (``--model microturn``), and the page's transcript counts the
repetitions as the node's camera features see them (``camera.seen`` events, docs/protocol.md).

Chromium plays a ``.y4m`` file as its camera (``--use-file-for-fake-video-capture``) and loops it. The
clip is generated here (model/video/synthetic.py): clean, one set of push-ups at about 1.2 s each, with
about a second at rest before and after, so the loop joins rest to rest and the repetitions of one pass
and the next are seconds apart -- well within the 10 s after which a count starts again at one
(``REP_RESTART_S``). The count therefore goes on across passes: 1, 2, ... without a reset, and the test
waits for it to reach the clip's ``REPS``. Where in the clip the session starts does not matter: the first
repetitions may be played before the call is up (the camera starts with ``getUserMedia``), and the count
starts at the first one the node sees; one pass later it has seen ``REPS`` of them.

Also: a light test of the service's side (``MicroTurnOutput.seen`` -> ``camera.seen``) with a stand-in
model, so that a regression there is told apart from one in the vision or in the browser.
"""

from __future__ import annotations

import os
import re
import wave
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from model.interaction import DEFAULT_CHECKPOINT
from model.microturn_agent import MicroturnAgent
from model.video.synthetic import make_clip, write_y4m
from service.client import AgentClient
from service.microturn import MicroTurn, MicroTurnOutput
from tests.browser import CHROMIUM, Page, launch_chromium
from tests.conftest import NodeFactory, RunningNode
from tests.fakes import SilentModel

REPO = Path(__file__).resolve().parent.parent
SCREENSHOT = REPO / "docs" / "img" / "camera.png"
SCREENSHOT_MAX_BYTES = 150_000
VIEWPORT = (1100, 640)
REPS = 5  # push-ups in one pass of the clip
PERIOD_S = 1.2  # their base period
CLIP_SEED = 2  # a clip of one set (no pause within it), 0.9 s at rest before the first
WIDGET = "microturn-agent"
IN_WIDGET = "document.querySelector('microturn-agent').shadowRoot"
# The numbers of the "repetitions so far: k" lines that came as events, in order.
COUNTS = (
    "microturn.events.filter(e => e.type === 'camera.seen')"
    ".map(e => /^repetitions so far: (\\d+)$/.exec(e.text)).filter(Boolean).map(m => Number(m[1]))"
)
# The demo page's camera entries in the transcript, as shown.
CAMERA_ENTRIES = "[...document.querySelectorAll('#transcript .entry.camera .text')].map(e => e.textContent)"


def exercise_y4m(path: Path) -> Path:
    clip = make_clip("pushups", seed=CLIP_SEED, reps=REPS, period=PERIOD_S, clean=True)
    assert clip.params["sets"] == 1 and len(clip.rep_times) == REPS  # what the docstring counts on
    write_y4m(path, clip.frames(), clip.fps)
    return path


def silent_wav(path: Path, seconds: float = 2.0, rate: int = 16000) -> Path:
    """The fake microphone's input: silence (its default is a beep the recogniser would try to hear)."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.zeros(int(seconds * rate), np.int16).tobytes())
    return path


@pytest.fixture
async def page(tmp_path: Path) -> AsyncIterator[Page]:
    assert CHROMIUM is not None
    flags = [
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-video-capture={exercise_y4m(tmp_path / 'pushups.y4m')}",
        f"--use-file-for-fake-audio-capture={silent_wav(tmp_path / 'silence.wav')}",
    ]
    async with launch_chromium(CHROMIUM, tmp_path, flags, viewport=VIEWPORT) as page:
        try:
            yield page
        finally:
            print("--- page console ---", *page.console, sep="\n")


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)")
@pytest.mark.skipif(not DEFAULT_CHECKPOINT.exists(), reason="no trained checkpoint (model/train.py)")
async def test_the_demo_page_counts_the_repetitions_the_camera_shows(
    page: Page, start_node: NodeFactory
) -> None:
    node = await start_node(model=MicroturnAgent(), background_workers=0)  # warms up: LLM, network, flite
    await page.navigate(f"{node.url}/?camera=1")
    assert await page.evaluate("document.querySelector('#camera-toggle').checked") is True
    assert await page.evaluate(f"document.querySelector('{WIDGET}').camera") is True

    await page.click(f"{WIDGET} >>> .call")
    await page.wait_for("document.body.dataset.state === 'connected'", 20, "the call to connect")
    # The local preview: the caller's own camera, playing (frames decoded, time moving), muted.
    preview = f"{IN_WIDGET}.querySelector('.self-view')"
    await page.wait_for(
        f"!{preview}.hidden && !{preview}.paused && {preview}.readyState >= 2 && {preview}.videoWidth > 0",
        10,
        "the camera preview to play",
    )
    played = await page.evaluate(f"{preview}.currentTime")
    assert await page.evaluate(f"{preview}.muted") is True

    await page.wait_for(f"{COUNTS}.length >= {REPS}", 40, f"{REPS} repetitions counted")
    counts = await page.evaluate(COUNTS)
    assert counts == list(range(1, len(counts) + 1)), counts  # one by one, never reset across passes
    # The transcript shows the count as one entry that moves up, after the camera came on.
    entries = await page.evaluate(CAMERA_ENTRIES)
    assert entries[0] == "the camera is on", entries
    shown = [int(m[1]) for e in entries if (m := re.fullmatch(r"repetitions so far: (\d+)", e))]
    assert shown and shown[-1] >= REPS, entries
    assert await page.evaluate(f"{preview}.currentTime") > played
    # The widget's own captions (hidden on this page, shown where it is embedded) have the line too.
    caption = await page.evaluate(f"{IN_WIDGET}.querySelector('.line.camera:last-child .text')?.textContent")
    assert caption is not None and caption.startswith("repetitions so far: "), caption
    print(f"counts {counts}; camera entries {entries}")

    if os.environ.get("MICROTURN_SCREENSHOT") == "1":
        await page.screenshot(SCREENSHOT)
        assert SCREENSHOT.stat().st_size < SCREENSHOT_MAX_BYTES, "keep the docs' picture small"

    # The page's camera switch turns the picture off in the call (black frames): the node says so.
    await page.click("#camera-toggle")
    assert await page.evaluate(f"document.querySelector('{WIDGET}').cameraOff") is True
    assert await page.evaluate(f"{preview}.hidden") is True
    await page.wait_for(
        "microturn.events.some(e => e.type === 'camera.seen' && e.text === 'the camera is off')",
        10,
        "the node to see the camera off",
    )
    # The widget's camera button turns it on again, and the page's switch follows.
    await page.click(f"{WIDGET} >>> .camera")
    await page.wait_for("document.querySelector('#camera-toggle').checked", 5, "the switch to follow")
    await page.wait_for(f"!{preview}.hidden && !{preview}.paused", 5, "the preview to play again")
    await page.wait_for(
        "microturn.events.filter(e => e.type === 'camera.seen' && e.text === 'the camera is on').length >= 2",
        10,
        "the node to see the camera on again",
    )
    assert await page.evaluate("microturn.lastError") is None
    await page.click(f"{WIDGET} >>> .hangup")
    await page.wait_for("document.body.dataset.state === 'ended'", 5, "the call to end")


# -- the service's side, without a browser or the vision -------------------------------------------


class SeeingModel(SilentModel):
    """Says nothing, and reports a camera line in micro-turn 3 and two in micro-turn 5."""

    name: ClassVar[str] = "seeing"
    SEEN: ClassVar[dict[int, list[str]]] = {
        3: ["the camera is on"],
        5: ["repetitions so far: 1", "the light turned green"],
    }

    def step_session(self, mt: MicroTurn) -> MicroTurnOutput:
        return MicroTurnOutput(mt.session_id, mt.index, seen=list(self.SEEN.get(mt.index, [])))


async def test_what_the_model_saw_reaches_the_client_as_camera_seen_events(
    start_node: NodeFactory, connect: Callable[[str], Awaitable[AgentClient]]
) -> None:
    node: RunningNode = await start_node(model=SeeingModel(), background_workers=0)
    client = await connect(node.url)
    await client.wait_for("session.started", timeout=10)
    await client.wait_for("camera.seen", timeout=10, match=lambda e: e["text"] == "the light turned green")
    seen = client.events_of("camera.seen")
    assert [e["text"] for e in seen] == [
        "the camera is on",
        "repetitions so far: 1",
        "the light turned green",
    ]
    # Sent with the micro-turn's other news, on the session clock.
    assert seen[0]["t_ms"] >= 3 * 200 and seen[1]["t_ms"] >= seen[0]["t_ms"]
