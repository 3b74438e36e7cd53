"""Speech activity: which 20 ms frames of a session's audio are louder than its background.

The detector compares each frame's energy with an adaptive noise floor: the quietest frame of the last few
seconds. A minimum over a window follows the background both ways -- down at once when the room gets
quieter, up within one window when it gets louder -- while speech, which always has quieter gaps
(closures, pauses between words) within a few seconds, barely lifts it. A frame is speech when it stands
``threshold_db`` above that floor and is also louder than an absolute minimum, so that the hiss of a
digitally quiet input is never mistaken for a talker.

It costs ~30 µs per 200 ms chunk: one RMS per frame and a sliding minimum, all in numpy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from service.microturn import SAMPLE_RATE, PcmArray

FRAME_MS = 20  # analysis frame: short enough to resolve syllables, long enough for a stable RMS
FRAME_SAMPLES = SAMPLE_RATE * FRAME_MS // 1000  # 320 samples at 16 kHz
FULL_SCALE = 32768.0  # int16 full scale: 0 dBFS is a square wave at this amplitude

DEFAULT_THRESHOLD_DB = 10.0  # dB a frame must stand above the noise floor; speech peaks 20-40 dB above
DEFAULT_MIN_SPEECH_DBFS = -60.0  # dBFS: never speech below this, whatever the floor (mic self-noise level)
DEFAULT_FLOOR_WINDOW_MS = 3000  # ms of history the floor is the minimum of: how fast it follows a louder room
# dBFS below which a frame is treated as digital silence (zeros filled in for lost or late packets, a muted
# track): it carries no information about the room, so it must not drag the floor down -- otherwise real
# background noise would count as speech for a whole window after every packet loss.
DIGITAL_SILENCE_DBFS = -90.0
SILENCE_LEVEL_DBFS = -100.0  # dBFS reported for an all-zero frame (log of zero has no value); ~int16's LSB


@dataclass
class Activity:
    """Speech activity of one chunk of audio."""

    speech_ms: int  # ms of this chunk judged speech, a multiple of FRAME_MS
    level_dbfs: float  # RMS level of the chunk's loudest 20 ms frame in dBFS (SILENCE_LEVEL_DBFS if none)


def frame_levels_dbfs(pcm: PcmArray) -> npt.NDArray[np.float64]:
    """RMS level in dBFS of each 20 ms frame of ``pcm`` (whose length is a multiple of FRAME_SAMPLES)."""
    frames = pcm.reshape(-1, FRAME_SAMPLES).astype(np.float64)
    rms = np.sqrt(np.mean(frames * frames, axis=1))
    # Clamp before the log: zeros would give -inf; anything quieter than the floor level is silence anyway.
    floor = FULL_SCALE * 10.0 ** (SILENCE_LEVEL_DBFS / 20.0)
    levels: npt.NDArray[np.float64] = 20.0 * np.log10(np.maximum(rms, floor) / FULL_SCALE)
    return levels


class SpeechActivity:
    """Energy speech detector with an adaptive noise floor; one instance per session (it keeps history)."""

    def __init__(
        self,
        threshold_db: float = DEFAULT_THRESHOLD_DB,
        min_speech_dbfs: float = DEFAULT_MIN_SPEECH_DBFS,
        floor_window_ms: int = DEFAULT_FLOOR_WINDOW_MS,
    ) -> None:
        if threshold_db <= 0:
            raise ValueError(f"threshold_db must be positive, got {threshold_db}")
        if floor_window_ms < FRAME_MS:
            raise ValueError(f"floor_window_ms must be at least {FRAME_MS}, got {floor_window_ms}")
        self.threshold_db = threshold_db
        self.min_speech_dbfs = min_speech_dbfs
        self._window_frames = floor_window_ms // FRAME_MS
        # Levels of the most recent frames (at most one window minus one), oldest first; digital silence is
        # stored as +inf so that the minimum ignores it.
        self._history = np.zeros(0, dtype=np.float64)

    @property
    def noise_floor_dbfs(self) -> float | None:
        """The current floor estimate, or None before any frame with real (non-digital-silence) audio."""
        if self._history.size == 0:
            return None
        floor = float(np.min(self._history))
        return floor if np.isfinite(floor) else None

    def update(self, pcm: PcmArray) -> Activity:
        """Judge the frames of ``pcm`` (any multiple of 320 samples, usually one 3200-sample micro-turn)."""
        if pcm.ndim != 1 or pcm.size % FRAME_SAMPLES:
            raise ValueError(f"expected 1-D audio of a multiple of {FRAME_SAMPLES} samples, got {pcm.shape}")
        if pcm.size == 0:
            return Activity(speech_ms=0, level_dbfs=SILENCE_LEVEL_DBFS)
        levels = frame_levels_dbfs(pcm)
        tracked = np.where(levels > DIGITAL_SILENCE_DBFS, levels, np.inf)
        # Each frame is judged against the minimum of the window that ends with it: a quieter background
        # counts from the frame it starts in, and no frame can be below its own floor.
        series = np.concatenate([self._history, tracked])
        padded = np.concatenate([np.full(self._window_frames - 1, np.inf), series])
        windows = np.lib.stride_tricks.sliding_window_view(padded, self._window_frames)
        floors = windows.min(axis=1)[-levels.size :]
        # Without any real audio in the window (a stream of zeros) only the absolute minimum applies.
        threshold = np.maximum(
            np.where(np.isfinite(floors), floors + self.threshold_db, -np.inf), self.min_speech_dbfs
        )
        speech_frames = int(np.count_nonzero(levels > threshold))
        self._history = series[-(self._window_frames - 1) :] if self._window_frames > 1 else series[:0]
        return Activity(speech_ms=speech_frames * FRAME_MS, level_dbfs=float(levels.max()))
