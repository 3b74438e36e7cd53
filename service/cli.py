"""``microturn`` command line: ``microturn serve`` runs a media node with the demo page."""

from __future__ import annotations

import argparse
import logging
import sys

from aiohttp import web

from model.catalog import model_names
from service.app import NodeConfig, create_app

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080


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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.command == "serve":
        if args.max_sessions < 1:
            print("microturn: --max-sessions must be at least 1", file=sys.stderr)
            return 2
        config = NodeConfig(model=args.model, max_sessions=args.max_sessions)
        app = create_app(config)
        logging.getLogger("microturn").info(
            "serving model %s on http://%s:%d/", args.model, args.host, args.port
        )
        web.run_app(app, host=args.host, port=args.port, print=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
