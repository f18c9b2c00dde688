"""A router and the WSGI server (waitress) shared by /metrics, health and /v1.

Stages register routes on one `Router`; the server itself knows no endpoint.
The Router is a plain WSGI app, so the service needs no web framework.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from waitress import wasyncore
from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser
from waitress.server import TcpWSGIServer
from waitress.utilities import BadRequest

log = logging.getLogger(__name__)

_REASONS = {
    200: "OK", 201: "Created", 202: "Accepted", 204: "No Content", 400: "Bad Request",
    401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
    411: "Length Required", 413: "Content Too Large", 415: "Unsupported Media Type",
    422: "Unprocessable Content", 429: "Too Many Requests", 500: "Internal Server Error", 503: "Service Unavailable",
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
        except OSError:  # the server buffers bodies, but another WSGI server may not
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
        environ.setdefault(RAW_PATH_KEY, _raw_path(environ))
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


# The request path before the server percent-decodes it (as Latin-1) into PATH_INFO.
RAW_PATH_KEY = "modelmon.raw_path"


def _raw_path(environ: dict[str, Any]) -> str:
    """The still-encoded path: waitress keeps the request target in REQUEST_URI."""
    uri = environ.get("REQUEST_URI") or environ.get("RAW_URI")
    if not uri:
        return str(environ.get("PATH_INFO", "/") or "/")
    path = urlsplit(uri).path if not uri.startswith("/") else uri.split("?", 1)[0]
    return path or "/"


def _unquote(value: str) -> str:
    from urllib.parse import unquote_to_bytes

    try:
        return unquote_to_bytes(value).decode("utf-8")
    except UnicodeDecodeError:
        raise HttpError(400, "path is not valid UTF-8 after percent-decoding") from None


class _Parser(HTTPRequestParser):
    """Waitress de-chunks a chunked body and invents its Content-Length; the API
    wants a declared length (411 otherwise, see api/feedback.py), so drop the
    invented one and the app sees what the client sent."""

    def received(self, data: bytes) -> int:
        consumed = super().received(data)
        if self.completed and self.chunked:
            self.headers.pop("CONTENT_LENGTH", None)
        return int(consumed)


class _Channel(HTTPChannel):
    parser_class = _Parser
    _cut_short = False

    def handle_read(self) -> None:
        super().handle_read()
        if self._cut_short:  # waitress marks the client gone on EOF; it is still listening
            self.connected = True

    def handle_close(self) -> None:
        """A client that ends its side mid-body gets a 400 rather than a silent close
        (the socket can still carry the reply after a half-close)."""
        with self.requests_lock:
            req = self.request
            if req is not None and req.headers_finished and not req.completed and not self.will_close:
                req.error = BadRequest("the request body ended before its Content-Length")
                req.completed = True
                req.connection_close = True
                self._cut_short = True
                self.request = None
                self.requests.append(req)
                if len(self.requests) == 1:
                    self.server.add_task(self)
                return
        super().handle_close()


class _Server(TcpWSGIServer):
    channel_class = _Channel


class HttpServer:
    """Serves a Router on host:port with waitress, from a background thread.

    Waitress rather than http.server (not meant for production) or cheroot: it
    is pure Python with no dependencies, maintained (Pylons), and its design
    fits a monitoring sidecar: one asyncore thread reads and buffers whole
    requests and writes replies, so slow or idle clients hold no worker, and a
    fixed pool of `threads` workers runs the app. Connections are cheap (up to
    `connection_limit`); one idle, or stalled mid-request, for
    `channel_timeout` seconds is closed. A declared body over `max_body_bytes`
    gets 413 before it is read; the routes refuse theirs below that (their own
    limit, JSON 413), so keep this at least `server.max_body_bytes`.
    """

    grace_seconds = 5.0  # what stop() gives the requests in flight

    def __init__(
        self,
        router: Router,
        host: str,
        port: int,
        *,
        threads: int = 8,
        connection_limit: int = 1000,
        channel_timeout: float = 60.0,
        max_body_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        adj = Adjustments(
            host=host, port=port, threads=threads, connection_limit=connection_limit,
            channel_timeout=channel_timeout, cleanup_interval=max(1.0, min(30.0, channel_timeout / 2)),
            max_request_body_size=max_body_bytes + 1,  # waitress refuses lengths >= its limit
            asyncore_use_poll=True,  # select() cannot watch file descriptors past 1024
            ident="modelmon", expose_tracebacks=False,
        )
        self._map: dict[int, Any] = {}
        self._server = _Server(router.wsgi, map=self._map, adj=adj)
        self.threads = threads
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.effective_port)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="http", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        # One poll at a time, so stop() can end the loop; asyncore is not thread-safe,
        # so the sockets are closed here, in the loop's own thread.
        while not self._stopping.is_set():
            wasyncore.loop(timeout=1.0, map=self._map, use_poll=True, count=1)
        self._server.accepting = False  # stop taking connections, finish the requests in flight
        deadline = time.monotonic() + self.grace_seconds
        while self._busy() and time.monotonic() < deadline:
            wasyncore.loop(timeout=0.05, map=self._map, use_poll=True, count=1)
        wasyncore.close_all(self._map)

    def _busy(self) -> bool:
        return any(
            getattr(ch, "requests", None) or getattr(ch, "total_outbufs_len", 0)
            for ch in list(self._map.values())
        )

    def stop(self) -> None:
        """Finish the requests in flight (up to `grace_seconds`), close every socket, end the threads."""
        self._stopping.set()
        if self._thread is not None:
            with contextlib.suppress(OSError):  # the loop may have closed the trigger already
                self._server.pull_trigger()  # wake the poll
            self._thread.join(timeout=self.grace_seconds + 5)
        else:
            wasyncore.close_all(self._map)
        self._server.task_dispatcher.shutdown(timeout=5)

    close = stop
