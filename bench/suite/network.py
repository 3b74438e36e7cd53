"""Packet loss and jitter on the client's outgoing audio, at the packet level.

aiortc's RTP sender hands every packet to its DTLS transport's ``_send_rtp`` (which encrypts it with SRTP
and sends it). :func:`impair_outgoing_audio` wraps that method on one client's transport: an RTP packet is
dropped with probability ``loss``, or sent after a random delay of 0..2·``jitter_ms`` (mean ``jitter_ms``,
so packets reorder, as netem's ``delay`` would do). RTCP, the data channel (SCTP) and the camera's packets
(another SSRC on the same bundled transport) pass untouched, so only the user's voice is impaired and the
events keep flowing. The server sees real sequence-number gaps
and late, reordered packets: its jitter buffer, loss concealment and micro-turn assembly are exercised as
by a bad network. It is an approximation in two ways: it reaches into aiortc internals (a private method,
checked at wrap time), and nothing is impaired on the way back to the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiortc import RTCPeerConnection
from aiortc.rtp import is_rtcp

from bench.suite.cases import Network


@dataclass
class ImpairmentStats:
    packets: int = 0
    dropped: int = 0
    delayed: int = 0


def impair_outgoing_audio(pc: RTCPeerConnection, network: Network, seed: int) -> ImpairmentStats:
    """Impair the RTP packets ``pc`` sends from now on; returns live counters."""
    stats = ImpairmentStats()
    if not network.impaired:
        return stats
    senders = [s for s in pc.getSenders() if s.track is not None and s.track.kind == "audio"]
    if not senders:
        raise ValueError("the peer connection sends no audio")
    transport = senders[0].transport
    send: Callable[[bytes], Awaitable[None]] | None = getattr(transport, "_send_rtp", None)
    ssrc: int | None = getattr(senders[0], "_ssrc", None)
    if send is None or ssrc is None:
        raise RuntimeError(
            "this aiortc has no RTCDtlsTransport._send_rtp or RTCRtpSender._ssrc; see bench/suite/network.py"
        )
    audio_ssrc = ssrc.to_bytes(4, "big")  # bytes 8-11 of an RTP header (RFC 3550)
    rng = random.Random(seed)
    loop = asyncio.get_running_loop()
    pending: set[asyncio.Task[None]] = set()

    async def send_late(data: bytes) -> None:
        with contextlib.suppress(ConnectionError):  # the session ended while the packet was held back
            await send(data)

    def later(data: bytes) -> None:
        task = loop.create_task(send_late(data))
        pending.add(task)
        task.add_done_callback(pending.discard)

    async def impaired(data: bytes) -> None:
        if is_rtcp(data) or data[8:12] != audio_ssrc:
            await send(data)
            return
        stats.packets += 1
        if rng.random() < network.loss:
            stats.dropped += 1
            return
        delay = rng.uniform(0.0, 2.0 * network.jitter_ms) / 1000.0
        if delay <= 0.0:
            await send(data)
            return
        stats.delayed += 1
        loop.call_later(delay, later, data)

    transport._send_rtp = impaired  # type: ignore[method-assign]
    return stats
