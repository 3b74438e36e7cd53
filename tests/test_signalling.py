"""Signalling, health and metrics over real HTTP, and one test per bad-input rule."""

from __future__ import annotations

import aiohttp
import pytest

from service.client import SignallingError

from .conftest import NodeFactory


async def post_offer(url: str, body: bytes, content_type: str = "application/sdp") -> tuple[int, dict, dict]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{url}/v1/sessions", data=body, headers={"Content-Type": content_type}) as resp,
    ):
        return resp.status, dict(resp.headers), await resp.json()


async def test_offer_becomes_session_and_delete_ends_it(start_node: NodeFactory, connect) -> None:
    node = await start_node()
    client = await connect(node.url)
    assert client.location is not None and client.location.startswith("/v1/sessions/")
    _, started = await client.wait_for("session.started", timeout=5)
    assert started["micro_turn_ms"] == 200
    assert isinstance(started["t_ms"], int) and started["t_ms"] >= 0
    assert client.location.endswith(started["session_id"])
    assert len(node.node.sessions) == 1
    assert await client.close() == 200
    assert node.node.sessions == {}


async def test_delete_unknown_session_is_404(start_node: NodeFactory) -> None:
    node = await start_node()
    async with aiohttp.ClientSession() as http, http.delete(f"{node.url}/v1/sessions/nope") as resp:
        assert resp.status == 404
        assert (await resp.json())["error"]["code"] == "not_found"


async def test_patch_answers_405_as_rfc9725_says(start_node: NodeFactory) -> None:
    node = await start_node()
    async with (
        aiohttp.ClientSession() as http,
        http.patch(
            f"{node.url}/v1/sessions/any",
            data=b"a=candidate:1",
            headers={"Content-Type": "application/trickle-ice-sdpfrag"},
        ) as resp,
    ):
        assert resp.status == 405
        assert resp.headers["Allow"] == "DELETE"


async def test_wrong_content_type_is_415(start_node: NodeFactory) -> None:
    node = await start_node()
    status, _, body = await post_offer(node.url, b'{"sdp": "v=0"}', content_type="application/json")
    assert status == 415
    assert "application/sdp" in body["error"]["message"]


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"", "v=0"),
        (b"hello there", "v=0"),
        (b"v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio nonsense\r\n", "cannot use"),
        (b"\xff\xfe\xfa", "UTF-8"),
    ],
)
async def test_malformed_sdp_is_400_with_a_reason(start_node: NodeFactory, body: bytes, why: str) -> None:
    node = await start_node()
    status, _, answer = await post_offer(node.url, body)
    assert status == 400
    assert answer["error"]["code"] == "bad_sdp"
    assert why in answer["error"]["message"]
    assert node.node.sessions == {}


async def test_oversized_sdp_is_400(start_node: NodeFactory) -> None:
    node = await start_node()
    status, _, answer = await post_offer(node.url, b"v=0\r\n" + b"a=x-padding\r\n" * 10_000)
    assert status == 400
    assert "larger than" in answer["error"]["message"]


async def test_offer_without_audio_is_400(start_node: NodeFactory) -> None:
    from aiortc import RTCPeerConnection

    pc = RTCPeerConnection()
    pc.createDataChannel("events")
    await pc.setLocalDescription(await pc.createOffer())
    node = await start_node()
    status, _, answer = await post_offer(node.url, pc.localDescription.sdp.encode())
    await pc.close()
    assert status == 400
    assert "audio" in answer["error"]["message"]
    assert node.node.sessions == {}


async def test_session_limit_is_503_with_retry_after(start_node: NodeFactory, connect) -> None:
    node = await start_node(max_sessions=1, retry_after_s=7)
    await connect(node.url)
    with pytest.raises(SignallingError) as refused:
        await connect(node.url)
    assert refused.value.status == 503
    assert "limit of 1 session(s)" in refused.value.body
    async with aiohttp.ClientSession() as http, http.get(f"{node.url}/metrics") as resp:
        assert 'microturn_sessions_rejected_total{reason="capacity"} 1.0' in await resp.text()


async def test_healthz_and_metrics(start_node: NodeFactory, connect) -> None:
    node = await start_node()
    client = await connect(node.url)
    await client.wait_for("turn", timeout=5)
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{node.url}/healthz") as resp:
            health = await resp.json()
        async with http.get(f"{node.url}/metrics") as resp:
            assert resp.headers["Content-Type"].startswith("text/plain")
            metrics = await resp.text()
    assert health["status"] == "ok"
    assert health["sessions"] == 1
    assert health["model"] == "reactive"
    assert health["worker"]["steps"] > 0
    assert "microturn_sessions_active 1.0" in metrics
    assert "microturn_worker_step_seconds_count" in metrics
    assert "microturn_deadline_misses_total" in metrics
