"""What lets other web sites embed the agent: CORS on signalling, short-lived session tokens, the widget.

- **Origins.** A browser page sends ``Origin`` with every signalling request it makes (POST and DELETE
  always; the CORS preflight too). The node serves its own pages (same origin: the ``Origin``'s host is
  the request's ``Host``) and the origins in ``--allowed-origins``; a request from any other origin is
  refused with 403 before it does anything, and gets no CORS grant, so the page cannot use the node.
  Requests without ``Origin`` (curl, the Python client, the benchmarks) are not a web page's and pass:
  CORS keeps other sites' pages from using the node *through visitors' browsers*, it is not
  authentication. That is what the API key is for.
- **Tokens.** With ``--api-key``, creating a session needs ``Authorization: Bearer`` with either the key
  (trusted server-side clients) or a session token. The embedding site's backend mints tokens with the
  key (``POST /v1/tokens``) and hands them to its page, so the key never reaches a browser. A token is
  HMAC-SHA256-signed by a key derived from the API key, expires after minutes and is bound to one
  origin: a token copied to another site's page is refused there. Tokens are stateless, so every node
  sharing the API key accepts them (nodes need synchronised clocks) and none has to store them.
- **The widget.** ``/widget.js`` (web/widget.js) is served with ``Access-Control-Allow-Origin: *``:
  a ``<script type="module">`` from another origin is a CORS request, and the code itself is public.

docs/widget.md and docs/protocol.md describe all of this from the embedding page's side.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from aiohttp import web

from service.metrics import NodeMetrics

log = logging.getLogger(__name__)

SESSIONS_PATH = "/v1/sessions"
TOKENS_PATH = "/v1/tokens"
WIDGET_PATH = "/widget.js"
ANY_ORIGIN = "*"
DEFAULT_TOKEN_TTL_S = 300
MAX_TOKEN_TTL_S = 3600  # a token is a bearer credential: hours-long ones defeat the point of short-lived ones
MIN_API_KEY_CHARS = 16  # the key signs tokens: a short one could be guessed offline from any token
MAX_TOKEN_REQUEST_BYTES = 4096
TOKEN_VERSION = "mt1"  # the prefix of every token: tells tokens from API keys and versions the format
# Domain separation: tokens are signed with a key derived from the API key, never with the key itself.
TOKEN_KEY_LABEL = b"microturn session token v1"
PREFLIGHT_MAX_AGE_S = 600

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def normalize_origin(value: str) -> str:
    """``scheme://host[:port]`` as browsers write ``Origin``: lower case, no default port, no path."""
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{value!r} is not an origin: expected e.g. https://shop.example.com")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError(f"{value!r} is not an origin: scheme://host[:port] only, no path, query or user")
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"{value!r} has an invalid port") from exc
    host = parts.hostname
    if ":" in host:  # IPv6, which urlsplit gives without its brackets
        host = f"[{host}]"
    default_port = {"http": 80, "https": 443}[parts.scheme]
    return f"{parts.scheme}://{host}" + (f":{port}" if port not in (None, default_port) else "")


def parse_allowed_origins(value: str | Iterable[str] | None) -> tuple[str, ...]:
    """The ``--allowed-origins`` list (comma-separated, or already split): normalised origins or ``*``."""
    items = value.split(",") if isinstance(value, str) else list(value or ())
    origins: list[str] = []
    for item in (i.strip() for i in items):
        if item:
            origins.append(item if item == ANY_ORIGIN else normalize_origin(item))
    return tuple(dict.fromkeys(origins))


@dataclass(frozen=True)
class OriginPolicy:
    """Which web pages may use the node: its own, those listed, or (``*``) any."""

    allowed: frozenset[str]

    @classmethod
    def from_config(cls, origins: Iterable[str]) -> OriginPolicy:
        return cls(frozenset(parse_allowed_origins(origins)))

    @property
    def any(self) -> bool:
        return ANY_ORIGIN in self.allowed

    def allows(self, origin: str, host: str) -> bool:
        """May a page of ``origin`` use a node reached as ``host`` (the request's Host header)?"""
        if self.any:
            return True
        try:
            origin = normalize_origin(origin)
        except ValueError:
            return False  # "null" (sandboxed frames, file: pages), garbage: neither same origin nor listed
        # Same origin by host and port only: behind a TLS-terminating proxy the node sees http while the
        # page is https, and a page of the very host the node answers for is the node's own page.
        return origin in self.allowed or urlsplit(origin).netloc == host.lower()


class TokenError(Exception):
    """A session request's credential was refused; ``message`` says what to do."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SessionTokens:
    """Mints and checks session tokens: ``mt1.<payload>.<signature>``, both base64url.

    The payload is JSON ``{"exp": unix seconds, "origin": "https://..."}``; the signature is
    HMAC-SHA256 over ``mt1.<payload>``.
    """

    def __init__(self, api_key: str) -> None:
        if len(api_key) < MIN_API_KEY_CHARS:
            raise ValueError(
                f"the API key must be at least {MIN_API_KEY_CHARS} characters (e.g. `openssl rand -hex 32`)"
            )
        self._api_key = api_key.encode()
        self._signing_key = hmac.new(self._api_key, TOKEN_KEY_LABEL, hashlib.sha256).digest()

    def is_api_key(self, credential: str) -> bool:
        return hmac.compare_digest(credential.encode(), self._api_key)

    def _sign(self, signed_part: str) -> str:
        return _b64encode(hmac.new(self._signing_key, signed_part.encode(), hashlib.sha256).digest())

    def mint(
        self, origin: str, ttl_s: int = DEFAULT_TOKEN_TTL_S, now: float | None = None
    ) -> tuple[str, int]:
        """A token for pages of ``origin``, valid ``ttl_s`` seconds; returns it and its expiry (unix s)."""
        expires_at = int(time.time() if now is None else now) + ttl_s
        payload = json.dumps({"exp": expires_at, "origin": normalize_origin(origin)}, separators=(",", ":"))
        signed_part = f"{TOKEN_VERSION}.{_b64encode(payload.encode())}"
        return f"{signed_part}.{self._sign(signed_part)}", expires_at

    def verify(self, token: str, origin: str | None, now: float | None = None) -> None:
        """Accept ``token`` for a request from ``origin`` (its Origin header), else raise TokenError."""
        version, _, rest = token.partition(".")
        payload_b64, _, signature = rest.partition(".")
        if version != TOKEN_VERSION or not payload_b64 or not signature:
            raise TokenError(
                "invalid_token", "the credential is neither this node's API key nor a session token"
            )
        # The signature first: nothing of an unsigned payload is believed, not even its expiry.
        if not hmac.compare_digest(signature, self._sign(f"{version}.{payload_b64}")):
            raise TokenError(
                "invalid_token",
                "the session token's signature is wrong: it was not minted with this node's API key "
                "(or was altered); get a new one from POST /v1/tokens",
            )
        try:
            claims = json.loads(_b64decode(payload_b64))
            expires_at = int(claims["exp"])
            bound_origin = str(claims["origin"])
        except (binascii.Error, ValueError, TypeError, KeyError) as exc:
            raise TokenError("invalid_token", "the session token's payload is malformed") from exc
        if (time.time() if now is None else now) >= expires_at:
            expired = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(expires_at))
            raise TokenError(
                "token_expired",
                f"the session token expired {expired}: "
                "tokens are short-lived, fetch a new one from your backend (POST /v1/tokens) for each call",
            )
        if origin is None:
            raise TokenError(
                "token_origin_mismatch",
                f"the session token is for pages of {bound_origin} and this request has no Origin; "
                "clients that are not web pages use the API key",
            )
        try:
            same = normalize_origin(origin) == bound_origin
        except ValueError:
            same = False
        if not same:
            raise TokenError(
                "token_origin_mismatch",
                f"the session token is for pages of {bound_origin}, not {origin}: mint it for this origin",
            )


def _refuse(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    # The same body as every other error of the node (docs/protocol.md).
    return web.json_response({"error": {"code": code, "message": message}}, status=status, headers=headers)


def bearer(request: web.Request) -> str | None:
    scheme, _, credential = request.headers.get("Authorization", "").partition(" ")
    return credential.strip() or None if scheme.lower() == "bearer" else None


def _is_signalling(path: str) -> bool:
    return path == SESSIONS_PATH or path.startswith(SESSIONS_PATH + "/")


def _grant(headers: MutableMapping[str, str], origin: str) -> None:
    """The CORS headers of an allowed origin's response (actual requests and preflights alike)."""
    # The origin itself rather than "*", even when any is allowed: one rule for both, and a cache in
    # between keeps one answer per origin thanks to Vary.
    headers["Access-Control-Allow-Origin"] = origin
    # Without this the page could not read Location (its DELETE URL) nor Retry-After of a 503.
    headers["Access-Control-Expose-Headers"] = "Location, Retry-After"
    headers["Vary"] = "Origin"


class Embedding:
    """The node's side of embedding: the origin rule, the optional tokens, their routes and middleware."""

    def __init__(
        self, allowed_origins: Iterable[str], api_key: str | None, web_dir: Path, metrics: NodeMetrics
    ) -> None:
        self.origins = OriginPolicy.from_config(allowed_origins)
        self.tokens = SessionTokens(api_key) if api_key else None
        self.web_dir = web_dir
        self.metrics = metrics
        if self.origins.any and self.tokens:
            log.warning("--allowed-origins *: any web site's pages with a session token may start sessions")
        elif self.origins.any:
            log.warning(
                "--allowed-origins *: any web site's pages may start sessions on this node and use its "
                "capacity; list the sites' origins, or set --api-key so that only pages with a token from "
                "their site's backend can"
            )
        listed = sorted(self.origins.allowed - {ANY_ORIGIN})
        log.info(
            "signalling open to %s; session tokens %s",
            "any origin" if self.origins.any else "this node's own pages" + "".join(f", {o}" for o in listed),
            "required (--api-key)" if self.tokens else "off",
        )

    def install(self, app: web.Application) -> None:
        """Add the middleware and routes; before the app's catch-all static route, which would shadow them."""
        app.middlewares.append(self.middleware)
        app.router.add_route("OPTIONS", SESSIONS_PATH, self.preflight)
        app.router.add_route("OPTIONS", SESSIONS_PATH + "/{session_id}", self.preflight)
        app.router.add_post(TOKENS_PATH, self.mint_token)
        app.router.add_get(WIDGET_PATH, self.widget)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if not _is_signalling(request.path):
            return await handler(request)
        origin = request.headers.get("Origin")
        creating = request.path == SESSIONS_PATH and request.method in ("POST", "OPTIONS")
        if origin is not None and not self.origins.allows(origin, request.host):
            if creating:
                self.metrics.sessions_rejected.labels("origin").inc()
            log.info("refused %s %s from origin %s: not allowed", request.method, request.path, origin)
            return _refuse(
                403,
                "origin_not_allowed",
                f"pages of {origin} may not use this node: start it with --allowed-origins "
                f"(or MICROTURN_ALLOWED_ORIGINS) listing {origin}",
                headers={"Vary": "Origin"},
            )
        refusal = self._authorize(request, origin) if request.method == "POST" and creating else None
        try:
            response = refusal or await handler(request)
        except web.HTTPException as exc:  # aiohttp's own 404/405 answers: readable by the page too
            if origin is not None:
                _grant(exc.headers, origin)
            raise
        if origin is not None:
            _grant(response.headers, origin)
        return response

    def _authorize(self, request: web.Request, origin: str | None) -> web.Response | None:
        """None when the session request may go on, else the 401 that says why not."""
        if self.tokens is None:
            return None
        credential = bearer(request)
        if credential is None:
            error = TokenError(
                "unauthorized",
                "this node requires a session token: your backend gets one from POST /v1/tokens with the "
                "API key and the page sends it as 'Authorization: Bearer <token>' (the widget's token or "
                "token-url attribute)",
            )
        elif self.tokens.is_api_key(credential):
            return None
        else:
            try:
                self.tokens.verify(credential, origin)
                return None
            except TokenError as exc:
                error = exc
        self.metrics.sessions_rejected.labels("unauthorized").inc()
        log.info("refused a session from %s: %s", origin or "a client without Origin", error.message)
        challenge = 'Bearer realm="microturn"'
        if credential is not None:
            challenge += ', error="invalid_token"'  # RFC 6750 §3.1
        return _refuse(401, error.code, error.message, headers={"WWW-Authenticate": challenge})

    async def preflight(self, request: web.Request) -> web.Response:
        # Reached only for allowed origins (the middleware refused the others), which get the grant there.
        headers = {
            "Access-Control-Allow-Methods": "POST, PATCH, DELETE",
            "Access-Control-Allow-Headers": "Content-Type, Authorization",
            "Access-Control-Max-Age": str(PREFLIGHT_MAX_AGE_S),
        }
        # Chrome asks before a public page may reach a node on a private address (Private Network Access).
        if request.headers.get("Access-Control-Request-Private-Network") == "true":
            headers["Access-Control-Allow-Private-Network"] = "true"
        return web.Response(status=204, headers=headers)

    async def mint_token(self, request: web.Request) -> web.Response:
        """``POST /v1/tokens`` with the API key and ``{"origin": ..., "ttl_s": ...}``: a session token."""
        if self.tokens is None:
            return _refuse(
                404,
                "tokens_disabled",
                "session tokens are off: start the node with --api-key (or MICROTURN_API_KEY)",
            )
        credential = bearer(request)
        if credential is None or not self.tokens.is_api_key(credential):
            return _refuse(
                401,
                "invalid_api_key",
                "minting tokens needs 'Authorization: Bearer <API key>' with the node's --api-key; call this "
                "from your backend, never from a web page",
                headers={"WWW-Authenticate": 'Bearer realm="microturn"'},
            )
        try:
            body = json.loads(await request.content.read(MAX_TOKEN_REQUEST_BYTES + 1))
            if not isinstance(body, dict):
                raise ValueError("not an object")
        except ValueError:
            return _refuse(
                400, "invalid_request", 'send a JSON object: {"origin": "https://...", "ttl_s": 300}'
            )
        origin, ttl_s = body.get("origin"), body.get("ttl_s", DEFAULT_TOKEN_TTL_S)
        if not isinstance(origin, str):
            return _refuse(400, "invalid_request", '"origin" (the embedding page\'s origin) is required')
        if not isinstance(ttl_s, int) or isinstance(ttl_s, bool) or not 1 <= ttl_s <= MAX_TOKEN_TTL_S:
            return _refuse(400, "invalid_request", f'"ttl_s" must be an integer from 1 to {MAX_TOKEN_TTL_S}')
        try:
            origin = normalize_origin(origin)
        except ValueError as exc:
            return _refuse(400, "invalid_request", str(exc))
        if not self.origins.allows(origin, request.host):
            return _refuse(
                400,
                "origin_not_allowed",
                f"pages of {origin} may not use this node, token or not: add it to --allowed-origins",
            )
        token, expires_at = self.tokens.mint(origin, ttl_s)
        return web.json_response(
            {"token": token, "origin": origin, "expires_at": expires_at, "expires_in": ttl_s},
            headers={"Cache-Control": "no-store"},
        )

    async def widget(self, request: web.Request) -> web.FileResponse:
        return web.FileResponse(
            self.web_dir / "widget.js",
            headers={
                "Content-Type": "text/javascript; charset=utf-8",  # RFC 9239; guessing gives either
                "Access-Control-Allow-Origin": "*",
                # Pages isolated with COEP may load it too.
                "Cross-Origin-Resource-Policy": "cross-origin",
                # A stable URL whose content changes with the node: revalidate (cheap, Last-Modified).
                "Cache-Control": "no-cache",
            },
        )
