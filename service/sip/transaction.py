"""SIP transactions and dialogs over UDP (RFC 3261 §17, §12; RFC 6026 for the INVITE 2xx).

UDP loses and duplicates datagrams, so every exchange is a *transaction* with timers:

- **INVITE server transaction** (§17.2.1, RFC 6026). A retransmitted INVITE gets the last provisional
  again. A 3xx-6xx final response is retransmitted (Timer G: T1, doubling, capped at T2) until the ACK
  with the same branch arrives (then ACK retransmissions are absorbed for T4, Timer I) or 64·T1 pass
  (Timer H). A 2xx is retransmitted the same way until the dialog's ACK arrives -- that ACK has its own
  branch, so the user agent finds it through the dialog and calls :meth:`ServerTransaction.acked` --
  or 64·T1 pass, when ``on_timeout`` tells the user agent the call never got confirmed.
- **Non-INVITE server transaction** (§17.2.2). A retransmitted request gets the final response again
  for 64·T1 (Timer J) and never reaches the user agent twice.
- **Non-INVITE client transaction** (§17.1.2), for the BYE we send: retransmitted from T1, doubling up
  to T2 (Timer E), until a final response or 64·T1 (Timer F).

Timers are ``loop.call_later`` handles; every transaction removes itself when it terminates.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

from service.sip.message import BRANCH_COOKIE, SipRequest, SipResponse, parse_name_addr

log = logging.getLogger(__name__)

T1 = 0.5  # s: RTT estimate (RFC 3261 §17.1.1.1)
T2 = 4.0  # s: the longest retransmit interval for non-INVITE requests and INVITE responses
T4 = 5.0  # s: the longest a message stays in the network
TIMER_64T1 = 64 * T1  # s: 32 s, Timers B/F/H/J/L: how long a transaction waits before giving up

Address = tuple[str, int]
Send = Callable[[bytes, Address], None]


def new_branch() -> str:
    return BRANCH_COOKIE + secrets.token_hex(8)


def new_tag() -> str:
    return secrets.token_hex(6)


def server_key(request: SipRequest) -> tuple[str, str, str]:
    """RFC 3261 §17.2.3: branch, sent-by and method -- with ACK matching its INVITE."""
    via = request.vias[0]
    method = "INVITE" if request.method == "ACK" else request.method
    return via.branch, f"{via.host}:{via.port or 5060}", method


class ServerTransaction:
    def __init__(
        self,
        layer: TransactionLayer,
        request: SipRequest,
        source: Address,
        on_timeout: Callable[[ServerTransaction], None] | None = None,
    ) -> None:
        self.layer = layer
        self.request = request
        self.source = source
        self.key = server_key(request)
        self.invite = request.method == "INVITE"
        self.state = "proceeding" if self.invite else "trying"
        self.last_response: SipResponse | None = None
        self._wire: bytes = b""
        self._on_timeout = on_timeout
        self._retransmit: asyncio.TimerHandle | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self._interval = T1

    @property
    def final(self) -> bool:
        """A final response has been sent."""
        return self.state not in ("trying", "proceeding")

    def respond(self, response: SipResponse) -> None:
        if self.state == "terminated" or (self.final and response.status >= 200):
            log.debug("response %d after the final one dropped", response.status)
            return
        self.last_response = response
        self._wire = response.to_bytes()
        self.layer.send(self._wire, self.source)
        if response.status < 200:
            self.state = "proceeding"
            return
        loop = asyncio.get_running_loop()
        if not self.invite:
            self.state = "completed"
            self._deadline = loop.call_later(TIMER_64T1, self.terminate)
            return
        # INVITE final: retransmitted until acknowledged (Timer G / 2xx), given up after 64*T1 (Timer H/L).
        self.state = "accepted" if response.status < 300 else "completed"
        self._interval = T1
        self._retransmit = loop.call_later(self._interval, self._resend)
        self._deadline = loop.call_later(TIMER_64T1, self._timed_out)

    def retransmission(self) -> None:
        """The same request arrived again: answer it as before (or absorb it while we think)."""
        if self._wire and self.state in ("proceeding", "completed"):
            self.layer.send(self._wire, self.source)

    def acked(self) -> None:
        """The ACK for our final response arrived: stop retransmitting it."""
        if self.state == "completed":
            self._cancel_timers()
            self.state = "confirmed"
            # Timer I: absorb retransmitted ACKs for T4, then go.
            self._deadline = asyncio.get_running_loop().call_later(T4, self.terminate)
        elif self.state == "accepted":
            self.terminate()

    def terminate(self) -> None:
        self._cancel_timers()
        self.state = "terminated"
        self.layer.forget(self)

    def _resend(self) -> None:
        if self.state not in ("accepted", "completed"):
            return
        self.layer.send(self._wire, self.source)
        self._interval = min(self._interval * 2, T2)
        self._retransmit = asyncio.get_running_loop().call_later(self._interval, self._resend)

    def _timed_out(self) -> None:
        accepted = self.state == "accepted"
        self.terminate()
        if self._on_timeout is not None and accepted:
            self._on_timeout(self)

    def _cancel_timers(self) -> None:
        for handle in (self._retransmit, self._deadline):
            if handle is not None:
                handle.cancel()
        self._retransmit = self._deadline = None


class ClientTransaction:
    """A non-INVITE request we send (BYE), retransmitted until answered."""

    def __init__(
        self,
        layer: TransactionLayer,
        request: SipRequest,
        destination: Address,
        on_done: Callable[[SipResponse | None], None] | None,
    ) -> None:
        self.layer = layer
        self.request = request
        self.destination = destination
        self.branch = request.vias[0].branch
        self._wire = request.to_bytes()
        self._on_done = on_done
        self._interval = T1
        loop = asyncio.get_running_loop()
        self._retransmit: asyncio.TimerHandle | None = loop.call_later(self._interval, self._resend)
        self._deadline: asyncio.TimerHandle | None = loop.call_later(TIMER_64T1, self._finish, None)
        layer.send(self._wire, destination)

    def _resend(self) -> None:
        self.layer.send(self._wire, self.destination)
        self._interval = min(self._interval * 2, T2)
        self._retransmit = asyncio.get_running_loop().call_later(self._interval, self._resend)

    def received(self, response: SipResponse) -> None:
        if response.status < 200:
            return  # Timer E keeps running at its interval; we only wait longer
        self._finish(response)

    def _finish(self, response: SipResponse | None) -> None:
        for handle in (self._retransmit, self._deadline):
            if handle is not None:
                handle.cancel()
        self._retransmit = self._deadline = None
        self.layer.client.pop((self.branch, self.request.method), None)
        if response is None:
            log.info(
                "%s %s got no answer within %.0f s", self.request.method, self.request.call_id, TIMER_64T1
            )
        if self._on_done is not None:
            callback, self._on_done = self._on_done, None
            callback(response)

    def stop(self) -> None:
        self._on_done = None
        self._finish(None)


class TransactionLayer:
    def __init__(self, send: Send) -> None:
        self.send = send
        self.server: dict[tuple[str, str, str], ServerTransaction] = {}
        self.client: dict[tuple[str, str], ClientTransaction] = {}

    def find_server(self, request: SipRequest) -> ServerTransaction | None:
        return self.server.get(server_key(request))

    def find_invite(self, cancel: SipRequest) -> ServerTransaction | None:
        """The INVITE transaction a CANCEL cancels (§9.2: same branch and sent-by)."""
        branch, sent_by, _ = server_key(cancel)
        return self.server.get((branch, sent_by, "INVITE"))

    def new_server(
        self,
        request: SipRequest,
        source: Address,
        on_timeout: Callable[[ServerTransaction], None] | None = None,
    ) -> ServerTransaction:
        txn = ServerTransaction(self, request, source, on_timeout)
        self.server[txn.key] = txn
        return txn

    def forget(self, txn: ServerTransaction) -> None:
        if self.server.get(txn.key) is txn:
            del self.server[txn.key]

    def request(
        self,
        request: SipRequest,
        destination: Address,
        on_done: Callable[[SipResponse | None], None] | None = None,
    ) -> ClientTransaction:
        txn = ClientTransaction(self, request, destination, on_done)
        self.client[(txn.branch, request.method)] = txn
        return txn

    def response(self, response: SipResponse) -> None:
        vias = response.vias
        method = response.cseq[1]
        txn = self.client.get((vias[0].branch, method)) if vias else None
        if txn is not None:
            txn.received(response)

    def close(self) -> None:
        for s in list(self.server.values()):
            s.terminate()
        for c in list(self.client.values()):
            c.stop()


@dataclass
class Dialog:
    """The UAS side of a dialog (§12.1.1), enough to recognise its requests and send a BYE."""

    call_id: str
    local_tag: str
    remote_tag: str
    local: str  # the To value of the INVITE (our identity), without a tag
    remote: str  # the From value of the INVITE (with its tag)
    remote_target: str  # Contact URI of the peer
    route_set: list[str]  # Record-Route values, in order
    remote_cseq: int
    peer: Address  # where the peer's requests come from: in-dialog requests go there
    local_cseq: int = field(default_factory=lambda: secrets.randbelow(10_000) + 1)

    @classmethod
    def from_invite(cls, invite: SipRequest, local_tag: str, source: Address) -> Dialog:
        contacts = invite.get_all("Contact")
        target = invite.from_.uri
        if contacts:
            # An unparseable Contact: the From URI still routes the BYE back to the peer.
            with contextlib.suppress(ValueError):
                target = parse_name_addr(contacts[0]).uri
        return cls(
            call_id=invite.call_id,
            local_tag=local_tag,
            remote_tag=invite.from_.tag,
            local=invite.get("To") or "",
            remote=invite.get("From") or "",
            remote_target=target,
            route_set=invite.get_all("Record-Route"),
            remote_cseq=invite.cseq[0],
            peer=source,
        )

    def matches(self, request: SipRequest) -> bool:
        return (
            request.call_id == self.call_id
            and request.to.tag == self.local_tag
            and request.from_.tag == self.remote_tag
        )

    def request(self, method: str, via_host: str, via_port: int, extra: list[tuple[str, str]]) -> SipRequest:
        """A new in-dialog request from us (§12.2.1.1), loose-routed through the route set."""
        self.local_cseq += 1
        request = SipRequest(method=method, uri=self.remote_target)
        request.add("Via", f"SIP/2.0/UDP {via_host}:{via_port};branch={new_branch()};rport")
        request.add("Max-Forwards", "70")
        request.add("From", f"{self.local};tag={self.local_tag}")
        request.add("To", self.remote)
        request.add("Call-ID", self.call_id)
        request.add("CSeq", f"{self.local_cseq} {method}")
        for route in self.route_set:
            request.add("Route", route)
        for name, value in extra:
            request.add(name, value)
        return request
