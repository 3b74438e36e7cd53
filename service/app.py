"""The media node's HTTP face: WHIP-style signalling, health, metrics and the demo page.

``create_app(config)`` returns an :class:`aiohttp.web.Application` that can be embedded and tested with
``AppRunner``/``TCPSite``; the media node starts with the app and stops with it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web

from model.base import InteractionModel
from model.catalog import create_model
from service.background_worker import BackgroundConfig, background_handler, create_background_agent
from service.embedding import Embedding
from service.jobs import JobQueue, open_job_queue, serve_jobs
from service.metrics import NodeMetrics
from service.remote_worker import ModelWorkersUnavailable, RedisWorkerClient
from service.session import Session, WebRtcSession
from service.sip.ua import SipConfig, SipUserAgent
from service.ticker import Ticker
from service.worker import InProcessWorker, Worker

log = logging.getLogger(__name__)

MAX_SDP_BYTES = 64 * 1024  # an honest offer is a few KB; refuse anything that could be abuse
BACKGROUND_STOP_GRACE_S = 5.0  # s an embedded background worker gets to finish its job at shutdown
WEB_DIR = Path(__file__).resolve().parent.parent / "web"


@dataclass
class NodeConfig:
    model: str = "reactive"  # which interaction model steps the micro-turns (see `microturn serve --help`)
    max_sessions: int = 8  # sessions this node accepts before answering 503
    retry_after_s: int = 5  # what a 503 tells the client to wait
    web_dir: Path = field(default_factory=lambda: WEB_DIR)
    redis_url: str | None = None  # the job queue; None: Redis on the default address if up, else in-process
    background_workers: int = 1  # background workers embedded in this node (0: only external ones)
    background: BackgroundConfig = field(default_factory=BackgroundConfig)
    # Where the model steps: "in-process" (on a thread of this node) or "redis" (`microturn worker`
    # processes reached through the Redis at redis_url, which must then be set).
    model_workers: str = "in-process"
    sip: SipConfig | None = None  # the SIP/RTP bridge (docs/sip.md); None: no SIP
    # Web pages of other origins that may use the signalling routes ("*": any); the node's own always may.
    allowed_origins: tuple[str, ...] = ()
    api_key: str | None = None  # set: sessions need it or a session token minted with it (POST /v1/tokens)


S = TypeVar("S", bound=Session)


MODEL_WORKER_MODES = ("in-process", "redis")


class MediaNode:
    """Owns the sessions, the micro-turn ticker and the worker."""

    def __init__(self, config: NodeConfig, model: InteractionModel | None) -> None:
        """``model`` steps in this process; with ``config.model_workers == "redis"`` there is none here."""
        self.config = config
        self.metrics = NodeMetrics()
        self.worker: Worker
        if config.model_workers == "redis":
            if not config.redis_url:
                raise ModelWorkersUnavailable("model workers on Redis need --redis-url (or $REDIS_URL)")
            self.worker = RedisWorkerClient(config.redis_url, self.metrics)
            self.model_name = config.model  # what the workers are expected to run; /healthz shows theirs
        elif config.model_workers == "in-process":
            if model is None:
                model = create_model(config.model)
            self.worker = InProcessWorker(model, self.metrics, config.max_sessions)
            self.model_name = model.name
        else:
            raise ValueError(f"model_workers is one of {MODEL_WORKER_MODES}, not {config.model_workers!r}")
        self.ticker = Ticker(self.worker, self.metrics)
        self.sessions: dict[str, Session] = {}
        self.jobs: JobQueue | None = None
        self.sip: SipUserAgent | None = None
        self._background_tasks: list[asyncio.Task[None]] = []
        self._background_stop = asyncio.Event()

    async def start(self) -> None:
        self.jobs = await open_job_queue(self.config.redis_url)
        if self.config.background_workers:
            agent = await asyncio.to_thread(create_background_agent, self.config.background)
            handler = background_handler(agent)
            for i in range(self.config.background_workers):
                consumer = f"{socket.gethostname()}-{os.getpid()}-embedded-{i}"
                self._background_tasks.append(
                    asyncio.create_task(serve_jobs(self.jobs, consumer, handler, stop=self._background_stop))
                )
        await self.worker.start()
        self.ticker.start()
        if self.config.sip is not None:
            self.sip = SipUserAgent(self.config.sip, self)
            await self.sip.start()

    async def stop(self) -> None:
        if self.sip is not None:
            self.sip.stopping = True  # no new calls while the sessions close (their BYEs still go out)
        await asyncio.gather(*(s.close("server shutting down") for s in list(self.sessions.values())))
        if self.sip is not None:
            await self.sip.stop()
        await self.ticker.stop()
        # Let the embedded workers finish (and acknowledge) the job in hand; past the grace, a job left
        # pending is reclaimed by another worker when the queue is Redis.
        self._background_stop.set()
        if self._background_tasks:
            _, late = await asyncio.wait(self._background_tasks, timeout=BACKGROUND_STOP_GRACE_S)
            for task in late:
                task.cancel()
            await asyncio.gather(*self._background_tasks, return_exceptions=True)
        await self.worker.close()
        if self.jobs is not None:
            await self.jobs.close()

    @property
    def full(self) -> bool:
        return len(self.sessions) >= self.config.max_sessions

    def create_session(self, transport: type[S], **options: Any) -> S:
        """A new session of a transport class on this node's clock, jobs and metrics; it counts against
        max_sessions at once, and is ticked from :meth:`admit` on."""
        assert self.jobs is not None, "start() opens the job queue before sessions are accepted"
        session = transport(
            secrets.token_urlsafe(12),
            epoch=self.ticker.grid_start(time.monotonic()),
            metrics=self.metrics,
            model_name=self.model_name,
            jobs=self.jobs,
            on_closed=self._session_closed,
            **options,
        )
        self.sessions[session.id] = session
        self.metrics.sessions_active.set(len(self.sessions))
        return session

    def admit(self, session: Session) -> None:
        """The session's client is connected: tick it."""
        self.ticker.add(session)
        self.metrics.sessions_total.inc()
        log.info("session %s opened (%d/%d)", session.id, len(self.sessions), self.config.max_sessions)

    async def open_session(self, offer_sdp: str) -> tuple[WebRtcSession, str]:
        session = self.create_session(WebRtcSession)
        try:
            answer = await session.negotiate(offer_sdp)
        except Exception:
            await session.close("negotiation failed")
            raise
        self.admit(session)
        return session, answer

    def _session_closed(self, session: Session, reason: str) -> None:
        self.sessions.pop(session.id, None)
        self.ticker.remove(session)
        self.metrics.sessions_active.set(len(self.sessions))


NODE = web.AppKey("node", MediaNode)


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status, headers=headers)


async def create_session(request: web.Request) -> web.Response:
    node = request.app[NODE]
    if request.content_type != "application/sdp":
        node.metrics.sessions_rejected.labels("content_type").inc()
        return error_response(
            415,
            "unsupported_media_type",
            f"send the SDP offer as 'Content-Type: application/sdp' (got {request.content_type!r})",
        )
    if request.content_length is not None and request.content_length > MAX_SDP_BYTES:
        node.metrics.sessions_rejected.labels("bad_sdp").inc()
        return error_response(400, "bad_sdp", f"SDP offer larger than {MAX_SDP_BYTES} bytes")
    body = await request.content.read(MAX_SDP_BYTES + 1)
    if len(body) > MAX_SDP_BYTES:
        node.metrics.sessions_rejected.labels("bad_sdp").inc()
        return error_response(400, "bad_sdp", f"SDP offer larger than {MAX_SDP_BYTES} bytes")
    try:
        offer = body.decode("utf-8")
    except UnicodeDecodeError:
        node.metrics.sessions_rejected.labels("bad_sdp").inc()
        return error_response(400, "bad_sdp", "SDP offer is not UTF-8 text")
    if not offer.lstrip().startswith("v=0"):
        node.metrics.sessions_rejected.labels("bad_sdp").inc()
        return error_response(400, "bad_sdp", "not an SDP offer: it must start with 'v=0' (RFC 8866)")
    if node.full:
        node.metrics.sessions_rejected.labels("capacity").inc()
        return error_response(
            503,
            "at_capacity",
            f"this node is at its limit of {node.config.max_sessions} session(s); retry later",
            headers={"Retry-After": str(node.config.retry_after_s)},
        )
    try:
        session, answer = await node.open_session(offer)
    except Exception as exc:
        node.metrics.sessions_rejected.labels("bad_sdp").inc()
        log.info("rejected offer: %s: %s", type(exc).__name__, exc)
        return error_response(400, "bad_sdp", f"cannot use this SDP offer: {exc or type(exc).__name__}")
    return web.Response(
        status=201,
        body=answer.encode(),
        content_type="application/sdp",
        headers={"Location": f"/v1/sessions/{session.id}"},
    )


async def delete_session(request: web.Request) -> web.Response:
    node = request.app[NODE]
    session = node.sessions.get(request.match_info["session_id"])
    if session is None:
        return error_response(404, "not_found", "no such session (it may have ended already)")
    await session.close("deleted by client")
    return web.Response(status=200)


async def patch_session(request: web.Request) -> web.Response:
    # RFC 9725 §4.3.1: a WHIP endpoint without trickle ICE answers PATCH with 405.
    return error_response(
        405,
        "trickle_unsupported",
        "trickle ICE is not supported: send the offer after ICE gathering completes",
        headers={"Allow": "DELETE"},
    )


async def healthz(request: web.Request) -> web.Response:
    node = request.app[NODE]
    worker = node.worker.describe()
    return web.json_response(
        {
            # Degraded, not down: sessions keep their media, but the model cannot answer (see "worker").
            "status": "degraded" if worker.get("problem") else "ok",
            "sessions": len(node.sessions),
            "max_sessions": node.config.max_sessions,
            "model": node.model_name,
            "worker": worker,
            "jobs": node.jobs.mode if node.jobs is not None else None,
        }
    )


async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=request.app[NODE].metrics.render(), content_type="text/plain", charset="utf-8")


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(request.app[NODE].config.web_dir / "index.html")


def create_app(config: NodeConfig, model: InteractionModel | None = None) -> web.Application:
    """Build the node's app; ``model`` overrides ``config.model`` (embedding, tests)."""
    app = web.Application(client_max_size=MAX_SDP_BYTES + 1024)
    node = MediaNode(config, model)
    app[NODE] = node

    async def lifecycle(app: web.Application) -> Any:
        await node.start()
        yield
        await node.stop()

    app.cleanup_ctx.append(lifecycle)
    app.router.add_post("/v1/sessions", create_session)
    app.router.add_delete("/v1/sessions/{session_id}", delete_session)
    app.router.add_patch("/v1/sessions/{session_id}", patch_session)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    # CORS, session tokens and /widget.js (docs/widget.md); before the static route, which would shadow them.
    Embedding(config.allowed_origins, config.api_key, config.web_dir, node.metrics).install(app)
    app.router.add_get("/", index)
    app.router.add_static("/", config.web_dir)
    return app
