"""Video end to end over WebRTC: an aiortc client's camera track plays a synthetic clip to a real node.

- What the node's micro-turns carry is the clip: at the model's resolution, with every repetition still
  countable by the video features (model/video/features.py) from what arrived.
- ``microturn bench repcount`` scores a model that counts out loud from those features (a stand-in for the
  trained model): the harness's video path, the recognition of spoken counts and their timing give credit
  where it is earned.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from bench.suite.cli import Target, run_suites, select_cases
from model.lexicon import number_words
from model.video.features import VideoFeatureExtractor
from model.video.replay import VIDEO_SIZE
from model.video.synthetic import make_clip
from service.client import AgentClient, CameraTrack
from service.microturn import Action, MicroTurn, MicroTurnOutput, VideoFrame
from tests.fakes import SilentModel

from .conftest import NodeFactory, speech

CLIP_START_S = 1.0  # s after the session started: the camera shows the clip's first frame still till then
SETTLE_S = 1.5  # s after the clip's end for the last frames and micro-turns to arrive


class VideoCounter(SilentModel):
    """Keeps the frames its micro-turns carried, counts repetitions in them and, with ``speak``, says each
    count the micro-turn it is seen (flite)."""

    name: ClassVar[str] = "video-counter"

    def __init__(self, speak: bool = False) -> None:
        self.speak = speak
        self.frames: list[VideoFrame] = []
        self.reps = 0
        self._features = VideoFeatureExtractor()
        self.lock = threading.Lock()  # stepped on the worker's thread, read by the test

    def step_session(self, mt: MicroTurn) -> MicroTurnOutput:
        (features,) = self._features.step_turns([mt])
        with self.lock:
            if mt.video is not None:
                self.frames.append(mt.video)
            self.reps = features.reps
        counts = [number_words(int(e.value)) for e in features.events if e.kind == "rep"]
        if not (self.speak and counts):
            return super().step_session(mt)
        words = " ".join(counts)
        pcm = speech(words)
        return MicroTurnOutput(mt.session_id, mt.index, action=Action.SPEAK, text=words, pcm=pcm)


async def test_a_camera_clip_reaches_the_micro_turns_and_its_reps_can_be_counted(
    start_node: NodeFactory,
) -> None:
    clip = make_clip("squats", seed=11, split="bench", reps=4, period=1.2)
    frames = list(clip.frames())
    counter = VideoCounter()
    node = await start_node(counter, max_sessions=1)
    camera = CameraTrack(clip.fps, still=frames[0])
    client = AgentClient(node.url, camera=camera)
    try:
        await client.connect()
        await client.wait_for("session.started", timeout=10)
        camera.play(frames, at=time.monotonic() + CLIP_START_S)
        await asyncio.sleep(CLIP_START_S + clip.duration + SETTLE_S)
    finally:
        await client.close()

    assert camera.frames_sent / clip.fps > clip.duration  # the camera kept real time
    with counter.lock:
        got = list(counter.frames)
        reps = counter.reps
    # One frame per micro-turn (5/s) at the model's size, from the clip: the figure moves, so frames differ.
    assert len(got) >= 0.8 * 5 * (CLIP_START_S + clip.duration)
    assert {f.rgb.shape for f in got} == {(VIDEO_SIZE[1], VIDEO_SIZE[0], 3)}
    assert all(f.rgb.dtype == np.uint8 for f in got)
    assert len({f.rgb.tobytes() for f in got}) > len(got) // 2
    assert reps == len(clip.rep_times)


@pytest.mark.slow
async def test_bench_repcount_credits_counts_said_in_time(start_node: NodeFactory, tmp_path: Path) -> None:
    (case,) = select_cases(["repcount"], seed=None, path=None, quick=True, limit=None)["repcount"]
    assert case.video is not None and case.video.reps is not None
    node = await start_node(VideoCounter(speak=True), max_sessions=1)

    path = await run_suites(["repcount"], {"repcount": [case]}, [Target("video-counter", node.url)], tmp_path)

    data = json.loads(path.read_text())
    summary = data["summaries"]["repcount"]["video-counter"]
    # What it said (response.text): every count, each within 1 s of its repetition. What the recogniser
    # made of the audio: pocketsphinx mishears some one-word counts ("two" as "q"), so at least half.
    reps = case.video.reps
    assert summary["text_obo"] == 1.0 and summary["text_counts"] == reps
    assert summary["text_in_time"] == 1.0
    assert summary["counts"] >= reps // 2 and summary["in_time"] == 1.0
    assert (tmp_path / "timelines" / f"{case.id}.png").exists()
