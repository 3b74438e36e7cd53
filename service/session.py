"""One client's session: inbound media, events, background jobs and the agent's voice.

The session turns what arrives (audio, video, typed text) into micro-turns through its
:class:`MicroTurnAssembler`, and applies what the model decided (:class:`MicroTurnOutput`) to its
:class:`OutputAudioTrack` and its events. It has no ML.

:class:`Session` is that core, the same whatever the client is connected by; a transport subclass brings
the media in and out: :class:`WebRtcSession` (a browser's peer connection and ``events`` data channel,
below) or ``service.sip.call.SipSession`` (a phone call's RTP). A transport feeds ``self.assembler``,
plays ``self.output``, calls :meth:`Session.start` once connected, and may override
:meth:`Session._deliver_event` (where events go) and :meth:`Session._close_transport`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import av
import numpy as np
from aiortc import MediaStreamTrack, RTCDataChannel, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from service.assembler import MicroTurnAssembler
from service.audio import PcmResampler
from service.events import InputText, ProtocolError, SessionUpdate, parse_client_message, server_event
from service.jobs import JobQueue, JobStatus, JobUpdate
from service.metrics import NodeMetrics
from service.microturn import (
    BACKGROUND_JOB_KIND,
    MICRO_TURN,
    SAMPLE_RATE,
    Action,
    BackgroundCall,
    BackgroundResult,
    MicroTurn,
    MicroTurnOutput,
    VideoFrame,
)
from service.output_track import OutputAudioTrack

log = logging.getLogger(__name__)

EVENTS_CHANNEL_LABEL = "events"
CONNECT_TIMEOUT = 30.0  # s: a session whose peer never connects is released after this
MEDIA_TIMEOUT = 15.0  # s: no inbound audio for this long on a connected session means the client vanished
VIDEO_SAMPLE_INTERVAL = 0.1  # s: keep at most ~10 camera frames per second
VIDEO_SIZE = (160, 120)  # (width, height) the model sees; enough for motion and colour features
CLOSE_GRACE = 2.0  # s the session's tasks get to unwind when it closes
RTP_TIMESTAMP_WRAP = 1 << 32  # RTP timestamps are 32-bit and wrap
LOST_MS_KEPT_TURNS = 50  # micro-turns (10 s) a cut's lost-audio count waits for its output to come back


class RtpClock:
    """Unwraps 32-bit RTP timestamps into a monotonic count of samples."""

    def __init__(self) -> None:
        self._last: int | None = None
        self._unwrapped = 0

    def unwrap(self, timestamp: int) -> int:
        if self._last is not None:
            # The shortest signed distance modulo 2^32: handles wrap-around and mild reordering.
            delta = (timestamp - self._last + RTP_TIMESTAMP_WRAP // 2) % RTP_TIMESTAMP_WRAP
            self._unwrapped += delta - RTP_TIMESTAMP_WRAP // 2
        else:
            self._unwrapped = 0
        self._last = timestamp
        return self._unwrapped


class Session:
    def __init__(
        self,
        session_id: str,
        epoch: float,
        metrics: NodeMetrics,
        model_name: str,
        jobs: JobQueue,
        on_closed: Callable[[Session, str], None],
    ) -> None:
        self.id = session_id
        self.epoch = epoch  # monotonic time of window 0's start (a tick boundary)
        self.metrics = metrics
        self.model_name = model_name
        self.jobs = jobs
        self._on_closed = on_closed
        self.assembler = MicroTurnAssembler(session_id)
        self.output = OutputAudioTrack(on_drained=self._on_drained)
        self.closed = False
        self.close_reason = ""
        self._speaking = False
        self._hangup = False  # the model ended the session: close once its last words are played
        self._lost_ms: dict[int, int] = {}
        # The model names its background calls; the queue names its jobs. Both ways, for this session.
        self._job_of_call: dict[str, str] = {}
        self._call_of_job: dict[str, str] = {}
        # A fast worker's first updates can arrive before submit() has returned the job's id to us.
        self._early_updates: dict[str, list[JobUpdate]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    # -- clock ---------------------------------------------------------------------------------------
    def now(self) -> float:
        """Session time in seconds."""
        return time.monotonic() - self.epoch

    def now_ms(self) -> int:
        return int(self.now() * 1000)

    def start(self) -> None:
        """The client is connected: start the session's own work (following its background jobs)."""
        self._spawn(self._follow_jobs(), "jobs")

    # -- events --------------------------------------------------------------------------------------
    def _on_message(self, raw: str | bytes) -> None:
        arrival = self.now()
        try:
            msg = parse_client_message(raw)
        except ProtocolError as exc:
            self.send_event("error", code=exc.code, message=exc.message)
            return
        if isinstance(msg, InputText):
            self.assembler.push_text(msg.text, arrival)
        elif isinstance(msg, SessionUpdate):
            self.assembler.set_instructions(msg.instructions, arrival)

    def send_event(self, kind: str, **fields: Any) -> None:
        self._deliver_event(kind, server_event(kind, self.now_ms(), **fields))

    def _deliver_event(self, kind: str, text: str) -> None:
        """Hand one server event (JSON ``text``) to the client; the core has nowhere to send it."""

    # -- micro-turns -------------------------------------------------------------------------------------
    def cut(self, index: int, closing: bool) -> MicroTurn:
        late_before = self.assembler.late_samples
        mt = self.assembler.cut(index, closing=closing)
        self.metrics.lost_samples.inc(mt.lost_samples)
        self.metrics.late_samples.inc(self.assembler.late_samples - late_before)
        self._lost_ms[index] = mt.lost_samples * 1000 // SAMPLE_RATE
        # A micro-turn whose output never comes back (a dropped batch, a failed step) leaves its entry:
        # forget those LOST_MS_KEPT_TURNS micro-turns on, so a long session's map stays small.
        self._lost_ms.pop(index - LOST_MS_KEPT_TURNS, None)
        return mt

    def apply(self, out: MicroTurnOutput) -> None:
        """Carry out what the model decided for one micro-turn."""
        if self.closed:
            return
        for transcript in out.transcripts:
            self.send_event("transcript.input", text=transcript.text, final=transcript.final)
        for text in out.seen:
            self.send_event("camera.seen", text=text)
        if out.error is not None:
            self.send_event("error", code="model_error", message=out.error)
        for call in out.background_calls:
            self._spawn(self._submit(call), f"submit-{call.job_id}")
        for call_id in out.background_cancels:
            self._spawn(self._cancel(call_id), f"cancel-{call_id}")
        if out.action is Action.STOP:
            self.output.flush()
            if self._speaking:
                self._speaking = False
                self.send_event("response.audio.stopped", reason="interrupted")
        elif out.action in (Action.SPEAK, Action.CONTINUE):
            if not self._speaking:
                self._speaking = True
                self.send_event("response.audio.started")
            if len(out.pcm):
                self.output.enqueue(out.pcm)
            if out.text:
                self.send_event("response.text", text=out.text)
        self.send_event(
            "turn",
            index=out.index,
            user=out.user_speaking,
            agent=self.output.playing,
            lost_ms=self._lost_ms.pop(out.index, 0),
        )
        if out.hangup:
            self._hangup = True
        if self._hangup and not self.output.playing:
            self._end_by_agent()

    def _on_drained(self) -> None:
        if self._speaking:
            self._speaking = False
            self.send_event("response.audio.stopped", reason="done")
        if self._hangup:
            self._end_by_agent()

    def _end_by_agent(self) -> None:
        """The model hung up and its last words have been played: end the session."""
        if self.closed or self.close_reason:
            return
        self.close_reason = "agent ended the session"
        self.send_event("session.ended", reason="agent")
        self._spawn(self.close(self.close_reason), "close")

    # -- background jobs ---------------------------------------------------------------------------------
    async def _submit(self, call: BackgroundCall) -> None:
        payload = {
            "question": call.question,
            "conversation": call.conversation,
            "instructions": call.instructions,
        }
        try:
            job = await self.jobs.submit(self.id, BACKGROUND_JOB_KIND, payload)
        except Exception as exc:
            # Redis gone, queue full, payload refused: the model hears "failed" and can apologise.
            log.warning("session %s: background request failed: %s", self.id, exc)
            self._background_news(
                call.job_id, JobStatus.FAILED, f"the background queue refused the job: {exc}"
            )
            self.send_event("error", code="background_unavailable", message=str(exc))
            return
        self._job_of_call[call.job_id] = job.id
        self._call_of_job[job.id] = call.job_id
        for update in self._early_updates.pop(job.id, []):
            self._relay(call.job_id, update)

    async def _cancel(self, call_id: str) -> None:
        job_id = self._job_of_call.get(call_id)
        if job_id is None:
            return
        try:
            await self.jobs.cancel(job_id)
        except Exception as exc:
            log.warning("session %s: cancelling job %s failed: %s", self.id, job_id, exc)

    async def _follow_jobs(self) -> None:
        async with contextlib.aclosing(self.jobs.updates(self.id)) as updates:
            async for update in updates:
                call_id = self._call_of_job.get(update.job_id)
                if call_id is None:
                    # Only this session's jobs are on its update stream: the id is about to be known.
                    self._early_updates.setdefault(update.job_id, []).append(update)
                else:
                    self._relay(call_id, update)

    def _relay(self, call_id: str, update: JobUpdate) -> None:
        self._background_news(call_id, update.status, update.text or "", update.data)
        if JobStatus(update.status).final:  # nothing more will come: a long session keeps no old jobs
            self._job_of_call.pop(call_id, None)
            self._call_of_job.pop(update.job_id, None)

    def _background_news(
        self, call_id: str, status: str, text: str, data: dict[str, Any] | None = None
    ) -> None:
        t_ms = self.now_ms()
        self.assembler.push_background(BackgroundResult(t_ms, call_id, str(status), text, data))
        fields: dict[str, Any] = {"job_id": call_id, "status": str(status)}
        if text:
            fields["text"] = text
        self.send_event("background.update", **fields)

    # -- lifetime --------------------------------------------------------------------------------------
    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.create_task(coro, name=f"session-{self.id}-{name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self, reason: str) -> None:
        """Release everything the session holds; safe to call more than once."""
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        log.info("session %s closed: %s", self.id, reason)
        self._on_closed(self, reason)
        current = asyncio.current_task()
        for task in list(self._tasks):
            if task is not current:
                task.cancel()
        self.output.stop()
        await self._close_transport()
        others = [task for task in self._tasks if task is not current]
        if others:
            # Bounded: a task stuck in a library's cancellation (seen with a blocking Redis read) must not
            # hold up the client's DELETE or the node's shutdown; it is cancelled and left to finish.
            _, stuck = await asyncio.wait(others, timeout=CLOSE_GRACE)
            for task in stuck:
                log.warning(
                    "session %s: task %s did not stop within %.0f s", self.id, task.get_name(), CLOSE_GRACE
                )

    async def _close_transport(self) -> None:
        """Release the transport's resources (called once, by :meth:`close`)."""


class WebRtcSession(Session):
    """A browser's (or any WebRTC client's) session: one peer connection with an ``events`` data channel."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pc = RTCPeerConnection()
        self.channel: RTCDataChannel | None = None
        self._last_audio = time.monotonic()

    # -- signalling ----------------------------------------------------------------------------------
    async def negotiate(self, offer_sdp: str) -> str:
        """Apply the client's offer and return the complete answer (ICE gathered: no trickle)."""
        pc = self.pc
        pc.on("track", self._on_track)
        pc.on("datachannel", self._on_datachannel)
        pc.on("connectionstatechange", self._on_connection_state)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        audio = [t for t in pc.getTransceivers() if t.kind == "audio"]
        if not audio:
            raise ValueError("the offer has no audio m-line; microturn needs one to hear and answer")
        if audio[0].direction not in ("sendrecv", "recvonly"):
            raise ValueError(
                "the offer's audio must be sendrecv (or recvonly): the agent's voice returns on it"
            )
        pc.addTrack(self.output)
        await pc.setLocalDescription(await pc.createAnswer())
        self._spawn(self._watchdog(), "watchdog")
        self.start()
        return pc.localDescription.sdp

    def _on_connection_state(self) -> None:
        state = self.pc.connectionState
        log.info("session %s: connection %s", self.id, state)
        if state in ("failed", "closed"):
            self._spawn(self.close(f"connection {state}"), "close")

    async def _watchdog(self) -> None:
        """Release sessions whose client never connects or silently vanishes."""
        deadline = time.monotonic() + CONNECT_TIMEOUT
        while self.pc.connectionState != "connected":
            if time.monotonic() > deadline:
                await self.close(f"not connected within {CONNECT_TIMEOUT:.0f} s")
                return
            await asyncio.sleep(0.5)
        self._last_audio = time.monotonic()
        while not self.closed:
            await asyncio.sleep(1.0)
            if time.monotonic() - self._last_audio > MEDIA_TIMEOUT:
                await self.close(f"no audio for {MEDIA_TIMEOUT:.0f} s: client gone")
                return

    # -- inbound media ---------------------------------------------------------------------------------
    def _on_track(self, track: MediaStreamTrack) -> None:
        log.info("session %s: inbound %s track", self.id, track.kind)
        if track.kind == "audio":
            self._spawn(self._read_audio(track), "audio-in")
        else:
            self._spawn(self._read_video(track), "video-in")

    async def _read_audio(self, track: MediaStreamTrack) -> None:
        to_pcm = PcmResampler()
        rtp_clock = RtpClock()
        first = True
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                self.assembler.set_audio_track(False)
                return
            arrival = self.now()
            self._last_audio = time.monotonic()
            if first:
                # Loss is counted from the first packet on: the windows before it were connection setup.
                self.assembler.set_audio_track(True)
                first = False
            assert isinstance(frame, av.AudioFrame)
            media_time = rtp_clock.unwrap(frame.pts or 0) / frame.sample_rate
            for pcm in to_pcm(frame):
                self.assembler.push_audio(pcm, media_time, arrival)
                media_time += len(pcm) / SAMPLE_RATE

    async def _read_video(self, track: MediaStreamTrack) -> None:
        # Decoded frames queue up unboundedly inside aiortc unless read: always consume, keep a few.
        next_sample = 0.0
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            now = self.now()
            if now < next_sample or not isinstance(frame, av.VideoFrame):
                continue
            next_sample = now + VIDEO_SAMPLE_INTERVAL
            small = frame.reformat(width=VIDEO_SIZE[0], height=VIDEO_SIZE[1], format="rgb24")
            rgb = np.asarray(small.to_ndarray(), dtype=np.uint8)  # [H, W, 3]
            self.assembler.push_video(VideoFrame(t_ms=int(now * 1000), rgb=rgb))

    # -- events channel --------------------------------------------------------------------------------
    def _on_datachannel(self, channel: RTCDataChannel) -> None:
        if channel.label != EVENTS_CHANNEL_LABEL:
            log.warning("session %s: ignoring data channel %r", self.id, channel.label)
            return
        self.channel = channel
        channel.on("message", self._on_message)
        self.send_event(
            "session.started",
            session_id=self.id,
            micro_turn_ms=int(MICRO_TURN * 1000),
            model=self.model_name,
        )

    def _deliver_event(self, kind: str, text: str) -> None:
        channel = self.channel
        if channel is None or channel.readyState != "open":
            return
        channel.send(text)

    async def _close_transport(self) -> None:
        await self.pc.close()
