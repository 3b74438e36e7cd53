"""Embedding from other origins: CORS on the signalling routes, session tokens, /widget.js.

The token rules are tested on :class:`SessionTokens` itself and again over real HTTP; the nodes here run a
model that never speaks, because what is tested ends before any micro-turn is stepped.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from typing import Any

import aiohttp
import pytest

from service.client import AgentClient, SignallingError
from service.embedding import MAX_TOKEN_TTL_S, SessionTokens, TokenError, normalize_origin

from .conftest import NodeFactory, RunningNode
from .fakes import SilentModel

API_KEY = "test-api-key-0123456789abcdef"
SHOP = "http://shop.example"  # an origin allowed to embed the agent
BLOG = "http://blog.example:8000"  # another allowed one
EVIL = "http://evil.example"  # never allowed
NOT_SDP = b"v=0\r\nnot an offer\r\n"  # reaches the offer handler, which refuses it with 400 bad_sdp


async def start(
    start_node: NodeFactory, origins: Sequence[str] = (), api_key: str | None = None
) -> RunningNode:
    return await start_node(
        model=SilentModel(), background_workers=0, allowed_origins=tuple(origins), api_key=api_key
    )


async def request(
    method: str, url: str, headers: dict[str, str] | None = None, data: bytes | str | None = None
) -> tuple[int, Any, Any]:
    """Status, headers and body (JSON when it is JSON) of one request."""
    async with aiohttp.ClientSession() as http, http.request(method, url, headers=headers, data=data) as r:
        body = await r.json() if r.content_type == "application/json" else await r.text()
        return r.status, r.headers, body


async def offer(url: str, **headers: str) -> tuple[int, Any, Any]:
    """POST a (malformed) offer: 400 means it got past origin and credential checks."""
    return await request(
        "POST", f"{url}/v1/sessions", {"Content-Type": "application/sdp", **headers}, NOT_SDP
    )


async def mint(url: str, origin: str, key: str = API_KEY, **extra: Any) -> tuple[int, Any, Any]:
    return await request(
        "POST",
        f"{url}/v1/tokens",
        {"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        json.dumps({"origin": origin, **extra}),
    )


# ------------------------------------------------------------------------------------------- tokens, unit


def test_a_token_is_valid_for_its_origin_until_it_expires() -> None:
    tokens = SessionTokens(API_KEY)
    token, expires_at = tokens.mint(SHOP, ttl_s=300, now=1_000_000)
    assert expires_at == 1_000_300
    tokens.verify(token, SHOP, now=1_000_299)
    tokens.verify(token, "HTTP://Shop.Example:80", now=1_000_000)  # the same origin, written otherwise
    with pytest.raises(TokenError) as expired:
        tokens.verify(token, SHOP, now=1_000_300)
    assert expired.value.code == "token_expired" and "fetch a new one" in expired.value.message


def test_a_token_for_another_origin_or_no_origin_is_refused() -> None:
    tokens = SessionTokens(API_KEY)
    token, _ = tokens.mint(SHOP)
    for origin in (BLOG, "https://shop.example", "null", None):
        with pytest.raises(TokenError) as refused:
            tokens.verify(token, origin)
        assert refused.value.code == "token_origin_mismatch", origin
        assert SHOP in refused.value.message


def test_forged_and_altered_tokens_are_refused() -> None:
    tokens = SessionTokens(API_KEY)
    token, _ = tokens.mint(SHOP, ttl_s=60)
    other_key, _ = SessionTokens("another-key-0123456789abcdef").mint(SHOP)
    version, payload, signature = token.split(".")
    # A payload copied from a longer-lived token keeps the original signature: refused, not extended.
    _, longer_payload, _ = tokens.mint(SHOP, ttl_s=MAX_TOKEN_TTL_S)[0].split(".")
    for forged in (
        other_key,
        f"{version}.{longer_payload}.{signature}",
        f"{version}.{payload}.{signature[:-2]}",
        f"{version}.{payload}.",
        API_KEY[:-1],
        "",
        "mt1..",
    ):
        with pytest.raises(TokenError) as refused:
            tokens.verify(forged, SHOP)
        assert refused.value.code == "invalid_token", forged


def test_the_api_key_is_not_a_token_and_must_be_long() -> None:
    tokens = SessionTokens(API_KEY)
    assert tokens.is_api_key(API_KEY) and not tokens.is_api_key(API_KEY + "x")
    with pytest.raises(TokenError):
        tokens.verify(API_KEY, SHOP)
    with pytest.raises(ValueError, match="at least 16"):
        SessionTokens("short")


@pytest.mark.parametrize(
    ("written", "origin"),
    [
        ("https://Shop.Example.com/", "https://shop.example.com"),
        ("https://shop.example.com:443", "https://shop.example.com"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("http://[::1]:80", "http://[::1]"),
    ],
)
def test_origins_are_normalised_as_browsers_write_them(written: str, origin: str) -> None:
    assert normalize_origin(written) == origin


@pytest.mark.parametrize("bad", ["shop.example.com", "https://shop.example.com/app", "ftp://x", "null", "*x"])
def test_a_configured_origin_that_is_not_one_is_an_error(bad: str) -> None:
    with pytest.raises(ValueError, match="not an origin"):
        normalize_origin(bad)


# ------------------------------------------------------------------------------------------- CORS


async def test_the_nodes_own_pages_and_clients_without_origin_may_signal(start_node: NodeFactory) -> None:
    node = await start(start_node)
    status, headers, body = await offer(node.url, Origin=node.url)
    assert status == 400 and body["error"]["code"] == "bad_sdp"
    assert headers["Access-Control-Allow-Origin"] == node.url
    status, headers, _ = await offer(node.url)  # curl, the Python client, the benchmarks
    assert status == 400 and "Access-Control-Allow-Origin" not in headers


async def test_other_origins_are_refused_by_default(start_node: NodeFactory) -> None:
    node = await start(start_node)
    status, headers, body = await offer(node.url, Origin=EVIL)
    assert status == 403
    assert body["error"]["code"] == "origin_not_allowed"
    assert "--allowed-origins" in body["error"]["message"] and EVIL in body["error"]["message"]
    assert "Access-Control-Allow-Origin" not in headers
    # Refused before anything else happens: not even a DELETE of a session it guessed.
    status, _, _ = await request("DELETE", f"{node.url}/v1/sessions/any", {"Origin": EVIL})
    assert status == 403
    assert 'microturn_sessions_rejected_total{reason="origin"} 1.0' in node.node.metrics.render().decode()


async def test_an_allowed_origin_gets_a_preflight_and_readable_answers(start_node: NodeFactory) -> None:
    node = await start(start_node, origins=[SHOP, BLOG])
    status, headers, _ = await request(
        "OPTIONS",
        f"{node.url}/v1/sessions",
        {
            "Origin": BLOG,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        },
    )
    assert status == 204
    assert headers["Access-Control-Allow-Origin"] == BLOG
    assert "POST" in headers["Access-Control-Allow-Methods"]
    assert "DELETE" in headers["Access-Control-Allow-Methods"]
    assert {"content-type", "authorization"} <= {
        h.strip().lower() for h in headers["Access-Control-Allow-Headers"].split(",")
    }
    assert headers["Vary"] == "Origin"
    # The page must be able to read Location (to hang up) and Retry-After (when the node is full).
    status, headers, _ = await offer(node.url, Origin=SHOP)
    assert status == 400
    assert headers["Access-Control-Allow-Origin"] == SHOP
    assert {"location", "retry-after"} <= {
        h.strip().lower() for h in headers["Access-Control-Expose-Headers"].split(",")
    }
    # The preflight of a hang-up, and aiohttp's own 404 for an unknown session, readable by the page.
    status, headers, _ = await request(
        "OPTIONS", f"{node.url}/v1/sessions/x", {"Origin": SHOP, "Access-Control-Request-Method": "DELETE"}
    )
    assert status == 204 and headers["Access-Control-Allow-Origin"] == SHOP
    status, headers, _ = await request("DELETE", f"{node.url}/v1/sessions/x", {"Origin": SHOP})
    assert status == 404 and headers["Access-Control-Allow-Origin"] == SHOP


async def test_a_preflight_from_an_origin_not_allowed_is_403(start_node: NodeFactory) -> None:
    node = await start(start_node, origins=[SHOP])
    status, headers, body = await request(
        "OPTIONS", f"{node.url}/v1/sessions", {"Origin": EVIL, "Access-Control-Request-Method": "POST"}
    )
    assert status == 403 and body["error"]["code"] == "origin_not_allowed"
    assert "Access-Control-Allow-Origin" not in headers


async def test_star_allows_any_origin_with_a_warning(
    start_node: NodeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="service.embedding"):
        node = await start(start_node, origins=["*"])
    assert any("any web site" in r.getMessage() for r in caplog.records)
    status, headers, _ = await offer(node.url, Origin=EVIL)
    assert status == 400 and headers["Access-Control-Allow-Origin"] == EVIL


async def test_a_bad_allowed_origin_stops_the_node_from_starting(start_node: NodeFactory) -> None:
    with pytest.raises(ValueError, match="not an origin"):
        await start(start_node, origins=["shop.example.com"])


async def test_the_widget_module_may_be_imported_from_any_origin(start_node: NodeFactory) -> None:
    node = await start(start_node)
    status, headers, body = await request("GET", f"{node.url}/widget.js", {"Origin": EVIL})
    assert status == 200
    assert headers["Access-Control-Allow-Origin"] == "*"
    assert headers["Content-Type"].startswith("text/javascript")
    assert "customElements.define" in body


# ------------------------------------------------------------------------------------------- tokens, HTTP


async def test_with_an_api_key_a_session_needs_the_key_or_a_token(start_node: NodeFactory) -> None:
    node = await start(start_node, origins=[SHOP, BLOG], api_key=API_KEY)
    status, headers, body = await offer(node.url, Origin=SHOP)
    assert status == 401 and body["error"]["code"] == "unauthorized"
    assert "POST /v1/tokens" in body["error"]["message"]
    assert headers["WWW-Authenticate"].startswith("Bearer")
    # Readable by the page, so that the widget can say what to do.
    assert headers["Access-Control-Allow-Origin"] == SHOP
    status, _, _ = await offer(node.url, Authorization=f"Bearer {API_KEY}")
    assert status == 400  # past the key check, refused for the offer itself

    # The embedding site's backend mints a token for its origin; its page starts a real session with it.
    status, headers, minted = await mint(node.url, SHOP, ttl_s=120)
    assert status == 200 and minted["origin"] == SHOP and minted["expires_in"] == 120
    assert headers["Cache-Control"] == "no-store"
    page = AgentClient(node.url, headers={"Origin": SHOP, "Authorization": f"Bearer {minted['token']}"})
    try:
        await page.connect()
        await page.wait_for("session.started", timeout=5)
    finally:
        assert await page.close() == 200  # hanging up needs no token: the session URL is the capability


@pytest.mark.parametrize(
    ("credential", "origin", "code"),
    [
        (lambda: SessionTokens(API_KEY).mint(SHOP, now=time.time() - 400)[0], SHOP, "token_expired"),
        (lambda: SessionTokens("not-the-nodes-key-0123456789").mint(SHOP)[0], SHOP, "invalid_token"),
        (lambda: SessionTokens(API_KEY).mint(SHOP)[0], BLOG, "token_origin_mismatch"),
        (lambda: "not-a-token", SHOP, "invalid_token"),
    ],
    ids=["expired", "forged", "wrong-origin", "garbage"],
)
async def test_a_bad_token_is_401_saying_what_to_do(
    start_node: NodeFactory, credential: Any, origin: str, code: str
) -> None:
    node = await start(start_node, origins=[SHOP, BLOG], api_key=API_KEY)
    status, headers, body = await offer(node.url, Origin=origin, Authorization=f"Bearer {credential()}")
    assert status == 401 and body["error"]["code"] == code
    assert 'error="invalid_token"' in headers["WWW-Authenticate"]
    assert headers["Access-Control-Allow-Origin"] == origin
    # The same through the reference client.
    client = AgentClient(node.url, headers={"Origin": origin, "Authorization": f"Bearer {credential()}"})
    try:
        with pytest.raises(SignallingError) as refused:
            await client.connect()
    finally:
        await client.close()
    assert refused.value.status == 401
    assert (
        'microturn_sessions_rejected_total{reason="unauthorized"} 2.0' in node.node.metrics.render().decode()
    )


async def test_minting_needs_the_api_key_and_an_allowed_origin(start_node: NodeFactory) -> None:
    node = await start(start_node, origins=[SHOP], api_key=API_KEY)
    status, _, body = await mint(node.url, SHOP, key="wrong-key-0123456789abcdef")
    assert status == 401 and body["error"]["code"] == "invalid_api_key"
    status, _, body = await mint(node.url, EVIL)
    assert status == 400 and body["error"]["code"] == "origin_not_allowed"
    status, _, body = await mint(node.url, "shop.example")
    assert status == 400 and "not an origin" in body["error"]["message"]
    for ttl in (0, MAX_TOKEN_TTL_S + 1, "300", True):
        status, _, body = await mint(node.url, SHOP, ttl_s=ttl)
        assert status == 400 and "ttl_s" in body["error"]["message"], ttl
    status, _, body = await request(
        "POST", f"{node.url}/v1/tokens", {"Authorization": f"Bearer {API_KEY}"}, "not json"
    )
    assert status == 400 and body["error"]["code"] == "invalid_request"
    # The node's own pages need no listing: a token for the node's origin is fine.
    status, _, minted = await mint(node.url, node.url)
    assert status == 200 and minted["expires_in"] == 300


async def test_without_an_api_key_there_are_no_tokens(start_node: NodeFactory) -> None:
    node = await start(start_node, origins=[SHOP])
    status, _, body = await mint(node.url, SHOP)
    assert status == 404 and "--api-key" in body["error"]["message"]
