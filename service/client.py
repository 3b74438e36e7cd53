"""A reference client of the microturn protocol (aiortc): what tests and benchmarks connect with.

It does what a browser does -- offers audio sendrecv (and, with a :class:`CameraTrack`, video sendonly)
plus an ``events`` data channel, waits for ICE gathering, POSTs the offer -- then plays PCM into its
microphone track and numpy frames into its camera track in real time, and records the agent's audio and
events with client-side arrival times, so latency is measured where a user hears it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import aiohttp
import av
import numpy as np
import numpy.typing as npt
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from service.audio import PcmResampler
from service.microturn import SAMPLE_RATE, PcmArray
from service.output_track import OutputAudioTrack

AUDIBLE_DBFS = -45.0  # a 20 ms frame louder than this counts as agent speech (Opus silence is ~-90)
VIDEO_CLOCK_RATE = 90_000  # Hz: the RTP clock of video (RFC 3551); aiortc's encoders read pts in it

RgbFrame = npt.NDArray[np.uint8]  # [H, W, 3]


class SignallingError(Exception):
    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"signalling failed with HTTP {status}: {body}")
        self.status = status
        self.body = body


@dataclass
class ReceivedAudio:
    """The agent's audio as heard at the client: 16 kHz mono with the arrival time of each 20 ms frame."""

    frames: list[tuple[float, PcmArray]] = field(default_factory=list)

    def pcm(self) -> PcmArray:
        if not self.frames:
            return np.zeros(0, dtype=np.int16)
        return np.concatenate([pcm for _, pcm in self.frames])

    def first_audible(self, after: float = 0.0) -> float | None:
        """Arrival time of the first audible frame at or after client time ``after``."""
        for arrival, pcm in self.frames:
            if arrival >= after and level_dbfs(pcm) > AUDIBLE_DBFS:
                return arrival
        return None

    def last_audible(self, after: float = 0.0) -> float | None:
        last = None
        for arrival, pcm in self.frames:
            if arrival >= after and level_dbfs(pcm) > AUDIBLE_DBFS:
                last = arrival
        return last


def level_dbfs(pcm: PcmArray) -> float:
    if not len(pcm):
        return -120.0
    rms = float(np.sqrt(np.mean(pcm.astype(np.float64) ** 2)))
    return 20.0 * np.log10(max(rms, 1e-3) / 32768.0)


async def decoded_audio(track: MediaStreamTrack) -> AsyncIterator[tuple[float, PcmArray]]:
    """A received audio track as 16 kHz mono PCM chunks with their arrival times, until it ends."""
    to_pcm = PcmResampler()
    while True:
        try:
            frame = await track.recv()
        except MediaStreamError:
            return
        arrival = time.monotonic()
        assert isinstance(frame, av.AudioFrame)
        for pcm in to_pcm(frame):
            yield arrival, pcm


class CameraTrack(MediaStreamTrack):
    """A camera playing numpy RGB frames in real time, one every ``1 / fps`` s of the wall clock.

    Like a real camera it never pauses: before a clip is shown (:meth:`play`) it sends ``still``, after
    the clip its last frame. A frame is the clip's frame due at the tick it goes out, so a slow event loop
    drops frames (as a busy camera pipeline does) instead of playing the clip slower than real time.
    """

    kind = "video"

    def __init__(self, fps: float, still: RgbFrame) -> None:
        super().__init__()
        if fps <= 0:
            raise ValueError(f"fps must be > 0, got {fps}")
        self.fps = fps
        self.frames_sent = 0
        self._still = still
        self._clip: Sequence[RgbFrame] = ()
        self._clip_at = math.inf  # client time the clip's first frame is due
        self._start: float | None = None  # client time of tick 0
        self._tick = 0

    def play(self, frames: Sequence[RgbFrame], at: float) -> None:
        """Show ``frames`` from client time ``at`` (frame ``i`` at ``at + i / fps``), then hold the last."""
        if not frames:
            raise ValueError("a clip needs at least one frame")
        self._clip, self._clip_at = frames, at

    def frame_at(self, t: float) -> RgbFrame:
        """What the camera shows at client time ``t``."""
        if t < self._clip_at:
            return self._still
        i = math.floor((t - self._clip_at) * self.fps + 1e-6)  # 1e-6: a tick exactly on a frame shows it
        return self._clip[min(i, len(self._clip) - 1)]

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        now = time.monotonic()
        if self._start is None:
            self._start = now
        # Ticks missed while the loop was busy are skipped, not sent late in a burst.
        self._tick = max(self._tick, math.floor((now - self._start) * self.fps))
        due = self._start + self._tick / self.fps
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(self.frame_at(due)), format="rgb24")
        frame.pts = round(self._tick * VIDEO_CLOCK_RATE / self.fps)
        frame.time_base = Fraction(1, VIDEO_CLOCK_RATE)
        self._tick += 1
        self.frames_sent += 1
        return frame


class AgentClient:
    """One session with a microturn node. Times are ``time.monotonic()`` of this process."""

    def __init__(
        self, base_url: str, headers: Mapping[str, str] | None = None, camera: CameraTrack | None = None
    ) -> None:
        """``headers`` go with the offer: ``Authorization`` for a node with an API key, ``Origin`` to act
        as a web page. ``camera``: send video too (a browser with its camera on)."""
        self.base_url = base_url.rstrip("/")
        self.headers = dict(headers or {})
        self.pc = RTCPeerConnection()
        self.microphone = OutputAudioTrack()  # paces 20 ms frames of whatever we enqueue, else silence
        self.camera = camera
        self.received = ReceivedAudio()
        self.events: list[tuple[float, dict[str, Any]]] = []
        self.location: str | None = None
        self._event_arrived = asyncio.Event()
        self._channel_open = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def connect(self, timeout: float = 20.0) -> None:
        self.pc.addTransceiver(self.microphone, direction="sendrecv")
        if self.camera is not None:
            self.pc.addTransceiver(self.camera, direction="sendonly")
        channel = self.pc.createDataChannel("events")
        channel.on("open", self._channel_open.set)
        channel.on("message", self._on_message)
        self.pc.on("track", self._on_track)
        self.channel = channel
        await self.pc.setLocalDescription(await self.pc.createOffer())
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"{self.base_url}/v1/sessions",
                data=self.pc.localDescription.sdp,
                headers={**self.headers, "Content-Type": "application/sdp"},
            ) as resp,
        ):
            body = await resp.text()
            if resp.status != 201:
                raise SignallingError(resp.status, body)
            self.location = resp.headers["Location"]
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=body, type="answer"))
        await asyncio.wait_for(self._channel_open.wait(), timeout)

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio":
            self._tasks.append(asyncio.create_task(self._record(track)))

    async def _record(self, track: MediaStreamTrack) -> None:
        async for arrival, pcm in decoded_audio(track):
            self.received.frames.append((arrival, pcm))

    def _on_message(self, raw: str | bytes) -> None:
        self.events.append((time.monotonic(), json.loads(raw)))
        self._event_arrived.set()

    def say(self, pcm: PcmArray) -> float:
        """Queue speech into the microphone; returns the client time its last sample will be sent."""
        self.microphone.enqueue(pcm)
        return time.monotonic() + self.microphone.queued_samples / SAMPLE_RATE

    def send(self, message: dict[str, Any]) -> None:
        self.channel.send(json.dumps(message))

    def send_raw(self, raw: str) -> None:
        self.channel.send(raw)

    def events_of(self, kind: str) -> list[dict[str, Any]]:
        return [e for _, e in self.events if e["type"] == kind]

    async def wait_for(
        self,
        kind: str,
        timeout: float,
        after: float = 0.0,
        match: Callable[[dict[str, Any]], bool] | None = None,
    ) -> tuple[float, dict[str, Any]]:
        """Wait for the first event of ``kind`` (satisfying ``match``) that arrived at or after ``after``."""
        deadline = time.monotonic() + timeout
        while True:
            for arrival, event in self.events:
                if event["type"] == kind and arrival >= after and (match is None or match(event)):
                    return arrival, event
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                seen = sorted({e["type"] for _, e in self.events})
                raise TimeoutError(f"no {kind!r} event within {timeout} s (saw: {seen})")
            self._event_arrived.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._event_arrived.wait(), remaining)

    async def close(self, delete: bool = True) -> int | None:
        """Hang up; returns the DELETE status (None when not sent)."""
        status = None
        if delete and self.location is not None:
            async with (
                aiohttp.ClientSession() as http,
                http.delete(f"{self.base_url}{self.location}") as resp,
            ):
                status = resp.status
        for task in self._tasks:
            task.cancel()
        await self.pc.close()
        return status
