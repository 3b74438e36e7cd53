"""The SIP user agent server of a media node: phones and trunks call in, each call becomes a session.

One UDP socket (``--sip-host``/``--sip-port``). What it does with each request:

- ``INVITE`` (new): allow-list (silently dropped if the source is not on it), digest authentication
  (``401`` with a challenge), capacity (the node's ``max_sessions``, ringing calls included: ``503``
  with ``Retry-After``, or ``486`` by config), ``Require`` (``420``), the SDP offer (``400`` malformed,
  ``488`` nothing acceptable, ``415`` not SDP), then ``100 Trying``, ``180 Ringing``, optionally a ring
  time, and ``200 OK`` with the SDP answer -- retransmitted until the ACK. No SDP in the INVITE: the
  200 carries our offer and the ACK the answer.
- ``CANCEL`` before the 200: ``200`` to it, ``487`` to the INVITE, no session is made.
- ``ACK``: confirms the dialog; for a delayed offer it carries the answer.
- ``BYE`` from the caller: ``200``, the session closes. The agent or the node ending the session sends
  a BYE (with a ``Reason`` header), after the ACK if that has not come yet.
- re-``INVITE``: a new offer is answered and applied (hold with ``sendonly``/``inactive``/``0.0.0.0``
  stops our RTP; resume starts it again); without an offer our current SDP is offered.
- ``OPTIONS``: ``200`` with ``Allow``/``Accept`` (keepalives of trunks). ``INFO`` with
  ``application/dtmf-relay`` or ``application/dtmf``: DTMF like RFC 4733 events.
- Other methods: ``405`` with ``Allow`` if SIP defines them, ``501`` if not. In-dialog requests for no
  dialog: ``481``. A message the strict parser refuses: ``400`` with a ``Warning`` saying why, when
  Via/From/To/Call-ID/CSeq could be read; dropped otherwise (and responses to nothing are dropped).

Responses go to the address the request came from (symmetric response routing, RFC 3581 style),
which is also what works behind NAT.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import secrets
import socket
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from prometheus_client import Counter

from service.sip import message, sdp
from service.sip.auth import DigestAuthenticator
from service.sip.call import RTP_TIMEOUT, SipSession
from service.sip.g711 import PCMA, PCMU
from service.sip.message import SipParseError, SipRequest, SipResponse, response_to
from service.sip.rtp import EVENT_NAMES, RtpEndpoint
from service.sip.transaction import Address, Dialog, ServerTransaction, TransactionLayer, new_tag

if TYPE_CHECKING:
    from service.app import MediaNode

log = logging.getLogger(__name__)

ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO"
# Methods SIP extensions define that this UAS does not take part in: 405 (with Allow), not 501.
KNOWN_METHODS = frozenset(
    {"REGISTER", "SUBSCRIBE", "NOTIFY", "MESSAGE", "REFER", "PRACK", "UPDATE", "PUBLISH"}
)
SERVER = "microturn"
DEFAULT_RTP_PORTS = (20000, 29999)
STOP_GRACE = 0.5  # s given to the BYEs of a shutdown to leave before the socket closes


@dataclass
class SipConfig:
    host: str = "127.0.0.1"  # where SIP (UDP) and RTP listen
    port: int = 5060
    advertise: str | None = None  # address in Contact and SDP; None: host, or the route to the caller
    rtp_ports: tuple[int, int] = DEFAULT_RTP_PORTS  # inclusive range of RTP ports, one even port per call
    allow: tuple[str, ...] = ()  # networks (CIDR) that may send SIP; empty: anyone
    users: dict[str, str] = field(default_factory=dict)  # digest credentials; empty: no authentication
    realm: str = "microturn"
    busy_status: int = (
        503  # answer when the node is full: 503 (+ Retry-After, a trunk tries elsewhere) or 486
    )
    ring_seconds: float = 0.0  # s between 180 Ringing and 200 OK
    rtp_timeout: float = RTP_TIMEOUT


@dataclass
class SipCall:
    invite: SipRequest
    source: Address
    dialog: Dialog
    txn: ServerTransaction  # the INVITE transaction whose final response is pending or unacknowledged
    rtp: RtpEndpoint | None = None
    session: SipSession | None = None
    offer: sdp.SessionDescription | None = None  # None: delayed offer (we offered in the 200)
    sdp_id: int = field(default_factory=lambda: secrets.randbelow(2**31))
    sdp_version: int = 1
    acked: bool = False
    ended: bool = False  # BYE sent or received
    bye_pending: str | None = None  # the session ended before the ACK: BYE with this reason on ACK
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.dialog.call_id, self.dialog.local_tag, self.dialog.remote_tag)


class SipUserAgent(asyncio.DatagramProtocol):
    def __init__(self, config: SipConfig, node: MediaNode) -> None:
        self.config = config
        self.node = node
        self.transactions = TransactionLayer(self._send)
        self.calls: dict[tuple[str, str, str], SipCall] = {}
        self.ringing = 0  # INVITEs accepted but not answered yet: they hold a session slot
        self.auth = DigestAuthenticator(config.realm, config.users) if config.users else None
        self.allow = [ipaddress.ip_network(net, strict=False) for net in config.allow]
        self.transport: asyncio.DatagramTransport | None = None
        self.stopping = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._initial: dict[tuple[str, str, int], str] = {}  # (Call-ID, From tag, CSeq) -> branch
        registry = node.metrics.registry
        self.m_calls = Counter(
            "microturn_sip_calls_total", "INVITEs by outcome", ["outcome"], registry=registry
        )
        self.m_malformed = Counter(
            "microturn_sip_malformed_total", "SIP messages refused by the parser", registry=registry
        )
        self.m_dropped = Counter(
            "microturn_sip_not_allowed_total", "SIP datagrams from sources not allowed", registry=registry
        )

    # -- socket ----------------------------------------------------------------------------------------
    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: self, local_addr=(self.config.host, self.config.port))
        log.info("SIP on udp %s:%d", *self.local)

    @property
    def local(self) -> Address:
        assert self.transport is not None
        name = self.transport.get_extra_info("sockname")
        return str(name[0]), int(name[1])

    async def stop(self) -> None:
        """Refuse new calls; sessions are closed by the node first, so their BYEs are on the way."""
        self.stopping = True
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=1.0)
        for call in list(self.calls.values()):
            if call.rtp is not None and call.session is None:
                call.rtp.close()
        await asyncio.sleep(STOP_GRACE if self.calls else 0)
        self.transactions.close()
        if self.transport is not None:
            self.transport.close()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def error_received(self, exc: Exception) -> None:
        log.debug("SIP socket: %s", exc)

    def _send(self, data: bytes, destination: Address) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(data, destination)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        source = (str(addr[0]), int(addr[1]))
        try:
            self._datagram(data, source)
        except Exception:
            # Whatever a peer sends, the node stays up; the bug is in the log.
            log.exception("SIP datagram from %s:%d", *source)

    # -- dispatch --------------------------------------------------------------------------------------
    def _datagram(self, data: bytes, source: Address) -> None:
        if self.allow and not any(ipaddress.ip_address(source[0]) in net for net in self.allow):
            self.m_dropped.inc()
            log.debug("SIP from %s:%d dropped: not in --sip-allow", *source)
            return
        if not data.strip(b"\r\n"):
            return  # CRLF keepalive (RFC 5626 §4.4.1)
        try:
            msg = message.parse(data)
        except SipParseError as exc:
            self.m_malformed.inc()
            log.info("malformed SIP from %s:%d: %s", *source, exc.reason)
            self._bad_request(data, exc, source)
            return
        if isinstance(msg, SipResponse):
            self.transactions.response(msg)
            return
        self._request(msg, source)

    def _bad_request(self, data: bytes, exc: SipParseError, source: Address) -> None:
        """400 when the response can be routed and matched (RFC 3261 §8.2.6.2), else silence."""
        if data.startswith((b"SIP/", b"ACK ")) or not message.answerable(exc.headers):
            return
        warning = "".join(ch for ch in exc.reason if ch.isprintable() and ch not in '"\\')[:200]
        response = response_to(
            exc.headers,
            400,
            "Bad Request",
            to_tag=new_tag(),
            headers=[("Warning", f'399 microturn "{warning}"'), ("Server", SERVER)],
        )
        self._send(response.to_bytes(), source)

    def _request(self, req: SipRequest, source: Address) -> None:
        txn = self.transactions.find_server(req)
        if req.method == "ACK":
            if txn is not None:
                txn.acked()  # the ACK of a 3xx-6xx (same branch as the INVITE)
            else:
                call = self.calls.get(self._key(req))
                if call is not None:
                    self._acked(call, req)
            return
        if txn is not None:
            txn.retransmission()
            return
        if req.method == "CANCEL":
            self._cancel(req, source)
            return
        txn = self.transactions.new_server(req, source, on_timeout=self._no_ack)
        unsupported = [tag for tag in req.get_all("Require") if tag]
        if unsupported:
            self._reply(txn, 420, "Bad Extension", [("Unsupported", ", ".join(unsupported))])
            return
        to_tag = req.to.tag
        call = self.calls.get(self._key(req)) if to_tag else None
        if to_tag and call is None:
            self._reply(txn, 481, "Call/Transaction Does Not Exist")
        elif req.method == "INVITE":
            if call is None:
                self._new_call(req, source, txn)
            else:
                self._reinvite(call, req, txn)
        elif req.method == "BYE":
            if call is None:
                self._reply(txn, 481, "Call/Transaction Does Not Exist")
            else:
                self._bye(call, req, txn)
        elif req.method == "OPTIONS":
            self._reply(txn, 200, "OK", [("Accept", "application/sdp")])
        elif req.method == "INFO":
            self._info(call, req, txn)
        elif req.method in KNOWN_METHODS:
            self._reply(txn, 405, "Method Not Allowed")
        else:
            self._reply(txn, 501, "Not Implemented")

    def _reply(
        self,
        txn: ServerTransaction,
        status: int,
        reason: str,
        headers: list[tuple[str, str]] | None = None,
        to_tag: str | None = None,
        body: bytes = b"",
    ) -> None:
        extra = [("Server", SERVER), ("Allow", ALLOW), *(headers or [])]
        txn.respond(response_to(txn.request, status, reason, to_tag or new_tag(), extra, body))

    @staticmethod
    def _key(req: SipRequest) -> tuple[str, str, str]:
        return (req.call_id, req.to.tag, req.from_.tag)

    # -- new calls -------------------------------------------------------------------------------------
    def _new_call(self, req: SipRequest, source: Address, txn: ServerTransaction) -> None:
        branch = req.vias[0].branch
        merged = (req.call_id, req.from_.tag, req.cseq[0])
        if self._initial.get(merged, branch) != branch:
            self._reply(txn, 482, "Loop Detected")  # RFC 3261 §8.2.2.2: the same request on two paths
            return
        if self.auth is not None:
            ok, stale = self.auth.verify("INVITE", req.get("Authorization"))
            if not ok:
                self.m_calls.labels("unauthorized").inc()
                self._reply(txn, 401, "Unauthorized", [("WWW-Authenticate", self.auth.challenge(stale))])
                return
        if self.stopping or len(self.node.sessions) + self.ringing >= self.node.config.max_sessions:
            self.m_calls.labels("busy").inc()
            if self.config.busy_status == 486:
                self._reply(txn, 486, "Busy Here")
            else:
                self._reply(
                    txn, 503, "Service Unavailable", [("Retry-After", str(self.node.config.retry_after_s))]
                )
            return
        read = self._read_offer(req, txn, new_tag())
        if read is None:
            return
        offer, negotiated, audio_index = read
        local_tag = new_tag()
        txn.respond(response_to(req, 100, "Trying"))
        call = SipCall(
            invite=req, source=source, dialog=Dialog.from_invite(req, local_tag, source), txn=txn, offer=offer
        )
        self.calls[call.key] = call
        self._initial[merged] = branch
        self.ringing += 1
        self._spawn(self._answer(call, negotiated, audio_index))

    async def _answer(self, call: SipCall, negotiated: sdp.Negotiated | None, audio_index: int) -> None:
        local_tag = call.dialog.local_tag
        contact = [("Contact", self._contact(call.source))]
        try:
            call.rtp = await RtpEndpoint.open(self.config.host, self.config.rtp_ports)
            self._reply(call.txn, 180, "Ringing", contact, to_tag=local_tag)
            if self.config.ring_seconds > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(call.cancelled.wait(), self.config.ring_seconds)
            if call.cancelled.is_set() or call.txn.final:
                self._forget(call)
                return
            if negotiated is None:  # delayed offer: nothing is sent until the ACK brings the answer
                negotiated = sdp.Negotiated("0.0.0.0", 0, PCMU, sdp.DEFAULT_EVENT_PT, "sendrecv")
            session = self.node.create_session(
                SipSession,
                rtp_endpoint=call.rtp,
                media=negotiated,
                on_ended=self._session_ended,
                caller=call.invite.from_.uri,
                rtp_timeout=self.config.rtp_timeout,
            )
            call.session = session
            self.ringing -= 1  # the session now holds the slot
            body = self._sdp(call, negotiated, audio_index)
            self._reply(call.txn, 200, "OK", [*contact, ("Content-Type", "application/sdp")], local_tag, body)
            self.node.admit(session)
            session.start()
            self.m_calls.labels("answered").inc()
            log.info(
                "call %s from %s answered: session %s", call.dialog.call_id, call.invite.from_.uri, session.id
            )
        except Exception as exc:
            log.exception("call %s could not be answered", call.dialog.call_id)
            if not call.txn.final:
                self._reply(
                    call.txn,
                    500,
                    "Server Internal Error",
                    [("Warning", f'399 microturn "{type(exc).__name__}"')],
                )
            if call.session is not None:
                await call.session.close("answering failed")
            else:
                self._forget(call)
            self.m_calls.labels("failed").inc()
        finally:
            if call.session is None and call.key in self.calls:
                self._forget(call)

    def _forget(self, call: SipCall) -> None:
        """Drop a call that never got a session (cancelled, failed)."""
        if call.key in self.calls and call.session is None:
            self.ringing -= 1
            if call.rtp is not None:
                call.rtp.close()
        self._drop(call)

    def _drop(self, call: SipCall) -> None:
        self.calls.pop(call.key, None)
        self._initial.pop((call.dialog.call_id, call.dialog.remote_tag, call.invite.cseq[0]), None)

    def _sdp(self, call: SipCall, media: sdp.Negotiated, audio_index: int) -> bytes:
        assert call.rtp is not None
        if call.offer is None:  # we offer: both laws and DTMF events, the answer picks
            return sdp.build(
                self._advertise(call.source),
                call.rtp.local[1],
                call.sdp_id,
                call.sdp_version,
                [PCMU, PCMA],
                sdp.DEFAULT_EVENT_PT,
            )
        return sdp.build(
            self._advertise(call.source),
            call.rtp.local[1],
            call.sdp_id,
            call.sdp_version,
            [media.payload_type],
            media.event_payload_type,
            media.direction,
            call.offer,
            audio_index,
        )

    def _advertise(self, peer: Address) -> str:
        """Our address as the peer should see it (Contact, SDP)."""
        if self.config.advertise:
            return self.config.advertise
        host = self.local[0]
        if host not in ("0.0.0.0", "::"):
            return host
        # Bound to every interface: the one that routes to the caller (no packet is sent).
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(peer)
            return str(s.getsockname()[0])

    def _contact(self, peer: Address) -> str:
        return f"<sip:microturn@{self._advertise(peer)}:{self.local[1]}>"

    # -- in-call requests ------------------------------------------------------------------------------
    def _acked(self, call: SipCall, ack: SipRequest) -> None:
        if call.acked and call.txn.state != "accepted":
            return  # a retransmitted ACK
        call.txn.acked()
        call.acked = True
        if ack.body and call.session is not None and (call.offer is None or call.session.media.port == 0):
            try:
                media, _ = sdp.answer(sdp.parse(ack.body))
            except ValueError as exc:
                log.info("call %s: unusable SDP answer in ACK (%s): hanging up", call.dialog.call_id, exc)
                self._spawn(call.session.close(f"unusable SDP answer in ACK: {exc}"))
                return
            call.offer = sdp.parse(ack.body)
            call.session.renegotiate(media)
        if call.bye_pending is not None:
            self._send_bye(call, call.bye_pending)

    def _no_ack(self, txn: ServerTransaction) -> None:
        """Our 200 OK was never acknowledged (64·T1): the dialog is dead (RFC 3261 §13.3.1.4)."""
        for call in list(self.calls.values()):
            if call.txn is txn and not call.acked:
                log.info("call %s: no ACK for the 200 OK: hanging up", call.dialog.call_id)
                call.acked = True  # as far as sending the BYE goes
                if call.session is not None:
                    self._spawn(call.session.close("no ACK for 200 OK"))

    def _cancel(self, req: SipRequest, source: Address) -> None:
        cancel_txn = self.transactions.new_server(req, source)
        invite_txn = self.transactions.find_invite(req)
        call = next((c for c in self.calls.values() if c.txn is invite_txn), None) if invite_txn else None
        if invite_txn is None or call is None:
            self._reply(cancel_txn, 481, "Call/Transaction Does Not Exist")
            return
        self._reply(cancel_txn, 200, "OK", to_tag=call.dialog.local_tag)
        if not invite_txn.final:
            self._reply(invite_txn, 487, "Request Terminated", to_tag=call.dialog.local_tag)
            call.cancelled.set()
            self.m_calls.labels("cancelled").inc()
            log.info("call %s cancelled before answer", call.dialog.call_id)

    def _reinvite(self, call: SipCall, req: SipRequest, txn: ServerTransaction) -> None:
        if not call.txn.final or not call.acked:
            # RFC 3261 §14.2: an INVITE while the previous one is unfinished.
            self._reply(
                txn,
                500,
                "Server Internal Error",
                [("Retry-After", str(secrets.randbelow(10) + 1))],
                to_tag=call.dialog.local_tag,
            )
            return
        if not self._in_order(call, req, txn):
            return
        session = call.session
        assert session is not None
        read = self._read_offer(req, txn, call.dialog.local_tag)
        if read is None:
            return
        offer, negotiated, audio_index = read
        media = negotiated or session.media
        if offer is not None:
            call.offer = offer
            call.sdp_version += 1
            session.renegotiate(media)
        else:
            call.offer = None  # we offer, the ACK answers
        call.dialog.remote_cseq = req.cseq[0]
        call.txn = txn
        call.acked = False
        body = self._sdp(call, media, audio_index)
        headers = [("Contact", self._contact(call.source)), ("Content-Type", "application/sdp")]
        self._reply(txn, 200, "OK", headers, call.dialog.local_tag, body)

    def _in_order(self, call: SipCall, req: SipRequest, txn: ServerTransaction) -> bool:
        """RFC 3261 §12.2.2: an in-dialog request with a CSeq not above the last one gets a 500."""
        if req.cseq[0] > call.dialog.remote_cseq:
            return True
        warning = [("Warning", '399 microturn "CSeq not increasing"')]
        self._reply(txn, 500, "Server Internal Error", warning, to_tag=call.dialog.local_tag)
        return False

    def _read_offer(
        self, req: SipRequest, txn: ServerTransaction, to_tag: str
    ) -> tuple[sdp.SessionDescription | None, sdp.Negotiated | None, int] | None:
        """The INVITE's SDP offer and what we answer, (None, None, 0) if it has none; None if it was
        refused (415 not SDP, 400 malformed, 488 nothing acceptable), the refusal sent."""
        if not req.body:
            return None, None, 0
        refusal: tuple[int, str, str, str] | None = None
        if req.content_type != "application/sdp":
            self._reply(txn, 415, "Unsupported Media Type", [("Accept", "application/sdp")], to_tag)
            return None
        try:
            offer = sdp.parse(req.body)
            negotiated, audio_index = sdp.answer(offer)
            return offer, negotiated, audio_index
        except sdp.SdpSyntaxError as exc:
            refusal = (400, "Bad Request", f'399 microturn "{exc}"', "bad_sdp")
        except sdp.SdpRefused as exc:
            refusal = (488, "Not Acceptable Here", f'305 microturn "{exc}"', "no_codec")
        status, reason, warning, outcome = refusal
        if not req.to.tag:
            self.m_calls.labels(outcome).inc()
        self._reply(txn, status, reason, [("Warning", warning)], to_tag)
        return None

    def _bye(self, call: SipCall, req: SipRequest, txn: ServerTransaction) -> None:
        if not self._in_order(call, req, txn):
            return
        call.dialog.remote_cseq = req.cseq[0]
        self._reply(txn, 200, "OK", to_tag=call.dialog.local_tag)
        call.ended = True
        call.txn.acked()  # a BYE before the ACK still ends the 2xx retransmissions
        log.info("call %s: caller hung up", call.dialog.call_id)
        if call.session is not None:
            self._spawn(call.session.close("caller hung up (BYE)"))
        else:
            call.cancelled.set()
            if not call.txn.final:
                self._reply(call.txn, 487, "Request Terminated", to_tag=call.dialog.local_tag)

    def _info(self, call: SipCall | None, req: SipRequest, txn: ServerTransaction) -> None:
        if call is None or call.session is None:
            self._reply(txn, 481, "Call/Transaction Does Not Exist")
            return
        digit = None
        text = req.body.decode("utf-8", "replace").strip()
        if req.content_type == "application/dtmf-relay":
            for line in text.splitlines():
                name, _, value = line.partition("=")
                if name.strip().lower() == "signal":
                    digit = value.strip()
        elif req.content_type == "application/dtmf":
            digit = text
        else:
            self._reply(
                txn,
                415,
                "Unsupported Media Type",
                [("Accept", "application/dtmf-relay, application/dtmf")],
                to_tag=call.dialog.local_tag,
            )
            return
        if digit == "16" or (digit and digit.upper() in EVENT_NAMES):
            call.session.dtmf("flash" if digit == "16" else digit.upper())
        self._reply(txn, 200, "OK", to_tag=call.dialog.local_tag)

    # -- ending ----------------------------------------------------------------------------------------
    def _session_ended(self, session: SipSession, reason: str) -> None:
        call = next((c for c in self.calls.values() if c.session is session), None)
        if call is None:
            return
        if call.ended:
            self._drop(call)
            return
        if not call.acked:
            call.bye_pending = reason  # RFC 3261 §15: no BYE before the ACK (or its timeout)
            return
        self._send_bye(call, reason)

    def _send_bye(self, call: SipCall, reason: str) -> None:
        call.ended = True
        host, port = self._advertise(call.source), self.local[1]
        text = "".join(ch for ch in reason if ch.isprintable() and ch not in '"\\')[:120]
        bye = call.dialog.request(
            "BYE", host, port, [("Reason", f'Q.850;cause=16;text="{text}"'), ("User-Agent", SERVER)]
        )
        log.info("call %s: hanging up (%s)", call.dialog.call_id, reason)

        def done(response: SipResponse | None) -> None:
            self._drop(call)

        self.transactions.request(bye, call.dialog.peer, done)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def parse_ports(text: str) -> tuple[int, int]:
    """``"20000-29999"`` → ``(20000, 29999)``."""
    lo, sep, hi = text.partition("-")
    if not sep or not lo.isdigit() or not hi.isdigit() or not 1024 <= int(lo) < int(hi) <= 65535:
        raise ValueError(f"RTP port range is LOW-HIGH within 1024-65535, got {text!r}")
    return int(lo), int(hi)


def read_users(path: str) -> dict[str, str]:
    """``user:password`` lines (``#`` comments) → credentials for digest authentication."""
    users: dict[str, str] = {}
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            user, sep, password = line.partition(":")
            if not sep or not user:
                raise ValueError(f"{path}:{number}: expected user:password")
            users[user] = password
    return users
