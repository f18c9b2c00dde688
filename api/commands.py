"""`modelmon api ...`: run the /v1 API on its own, or make a token for it."""

from __future__ import annotations

import argparse
import logging
import secrets
import signal
import threading

from modelmon.config import Config

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    api = subparsers.add_parser("api", help="the HTTP API (feedback, prediction lookup)")
    sub = api.add_subparsers(dest="api_command", required=True)
    serve = sub.add_parser(
        "serve", help="serve only the /v1 API (`modelmon run` serves it together with /metrics)"
    )
    serve.add_argument("--host", help="bind address (default: server.host)")
    serve.add_argument("--port", type=int, help="port (default: server.port)")
    serve.add_argument(
        "--feedback-to",
        choices=("kafka", "store"),
        help="where accepted feedback goes (default: kafka when kafka.bootstrap_servers is set)",
    )
    serve.set_defaults(handler=_serve)
    token = sub.add_parser("token", help="print a new random API token for server.api_tokens")
    token.set_defaults(handler=_token)


def _token(args: argparse.Namespace, cfg: Config) -> int:
    print(secrets.token_urlsafe(32))
    return 0


def _serve(args: argparse.Namespace, cfg: Config) -> int:
    from modelmon.api.producer import feedback_producer
    from modelmon.api.routes import register as register_routes
    from modelmon.http import HttpServer, Router
    from modelmon.store.engine import make_engine

    engine = make_engine(cfg.database.url, pool_size=cfg.database.pool_size)
    producer = None if args.feedback_to == "store" else feedback_producer(cfg)
    if args.feedback_to == "kafka" and producer is None:
        log.error("--feedback-to kafka, but kafka.bootstrap_servers is empty")
        return 2
    router = Router()
    register_routes(router, cfg, engine, producer)
    host = args.host or cfg.server.host
    port = cfg.server.port if args.port is None else args.port
    server = HttpServer(router, host, port)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    server.start()
    log.info("serving the API on http://%s:%d/v1 (OpenAPI: /v1/openapi.yaml)", host, server.port)
    try:
        stop.wait()
    finally:
        server.stop()
        if producer is not None:
            producer.close(timeout=5)
        engine.dispose()
    return 0
