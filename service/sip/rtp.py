"""RTP for a phone call: packets (RFC 3550), DTMF events (RFC 4733) and one call's UDP endpoint.

Symmetric RTP: phones and trunks behind NAT receive RTP where they send it from, not where their SDP
says. The endpoint therefore sends to the source of the packets it receives once it has seen some, and
to the SDP address before that. To resist "RTP bleed" (a stranger's packets redirecting the agent's
voice), it latches on the first source and switches only after that source has been silent for
:data:`RELATCH_AFTER`; packets from anyone else meanwhile are dropped and counted.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

log = logging.getLogger(__name__)

RTP_VERSION = 2
HEADER = struct.Struct("!BBHII")  # V/P/X/CC, M/PT, sequence, timestamp, SSRC
RELATCH_AFTER = 2.0  # s a latched source must be silent before another may take its place
# Names of RFC 4733 §3.2 events 0-16: the DTMF digits and hook flash.
EVENT_NAMES = [*"0123456789", "*", "#", "A", "B", "C", "D", "flash"]

Address = tuple[str, int]


@dataclass(frozen=True)
class RtpPacket:
    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    marker: bool
    payload: bytes


def parse(data: bytes) -> RtpPacket | None:
    """An RTP packet, or None for anything else (RTCP, STUN, junk): never raises."""
    if len(data) < HEADER.size:
        return None
    first, second, sequence, timestamp, ssrc = HEADER.unpack_from(data)
    if first >> 6 != RTP_VERSION:
        return None
    payload_type = second & 0x7F
    if 72 <= payload_type <= 76:
        return None  # RTCP multiplexed on the port (RFC 5761 §4): not media
    offset = HEADER.size + 4 * (first & 0x0F)  # CSRC list
    if first & 0x10:  # header extension: 16-bit profile, 16-bit length in words
        if len(data) < offset + 4:
            return None
        offset += 4 + 4 * struct.unpack_from("!H", data, offset + 2)[0]
    end = len(data)
    if first & 0x20:  # padding: the last byte counts it
        if end <= offset or data[-1] == 0:
            return None
        end -= data[-1]
    if end < offset:
        return None
    return RtpPacket(payload_type, sequence, timestamp, ssrc, bool(second & 0x80), bytes(data[offset:end]))


def build(
    payload_type: int, sequence: int, timestamp: int, ssrc: int, payload: bytes, marker: bool = False
) -> bytes:
    second = (0x80 if marker else 0) | payload_type
    return HEADER.pack(RTP_VERSION << 6, second, sequence & 0xFFFF, timestamp & 0xFFFFFFFF, ssrc) + payload


@dataclass(frozen=True)
class DtmfEvent:
    event: int  # 0-9 digits, 10 '*', 11 '#', 12-15 A-D, 16 flash
    end: bool
    volume: int  # -dBm0
    duration: int  # timestamp units (8 kHz) since the event started

    @property
    def name(self) -> str:
        return EVENT_NAMES[self.event] if self.event < len(EVENT_NAMES) else str(self.event)


def parse_event(payload: bytes) -> DtmfEvent | None:
    """An RFC 4733 named event, or None if the payload is not one."""
    if len(payload) < 4:
        return None
    event, flags, duration = struct.unpack_from("!BBH", payload)
    return DtmfEvent(event, bool(flags & 0x80), flags & 0x3F, duration)


def build_event(event: int, end: bool, duration: int, volume: int = 10) -> bytes:
    return struct.pack("!BBH", event, (0x80 if end else 0) | (volume & 0x3F), duration)


class RtpEndpoint(asyncio.DatagramProtocol):
    """One call's RTP socket: receives packets for ``on_packet``, sends to the latched peer.

    Counters: ``received``, ``sent``, ``foreign`` (from a source other than the latched one),
    ``malformed`` (not RTP), ``relatched``.
    """

    def __init__(self, on_packet: Callable[[RtpPacket, float], None] | None = None) -> None:
        self.on_packet = on_packet
        self.transport: asyncio.DatagramTransport | None = None
        self.local: Address = ("", 0)
        self.remote: Address | None = None  # from SDP: where to send until packets arrive
        self.latched: Address | None = None
        self._last_from_latched = 0.0
        self.received = self.sent = self.foreign = self.malformed = self.relatched = 0

    @classmethod
    async def open(cls, host: str, ports: tuple[int, int]) -> RtpEndpoint:
        """Bind an even port in ``ports`` (inclusive range) on ``host``; its odd neighbour is left for
        RTCP by convention (we neither send nor read RTCP)."""
        loop = asyncio.get_running_loop()
        first, last = ports
        start = first + (first % 2)
        span = max(1, (last - start) // 2 + 1)
        offset = (time.monotonic_ns() // 1000) % span  # spread calls over the range: fewer collisions
        for i in range(span):
            port = start + 2 * ((offset + i) % span)
            try:
                _, protocol = await loop.create_datagram_endpoint(cls, local_addr=(host, port))
            except OSError:
                continue
            assert isinstance(protocol, RtpEndpoint)
            return protocol
        raise OSError(f"no free RTP port in {first}-{last} on {host}")

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)
        sockname = transport.get_extra_info("sockname")
        self.local = (str(sockname[0]), int(sockname[1]))

    def datagram_received(self, data: bytes, addr: Any) -> None:
        now = time.monotonic()
        source = (str(addr[0]), int(addr[1]))
        packet = parse(data)
        if packet is None:
            self.malformed += 1
            return
        if self.latched is None:
            self.latched = source
        elif source != self.latched:
            if now - self._last_from_latched < RELATCH_AFTER:
                self.foreign += 1
                return
            log.info("RTP source moved from %s:%d to %s:%d", *self.latched, *source)
            self.latched = source
            self.relatched += 1
        self._last_from_latched = now
        self.received += 1
        if self.on_packet is not None:
            self.on_packet(packet, now)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable from a peer that has not opened its port yet, or left: not fatal.
        log.debug("RTP socket %s:%d: %s", *self.local, exc)

    def unlatch(self) -> None:
        """The peer renegotiated (re-INVITE): its new source may be learnt at once."""
        self.latched = None

    @property
    def destination(self) -> Address | None:
        return self.latched or self.remote

    def send(self, data: bytes) -> None:
        destination = self.destination
        if self.transport is None or destination is None or self.transport.is_closing():
            return
        self.transport.sendto(data, destination)
        self.sent += 1

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
