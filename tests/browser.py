"""Drive a headless Chromium over the Chrome DevTools Protocol (CDP), with aiohttp as the only dependency;
and what browser tests need around it: ``microturn serve`` as a process, a fake microphone's speech.

Chromium is started with ``--remote-debugging-port=0`` so that it picks a free port itself and writes it to
``DevToolsActivePort`` in its profile directory; we read it from there, find the page target over the
``/json/list`` HTTP endpoint and talk JSON-RPC to that page over its websocket.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import wave
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

# The browser the tests drive: $MICROTURN_CHROMIUM, else Debian's chromium on PATH (None: tests skip).
CHROMIUM = os.environ.get("MICROTURN_CHROMIUM") or shutil.which("chromium")
# What the fake microphone asks in the browser tests: the agent's answer is known ("Paris").
QUESTION = "what is the capital of france"

# Flags for a quiet, hermetic headless browser: no GPU, no QUIC, no background traffic or updates, no
# first-run UI, and autoplay allowed so that the agent's audio plays whatever the page was clicked with.
BASE_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
)


def fake_microphone_flags(wav: Path) -> list[str]:
    """Grant getUserMedia without a prompt and feed it ``wav`` once (``%noloop``), then silence."""
    return [
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={wav}%noloop",
    ]


def query(selector: str) -> str:
    """JavaScript finding the element ``selector`` names, through shadow roots at each ``>>>``."""
    expression = "document"
    for part in selector.split(">>>"):
        if expression != "document":
            expression = f"{expression}?.shadowRoot"
        expression = f"{expression}?.querySelector({json.dumps(part.strip())})"
    return expression


def spoken_wav(text: str, out: Path, before_s: float = 1.5, after_s: float = 4.0) -> Path:
    """flite saying ``text`` with silence before and after, as mono s16 WAV for the fake microphone.

    The leading silence covers the call setup (the fake microphone starts playing at getUserMedia, before
    the peer connection is up); the trailing silence lets the recogniser hear that the utterance ended.
    Chromium resamples the file to the capture rate itself.
    """
    speech = out.with_suffix(".speech.wav")
    subprocess.run(["flite", "-voice", "slt", "-t", text, "-o", str(speech)], check=True)
    with wave.open(str(speech)) as w:
        rate = w.getframerate()
        assert (w.getnchannels(), w.getsampwidth()) == (1, 2), "flite is expected to write mono s16"
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
    silence = [np.zeros(int(seconds * rate), np.int16) for seconds in (before_s, after_s)]
    with wave.open(str(out), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.concatenate([silence[0], pcm, silence[1]]).tobytes())
    return out


def _tail(path: Path, chars: int = 6000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else ""


@contextlib.asynccontextmanager
async def serve_microturn(
    workdir: Path,
    port: int,
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    ready_timeout: float = 90,
) -> AsyncIterator[str]:
    """``microturn serve --port port *args`` (its log in ``workdir/server.log``); yields its base URL once
    /healthz answers 200 (the model loads and warms up first); always stops it after."""
    log = workdir / "server.log"
    executable = Path(sys.executable).with_name("microturn")
    with log.open("wb") as log_file:
        proc = subprocess.Popen(
            [str(executable), "serve", "--host", "127.0.0.1", "--port", str(port), *args],
            cwd=Path(__file__).resolve().parent.parent,
            env={**os.environ, **(env or {})},
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + ready_timeout
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
            while True:
                if proc.poll() is not None:
                    raise AssertionError(f"microturn serve exited with {proc.returncode}:\n{_tail(log)}")
                try:
                    async with http.get(f"{base}/healthz") as response:
                        if response.status == 200:
                            break
                except aiohttp.ClientError:
                    pass  # not listening yet
                if time.monotonic() > deadline:
                    raise AssertionError(f"/healthz not ready after {ready_timeout:.0f} s:\n{_tail(log)}")
                await asyncio.sleep(0.5)
        yield base
    finally:
        await asyncio.to_thread(stop_process_group, proc)
        # Shown by pytest only when the test failed.
        print(f"--- server log ({log}) ---\n{_tail(log)}")


async def node_sessions(base: str) -> int:
    """The node's session count, from /healthz."""
    async with aiohttp.ClientSession() as http, http.get(f"{base}/healthz") as response:
        return int((await response.json())["sessions"])


class CdpError(RuntimeError):
    """A CDP command failed, or JavaScript evaluated in the page threw."""


class Page:
    """One page target of the browser: commands, JavaScript evaluation, and the page's console output."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.console: list[str] = []  # console messages and uncaught exceptions, as "level: text"
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for msg in self._ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            data = json.loads(msg.data)
            if "id" in data:
                future = self._pending.pop(data["id"], None)
                if future is not None and not future.done():
                    future.set_result(data)
            elif data.get("method") == "Runtime.consoleAPICalled":
                params = data["params"]
                text = " ".join(str(arg.get("value", arg.get("description", ""))) for arg in params["args"])
                self.console.append(f"{params['type']}: {text}")
            elif data.get("method") == "Runtime.exceptionThrown":
                details = data["params"]["exceptionDetails"]
                self.console.append(f"exception: {details.get('exception', {}).get('description', details)}")
        # The socket closed (browser gone): fail whoever still waits instead of letting them hang.
        for future in self._pending.values():
            if not future.done():
                future.set_exception(CdpError("the DevTools connection closed"))
        self._pending.clear()

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        """Send one CDP command and return its ``result``."""
        message_id = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[message_id] = future
        await self._ws.send_json({"id": message_id, "method": method, "params": params})
        reply = await asyncio.wait_for(future, timeout=30)
        if "error" in reply:
            raise CdpError(f"{method}: {reply['error']}")
        result: dict[str, Any] = reply["result"]
        return result

    async def evaluate(self, expression: str) -> Any:
        """Evaluate JavaScript in the page, awaiting it if it is a promise; return its JSON value."""
        result = await self.send(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise CdpError(details.get("exception", {}).get("description", details.get("text")))
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout: float, what: str, interval: float = 0.1) -> Any:
        """Poll ``expression`` until it is truthy; return its value, or fail naming ``what``."""
        deadline = time.monotonic() + timeout
        while True:
            value = await self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} ({expression})")
            await asyncio.sleep(interval)

    async def navigate(self, url: str, timeout: float = 15) -> None:
        await self.send("Page.navigate", url=url)
        await self.wait_for(
            f"location.href === {json.dumps(url)} && document.readyState === 'complete'",
            timeout,
            f"{url} to load",
        )

    async def click(self, selector: str) -> None:
        """Click the middle of the element with real mouse events, so the page gets a genuine user gesture.

        ``selector`` may cross into shadow roots with ``>>>``: ``microturn-agent >>> .call``.
        """
        box = await self.evaluate(
            f"""(() => {{
                const el = {query(selector)};
                if (!el) return null;
                el.scrollIntoView({{block: 'center'}});
                const r = el.getBoundingClientRect();
                return {{x: r.x + r.width / 2, y: r.y + r.height / 2}};
            }})()"""
        )
        if box is None:
            raise CdpError(f"no element matches {selector!r}")
        for event in ("mousePressed", "mouseReleased"):
            await self.send(
                "Input.dispatchMouseEvent", type=event, x=box["x"], y=box["y"], button="left", clickCount=1
            )

    async def type_into(self, selector: str, text: str) -> None:
        """Click into a text field and type ``text`` as keyboard input would insert it."""
        await self.click(selector)
        await self.send("Input.insertText", text=text)

    async def screenshot(self, path: Path) -> None:
        result = await self.send("Page.captureScreenshot", format="png")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(result["data"]))

    async def detach(self) -> None:
        """Close the DevTools connection and wait for the reader to finish."""
        await self._ws.close()
        await self._reader


def stop_process_group(proc: subprocess.Popen[bytes], grace: float = 10) -> None:
    """Stop ``proc`` and every process it spawned (it must lead its own session), politely first.

    Chromium forks renderer, GPU and utility processes and a server may fork workers: signalling the
    process group reaches those, and only those, because ``start_new_session`` gave them a group of their own.
    """
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


async def _devtools_port(profile: Path, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> int:
    port_file = profile / "DevToolsActivePort"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"chromium exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        # The file is written in one go, but we may read it before it is complete: wait for both lines.
        lines = port_file.read_text().splitlines() if port_file.exists() else []
        if len(lines) >= 2:
            return int(lines[0])
        await asyncio.sleep(0.1)
    raise RuntimeError(f"no DevToolsActivePort after {timeout:.0f} s:\n{log.read_text()[-4000:]}")


@contextlib.asynccontextmanager
async def launch_chromium(
    executable: str,
    workdir: Path,
    extra_flags: Sequence[str] = (),
    viewport: tuple[int, int] = (1280, 720),
    startup_timeout: float = 30,
) -> AsyncIterator[Page]:
    """Start Chromium with a fresh profile under ``workdir``; yield its first page; always stop it after.

    Chromium's own output goes to ``workdir/chromium.log``.
    """
    profile = workdir / "chromium-profile"
    profile.mkdir(parents=True)
    log = workdir / "chromium.log"
    args = [
        executable,
        *BASE_FLAGS,
        f"--user-data-dir={profile}",
        "--remote-debugging-port=0",
        *extra_flags,
        "about:blank",
    ]
    with log.open("wb") as log_file:
        proc = subprocess.Popen(args, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        port = await _devtools_port(profile, proc, log, startup_timeout)
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/json/list") as response:
                targets = await response.json()
            ws_url = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
            # Screenshots come back as one large message: lift aiohttp's 4 MiB default limit.
            async with http.ws_connect(ws_url, max_msg_size=0) as ws:
                page = Page(ws)
                try:
                    await page.send("Runtime.enable")
                    await page.send("Page.enable")
                    # --window-size counts the (invisible) window frame: set the viewport itself instead.
                    await page.send(
                        "Emulation.setDeviceMetricsOverride",
                        width=viewport[0],
                        height=viewport[1],
                        deviceScaleFactor=1,
                        mobile=False,
                    )
                    yield page
                finally:
                    await page.detach()
    finally:
        await asyncio.to_thread(stop_process_group, proc)
