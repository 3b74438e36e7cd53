"""The widget embedded in another site's page, in a real browser: a call with captions, a page from an origin
the node does not allow, and a node with an API key whose embedding site mints session tokens.

Each test serves a small "shop" site on a second port (another origin than the node's): one HTML page with
the one-tag embed (``<script type="module" src="<node>/widget.js">`` and ``<microturn-agent>``) and, like a
real site's backend, a ``/token`` route that calls the node's ``POST /v1/tokens`` server-side with the API
key. The page records the widget's DOM events on ``document`` (they are composed and bubble), and the test
reads what the widget shows in its shadow root.
"""

from __future__ import annotations

import asyncio
import html
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.browser import (
    CHROMIUM,
    QUESTION,
    Page,
    fake_microphone_flags,
    launch_chromium,
    node_sessions,
    serve_microturn,
    spoken_wav,
)
from tests.conftest import NodeFactory, RunningNode, free_port
from tests.fakes import SilentModel

REPO = Path(__file__).resolve().parent.parent
API_KEY = "widget-test-key-0123456789abcdef"
SCREENSHOT = REPO / "docs" / "img" / "widget.png"
SCREENSHOT_MAX_BYTES = 150_000
VIEWPORT = (760, 440)  # what the screenshot shows: a page of the other site with the widget in its corner
WIDGET = "microturn-agent"
INSECURE_HOST = "shop.test"
AGENT = "document.querySelector('microturn-agent')"  # the widget element, in the page's JavaScript
IN_WIDGET = f"{AGENT}.shadowRoot"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)"),
]

# Records the widget's events as the embedding page would see them: on document, from the shadow DOM.
RECORDER = """<script>
  window.seen = [];
  for (const type of ['microturn-state', 'microturn-transcript', 'microturn-error'])
    document.addEventListener(type, (e) => window.seen.push({ type, ...e.detail }));
</script>"""


def shop_page(node: str, attributes: str = "") -> str:
    """The embedding page: one script tag and one element, as docs/widget.md shows."""
    return f"""<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Northwind Travel</title>
  <link rel="icon" href="data:,">
  <style>
    body {{ margin: 0; font: 16px/1.5 system-ui, sans-serif; color: #1c1917; background: #f5f5f4; }}
    header {{ padding: 18px 32px; background: #0f766e; color: #fff; font-weight: 700; font-size: 1.2rem; }}
    main {{ padding: 24px 32px; max-width: 34rem; }}
    h1 {{ margin: 0 0 8px; font-size: 1.5rem; }}
  </style>
  {RECORDER}
  <script type="module" src="{node}/widget.js"></script>
</head>
<body>
  <header>Northwind Travel</header>
  <main>
    <h1>Where to next?</h1>
    <p>Ask our voice agent about destinations, flights and opening hours: start a call in the corner
    and speak.</p>
  </main>
  <microturn-agent server="{html.escape(node)}" {attributes}></microturn-agent>
</body>
</html>"""


class Shop:
    """The other origin: its pages and its backend's token route."""

    def __init__(self, node: str) -> None:
        self.node = node
        self.port = free_port()
        self.origin = f"http://127.0.0.1:{self.port}"
        self.tokens_minted = 0

    def app(self) -> web.Application:
        app = web.Application()
        page_attributes = {
            "/": 'position="bottom-right" accent="#0f766e" agent-name="Northwind agent"',
            "/with-token": 'token-url="/token"',
            "/expects-reactive": 'model="reactive"',
            "/with-camera": 'camera theme="dark"',
        }
        for path, attributes in page_attributes.items():
            app.router.add_get(path, self.page_handler(attributes))
        app.router.add_post("/token", self.token)
        return app

    def page_handler(self, attributes: str) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handler(request: web.Request) -> web.Response:
            return web.Response(text=shop_page(self.node, attributes), content_type="text/html")

        return handler

    async def token(self, request: web.Request) -> web.Response:
        """The site's backend: it holds the API key and asks the node for a token for its own origin."""
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"{self.node}/v1/tokens",
                json={"origin": self.origin},
                headers={"Authorization": f"Bearer {API_KEY}"},
            ) as response,
        ):
            body = await response.json()
        self.tokens_minted += response.status == 200
        return web.json_response(body, status=response.status)


@pytest.fixture
async def shop() -> AsyncIterator[Callable[[str], Awaitable[Shop]]]:
    """Factory: ``await shop(node_url)`` serves the embedding site on a free port of its own."""
    runners: list[web.AppRunner] = []

    async def start(node: str) -> Shop:
        site = Shop(node)
        runner = web.AppRunner(site.app())
        await runner.setup()
        runners.append(runner)
        await web.TCPSite(runner, "127.0.0.1", site.port).start()
        return site

    yield start
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
async def page(tmp_path: Path) -> AsyncIterator[Page]:
    assert CHROMIUM is not None
    wav = spoken_wav(QUESTION, tmp_path / "question.wav")
    # shop.test: the embedding site under a name that is not localhost, i.e. not a secure context over http.
    flags = [*fake_microphone_flags(wav), f"--host-resolver-rules=MAP {INSECURE_HOST} 127.0.0.1"]
    async with launch_chromium(CHROMIUM, tmp_path, flags, viewport=VIEWPORT) as page:
        try:
            yield page
        finally:
            print("--- page console ---", *page.console, sep="\n")
            print("--- widget events ---", await _seen(page), sep="\n")


async def _seen(page: Page) -> Any:
    try:
        return await page.evaluate("window.seen")
    except Exception as exc:  # the page may be gone: this is only a failure's diagnostics
        return repr(exc)


async def shop_for_a_node_process(shop: Callable[[str], Awaitable[Shop]]) -> tuple[int, str, Shop]:
    """The site, for a node process not started yet (it needs the site's origin): the node's port and URL."""
    port = free_port()
    node = f"http://127.0.0.1:{port}"
    return port, node, await shop(node)


async def open_widget(page: Page, url: str) -> None:
    await page.navigate(url)
    # The module came from the node, another origin: defined means /widget.js was served with CORS.
    await page.wait_for("customElements.get('microturn-agent') !== undefined", 10, "the widget module")
    assert await page.evaluate(f"{AGENT}.state") == "idle"


async def wait_for_agent_caption(page: Page) -> str:
    """The call connects, the fake microphone asks, and the agent's reply shows as a caption."""
    await page.wait_for(f"{AGENT}.state === 'connected'", 20, "the call to connect")
    # (An element comes back from the page as {}: ask whether there is one.)
    await page.wait_for(f"!!{IN_WIDGET}.querySelector('.line.user')", 30, "a caption of the user's words")
    text: str = await page.wait_for(
        f"{IN_WIDGET}.querySelector('.line.agent .text')?.textContent", 40, "a caption of the agent's reply"
    )
    return text


async def hang_up(page: Page, node: str) -> None:
    """Hanging up from the other origin DELETEs the session (CORS lets the page read its Location)."""
    await page.click(f"{WIDGET} >>> .hangup")
    await page.wait_for(f"{AGENT}.state === 'ended'", 5, "the call to end")
    deadline = time.monotonic() + 10
    while await node_sessions(node) != 0:
        assert time.monotonic() < deadline, "the session was not released after hang-up"
        await asyncio.sleep(0.2)


async def test_a_page_of_another_origin_calls_the_agent_and_shows_captions(
    tmp_path: Path, page: Page, shop: Callable[[str], Awaitable[Shop]]
) -> None:
    port, node, site = await shop_for_a_node_process(shop)
    async with serve_microturn(tmp_path, port, ["--allowed-origins", site.origin]):
        await open_widget(page, f"{site.origin}/")
        await page.click(f"{WIDGET} >>> .call")
        agent_said = await wait_for_agent_caption(page)
        await page.wait_for(
            f"!!{IN_WIDGET}.querySelector('.line.agent.final')", 40, "the agent's reply to be said to the end"
        )
        seen = await page.evaluate("window.seen")
        print(f"agent said {agent_said!r}; widget events: {seen}")
        states = [e["state"] for e in seen if e["type"] == "microturn-state"]
        assert states[:2] == ["connecting", "connected"]
        agent_captions = [e for e in seen if e["type"] == "microturn-transcript" and e["role"] == "agent"]
        assert agent_captions[-1]["final"] and agent_captions[-1]["text"].startswith(agent_said)
        assert [e for e in seen if e["type"] == "microturn-error"] == []
        if os.environ.get("MICROTURN_SCREENSHOT") == "1":
            await page.screenshot(SCREENSHOT)
            assert SCREENSHOT.stat().st_size < SCREENSHOT_MAX_BYTES, "keep the README's picture small"
        await hang_up(page, node)


async def test_a_page_of_an_origin_not_allowed_is_refused(
    page: Page, shop: Callable[[str], Awaitable[Shop]], start_node: NodeFactory
) -> None:
    # No --allowed-origins: only the node's own pages. Refused at signalling, so no model is needed.
    node = await start_node(model=SilentModel(), background_workers=0)
    site = await shop(node.url)
    await open_widget(page, f"{site.origin}/")
    await page.click(f"{WIDGET} >>> .call")
    await page.wait_for(f"{AGENT}.state === 'failed'", 20, "the call to fail")
    notice = await page.evaluate(f"{IN_WIDGET}.querySelector('.notice:not([hidden])')?.textContent")
    # The browser hides the refused preflight's answer from the page; the widget names the likely cause.
    assert notice is not None and "--allowed-origins" in notice and site.origin in notice, notice
    errors = [e for e in await page.evaluate("window.seen") if e["type"] == "microturn-error"]
    assert [e["code"] for e in errors] == ["unreachable"]
    # What the node answered: 403 to the preflight, so the offer was never even sent.
    assert 'microturn_sessions_rejected_total{reason="origin"} 1.0' in node.node.metrics.render().decode()
    assert node.node.sessions == {}


async def test_with_an_api_key_the_embedding_site_mints_a_token_and_the_call_works(
    tmp_path: Path, page: Page, shop: Callable[[str], Awaitable[Shop]]
) -> None:
    port, node, site = await shop_for_a_node_process(shop)
    # The key from the environment, as docs/widget.md recommends (it stays out of `ps`).
    async with serve_microturn(
        tmp_path, port, ["--allowed-origins", site.origin], env={"MICROTURN_API_KEY": API_KEY}
    ):
        # Without a token the node refuses, and the widget says what to do.
        await open_widget(page, f"{site.origin}/")
        await page.click(f"{WIDGET} >>> .call")
        await page.wait_for(f"{AGENT}.state === 'failed'", 20, "the call to fail")
        errors = [e for e in await page.evaluate("window.seen") if e["type"] == "microturn-error"]
        assert [(e["code"], e["status"]) for e in errors] == [("unauthorized", 401)]
        notice = await page.evaluate(f"{IN_WIDGET}.querySelector('.notice').textContent")
        assert "requires a session token" in notice, notice

        # With token-url the widget asks the site's backend for a token before each call.
        await open_widget(page, f"{site.origin}/with-token")
        await page.click(f"{WIDGET} >>> .call")
        agent_said = await wait_for_agent_caption(page)
        print(f"agent said {agent_said!r}")
        assert site.tokens_minted == 1
        assert [e for e in await page.evaluate("window.seen") if e["type"] == "microturn-error"] == []
        await hang_up(page, node)


async def failure(page: Page) -> tuple[str, str]:
    """Wait for the call to fail; the error's code and what the widget shows."""
    await page.wait_for(f"{AGENT}.state === 'failed'", 20, "the call to fail")
    errors = [e for e in await page.evaluate("window.seen") if e["type"] == "microturn-error"]
    assert len(errors) == 1 and errors[0]["fatal"], errors
    notice: str = await page.evaluate(f"{IN_WIDGET}.querySelector('.notice:not([hidden])')?.textContent")
    assert notice == errors[0]["message"]
    return errors[0]["code"], notice


async def test_no_microphone_says_why_and_what_to_do(
    tmp_path: Path, shop: Callable[[str], Awaitable[Shop]], start_node: NodeFactory
) -> None:
    assert CHROMIUM is not None
    node = await start_node(model=SilentModel(), background_workers=0)
    site = await shop(node.url)
    # A fake microphone, but no fake prompt that says yes: the browser itself answers the prompt.
    flags = ["--use-fake-device-for-media-stream", f"--host-resolver-rules=MAP {INSECURE_HOST} 127.0.0.1"]
    async with launch_chromium(CHROMIUM, tmp_path, flags, viewport=VIEWPORT) as page:
        # Over plain http on a name other than localhost, browsers offer no microphone at all.
        await open_widget(page, f"http://{INSECURE_HOST}:{site.port}/")
        await page.click(f"{WIDGET} >>> .call")
        code, notice = await failure(page)
        assert code == "insecure_context" and "https://" in notice

        # The person said no to the permission prompt.
        await page.send(
            "Browser.setPermission", permission={"name": "microphone"}, setting="denied", origin=site.origin
        )
        await open_widget(page, f"{site.origin}/")
        await page.click(f"{WIDGET} >>> .call")
        code, notice = await failure(page)
        assert code == "permission_denied" and "Allow it for this site" in notice
    assert node.node.sessions == {}


async def call_a_silent_node(
    page: Page, shop: Callable[[str], Awaitable[Shop]], start_node: NodeFactory, path: str
) -> RunningNode:
    """Start a call from the shop's page ``path`` to a node that takes calls from any origin and whose
    model never speaks (the test is over before one would)."""
    node = await start_node(model=SilentModel(), background_workers=0, allowed_origins=("*",))
    site = await shop(node.url)
    await open_widget(page, f"{site.origin}{path}")
    await page.click(f"{WIDGET} >>> .call")
    return node


async def test_a_page_expecting_another_model_is_told_and_hangs_up(
    page: Page, shop: Callable[[str], Awaitable[Shop]], start_node: NodeFactory
) -> None:
    node = await call_a_silent_node(page, shop, start_node, "/expects-reactive")
    code, notice = await failure(page)
    assert code == "model_mismatch" and '"silent", not "reactive"' in notice
    deadline = time.monotonic() + 10
    while node.node.sessions:  # the widget DELETEd the session it will not use
        assert time.monotonic() < deadline, "the session was not released"
        await asyncio.sleep(0.2)


async def test_mute_and_camera_controls_in_a_call(
    page: Page, shop: Callable[[str], Awaitable[Shop]], start_node: NodeFactory
) -> None:
    node = await call_a_silent_node(page, shop, start_node, "/with-camera")
    await page.wait_for(f"{AGENT}.state === 'connected'", 20, "the call to connect")
    # The fake camera goes out with the microphone, and the caller sees themselves.
    assert (
        await page.evaluate(f"{IN_WIDGET}.querySelector('.self-view').srcObject.getVideoTracks().length") == 1
    )
    visible = f"!{IN_WIDGET}.querySelector('%s').hidden"
    assert await page.evaluate(visible % ".self-view") and await page.evaluate(visible % ".camera")

    await page.click(f"{WIDGET} >>> .mute")
    assert await page.evaluate(f"{AGENT}.muted") is True
    assert await page.evaluate(f"{IN_WIDGET}.querySelector('.mute').getAttribute('aria-pressed')") == "true"
    assert await page.evaluate(f"{IN_WIDGET}.querySelector('.detail').textContent") == "Muted"
    await page.click(f"{WIDGET} >>> .camera")
    assert not await page.evaluate(visible % ".self-view")
    assert (
        await page.evaluate(f"{IN_WIDGET}.querySelector('.self-view').srcObject.getVideoTracks()[0].enabled")
        is False
    )
    await hang_up(page, node.url)
