"""SDP offer/answer for a G.711 phone call (RFC 8866 syntax, RFC 3264 offer/answer, RFC 4733 events).

The bridge speaks one audio stream: PCMU or PCMA at 8 kHz in 20 ms packets, plus telephone-event for
DTMF when the peer offers it. :func:`parse` reads an offer strictly enough that a malformed one is a
``400`` (:class:`SdpSyntaxError`); :func:`answer` picks the codec and says ``488`` (:class:`SdpRefused`)
when nothing is acceptable; :func:`build` writes our side (answer or, for an INVITE without SDP, offer).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from service.sip.g711 import G711_RATE, PCMA, PCMU

PTIME_MS = 20  # ms: the packetisation we send and ask for (a=ptime), the telephony default
TELEPHONE_EVENT = "telephone-event"
DEFAULT_EVENT_PT = 101  # the dynamic payload type we offer for telephone-event (the common choice)
DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
_REVERSED = {"sendrecv": "sendrecv", "sendonly": "recvonly", "recvonly": "sendonly", "inactive": "inactive"}
MAX_SDP_BYTES = 16 * 1024  # an honest audio offer is well under 2 KB
_CODEC_NAMES = {"PCMU": PCMU, "PCMA": PCMA}
_LINE = re.compile(r"([a-z])=(.*)")
_MEDIA = re.compile(r"([a-z]+) ([0-9]{1,5})(?:/[0-9]+)? ([A-Za-z0-9/]+)((?: [A-Za-z0-9*]+)*)")
_CONNECTION = re.compile(r"IN (IP4|IP6) ([^ /]+)(?:/.*)?")
_RTPMAP = re.compile(r"([0-9]{1,3}) ([A-Za-z0-9\-_.]+)/([0-9]+)(?:/([0-9]+))?")


class SdpSyntaxError(ValueError):
    """The body is not acceptable SDP (the INVITE gets a 400)."""


class SdpRefused(ValueError):
    """Well-formed, but no stream we can take part in (the INVITE gets a 488)."""


@dataclass
class Media:
    kind: str  # "audio", "video", ...
    port: int
    proto: str  # "RTP/AVP", ...
    formats: list[str]
    rtpmap: dict[int, tuple[str, int]] = field(default_factory=dict)  # pt -> (encoding name, clock rate)
    connection: str | None = None  # media-level c= address
    direction: str | None = None  # media-level a=sendrecv|...
    ptime: int | None = None


@dataclass
class SessionDescription:
    media: list[Media]
    connection: str | None = None  # session-level c= address
    direction: str = "sendrecv"  # session-level default
    origin_version: int = 0


@dataclass(frozen=True)
class Negotiated:
    """What one offer/answer settled for the call's audio."""

    address: str  # where the peer wants our RTP ("0.0.0.0": on hold, old style)
    port: int
    payload_type: int  # PCMU or PCMA
    event_payload_type: int | None  # telephone-event PT, None if not offered
    direction: str  # OUR direction: "sendrecv", "recvonly" (peer put us on hold), ...

    @property
    def we_send(self) -> bool:
        return self.direction in ("sendrecv", "sendonly") and self.address not in ("0.0.0.0", "::")

    @property
    def we_receive(self) -> bool:
        return self.direction in ("sendrecv", "recvonly")


def parse(body: bytes) -> SessionDescription:
    if len(body) > MAX_SDP_BYTES:
        raise SdpSyntaxError(f"SDP larger than {MAX_SDP_BYTES} bytes")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise SdpSyntaxError("SDP is not UTF-8") from None
    lines = [line for line in text.replace("\r\n", "\n").split("\n") if line]
    if not lines or lines[0] != "v=0":
        raise SdpSyntaxError("SDP must start with v=0")
    sd = SessionDescription(media=[])
    seen_origin = False
    current: Media | None = None
    for line in lines[1:]:
        m = _LINE.fullmatch(line)
        if m is None:
            raise SdpSyntaxError(f"malformed SDP line {line[:60]!r}")
        kind, value = m.groups()
        if kind == "o":
            parts = value.split(" ")
            if len(parts) != 6 or not parts[2].isdigit():
                raise SdpSyntaxError(f"malformed o= line {value[:60]!r}")
            sd.origin_version = int(parts[2])
            seen_origin = True
        elif kind == "m":
            mm = _MEDIA.fullmatch(value)
            if mm is None:
                raise SdpSyntaxError(f"malformed m= line {value[:60]!r}")
            port = int(mm.group(2))
            if port > 65535:
                raise SdpSyntaxError(f"m= port {port} out of range")
            current = Media(mm.group(1), port, mm.group(3), mm.group(4).split())
            sd.media.append(current)
        elif kind == "c":
            address = _connection(value)
            if current is None:
                sd.connection = address
            else:
                current.connection = address
        elif kind == "a":
            _attribute(value, sd, current)
    if not seen_origin:
        raise SdpSyntaxError("SDP has no o= line")
    for media in sd.media:
        if media.port and media.connection is None and sd.connection is None:
            raise SdpSyntaxError(f"no c= line for the {media.kind} stream")
    return sd


def _connection(value: str) -> str:
    m = _CONNECTION.fullmatch(value)
    if m is None:
        raise SdpSyntaxError(f"malformed c= line {value[:60]!r}")
    family, address = m.groups()
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        raise SdpSyntaxError(f"c= address {address[:60]!r} is not an IP address") from None
    if (family == "IP4") != (ip.version == 4):
        raise SdpSyntaxError(f"c= address {address} is not {family}")
    return address


def _attribute(value: str, sd: SessionDescription, current: Media | None) -> None:
    name, _, arg = value.partition(":")
    if name in DIRECTIONS:
        if current is None:
            sd.direction = name
        else:
            current.direction = name
    elif name == "rtpmap" and current is not None:
        m = _RTPMAP.fullmatch(arg.strip())
        if m is None:
            raise SdpSyntaxError(f"malformed a=rtpmap {arg[:60]!r}")
        current.rtpmap[int(m.group(1))] = (m.group(2), int(m.group(3)))
    elif name == "ptime" and current is not None:
        if not arg.strip().isdigit():
            raise SdpSyntaxError(f"malformed a=ptime {arg[:20]!r}")
        current.ptime = int(arg)


def answer(offer: SessionDescription) -> tuple[Negotiated, int]:
    """Pick our audio stream from ``offer``: the first audio m-line we can use, its first G.711 codec in
    the peer's order of preference, telephone-event if offered. Returns it and the m-line's index."""
    reasons: list[str] = []
    for index, media in enumerate(offer.media):
        if media.kind != "audio" or media.port == 0:
            continue
        if media.proto != "RTP/AVP":
            reasons.append(f"audio over {media.proto} (only RTP/AVP: no SRTP)")
            continue
        codec = event = None
        for fmt in media.formats:
            if not fmt.isdigit():
                continue
            pt = int(fmt)
            name, rate = media.rtpmap.get(pt, ("", 0))
            # Static payload types only: a static PT without rtpmap is the RFC 3551 codec, and one with
            # an rtpmap must agree with it.
            if codec is None and pt in (PCMU, PCMA) and (not name or _CODEC_NAMES.get(name.upper()) == pt):
                codec = pt
            if event is None and name.lower() == TELEPHONE_EVENT and rate == G711_RATE:
                event = pt
        if codec is None:
            reasons.append(f"audio offers {' '.join(media.formats)} (only PCMU/PCMA at 8 kHz)")
            continue
        address = media.connection or offer.connection or "0.0.0.0"
        if ipaddress.ip_address(address).version != 4:
            reasons.append("audio over IPv6 (only IPv4)")
            continue
        direction = _REVERSED[media.direction or offer.direction]
        return Negotiated(address, media.port, codec, event, direction), index
    raise SdpRefused("; ".join(reasons) or "no audio stream offered")


def build(
    address: str,
    port: int,
    session_id: int,
    version: int,
    payload_types: list[int],
    event_payload_type: int | None,
    direction: str = "sendrecv",
    offer: SessionDescription | None = None,
    audio_index: int = 0,
) -> bytes:
    """Our SDP. As an answer (``offer`` given) it has one m-line per offered one, the others rejected
    with port 0 (RFC 3264 §6); as an offer, one audio m-line."""
    formats = [str(pt) for pt in payload_types]
    if event_payload_type is not None:
        formats.append(str(event_payload_type))
    lines = [
        "v=0",
        f"o=microturn {session_id} {version} IN IP4 {address}",
        "s=microturn",
        f"c=IN IP4 {address}",
        "t=0 0",
    ]
    audio = [f"m=audio {port} RTP/AVP {' '.join(formats)}"]
    audio += [f"a=rtpmap:{pt} {'PCMU' if pt == PCMU else 'PCMA'}/{G711_RATE}" for pt in payload_types]
    if event_payload_type is not None:
        audio += [
            f"a=rtpmap:{event_payload_type} {TELEPHONE_EVENT}/{G711_RATE}",
            f"a=fmtp:{event_payload_type} 0-16",
        ]
    audio += [f"a=ptime:{PTIME_MS}", f"a={direction}"]
    if offer is None:
        lines += audio
    else:
        for index, media in enumerate(offer.media):
            if index == audio_index:
                lines += audio
            else:
                lines.append(f"m={media.kind} 0 {media.proto} {' '.join(media.formats) or '0'}")
    return ("\r\n".join(lines) + "\r\n").encode("ascii")
