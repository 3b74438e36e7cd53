"""A phone call as a microturn session: the SIP bridge's media transport.

:class:`SipSession` is a :class:`service.session.Session` -- same assembler, ticker, model, background
jobs and events as a browser's -- whose media is one RTP stream of G.711 instead of a WebRTC peer
connection. The model never learns which transport a session came from.

Inbound: RTP → G.711 decode (8 kHz) → :class:`JitterBuffer` (reordering, loss concealment) → 16 kHz →
the assembler, placed by RTP media time exactly like WebRTC audio. RFC 4733 events (and SIP INFO DTMF)
become typed text: a ``TextInput`` reading ``dtmf 5`` (``dtmf *``, ``dtmf #``, ``dtmf A``..``dtmf D``,
``dtmf flash``) in the micro-turn the key press began in.

Outbound: the session's :class:`OutputAudioTrack` already paces the agent's voice in 20 ms frames on the
wall clock (and goes silent on ``STOP`` at once); each frame is resampled to 8 kHz, G.711-encoded and
sent as one RTP packet, its timestamp following the track's (which jumps by whole frames after a stall,
so the phone's jitter buffer sees a gap, not late packets). Nothing is sent while the peer holds the call.

Events have no data channel to go to: the ones a person would want in a log (what the caller said, what
the agent said, errors) are logged at INFO, the rest at DEBUG.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from aiortc.mediastreams import MediaStreamError

from service.audio import PcmResampler, pcm_frame
from service.microturn import SAMPLE_RATE
from service.session import Session
from service.sip import g711, rtp
from service.sip.jitter import Frame, JitterBuffer
from service.sip.sdp import Negotiated

log = logging.getLogger(__name__)

FRAME_8K = g711.G711_RATE // 50  # 160 samples: one 20 ms G.711 packet
COMFORT_NOISE = 13  # RFC 3389 payload type: silence descriptors, nothing to play
RTP_TIMEOUT = 30.0  # s without RTP (while the peer should be sending) before the call is hung up
LOGGED_EVENTS = frozenset({"transcript.input", "response.text", "error", "session.ended", "input.dtmf"})


class SipSession(Session):
    def __init__(
        self,
        *args: Any,
        rtp_endpoint: rtp.RtpEndpoint,
        media: Negotiated,
        on_ended: Callable[[SipSession, str], None],
        caller: str = "",
        rtp_timeout: float = RTP_TIMEOUT,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.rtp = rtp_endpoint
        self.media = media
        self.caller = caller
        self.rtp_timeout = rtp_timeout
        self.jitter = JitterBuffer()
        self._on_ended = on_ended
        self._last_rtp = time.monotonic()
        self._up: PcmResampler | None = None  # 8 -> 16 kHz, per continuous stretch of inbound audio
        self._in_origin = 0.0  # media time (s) of the stretch's first sample
        self._in_out = 0  # 16 kHz samples produced in this stretch
        self._in_next_ts: int | None = None  # the RTP timestamp that continues the stretch
        self._dtmf_timestamp: int | None = None
        self._ssrc = secrets.randbits(32)
        self._seq = secrets.randbits(16)
        self._ts_base = secrets.randbits(32)
        self.unknown_payload = 0
        self.packets_sent = 0
        rtp_endpoint.on_packet = self._on_rtp
        self._set_remote(media)

    # -- lifetime ------------------------------------------------------------------------------------
    def start(self) -> None:
        super().start()
        self._spawn(self._send_audio(), "rtp-out")
        self._spawn(self._watchdog(), "rtp-watchdog")

    def renegotiate(self, media: Negotiated) -> None:
        """A re-INVITE (or the ACK of a delayed offer) changed the stream: hold, resume, new address."""
        if media != self.media:
            log.info(
                "session %s: media now %s:%d pt %d, we %s",
                self.id,
                media.address,
                media.port,
                media.payload_type,
                media.direction,
            )
        self.media = media
        self._set_remote(media)
        self.rtp.unlatch()
        self._last_rtp = time.monotonic()

    def _set_remote(self, media: Negotiated) -> None:
        self.rtp.remote = (media.address, media.port) if media.port and media.we_send else None

    async def _watchdog(self) -> None:
        while not self.closed:
            await asyncio.sleep(1.0)
            if self.media.we_receive and time.monotonic() - self._last_rtp > self.rtp_timeout:
                await self.close(f"no RTP for {self.rtp_timeout:.0f} s: caller gone")
                return

    async def _close_transport(self) -> None:
        self.rtp.close()
        j = self.jitter
        log.info(
            "session %s: RTP in %d (concealed %d, late %d, duplicate %d, foreign %d, jitter %.1f ms), out %d",
            self.id,
            j.received,
            j.concealed,
            j.late,
            j.duplicates,
            self.rtp.foreign,
            j.jitter * 1000 / g711.G711_RATE,
            self.packets_sent,
        )
        self._on_ended(self, self.close_reason)

    def _deliver_event(self, kind: str, text: str) -> None:
        log.log(
            logging.INFO if kind in LOGGED_EVENTS else logging.DEBUG, "session %s event %s", self.id, text
        )

    # -- inbound -------------------------------------------------------------------------------------
    def _on_rtp(self, packet: rtp.RtpPacket, arrival: float) -> None:
        if self.closed:
            return
        self._last_rtp = arrival
        media = self.media
        if packet.payload_type == media.payload_type:
            pcm = g711.decode(packet.payload, media.payload_type)
            for frame in self.jitter.push(
                packet.sequence, packet.timestamp, packet.ssrc, pcm, arrival, g711.G711_RATE
            ):
                self._hear(frame)
        elif packet.payload_type == media.event_payload_type:
            event = rtp.parse_event(packet.payload)
            # One event spans many packets (and three end packets) with its start timestamp.
            if event is not None and packet.timestamp != self._dtmf_timestamp:
                self._dtmf_timestamp = packet.timestamp
                self.dtmf(event.name)
        elif packet.payload_type != COMFORT_NOISE:
            self.unknown_payload += 1

    def _hear(self, frame: Frame) -> None:
        if self._up is None or frame.resync or frame.timestamp != self._in_next_ts:
            # A new stretch (first audio, restarted stream, or a sender that skipped time): its media time
            # comes from its timestamp, and the resampler starts without the old stretch's filter state.
            self._up = PcmResampler()
            self._in_origin = frame.timestamp / g711.G711_RATE
            self._in_out = 0
        self._in_next_ts = frame.timestamp + len(frame.pcm)
        arrival = self.now()
        for pcm in self._up(pcm_frame(frame.pcm, g711.G711_RATE)):
            self.assembler.push_audio(pcm, self._in_origin + self._in_out / SAMPLE_RATE, arrival)
            self._in_out += len(pcm)

    def dtmf(self, name: str) -> None:
        """A key press (RFC 4733 event or SIP INFO): the model gets it as typed text ``dtmf <name>``."""
        if self.closed:
            return
        self.assembler.push_text(f"dtmf {name}", self.now())
        self.send_event("input.dtmf", digit=name)

    # -- outbound ------------------------------------------------------------------------------------
    async def _send_audio(self) -> None:
        down = PcmResampler(rate=g711.G711_RATE)
        # One packet of silence ahead: the resampler's first output is short by its filter delay, and
        # this keeps every packet full from the first one on.
        fifo = np.zeros(FRAME_8K, dtype=np.int16)
        marker = True
        while True:
            try:
                frame = await self.output.recv()
            except MediaStreamError:
                return
            fifo = np.concatenate([fifo, *(pcm for pcm in down(frame))])
            chunk, fifo = fifo[:FRAME_8K], fifo[FRAME_8K:]
            if len(chunk) < FRAME_8K:
                chunk = np.pad(chunk, (0, FRAME_8K - len(chunk)))
            if len(fifo) > 2 * FRAME_8K:
                fifo = fifo[-FRAME_8K:]  # never let the framing drift into latency
            media = self.media
            if not media.we_send:
                marker = True
                continue
            timestamp = self._ts_base + (frame.pts or 0) * g711.G711_RATE // SAMPLE_RATE
            payload = g711.encode(chunk, media.payload_type)
            self.rtp.send(rtp.build(media.payload_type, self._seq, timestamp, self._ssrc, payload, marker))
            self._seq = (self._seq + 1) & 0xFFFF
            self.packets_sent += 1
            marker = False
