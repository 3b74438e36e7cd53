"""Deterministic fakes for media tests: test signals and a seeded lossy network.

Typical use::

    frames = split_frames(noise(3 * SAMPLE_RATE, seed=1), media_start=1000.0)
    packets = LossyTransport(seed=7, delay=0.030, jitter=0.020, loss=0.05).deliver(frames)
    for p in packets:                      # in arrival order
        assembler.push_audio(p.pcm, p.media_time, p.arrival)
    lost = set(range(len(frames))) - {p.seq for p in packets}

Everything is a pure function of its arguments: the same seed and settings give the same deliveries.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from model.base import PerSessionModel
from service.microturn import FRAME_SAMPLES, SAMPLE_RATE, MicroTurn, MicroTurnOutput, PcmArray


@dataclass(frozen=True)
class MediaFrame:
    """A frame as the sender emits it: ``pcm`` and the sender's media time of ``pcm[0]`` in seconds."""

    media_time: float
    pcm: PcmArray


@dataclass(frozen=True)
class Delivery:
    """A frame as it reaches the receiver (the same frame twice when the network duplicated it)."""

    seq: int  # the frame's position in the sequence given to ``deliver``
    media_time: float
    pcm: PcmArray
    arrival: float  # receiver's session time in seconds


def noise(samples: int, seed: int = 0) -> PcmArray:
    """Seeded white noise, int16: no two stretches alike, so a misplaced or repeated sample shows."""
    return np.random.default_rng(seed).integers(-20000, 20000, samples, dtype=np.int16)


def tone(seconds: float, hz: float = 440.0, amplitude: int = 8000) -> PcmArray:
    """A sine tone, 16 kHz mono int16."""
    t = np.arange(round(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype(np.int16)


def split_frames(
    pcm: PcmArray, media_start: float = 0.0, frame_samples: int = FRAME_SAMPLES
) -> list[MediaFrame]:
    """Cut ``pcm`` into consecutive frames of ``frame_samples`` (the last may be shorter), the first
    stamped ``media_start`` seconds (any origin: RTP's is random)."""
    return [
        MediaFrame(media_time=media_start + i / SAMPLE_RATE, pcm=pcm[i : i + frame_samples])
        for i in range(0, len(pcm), frame_samples)
    ]


class LossyTransport:
    """A seeded network between a real-time sender and a receiver.

    Frame ``i`` is sent at session time ``start + (media_time_i - media_time_0) / (1 + sender_ppm·1e-6)``
    (the sender's media clock runs ``sender_ppm`` parts per million fast against the receiver's; negative
    is slow) and arrives ``delay`` + an extra delay later. The extra delay is ``delays[i]`` where given,
    else uniform in ``[0, jitter)``, plus ``reorder_delay`` with probability ``reorder`` (the frame
    arrives behind its successors). A frame is lost if ``i in drop`` or with probability ``loss``, and
    arrives twice with probability ``duplicate`` (the copy with its own jitter). ``deliver`` returns the
    arrivals sorted by arrival time (ties in send order).

    Every frame consumes the same five random draws whatever the settings, so changing one setting
    (say ``loss``) leaves the draws of the others unchanged for a given seed.
    """

    def __init__(
        self,
        seed: int = 0,
        *,
        start: float = 0.0,
        delay: float = 0.030,
        jitter: float = 0.0,
        loss: float = 0.0,
        reorder: float = 0.0,
        reorder_delay: float = 0.030,
        duplicate: float = 0.0,
        sender_ppm: float = 0.0,
        delays: Mapping[int, float] | None = None,
        drop: Collection[int] = (),
    ) -> None:
        self.seed = seed
        self.start = start
        self.delay = delay
        self.jitter = jitter
        self.loss = loss
        self.reorder = reorder
        self.reorder_delay = reorder_delay
        self.duplicate = duplicate
        self.sender_ppm = sender_ppm
        self.delays = dict(delays or {})
        self.drop = frozenset(drop)

    def send_time(self, frame: MediaFrame, first: MediaFrame) -> float:
        """Session time at which ``frame`` leaves the sender."""
        return self.start + (frame.media_time - first.media_time) / (1 + self.sender_ppm * 1e-6)

    def deliver(self, frames: Sequence[MediaFrame]) -> list[Delivery]:
        rng = random.Random(self.seed)
        out: list[tuple[float, int, int, Delivery]] = []
        for seq, frame in enumerate(frames):
            u_loss, u_jitter, u_reorder, u_dup, u_dup_jitter = (rng.random() for _ in range(5))
            if seq in self.drop or u_loss < self.loss:
                continue
            sent = self.send_time(frame, frames[0]) + self.delay
            extra = self.delays.get(seq, u_jitter * self.jitter)
            if u_reorder < self.reorder:
                extra += self.reorder_delay
            arrival = sent + extra
            out.append((arrival, seq, 0, Delivery(seq, frame.media_time, frame.pcm, arrival)))
            if u_dup < self.duplicate:
                copy_arrival = sent + u_dup_jitter * self.jitter
                out.append((copy_arrival, seq, 1, Delivery(seq, frame.media_time, frame.pcm, copy_arrival)))
        out.sort(key=lambda item: item[:3])
        return [delivery for *_, delivery in out]


class SilentModel(PerSessionModel):
    """A model that never says anything, for tests that end before a model would matter: nothing to load."""

    name: ClassVar[str] = "silent"

    def step_session(self, mt: MicroTurn) -> MicroTurnOutput:
        return MicroTurnOutput(session_id=mt.session_id, index=mt.index)

    def close_session(self, session_id: str) -> None:
        pass
