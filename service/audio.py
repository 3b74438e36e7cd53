"""Decoded WebRTC audio → the 16 kHz mono s16 PCM that micro-turns carry."""

from __future__ import annotations

import av
import numpy as np

from service.microturn import SAMPLE_RATE, PcmArray


class PcmResampler:
    """Converts decoded frames of any rate and layout (Opus gives 48 kHz stereo) to 16 kHz mono int16.

    Explicit, because encoders need s16 and we need one rate; one instance per stream, since the
    resampler keeps filter state between frames.
    """

    def __init__(self) -> None:
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)

    def __call__(self, frame: av.AudioFrame) -> list[PcmArray]:
        return [
            np.asarray(out.to_ndarray(), dtype=np.int16).reshape(-1)  # packed mono: [1, N] -> [N]
            for out in self._resampler.resample(frame)
        ]
