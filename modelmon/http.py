"""A small threaded WSGI server with a router, shared by /metrics, health and /v1.

Stages register routes on one `Router`; the server itself knows no endpoint.
Kept on the standard library so the service has no web-framework dependency.
"""

from __future__ import annotations

import json
import logging
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

log = logging.getLogger(__name__)

_REASONS = {
    200: "OK", 201: "Created", 202: "Accepted", 204: "No Content", 400: "Bad Request",
    401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
    411: "Length Required", 413: "Content Too Large", 415: "Unsupported Media Type",
    422: "Unprocessable Content", 500: "Internal Server Error", 503: "Service Unavailable",
}


@dataclass
class Request:
    method: str
    path: str
    query: str
    headers: dict[str, str]  # lower-case names
    environ: dict[str, Any]
    params: dict[str, str] = field(default_factory=dict)

    def read_body(self, limit: int) -> bytes:
        """The body, refusing more than `limit` bytes (raises HttpError 413)."""
        try:
            length = int(self.headers.get("content-length") or 0)
        except ValueError:
            raise HttpError(400, "invalid Content-Length") from None
        if length > limit:
            raise HttpError(413, f"body is {length} bytes, the limit is {limit}")
        if length < 0:
            raise HttpError(400, "invalid Content-Length")
        if not length:
            return b""
        try:
            body = self.environ["wsgi.input"].read(length)
        except OSError:  # the client stalled past the socket timeout
            raise HttpError(400, "timed out reading the request body") from None
        if len(body) != length:
            raise HttpError(400, f"body ended after {len(body)} of {length} bytes")
        return body


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    headers: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def json(cls, obj: Any, status: int = 200, headers: list[tuple[str, str]] | None = None) -> Response:
        data = json.dumps(obj, sort_keys=True, allow_nan=False, default=str).encode()
        return cls(status, data, "application/json", headers or [])


class HttpError(Exception):
    def __init__(self, status: int, message: str, extra: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra or {}


Handler = Callable[[Request], Response]


class Router:
    def __init__(self) -> None:
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = []

    def add(self, method: str, pattern: str, handler: Handler) -> None:
        """`pattern` like '/v1/models/{model}'; a segment never matches '/'."""
        regex = "^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", pattern) + "$"
        self._routes.append((method.upper(), re.compile(regex), handler))

    def dispatch(self, req: Request) -> Response:
        allowed: list[str] = []
        # Match on the still-encoded path, so an encoded '/' (%2F) stays inside
        # its segment, and decode each parameter once, as UTF-8.
        raw = req.environ.get(RAW_PATH_KEY, req.path)
        for method, regex, handler in self._routes:
            m = regex.match(raw)
            if not m:
                continue
            if method != req.method and not (method == "GET" and req.method == "HEAD"):
                allowed.append(method)
                continue
            req.params = {k: _unquote(v) for k, v in m.groupdict().items()}
            return handler(req)
        if allowed:
            raise HttpError(405, f"method {req.method} not allowed", {"allow": sorted(set(allowed))})
        raise HttpError(404, f"no such endpoint: {req.path}")

    def wsgi(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        headers = {
            k[5:].replace("_", "-").lower(): v for k, v in environ.items() if k.startswith("HTTP_")
        }
        if "CONTENT_LENGTH" in environ:
            headers["content-length"] = environ["CONTENT_LENGTH"]
        if "CONTENT_TYPE" in environ:
            headers["content-type"] = environ["CONTENT_TYPE"]
        req = Request(
            method=environ.get("REQUEST_METHOD", "GET").upper(),
            path=environ.get("PATH_INFO", "/") or "/",
            query=environ.get("QUERY_STRING", ""),
            headers=headers,
            environ=environ,
        )
        try:
            resp = self.dispatch(req)
        except HttpError as exc:
            resp = Response.json({"error": exc.message, **exc.extra}, exc.status)
            if exc.status == 401:
                resp.headers.append(("WWW-Authenticate", 'Bearer realm="modelmon"'))
            if exc.status == 405:
                resp.headers.append(("Allow", ", ".join(exc.extra.get("allow", []))))
        except Exception:
            log.exception("unhandled error on %s %s", req.method, req.path)
            resp = Response.json({"error": "internal error"}, 500)
        status = f"{resp.status} {_REASONS.get(resp.status, 'Status')}"
        out = [("Content-Type", resp.content_type), ("Content-Length", str(len(resp.body)))]
        start_response(status, out + resp.headers)
        return [b"" if req.method == "HEAD" else resp.body]


# The request path before wsgiref percent-decodes it (as Latin-1) into PATH_INFO.
RAW_PATH_KEY = "modelmon.raw_path"


def _unquote(value: str) -> str:
    from urllib.parse import unquote_to_bytes

    try:
        return unquote_to_bytes(value).decode("utf-8")
    except UnicodeDecodeError:
        raise HttpError(400, "path is not valid UTF-8 after percent-decoding") from None


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True
    # After the reply, read what the client is still sending (an unread body
    # after a 401/413) before closing: closing a socket with unread input sends
    # a TCP reset, which can destroy the reply before the client reads it.
    linger_seconds = 2.0
    linger_bytes = 64 * 1024 * 1024

    def shutdown_request(self, request: Any) -> None:
        try:
            request.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + self.linger_seconds
            drained = 0
            while drained < self.linger_bytes:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                request.settimeout(left)
                chunk = request.recv(65536)
                if not chunk:
                    break
                drained += len(chunk)
        except OSError:
            pass
        self.close_request(request)


class _QuietHandler(WSGIRequestHandler):
    # A client that stops sending mid-request frees its thread after this.
    timeout = 60

    def get_environ(self) -> dict[str, Any]:
        env = super().get_environ()
        env[RAW_PATH_KEY] = self.path.split("?", 1)[0]
        return env

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        log.debug("%s - %s", self.address_string(), format % args)


class HttpServer:
    """Serves a Router on host:port in a background thread."""

    def __init__(self, router: Router, host: str, port: int) -> None:
        self._server = make_server(host, port, router.wsgi, _ThreadingServer, _QuietHandler)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_port)

    def start(self) -> None:
        # A short poll interval keeps stop() (which waits for the loop) quick.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, name="http", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread:
            self._thread.join(timeout=5)
