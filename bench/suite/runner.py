"""One case over the real transport: connect, stream the user's audio in real time, record, analyse.

The client is :class:`service.client.AgentClient` (aiortc), connecting through the public signalling
endpoint like a browser. Case time 0 is when the first sample of the case's user audio goes into the
client's microphone track (which plays it out in 20 ms frames paced to the wall clock: ±20 ms). The
fixed segments are mixed into one time line and queued at once; typed events are sent at their times;
triggered segments are queued when the agent has been heard for their delay. A case with a camera
(:class:`bench.suite.cases.Video`) also sends a video track: the clip is drawn before the session starts,
its first frame is shown still from the start, and the clip plays from its case time on. Agent audio and
events keep their arrival times at the client, in case seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import zlib
from dataclasses import dataclass, field
from typing import Any, cast

from bench.suite.audio import (
    AgentSegment,
    Frames,
    Transcriber,
    agent_segments,
    attach_event_texts,
    speech_span,
)
from bench.suite.cases import Case, Network, Segment, Video
from bench.suite.network import ImpairmentStats, impair_outgoing_audio
from bench.suite.scoring import Heard
from bench.suite.speech import render, synthesize
from model.video.synthetic import SPLITS, Split, make_clip
from service.client import AgentClient, CameraTrack, RgbFrame
from service.microturn import SAMPLE_RATE, PcmArray
from service.output_track import OutputAudioTrack

SESSION_START_TIMEOUT_S = 15.0
POLL_S = 0.02
FEED_AHEAD_S = 5  # seconds of the user's time line queued ahead of the microphone's playout


@dataclass
class Recording:
    """Everything the client saw of one case, in case seconds."""

    case_id: str
    model: str  # as the server's session.started said
    user: list[tuple[float, float] | None]  # per segment: audible (start, end) as played; None: never played
    agent_frames: list[tuple[float, PcmArray]]
    events: list[tuple[float, dict[str, Any]]]
    network: Network
    impairment: ImpairmentStats = field(default_factory=ImpairmentStats)
    length_s: float = 0.0


def case_audio(case: Case) -> list[PcmArray]:
    """The user's audio of each segment (blocking: synthesises what is not cached)."""
    return [synthesize(s.voice, s.text) for s in case.segments]


def case_video(video: Video) -> list[RgbFrame]:
    """The frames of a case's clip (blocking: draws them all, so that playing them costs nothing)."""
    if video.split not in SPLITS:
        raise ValueError(f"unknown split {video.split!r}; choose one of: {', '.join(SPLITS)}")
    clip = make_clip(
        video.kind,
        seed=video.seed,
        split=cast(Split, video.split),
        reps=video.reps,
        fps=video.fps,
        size=(video.width, video.height),
    )
    reps = len(clip.rep_times) if video.reps is not None else None
    if abs(clip.duration - video.duration_s) > 1e-3 or reps != video.reps:
        raise ValueError(
            f"the {video.kind} clip (seed {video.seed}) is not the one the case was written with: "
            "model/video/synthetic.py changed since; generate the cases again"
        )
    return list(clip.frames())


def _span(start_s: float, pcm: PcmArray) -> tuple[float, float]:
    s0, s1 = speech_span(pcm)
    return round(start_s + s0, 3), round(start_s + s1, 3)


async def _sleep_until(t: float) -> None:
    await asyncio.sleep(max(0.0, t - time.monotonic()))


async def feed(microphone: OutputAudioTrack, pcm: PcmArray) -> None:
    """Queue the rest of a long time line a second at a time, keeping a few seconds ahead: the microphone
    track refuses more than 30 s (service/output_track.py) and joins chunks without a gap."""
    step = SAMPLE_RATE
    for at in range(0, len(pcm), step):
        while microphone.queued_samples > (FEED_AHEAD_S - 1) * SAMPLE_RATE:
            await asyncio.sleep(0.1)
        microphone.enqueue(pcm[at : at + step])


async def run_case(
    url: str, case: Case, network: Network, audio: list[PcmArray], video: list[RgbFrame] | None = None
) -> Recording:
    """Play ``case`` to the server at ``url`` (``audio``: :func:`case_audio`, ``video``: :func:`case_video`
    for a case with a camera) and record what comes back."""
    camera = CameraTrack(case.video.fps, still=video[0]) if case.video is not None and video else None
    client = AgentClient(url, camera=camera)
    tasks: list[asyncio.Task[None]] = []
    try:
        await client.connect()
        _, started = await client.wait_for("session.started", timeout=SESSION_START_TIMEOUT_S)
        seed = zlib.crc32(case.id.encode())
        stats = impair_outgoing_audio(client.pc, network, seed)
        user: list[tuple[float, float] | None] = [None] * len(case.segments)
        fixed = [(i, s) for i, s in enumerate(case.segments) if s.start_s is not None]
        timeline = render([(s.start_s, audio[i]) for i, s in fixed if s.start_s is not None])
        head = timeline[: FEED_AHEAD_S * SAMPLE_RATE]
        t0 = client.say(head) - len(head) / SAMPLE_RATE
        if camera is not None and case.video is not None and video:
            camera.play(video, at=t0 + case.video.start_s)
        tasks.append(asyncio.create_task(feed(client.microphone, timeline[len(head) :])))
        for i, s in fixed:
            assert s.start_s is not None
            user[i] = _span(s.start_s, audio[i])

        async def send_at(t_s: float, message: dict[str, str]) -> None:
            await _sleep_until(t0 + t_s)
            client.send(message)

        pending: dict[int, float] = {}  # triggered segments not played yet -> case time they give up

        async def triggered(i: int, segment: Segment) -> None:
            trigger = segment.trigger
            assert trigger is not None
            deadline = t0 + trigger.after_s + trigger.timeout_s
            while time.monotonic() < deadline:
                onset = client.received.first_audible(after=t0 + trigger.after_s)
                if onset is not None:
                    await _sleep_until(onset + trigger.delay_s)
                    end = client.say(audio[i])
                    user[i] = _span(end - len(audio[i]) / SAMPLE_RATE - t0, audio[i])
                    break
                await asyncio.sleep(POLL_S)
            pending.pop(i, None)

        for event in case.events:
            tasks.append(asyncio.create_task(send_at(event.t_s, event.message())))
        for i, s in enumerate(case.segments):
            if s.trigger is not None:
                pending[i] = s.trigger.after_s + s.trigger.timeout_s
                tasks.append(asyncio.create_task(triggered(i, s)))

        fixed_end = max((span[1] for span in user if span is not None), default=0.0)
        while True:
            now = time.monotonic()
            if case.stop_on_reply_s is not None and not pending:
                reply = client.received.first_audible(after=t0 + fixed_end)
                if reply is not None and now >= reply + case.stop_on_reply_s:
                    break
            horizon = max(
                [
                    case.duration_s,
                    *(span[1] + case.tail_s for span in user if span is not None),
                    *(event.t_s + case.tail_s for event in case.events),
                    *pending.values(),
                ]
            )
            if now - t0 >= horizon:
                break
            await asyncio.sleep(0.05)
        length = time.monotonic() - t0
        if client.microphone.overflow_samples:
            raise RuntimeError(f"{case.id}: the microphone refused part of the user's audio")
        frames = [(round(t - t0, 4), pcm) for t, pcm in client.received.frames if t >= t0]
        events = [(round(t - t0, 4), e) for t, e in client.events if t >= t0]
        return Recording(case.id, str(started.get("model", "")), user, frames, events, network, stats, length)
    finally:
        for task in tasks:
            task.cancel()
        with contextlib.suppress(Exception):
            await client.close()


def analyse(recording: Recording, transcriber: Transcriber | None) -> Heard:
    """Find the agent's utterances in the recording and transcribe them (blocking: run it off the loop);
    without a ``transcriber`` only where they are is known."""
    frames: Frames = recording.agent_frames
    segments: list[AgentSegment] = agent_segments(frames)
    interrupted = [
        t
        for t, e in recording.events
        if e.get("type") == "response.audio.stopped" and e.get("reason") == "interrupted"
    ]
    for segment in segments:  # not heard to its end: the recording ended, or the agent was cut off
        segment.truncated = segment.offset_s > recording.length_s - 0.3 or any(
            segment.onset_s <= t <= segment.offset_s + 0.5 for t in interrupted
        )
    if transcriber is not None:
        transcriber.transcribe(frames, segments)
    texts = [(t, str(e.get("text", ""))) for t, e in recording.events if e.get("type") == "response.text"]
    attach_event_texts(segments, texts)
    return Heard(user=recording.user, agent=segments, events=recording.events)
