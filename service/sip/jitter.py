"""A jitter buffer for one inbound RTP audio stream, with packet-loss concealment.

Event-driven, not clocked: a packet that arrives in order is released at once, so an undisturbed
stream gets no added delay (the micro-turn assembler already holds audio for its 40 ms jitter
allowance, docs/architecture.md "Time"; a second fixed delay here would only add latency). A packet
that arrives early -- its predecessor is missing -- is held until the predecessor comes or until
:data:`REORDER_PACKETS` later packets have arrived; then the missing packet is declared lost and
*concealed*: the last good frame is repeated, 6 dB quieter each time, for up to
:data:`MAX_CONCEAL_PACKETS` packets, and silence follows. Concealed frames are flagged and counted, so
the node can tell real audio from filler. Repeating a fading copy keeps the speech-activity detector and
the recogniser from hearing a click of digital silence in the middle of a word.

Late packets (their slot was released already) and duplicates are dropped and counted. A sequence jump
of more than :data:`RESYNC_PACKETS` or a new SSRC restarts
the stream's timeline (``resync``): nothing is concealed across it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from service.microturn import PcmArray

REORDER_PACKETS = 2  # packets after a gap before it is declared lost: 40 ms of reordering at 20 ms ptime
MAX_CONCEAL_PACKETS = 3  # 60 ms: longer repetition sounds like a stutter, silence is better
CONCEAL_GAIN = 0.5  # each repeated frame is 6 dB quieter than the one before
RESYNC_PACKETS = 100  # 2 s at 20 ms: a bigger jump is a restarted stream, not loss
SEQ_MOD = 1 << 16
TS_MOD = 1 << 32


@dataclass(frozen=True)
class Frame:
    timestamp: int  # RTP timestamp of pcm[0], unwrapped (samples since the stream's first packet + origin)
    pcm: PcmArray
    concealed: bool = False
    resync: bool = False  # the stream's timeline restarted here: do not join it to what came before


class JitterBuffer:
    """Counters: ``received``, ``released``, ``concealed`` (packets), ``late``, ``duplicates``,
    ``resyncs``; ``jitter`` is the RFC 3550 interarrival jitter in timestamp units (samples)."""

    def __init__(
        self, reorder_packets: int = REORDER_PACKETS, max_conceal: int = MAX_CONCEAL_PACKETS
    ) -> None:
        self.reorder_packets = reorder_packets
        self.max_conceal = max_conceal
        self.received = self.released = self.concealed = self.late = self.duplicates = self.resyncs = 0
        self.jitter = 0.0
        self._ssrc: int | None = None
        self._next: int | None = None  # extended sequence number of the next packet to release
        self._highest = 0  # highest extended sequence number seen
        self._pending: dict[int, tuple[int, PcmArray]] = {}  # ext seq -> (unwrapped ts, pcm)
        self._ts_origin = 0  # unwrapping of 32-bit timestamps: the last unwrapped value
        self._last_ts_raw = 0
        self._last: tuple[int, PcmArray] | None = None  # last released (ts, pcm), for concealment
        self._conceal_run = 0
        self._transit: float | None = None
        self._resync_next = False

    def push(
        self, sequence: int, timestamp: int, ssrc: int, pcm: PcmArray, arrival: float, rate: int
    ) -> list[Frame]:
        """Add one packet (``arrival`` in seconds, ``rate`` the RTP clock in Hz); return the frames it
        releases, in order."""
        self.received += 1
        if self._ssrc != ssrc or self._next is None:
            self._restart(sequence, timestamp, ssrc)
        assert self._next is not None
        ext = self._extend(sequence)
        frames: list[Frame] = []
        if ext > self._highest + RESYNC_PACKETS or ext < self._next - RESYNC_PACKETS:
            frames = self._flush()
            self._restart(sequence, timestamp, ssrc)
            ext = sequence
        self._highest = max(self._highest, ext)
        ts = self._unwrap(timestamp)
        self._update_jitter(ts, arrival, rate)
        return [*frames, *self._insert(ext, ts, pcm)]

    # -- internals ---------------------------------------------------------------------------------------
    def _restart(self, sequence: int, timestamp: int, ssrc: int) -> None:
        if self._next is not None:
            self.resyncs += 1
            self._resync_next = True
        self._ssrc = ssrc
        self._next = sequence
        self._highest = sequence
        self._pending.clear()
        self._last_ts_raw = timestamp
        self._ts_origin = timestamp
        self._last = None
        self._conceal_run = 0
        self._transit = None

    def _extend(self, sequence: int) -> int:
        """Unwrap a 16-bit sequence number to the one nearest the highest seen."""
        delta = (sequence - self._highest + SEQ_MOD // 2) % SEQ_MOD - SEQ_MOD // 2
        return self._highest + delta

    def _unwrap(self, timestamp: int) -> int:
        delta = (timestamp - self._last_ts_raw + TS_MOD // 2) % TS_MOD - TS_MOD // 2
        self._last_ts_raw = timestamp
        self._ts_origin += delta
        return self._ts_origin

    def _update_jitter(self, ts: int, arrival: float, rate: int) -> None:
        # RFC 3550 §6.4.1 / A.8: J += (|D| - J) / 16 with D the change in transit time.
        transit = arrival * rate - ts
        if self._transit is not None:
            self.jitter += (abs(transit - self._transit) - self.jitter) / 16
        self._transit = transit

    def _insert(self, ext: int, ts: int, pcm: PcmArray) -> list[Frame]:
        assert self._next is not None
        if ext < self._next:
            self.late += 1
            return []
        if ext in self._pending:
            self.duplicates += 1
            return []
        self._pending[ext] = (ts, pcm)
        out: list[Frame] = []
        while self._pending:
            if self._next in self._pending:
                out.append(self._release(*self._pending.pop(self._next)))
            elif max(self._pending) - self._next >= self.reorder_packets:
                out.append(self._conceal())
            else:
                break
            self._next += 1
        return out

    def _release(self, ts: int, pcm: PcmArray) -> Frame:
        self.released += 1
        self._conceal_run = 0
        self._last = (ts, pcm)
        frame = Frame(ts, pcm, resync=self._resync_next)
        self._resync_next = False
        return frame

    def _conceal(self) -> Frame:
        self.concealed += 1
        if self._last is None:
            # Lost before anything was released: nothing to repeat and no timestamp to place it at,
            # so the next packet's timestamp is used, minus one frame of the same length.
            first, (ts, pcm) = min(self._pending.items())
            ts -= (first - (self._next or 0)) * len(pcm)
            template = np.zeros_like(pcm)
        else:
            ts, template = self._last
            ts += len(template)
        self._conceal_run += 1
        if self._conceal_run <= self.max_conceal:
            pcm = (template.astype(np.float32) * CONCEAL_GAIN**self._conceal_run).astype(np.int16)
        else:
            pcm = np.zeros_like(template)
        self._last = (ts, template)
        return Frame(ts, pcm, concealed=True)

    def _flush(self) -> list[Frame]:
        """Release what is held, in order, before a restart (gaps between are not concealed)."""
        out = [self._release(*self._pending[ext]) for ext in sorted(self._pending)]
        self._pending.clear()
        return out
