"""G.711 μ-law (PCMU) and A-law (PCMA) at 8 kHz, as numpy lookup tables.

Python's ``audioop`` is deprecated and gone in 3.13, so the codecs are built here from the reference
algorithm of ITU-T G.711 (the segment/mantissa formulation of the classic Sun ``g711.c``): decoding is a
256-entry table, encoding a 65536-entry table indexed by the 16-bit sample, both computed once at import
(about 66 KB). A 20 ms packet is then one fancy-indexing operation each way.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from service.microturn import PcmArray

G711_RATE = 8000  # Hz: G.711's one sample rate
PCMU = 0  # RTP static payload type of μ-law (RFC 3551)
PCMA = 8  # RTP static payload type of A-law (RFC 3551)

CodeArray = npt.NDArray[np.uint8]

_ULAW_BIAS = 0x84  # added before the segment search so that every segment has the same shape
_ULAW_CLIP = 8159  # largest 14-bit magnitude μ-law represents before the bias is added
# Segment end points of the biased 14-bit μ-law magnitude.
_ULAW_SEG_END = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF], dtype=np.int32)
# Segment end points of the 13-bit A-law magnitude (sample >> 3).
_ALAW_SEG_END = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF], dtype=np.int32)


def _ulaw_decode_table() -> PcmArray:
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    t = (((u & 0x0F) << 3) + _ULAW_BIAS) << ((u & 0x70) >> 4)
    return np.where(u & 0x80, _ULAW_BIAS - t, t - _ULAW_BIAS).astype(np.int16)


def _alaw_decode_table() -> PcmArray:
    a = np.arange(256, dtype=np.int32) ^ 0x55
    seg = (a & 0x70) >> 4
    t = (a & 0x0F) << 4
    t = np.where(seg == 0, t + 8, (t + 0x108) << np.maximum(seg - 1, 0))
    return np.where(a & 0x80, t, -t).astype(np.int16)


def _ulaw_encode_table() -> CodeArray:
    x = np.arange(-32768, 32768, dtype=np.int32) >> 2  # 14-bit, as the reference algorithm works
    mask = np.where(x < 0, 0x7F, 0xFF)
    mag = np.minimum(np.abs(x), _ULAW_CLIP) + (_ULAW_BIAS >> 2)
    seg = np.searchsorted(_ULAW_SEG_END, mag)  # first segment whose end >= mag
    code = np.where(seg >= 8, 0x7F, (seg << 4) | ((mag >> (seg + 1)) & 0x0F))
    return _by_uint16_index((code ^ mask).astype(np.uint8))


def _alaw_encode_table() -> CodeArray:
    x = np.arange(-32768, 32768, dtype=np.int32) >> 3  # 13-bit
    mask = np.where(x >= 0, 0xD5, 0x55)
    mag = np.where(x >= 0, x, -x - 1)
    seg = np.searchsorted(_ALAW_SEG_END, mag)  # first segment whose end >= mag
    shift = np.where(seg < 2, 1, seg)
    code = np.where(seg >= 8, 0x7F, (seg << 4) | ((mag >> shift) & 0x0F))
    return _by_uint16_index((code ^ mask).astype(np.uint8))


def _by_uint16_index(table_from_min: CodeArray) -> CodeArray:
    """Reorder a table built for samples -32768..32767 so that ``table[sample.view(uint16)]`` works."""
    return np.roll(table_from_min, -32768)


_DECODE = {PCMU: _ulaw_decode_table(), PCMA: _alaw_decode_table()}
_ENCODE = {PCMU: _ulaw_encode_table(), PCMA: _alaw_encode_table()}
# The code of digital silence: what a G.711 stream carries when nothing is said.
SILENCE = {PCMU: 0xFF, PCMA: 0xD5}


def decode(payload: bytes, payload_type: int) -> PcmArray:
    """G.711 bytes of ``payload_type`` (PCMU or PCMA) → int16 samples at 8 kHz."""
    return _DECODE[payload_type][np.frombuffer(payload, dtype=np.uint8)]


def encode(pcm: PcmArray, payload_type: int) -> bytes:
    """int16 samples at 8 kHz → G.711 bytes of ``payload_type`` (PCMU or PCMA)."""
    if pcm.dtype != np.int16:
        raise ValueError(f"G.711 encodes int16 samples, got {pcm.dtype}")
    return bytes(_ENCODE[payload_type][pcm.view(np.uint16)])


def supported(payload_type: int) -> bool:
    return payload_type in _DECODE
