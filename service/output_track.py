"""The agent's voice: an aiortc audio track playing queued PCM in 20 ms frames paced to the wall clock.

Why the track paces itself: aiortc's ``RTCRtpSender`` calls ``recv()`` in a loop and sends whatever it
returns at once -- it has no pacer. A track that returned queued audio as fast as it could would push
seconds of speech to the browser in a burst; its jitter buffer drops what overflows (or grows its delay)
and the agent sounds garbled. So ``recv`` sleeps until each frame is due.

Why exactly 20 ms (320 samples at 16 kHz): the sender's Opus encoder cuts a frame into 20 ms packets but
stamps all of them with the frame's first RTP timestamp -- a 40 ms frame gives two packets with one
timestamp, which the receiver takes as a duplicate. Frame ``pts`` become the RTP timestamps, so they
advance by exactly 320 per frame, and jump forward by whole frames after a resync (below) so that the
receiver sees a gap it conceals, not packets that look late.
"""

from __future__ import annotations

import asyncio
import fractions
import logging
import time
from collections import deque
from collections.abc import Callable

import av
import numpy as np
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from service.microturn import FRAME_SAMPLES, SAMPLE_RATE, PcmArray

log = logging.getLogger(__name__)

FRAME_DURATION = FRAME_SAMPLES / SAMPLE_RATE  # 0.020 s per frame
TIME_BASE = fractions.Fraction(1, SAMPLE_RATE)  # pts count samples
# 30 s: far more than a micro-turn model queues ahead (it answers every 200 ms), so reaching it means a
# runaway producer. Audio beyond it is refused (the end of the utterance is cut) rather than dropping the
# oldest: that would skip the words being heard right now. Refused samples count in overflow_samples.
MAX_QUEUED = 30.0
MAX_QUEUED_SAMPLES = round(MAX_QUEUED * SAMPLE_RATE)
# 100 ms: when recv is called later than this after a frame was due (the event loop stalled), the
# schedule is moved to now instead of returning the overdue frames back to back. Up to this lateness the
# overdue frames are caught up immediately: at most 5 frames early for the receiver's jitter buffer,
# which absorbs that, and no gap in the timestamps.
RESYNC_AFTER = 0.100


class OutputAudioTrack(MediaStreamTrack):
    """Plays what is enqueued, 20 ms at a time at wall-clock pace; silence when nothing is queued.

    ``on_drained`` is called once, soon after the last queued audio has been played (when the track goes
    back to silence); not after ``flush``. ``clock`` is the monotonic time source in seconds (tests
    drive it). Counters: ``overflow_samples`` (refused because the queue was full), ``resyncs``.
    """

    kind = "audio"

    def __init__(
        self, on_drained: Callable[[], None] | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self._on_drained = on_drained
        self._clock = clock
        self._queue: deque[PcmArray] = deque()
        self._head = 0  # samples of _queue[0] already played
        self._queued = 0
        self._playing = False
        self._start: float | None = None  # clock time frame pts 0 was due
        self._pts = 0  # pts of the next frame, in samples
        self.overflow_samples = 0
        self.resyncs = 0

    # -- control (event loop) ------------------------------------------------------------------------------
    def enqueue(self, pcm: PcmArray) -> None:
        """Append ``pcm`` (16 kHz mono int16, any length) to what is queued to be played.

        Chunks join seamlessly whatever their lengths: frames are cut from the queue as a whole, and a
        tail shorter than a frame is padded with silence only when nothing follows it by the time it is
        due (the utterance ended, or its next chunk is late and would come after a gap anyway).
        """
        if pcm.ndim != 1 or pcm.dtype != np.int16:
            raise ValueError(f"pcm must be 1-D int16 at {SAMPLE_RATE} Hz, got {pcm.dtype} {pcm.shape}")
        room = MAX_QUEUED_SAMPLES - self._queued
        if len(pcm) > room:
            self.overflow_samples += len(pcm) - room
            log.warning("output queue full (%.0f s): refused %d samples", MAX_QUEUED, len(pcm) - room)
            pcm = pcm[:room]
        if not len(pcm):
            return
        self._queue.append(pcm.copy())  # the caller may reuse its buffer
        self._queued += len(pcm)
        self._playing = True

    def flush(self) -> int:
        """Drop everything queued at once (the next frame is silent); return how many samples."""
        dropped = self._queued
        self._queue.clear()
        self._head = 0
        self._queued = 0
        self._playing = False
        return dropped

    @property
    def queued_samples(self) -> int:
        """Samples enqueued and not played yet."""
        return self._queued

    @property
    def playing(self) -> bool:
        """True from an ``enqueue`` until its audio has been played out (or flushed)."""
        return self._playing

    # -- media (aiortc's sender) -----------------------------------------------------------------------
    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        now = self._clock()
        if self._start is None:
            self._start = now
        due = self._start + self._pts / SAMPLE_RATE
        if now - due > RESYNC_AFTER:
            # Skip the frames whose time has passed so the next one is due now: the stall becomes a gap
            # in the timestamps. Queued audio is not dropped; it plays from here.
            self._pts += int((now - due) / FRAME_DURATION) * FRAME_SAMPLES
            self.resyncs += 1
        elif due > now:
            await asyncio.sleep(due - now)
            if self.readyState != "live":
                raise MediaStreamError
        # Taken only now, after the wait, so that a flush during it silences this very frame.
        frame = av.AudioFrame.from_ndarray(self._next_samples().reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = self._pts
        frame.time_base = TIME_BASE
        self._pts += FRAME_SAMPLES
        return frame

    def _next_samples(self) -> PcmArray:
        """The next frame's samples: queued audio, its tail padded with silence, or silence."""
        out = np.zeros(FRAME_SAMPLES, dtype=np.int16)
        if not self._queued:
            if self._playing:
                # The previous frame held the last audio and its 20 ms are over.
                self._playing = False
                if self._on_drained is not None:
                    # Scheduled, not called: a failing callback must not kill the sender's loop.
                    asyncio.get_running_loop().call_soon(self._on_drained)
            return out
        n = min(FRAME_SAMPLES, self._queued)
        filled = 0
        while filled < n:
            head = self._queue[0]
            k = min(n - filled, len(head) - self._head)
            out[filled : filled + k] = head[self._head : self._head + k]
            filled += k
            self._head += k
            if self._head == len(head):
                self._queue.popleft()
                self._head = 0
        self._queued -= n
        return out
