"""Decoded WebRTC audio → the 16 kHz mono s16 PCM that micro-turns carry."""

from __future__ import annotations

import av
import numpy as np

from service.microturn import SAMPLE_RATE, PcmArray


class PcmResampler:
    """Converts decoded frames of any rate and layout (Opus gives 48 kHz stereo) to 16 kHz mono int16
    (or to ``rate``: the SIP bridge makes 8 kHz G.711 from the agent's 16 kHz voice).

    Explicit, because encoders need s16 and we need one rate; one instance per stream, since the
    resampler keeps filter state between frames.
    """

    def __init__(self, rate: int = SAMPLE_RATE) -> None:
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)

    def __call__(self, frame: av.AudioFrame) -> list[PcmArray]:
        return [
            np.asarray(out.to_ndarray(), dtype=np.int16).reshape(-1)  # packed mono: [1, N] -> [N]
            for out in self._resampler.resample(frame)
        ]


def pcm_frame(pcm: PcmArray, rate: int) -> av.AudioFrame:
    """Mono int16 samples at ``rate`` Hz as an audio frame (what :class:`PcmResampler` takes)."""
    frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = rate
    return frame
