"""A null server: the transport floor for interruptions.

It speaks the microturn signalling (POST/DELETE /v1/sessions, /healthz, the ``events`` channel) but has no
model and no micro-turns: it plays a tone whenever the user has been silent for a second, and flushes it the
instant a decoded 20 ms frame of user audio is loud. Run through the turn-taking suite's interruption cases,
the time from the user's onset to the tone's end at the client is what the transport alone costs -- the
client's Opus encoder and packetisation, the server's jitter buffer and decoder, the way back and the
client's jitter buffer -- the floor under any model's stop latency.

    python -m bench.suite.nullserver --port 8090
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import secrets
import time

import numpy as np
from aiohttp import web
from aiortc import MediaStreamTrack, RTCDataChannel, RTCPeerConnection, RTCSessionDescription

from service.client import AUDIBLE_DBFS, decoded_audio, level_dbfs
from service.microturn import SAMPLE_RATE, PcmArray
from service.output_track import OutputAudioTrack

RESUME_AFTER_S = 1.0  # user silence after which the tone starts again
TONE_S = 20.0


def tone(seconds: float = TONE_S, hz: float = 220.0) -> PcmArray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (0.2 * 32767 * np.sin(2 * np.pi * hz * t)).astype(np.int16)


class NullSession:
    def __init__(self) -> None:
        self.id = secrets.token_hex(8)
        self.pc = RTCPeerConnection()
        self.voice = OutputAudioTrack()
        self.channel: RTCDataChannel | None = None
        self.last_user = time.monotonic()
        self.tasks: list[asyncio.Task[None]] = []

    async def negotiate(self, offer: str) -> str:
        self.pc.on("track", self._on_track)
        self.pc.on("datachannel", self._on_datachannel)
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
        self.pc.addTrack(self.voice)
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        self.tasks.append(asyncio.create_task(self._speak()))
        return str(self.pc.localDescription.sdp)

    def _on_datachannel(self, channel: RTCDataChannel) -> None:
        self.channel = channel
        self._send("session.started", session_id=self.id, micro_turn_ms=0, model="null")

    def _send(self, kind: str, **fields: object) -> None:
        if self.channel is not None:
            with contextlib.suppress(Exception):
                self.channel.send(json.dumps({"type": kind, **fields}))

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio":
            self.tasks.append(asyncio.create_task(self._listen(track)))

    async def _listen(self, track: MediaStreamTrack) -> None:
        async for _, pcm in decoded_audio(track):
            if level_dbfs(pcm) > AUDIBLE_DBFS:
                self.last_user = time.monotonic()
                if self.voice.playing:
                    self.voice.flush()
                    self._send("response.audio.stopped", reason="interrupted")

    async def _speak(self) -> None:
        while True:
            await asyncio.sleep(0.02)
            if not self.voice.playing and time.monotonic() - self.last_user >= RESUME_AFTER_S:
                self.voice.enqueue(tone())
                self._send("response.audio.started")

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await self.pc.close()


def create_null_app() -> web.Application:
    app = web.Application()
    sessions: dict[str, NullSession] = {}

    async def create(request: web.Request) -> web.Response:
        session = NullSession()
        answer = await session.negotiate(await request.text())
        sessions[session.id] = session
        return web.Response(
            status=201,
            text=answer,
            content_type="application/sdp",
            headers={"Location": f"/v1/sessions/{session.id}"},
        )

    async def delete(request: web.Request) -> web.Response:
        session = sessions.pop(request.match_info["id"], None)
        if session is None:
            raise web.HTTPNotFound()
        await session.close()
        return web.Response(text="")

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "sessions": len(sessions), "model": "null"})

    async def shutdown(app: web.Application) -> None:
        for session in list(sessions.values()):
            await session.close()

    app.router.add_post("/v1/sessions", create)
    app.router.add_delete("/v1/sessions/{id}", delete)
    app.router.add_get("/healthz", healthz)
    app.on_shutdown.append(shutdown)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    web.run_app(create_null_app(), host=args.host, port=args.port, print=None)


if __name__ == "__main__":
    main()
