"""SIP messages (RFC 3261 §7, §20, §25): a strict parser and a serialiser.

Strict on purpose: the bridge faces the open network, and a lenient parser is where SIP stacks get
crashed, confused about which dialog a message belongs to, or tricked into answering the wrong peer.
So :func:`parse` accepts only what the grammar allows for the parts the bridge relies on, and raises
:class:`SipParseError` (the user agent answers ``400 Bad Request`` when the message can be answered
at all) for anything else:

- the start line exactly ``METHOD SP Request-URI SP SIP/2.0`` or ``SIP/2.0 SP 3DIGIT SP reason``;
- lines end in CRLF; header names are tokens; folded lines (LWS) are joined; no control characters;
- Via, From, To, Call-ID and CSeq present in requests, parsed, and From/To/Call-ID/CSeq/Max-Forwards/
  Content-Length/Content-Type at most once; the CSeq method equals the request method; the top Via has
  an RFC 3261 branch (``z9hG4bK...``); From has a tag;
- Content-Length, when present, no larger than the body (datagram) and the body cut to it (RFC 3261
  §18.3); bounded sizes (:data:`MAX_MESSAGE_BYTES`, :data:`MAX_HEADERS`).

Header values the bridge never interprets (User-Agent, Allow, ...) are kept as text, unparsed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

SIP_VERSION = "SIP/2.0"
BRANCH_COOKIE = "z9hG4bK"  # RFC 3261 §8.1.1.7: branches of compliant clients start with it
MAX_MESSAGE_BYTES = 65_535  # a UDP datagram cannot be larger; the TCP framer uses the same bound
MAX_HEADERS = 100  # honest INVITEs carry 10-30 headers; more is abuse
MAX_LINE = 8192  # bytes in one (unfolded) header line
CSEQ_MAX = 2**31 - 1  # RFC 3261 §8.1.1.5: the sequence number is less than 2^31

# RFC 3261 §7.3.3 compact forms.
COMPACT = {
    "i": "Call-ID",
    "m": "Contact",
    "e": "Content-Encoding",
    "l": "Content-Length",
    "c": "Content-Type",
    "f": "From",
    "s": "Subject",
    "k": "Supported",
    "t": "To",
    "v": "Via",
}
# Canonical spelling of the headers the bridge writes or reads, keyed by lower case.
_CANONICAL = {
    name.lower(): name
    for name in (
        "Via",
        "From",
        "To",
        "Call-ID",
        "CSeq",
        "Contact",
        "Max-Forwards",
        "Content-Length",
        "Content-Type",
        "Record-Route",
        "Route",
        "Allow",
        "Accept",
        "Supported",
        "Require",
        "Unsupported",
        "User-Agent",
        "Server",
        "Retry-After",
        "Warning",
        "WWW-Authenticate",
        "Authorization",
        "Reason",
    )
}
SINGLE = frozenset({"from", "to", "call-id", "cseq", "max-forwards", "content-length", "content-type"})
REQUIRED = ("Via", "From", "To", "Call-ID", "CSeq")

_TOKEN = r"[A-Za-z0-9\-.!%*_+`'~]+"
_TOKEN_RE = re.compile(_TOKEN)
_REQUEST_LINE = re.compile(rf"({_TOKEN}) ([^ ]+) SIP/2\.0")
_STATUS_LINE = re.compile(r"SIP/2\.0 ([1-6][0-9][0-9]) ([^\x00-\x08\x0a-\x1f\x7f]*)")
_URI = re.compile(r"(sips?|tel):[^\s<>\"]+", re.IGNORECASE)
_CALL_ID = re.compile(r"[A-Za-z0-9\-.!%*_+`'~()<>:\\\"/\[\]?{}]+(@[A-Za-z0-9\-.!%*_+`'~()<>:\\\"/\[\]?{}]+)?")
_CSEQ = re.compile(rf"([0-9]{{1,10}})[ \t]+({_TOKEN})")
_VIA = re.compile(
    rf"SIP[ \t]*/[ \t]*2\.0[ \t]*/[ \t]*({_TOKEN})[ \t]+"  # sent-protocol
    r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-.]+)"  # host
    r"(?::([0-9]{1,5}))?"  # port
    r"[ \t]*((?:;[^;,]*)*)$"  # params
)
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


class SipParseError(ValueError):
    """The bytes are not an acceptable SIP message; ``reason`` says why (it goes into the 400).

    ``headers`` holds what was read before the error (raw, in order), so that a 400 can still echo
    Via/From/To/Call-ID/CSeq when they were readable.
    """

    def __init__(self, reason: str, headers: list[tuple[str, str]] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.headers = headers or []


@dataclass(frozen=True)
class Via:
    transport: str  # "UDP", "TCP", ...
    host: str
    port: int | None
    params: dict[str, str]  # lower-case names; flag parameters map to ""

    @property
    def branch(self) -> str:
        return self.params.get("branch", "")


@dataclass(frozen=True)
class NameAddr:
    """A From/To/Contact value: ``"display" <uri>;params`` or ``uri;params``."""

    uri: str
    params: dict[str, str]
    display: str = ""

    @property
    def tag(self) -> str:
        return self.params.get("tag", "")


@dataclass
class SipMessage:
    headers: list[tuple[str, str]] = field(default_factory=list)  # (canonical name, value), in order
    body: bytes = b""

    def get(self, name: str) -> str | None:
        """The first value of header ``name`` (any case, compact form allowed), or None."""
        key = canonical(name).lower()
        for n, v in self.headers:
            if n.lower() == key:
                return v
        return None

    def get_all(self, name: str) -> list[str]:
        """Every value of ``name``, comma-separated lists split (outside quotes and <>)."""
        key = canonical(name).lower()
        out: list[str] = []
        for n, v in self.headers:
            if n.lower() == key:
                out.extend(split_list(v))
        return out

    def set(self, name: str, value: str) -> None:
        """Replace every ``name`` header by one with ``value``."""
        key = canonical(name).lower()
        self.headers = [(n, v) for n, v in self.headers if n.lower() != key]
        self.headers.append((canonical(name), value))

    def add(self, name: str, value: str) -> None:
        self.headers.append((canonical(name), value))

    @property
    def call_id(self) -> str:
        return self.get("Call-ID") or ""

    @property
    def cseq(self) -> tuple[int, str]:
        return parse_cseq(self.get("CSeq") or "")

    @property
    def vias(self) -> list[Via]:
        return [parse_via(v) for v in self.get_all("Via")]

    @property
    def from_(self) -> NameAddr:
        return parse_name_addr(self.get("From") or "")

    @property
    def to(self) -> NameAddr:
        return parse_name_addr(self.get("To") or "")

    @property
    def content_type(self) -> str:
        """The media type, lower case, without parameters ("" when absent)."""
        return (self.get("Content-Type") or "").split(";", 1)[0].strip().lower()

    def _start_line(self) -> str:
        raise NotImplementedError

    def to_bytes(self) -> bytes:
        """Wire form with an exact Content-Length."""
        lines = [self._start_line()]
        lines.extend(f"{n}: {v}" for n, v in self.headers if n.lower() != "content-length")
        lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + self.body


@dataclass
class SipRequest(SipMessage):
    method: str = ""
    uri: str = ""

    def _start_line(self) -> str:
        return f"{self.method} {self.uri} {SIP_VERSION}"


@dataclass
class SipResponse(SipMessage):
    status: int = 0
    reason: str = ""

    def _start_line(self) -> str:
        return f"{SIP_VERSION} {self.status} {self.reason}"


def canonical(name: str) -> str:
    """The spelling the bridge uses for header ``name``: compact forms expanded, known names canonical,
    others as they came (header names compare case-insensitively anyway)."""
    lower = name.lower()
    return COMPACT.get(lower) or _CANONICAL.get(lower, name)


def parse(data: bytes) -> SipRequest | SipResponse:
    """Parse one complete message (a UDP datagram); raise :class:`SipParseError` if it is not acceptable."""
    if len(data) > MAX_MESSAGE_BYTES:
        raise SipParseError(f"message larger than {MAX_MESSAGE_BYTES} bytes")
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        raise SipParseError("no empty line (CRLF CRLF) ends the headers")
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        raise SipParseError("headers are not UTF-8") from None
    lines = text.split("\r\n")
    start = lines[0]
    if "\n" in text.replace("\r\n", "") or "\r" in text.replace("\r\n", ""):
        raise SipParseError("a line ends in a bare CR or LF (SIP lines end in CRLF)")
    headers = _parse_headers(lines[1:])
    msg: SipRequest | SipResponse
    if start.startswith("SIP/"):
        m = _STATUS_LINE.fullmatch(start)
        if m is None:
            raise SipParseError(f"malformed status line {start[:80]!r}", headers)
        msg = SipResponse(headers=headers, status=int(m.group(1)), reason=m.group(2))
    else:
        m = _REQUEST_LINE.fullmatch(start)
        if m is None:
            raise SipParseError(f"malformed request line {start[:80]!r}", headers)
        method, uri = m.group(1), m.group(2)
        if _URI.fullmatch(uri) is None:
            raise SipParseError(f"Request-URI {uri[:80]!r} is not a sip:, sips: or tel: URI", headers)
        msg = SipRequest(headers=headers, method=method, uri=uri)
    msg.body = _framed_body(msg, body)
    _validate(msg)
    return msg


def _parse_headers(lines: list[str]) -> list[tuple[str, str]]:
    headers: list[tuple[str, str]] = []
    for line in lines:
        if not line:
            raise SipParseError("empty line inside the headers", headers)
        if line[0] in " \t":
            if not headers:
                raise SipParseError("continuation line before any header", headers)
            name, value = headers[-1]
            headers[-1] = (name, f"{value} {line.strip()}".strip())  # RFC 3261 §7.3.1: folding is one SP
            if len(headers[-1][1]) > MAX_LINE:
                raise SipParseError(f"header {name} longer than {MAX_LINE} bytes", headers)
            continue
        if len(line) > MAX_LINE:
            raise SipParseError(f"header line longer than {MAX_LINE} bytes", headers)
        name, colon, value = line.partition(":")
        name = name.rstrip(" \t")
        if not colon or _TOKEN_RE.fullmatch(name) is None:
            raise SipParseError(f"malformed header line {line[:80]!r}", headers)
        if _CONTROL.search(value):
            raise SipParseError(f"control character in header {name}", headers)
        headers.append((canonical(name), value.strip(" \t")))
        if len(headers) > MAX_HEADERS:
            raise SipParseError(f"more than {MAX_HEADERS} headers", headers)
    return headers


def _framed_body(msg: SipMessage, body: bytes) -> bytes:
    raw = msg.get("Content-Length")
    if raw is None:
        return body  # allowed over UDP (RFC 3261 §18.3): the datagram ends the body
    if not raw.isdigit() or len(raw) > 10:
        raise SipParseError(f"Content-Length {raw[:20]!r} is not a number", msg.headers)
    length = int(raw)
    if length > len(body):
        raise SipParseError(
            f"Content-Length {length} exceeds the {len(body)} bytes after the headers", msg.headers
        )
    return body[:length]  # RFC 3261 §18.3: bytes past Content-Length are discarded


def _validate(msg: SipRequest | SipResponse) -> None:
    seen: set[str] = set()
    for name, _ in msg.headers:
        key = name.lower()
        if key in SINGLE and key in seen:
            raise SipParseError(f"header {name} appears more than once", msg.headers)
        seen.add(key)
    for name in REQUIRED:
        if name.lower() not in seen:
            raise SipParseError(f"required header {name} missing", msg.headers)
    try:
        vias = msg.vias
        number, method = msg.cseq
        from_ = msg.from_
        msg.to  # noqa: B018 - parsed for validation
    except ValueError as exc:
        raise SipParseError(str(exc), msg.headers) from None
    if not vias:
        raise SipParseError("empty Via", msg.headers)
    if _CALL_ID.fullmatch(msg.call_id) is None:
        raise SipParseError(f"malformed Call-ID {msg.call_id[:80]!r}", msg.headers)
    max_forwards = msg.get("Max-Forwards")
    if max_forwards is not None and (not max_forwards.isdigit() or int(max_forwards) > 255):
        raise SipParseError(f"Max-Forwards {max_forwards[:20]!r} is not 0-255", msg.headers)
    if isinstance(msg, SipRequest):
        if method != msg.method:
            raise SipParseError(
                f"CSeq method {method} differs from the request method {msg.method}", msg.headers
            )
        if not vias[0].branch.startswith(BRANCH_COOKIE):
            raise SipParseError(f"top Via has no RFC 3261 branch (starting {BRANCH_COOKIE})", msg.headers)
        if not from_.tag:
            raise SipParseError("From has no tag", msg.headers)
    del number


def answerable(headers: list[tuple[str, str]]) -> bool:
    """Whether a refused request's headers allow a response its sender can match (RFC 3261 §8.2.6.2):
    Via, From, To, Call-ID and CSeq there and well-formed, so that they can be echoed."""
    first: dict[str, str] = {}
    for name, value in headers:
        first.setdefault(name.lower(), value)
    if not {"via", "from", "to", "call-id", "cseq"} <= first.keys():
        return False
    try:
        vias = [v for name, value in headers if name.lower() == "via" for v in split_list(value)]
        for via in vias or [""]:
            parse_via(via)
        parse_name_addr(first["from"])
        parse_name_addr(first["to"])
        parse_cseq(first["cseq"])
    except ValueError:
        return False
    return _CALL_ID.fullmatch(first["call-id"]) is not None


def parse_cseq(value: str) -> tuple[int, str]:
    m = _CSEQ.fullmatch(value.strip())
    if m is None or int(m.group(1)) > CSEQ_MAX:
        raise ValueError(f"malformed CSeq {value[:40]!r}")
    return int(m.group(1)), m.group(2)


def parse_via(value: str) -> Via:
    m = _VIA.fullmatch(value.strip())
    if m is None:
        raise ValueError(f"malformed Via {value[:80]!r}")
    port = int(m.group(3)) if m.group(3) else None
    if port is not None and not 0 < port < 65536:
        raise ValueError(f"Via port {port} out of range")
    return Via(m.group(1).upper(), m.group(2), port, _params(m.group(4)))


def parse_name_addr(value: str) -> NameAddr:
    """Parse a From/To/Contact value (RFC 3261 §20.10, §25.1 name-addr / addr-spec)."""
    value = value.strip()
    display = ""
    if "<" in value:
        before, _, rest = value.partition("<")
        uri, close, params = rest.partition(">")
        if not close:
            raise ValueError(f"unclosed < in {value[:80]!r}")
        display = before.strip()
        if display.startswith('"'):
            if len(display) < 2 or not display.endswith('"'):
                raise ValueError(f"unterminated display name in {value[:80]!r}")
            display = display[1:-1]
        elif display and _TOKEN_RE.fullmatch(display.replace(" ", "")) is None:
            raise ValueError(f"malformed display name in {value[:80]!r}")
    else:
        # addr-spec: the URI cannot contain ';' params of its own here, they belong to the header.
        uri, _, tail = value.partition(";")
        params = ";" + tail if tail else ""
    if _URI.fullmatch(uri) is None:
        raise ValueError(f"malformed URI {uri[:80]!r}")
    return NameAddr(uri=uri, params=_params(params), display=display)


def _params(text: str) -> dict[str, str]:
    """``;a=b;c`` → ``{"a": "b", "c": ""}`` (names lower case); raise on junk."""
    text = text.strip()
    params: dict[str, str] = {}
    if not text:
        return params
    if not text.startswith(";"):
        raise ValueError(f"junk before parameters {text[:40]!r}")
    for part in text[1:].split(";"):
        name, eq, val = part.strip().partition("=")
        name, val = name.strip(), val.strip()
        if _TOKEN_RE.fullmatch(name) is None or (eq and not val):
            raise ValueError(f"malformed parameter {part[:40]!r}")
        if val.startswith('"'):
            if len(val) < 2 or not val.endswith('"'):
                raise ValueError(f"unterminated quoted parameter {part[:40]!r}")
        elif val and _TOKEN_RE.fullmatch(val) is None and not re.fullmatch(r"[\[\]0-9A-Fa-f:.]+", val):
            raise ValueError(f"malformed parameter value {part[:40]!r}")
        params[name.lower()] = val
    return params


def split_list(value: str) -> list[str]:
    """Split a comma-separated header value, not inside quotes or <>."""
    parts: list[str] = []
    depth = 0
    quoted = False
    start = 0
    for i, ch in enumerate(value):
        if ch == '"' and (i == 0 or value[i - 1] != "\\"):
            quoted = not quoted
        elif not quoted and ch == "<":
            depth += 1
        elif not quoted and ch == ">":
            depth = max(0, depth - 1)
        elif ch == "," and not quoted and depth == 0:
            parts.append(value[start:i].strip())
            start = i + 1
    parts.append(value[start:].strip())
    return [p for p in parts if p]


def response_to(
    request: SipRequest | list[tuple[str, str]],
    status: int,
    reason: str,
    to_tag: str = "",
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
) -> SipResponse:
    """A response to ``request`` (or its raw headers, for a 400 to an unparseable one): RFC 3261 §8.2.6.2
    copies Via (all, in order), From, Call-ID and CSeq, and To with our tag added unless it has one."""
    raw = request.headers if isinstance(request, SipMessage) else request
    copied: list[tuple[str, str]] = []
    for name, value in raw:
        key = name.lower()
        if key == "via":
            copied.append(("Via", value))
        elif key in ("from", "call-id", "cseq"):
            copied.append((canonical(name), value))
        elif key == "to":
            if to_tag and ";tag=" not in value.replace(" ", "").lower():
                value = f"{value};tag={to_tag}"
            copied.append(("To", value))
    response = SipResponse(headers=copied, status=status, reason=reason, body=body)
    for name, value in headers or []:
        response.add(name, value)
    return response
