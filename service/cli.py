"""``microturn`` command line.

- ``microturn serve``: a media node with the demo page, its model worker and (by default) an embedded
  background worker.
- ``microturn background``: a background worker process taking jobs from Redis.
- ``microturn worker``: a model worker process stepping the micro-turns of ``--model-workers redis`` nodes.
- ``microturn sip``: ``serve`` with the SIP/RTP bridge on (udp 5060): phones and trunks call the agents.
- ``microturn bench``: the benchmark suites (TimeSpeak, CueSpeak, turn-taking, latency; bench/suite/).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import sys
from pathlib import Path

from aiohttp import web

from model.catalog import create_model, model_names
from service.app import MODEL_WORKER_MODES, NodeConfig, create_app
from service.background_worker import BackgroundConfig, background_handler, create_background_agent
from service.embedding import DEFAULT_TOKEN_TTL_S, parse_allowed_origins
from service.jobs import JobQueueUnavailable, open_job_queue, serve_jobs
from service.remote_worker import ModelWorkersUnavailable, serve_model_worker
from service.sip.ua import DEFAULT_RTP_PORTS, SipConfig, parse_ports, read_users

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
DEFAULT_SIP_PORT = 5060
log = logging.getLogger("microturn")


def add_background_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("REDIS_URL"),
        help="Redis for the job queue (default $REDIS_URL; unset: Redis on 127.0.0.1:6379 if it answers, "
        "else an in-process queue)",
    )
    parser.add_argument(
        "--docs",
        type=Path,
        default=None,
        help="folder of .md/.txt files the document-search tool reads (default $MICROTURN_DOCS)",
    )
    parser.add_argument(
        "--llm-url",
        default=os.environ.get("MICROTURN_LLM_URL"),
        help="OpenAI-compatible API root (e.g. http://127.0.0.1:8000/v1) replacing the embedded SmolLM2",
    )
    parser.add_argument("--llm-model", default="default", help="model name sent to --llm-url")


def background_config(args: argparse.Namespace) -> BackgroundConfig:
    return BackgroundConfig(
        docs_dir=args.docs,
        llm_url=args.llm_url,
        llm_model=args.llm_model,
        llm_api_key=os.environ.get("MICROTURN_LLM_API_KEY"),
    )


def add_embedding_options(parser: argparse.ArgumentParser) -> None:
    """Other web sites embedding the agent (docs/widget.md)."""
    embedding = parser.add_argument_group("embedding in other web sites (docs/widget.md)")
    embedding.add_argument(
        "--allowed-origins",
        default=os.environ.get("MICROTURN_ALLOWED_ORIGINS", ""),
        metavar="ORIGINS",
        help="comma-separated origins (https://shop.example.com) whose pages may use the node, besides "
        "its own; '*': any (default $MICROTURN_ALLOWED_ORIGINS, else only the node's own pages)",
    )
    embedding.add_argument(
        "--api-key",
        # The environment rather than the command line keeps the key out of `ps` and shell history.
        default=os.environ.get("MICROTURN_API_KEY"),
        help="sessions need this key, or a session token minted with it at POST /v1/tokens (valid "
        f"{DEFAULT_TOKEN_TTL_S} s by default) (default $MICROTURN_API_KEY; unset: no key needed)",
    )


def add_sip_options(parser: argparse.ArgumentParser, default_port: int) -> None:
    sip = parser.add_argument_group("SIP bridge (docs/sip.md)")
    sip.add_argument(
        "--sip-port",
        type=int,
        default=default_port,
        help=f"UDP port for SIP calls; 0: no SIP (default {default_port})",
    )
    sip.add_argument("--sip-host", default=None, help="address SIP and RTP listen on (default: --host)")
    sip.add_argument(
        "--sip-advertise",
        default=None,
        help="address put in Contact and SDP, e.g. the public one behind NAT (default: the listening "
        "address, or the one that routes to the caller when listening on 0.0.0.0)",
    )
    sip.add_argument(
        "--rtp-ports",
        default="{}-{}".format(*DEFAULT_RTP_PORTS),
        help="UDP port range for RTP, one even port per call (default {}-{})".format(*DEFAULT_RTP_PORTS),
    )
    sip.add_argument(
        "--sip-allow",
        action="append",
        default=[],
        metavar="CIDR",
        help="accept SIP only from this network (repeatable; default: from anyone)",
    )
    sip.add_argument(
        "--sip-users",
        type=Path,
        default=None,
        help="file of user:password lines: require digest authentication of INVITEs",
    )
    sip.add_argument("--sip-realm", default=SipConfig.realm, help=f"digest realm (default {SipConfig.realm})")
    sip.add_argument(
        "--sip-busy",
        type=int,
        choices=(486, 503),
        default=SipConfig.busy_status,
        help="answer when the node is full: 503 with Retry-After (a trunk tries another node) or "
        f"486 Busy Here (default {SipConfig.busy_status})",
    )
    sip.add_argument(
        "--sip-ring",
        type=float,
        default=SipConfig.ring_seconds,
        help=f"seconds of ringing before answering (default {SipConfig.ring_seconds})",
    )


def sip_config(args: argparse.Namespace) -> SipConfig | None:
    if not args.sip_port:
        return None
    return SipConfig(
        host=args.sip_host or args.host,
        port=args.sip_port,
        advertise=args.sip_advertise,
        rtp_ports=parse_ports(args.rtp_ports),
        allow=tuple(args.sip_allow),
        users=read_users(str(args.sip_users)) if args.sip_users else {},
        realm=args.sip_realm,
        busy_status=args.sip_busy,
        ring_seconds=args.sip_ring,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="microturn", description=__doc__)
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run a media node: signalling, sessions, model, demo page")
    serve.add_argument("--host", default=DEFAULT_HOST, help=f"address to listen on (default {DEFAULT_HOST})")
    serve.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"HTTP port (default {DEFAULT_PORT})")
    serve.add_argument(
        "--model",
        default=NodeConfig.model,
        choices=model_names(),
        help=f"interaction model that steps the micro-turns (default {NodeConfig.model})",
    )
    serve.add_argument(
        "--max-sessions",
        type=int,
        default=NodeConfig.max_sessions,
        help=f"sessions accepted before answering 503 (default {NodeConfig.max_sessions})",
    )
    serve.add_argument(
        "--background-workers",
        type=int,
        default=NodeConfig.background_workers,
        help="background workers embedded in this node; 0 leaves the jobs to `microturn background` "
        f"processes (default {NodeConfig.background_workers})",
    )
    serve.add_argument(
        "--model-workers",
        default=NodeConfig.model_workers,
        choices=MODEL_WORKER_MODES,
        help="in-process: step the model on a thread of this node; redis: send the micro-turns to "
        f"`microturn worker` processes through --redis-url (default {NodeConfig.model_workers})",
    )
    add_background_options(serve)
    add_embedding_options(serve)
    # `microturn sip`: the same node with the SIP bridge on by default (docs/sip.md). Its options are
    # copied from serve's now, before the SIP options (whose defaults differ) are added to each.
    sip = commands.add_parser(
        "sip",
        parents=[serve],
        conflict_handler="resolve",
        help=f"run a media node that answers phone calls (SIP/RTP, udp {DEFAULT_SIP_PORT}); serve's options",
    )
    add_sip_options(serve, default_port=0)
    add_sip_options(sip, default_port=DEFAULT_SIP_PORT)

    worker = commands.add_parser("worker", help="run a model worker for --model-workers redis nodes")
    worker.add_argument(
        "--redis-url", default=os.environ.get("REDIS_URL"), help="the nodes' Redis (default $REDIS_URL)"
    )
    worker.add_argument(
        "--model",
        default=NodeConfig.model,
        choices=model_names(),
        help=f"interaction model that steps the micro-turns (default {NodeConfig.model})",
    )
    worker.add_argument(
        "--capacity",
        type=int,
        default=NodeConfig.max_sessions,
        help=f"sessions this worker takes (default {NodeConfig.max_sessions})",
    )
    worker.add_argument(
        "--worker-id",
        default=f"{socket.gethostname()}-{os.getpid()}",
        help="this worker's name in Redis (default host-pid)",
    )
    worker.add_argument(
        "--metrics-port",
        type=int,
        default=0,
        help="serve Prometheus metrics on http://METRICS_HOST:PORT/metrics (default 0: off; one port per "
        "worker process)",
    )
    worker.add_argument(
        "--metrics-host",
        default=DEFAULT_HOST,
        help=f"address of the metrics endpoint (default {DEFAULT_HOST})",
    )
    background = commands.add_parser("background", help="run a background worker on the Redis job queue")
    background.add_argument(
        "--consumer",
        default=f"{socket.gethostname()}-{os.getpid()}",
        help="this worker's name in the consumer group (default host-pid)",
    )
    add_background_options(background)
    add_bench_command(commands)
    return parser


def add_bench_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``microturn bench``: the benchmark suites live in the source checkout's bench/, not in the package."""
    checkout = str(Path(__file__).resolve().parent.parent)
    if checkout not in sys.path:
        sys.path.append(checkout)
    try:
        from bench.suite.cli import add_arguments
    except ImportError:  # installed without the checkout: no benchmarks to run
        return
    add_arguments(commands.add_parser("bench", help="run the benchmark suites against models and report"))


async def run_background(args: argparse.Namespace) -> int:
    queue = await open_job_queue(args.redis_url)
    if queue.mode != "redis":
        await queue.close()
        log.error("a separate background worker needs Redis: set --redis-url or $REDIS_URL")
        return 2
    handler = background_handler(await asyncio.to_thread(create_background_agent, background_config(args)))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    log.info("background worker %s taking jobs", args.consumer)
    try:
        await serve_jobs(queue, args.consumer, handler, stop=stop)
    finally:
        await queue.close()
    log.info("background worker %s stopped", args.consumer)
    return 0


async def run_model_worker(args: argparse.Namespace) -> int:
    if not args.redis_url:
        log.error("a model worker needs Redis: set --redis-url or $REDIS_URL")
        return 2
    if args.capacity < 1:
        log.error("--capacity must be >= 1")
        return 2
    if not 0 <= args.metrics_port <= 65535:
        log.error("--metrics-port must be a TCP port, or 0 for none")
        return 2
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    model = await asyncio.to_thread(create_model, args.model)
    await serve_model_worker(args.redis_url, model, args.worker_id, args.capacity, stop=stop,
                             metrics_port=args.metrics_port, metrics_host=args.metrics_host)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        if args.command == "background":
            return asyncio.run(run_background(args))
        if args.command == "worker":
            return asyncio.run(run_model_worker(args))
        if args.command == "bench":
            from bench.suite.cli import main as run_bench

            return run_bench(args)
        if args.max_sessions < 1 or args.background_workers < 0:
            print("microturn: --max-sessions must be >= 1 and --background-workers >= 0", file=sys.stderr)
            return 2
        config = NodeConfig(
            model=args.model,
            max_sessions=args.max_sessions,
            redis_url=args.redis_url,
            background_workers=args.background_workers,
            background=background_config(args),
            model_workers=args.model_workers,
            sip=sip_config(args),
            allowed_origins=parse_allowed_origins(args.allowed_origins),
            api_key=args.api_key or None,
        )
        app = create_app(config)
        log.info("serving model %s on http://%s:%d/", args.model, args.host, args.port)
        web.run_app(app, host=args.host, port=args.port, print=None)
    except (JobQueueUnavailable, ModelWorkersUnavailable, ValueError, OSError) as exc:
        print(f"microturn: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
