"""The HTTP server: many keep-alive clients on a fixed thread pool, HEAD, a clean stop."""

from __future__ import annotations

import http.client
import socket
import threading

import pytest

from modelmon.http import HttpServer, Request, Response, Router

THREADS = 8
CLIENTS = 200


class _Seen:
    """What the handler saw: the worker threads and the clients' ports."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.threads: set[int] = set()
        self.ports: list[int] = []

    def handler(self, req: Request) -> Response:
        with self.lock:
            self.threads.add(threading.get_ident())
            self.ports.append(int(req.environ.get("REMOTE_PORT", 0)))
        return Response.json({"status": "ok"})


@pytest.fixture
def served():
    seen = _Seen()
    router = Router()
    router.add("GET", "/healthz", seen.handler)
    before = threading.active_count()
    server = HttpServer(router, "127.0.0.1", 0, threads=THREADS)
    server.start()
    yield server, seen, before
    server.stop()


def _round(conns: list[http.client.HTTPConnection]) -> list[http.client.HTTPResponse]:
    for conn in conns:  # every request is sent before any reply is read
        conn.request("GET", "/healthz")
    replies = []
    for conn in conns:
        resp = conn.getresponse()
        resp.read()
        replies.append(resp)
    return replies


def test_200_concurrent_keep_alive_connections_on_a_bounded_pool(served) -> None:
    server, seen, before = served
    conns = [http.client.HTTPConnection("127.0.0.1", server.port, timeout=60) for _ in range(CLIENTS)]
    try:
        for conn in conns:
            conn.connect()
        first = _round(conns)
        threads_under_load = threading.active_count()
        second = _round(conns)
    finally:
        for conn in conns:
            conn.close()
    assert [r.status for r in first + second] == [200] * (2 * CLIENTS)
    assert not any(r.will_close for r in first + second)
    # The second round reused every connection: the same client ports.
    assert sorted(seen.ports[CLIENTS:]) == sorted(seen.ports[:CLIENTS])
    assert len(set(seen.ports)) == CLIENTS
    # The pool's workers plus the one I/O thread, whatever the number of clients.
    assert len(seen.threads) <= THREADS
    assert threads_under_load <= before + THREADS + 1


def test_head_gets_the_length_and_no_body_and_keeps_the_connection(served) -> None:
    server, _, _ = served
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request("HEAD", "/healthz")
        head = conn.getresponse()
        assert head.read() == b""
        conn.request("GET", "/healthz")
        get = conn.getresponse()
        body = get.read()
    finally:
        conn.close()
    assert head.status == get.status == 200
    assert int(head.getheader("Content-Length")) == len(body) > 0


def test_stop_ends_the_threads_and_closes_the_port() -> None:
    router = Router()
    router.add("GET", "/healthz", lambda req: Response.json({}))
    before = {t.ident for t in threading.enumerate()}
    server = HttpServer(router, "127.0.0.1", 0, threads=3)
    server.start()
    port = server.port
    idle = socket.create_connection(("127.0.0.1", port), timeout=10)  # a keep-alive client stays
    try:
        started = [t for t in threading.enumerate() if t.ident not in before]
        assert len(started) == 3 + 1
        server.stop()
        for t in started:
            t.join(10)
        assert not any(t.is_alive() for t in started)
        assert idle.recv(1) == b""  # the server closed the idle connection
    finally:
        idle.close()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=10).close()


def test_the_bound_port_is_readable_with_port_zero() -> None:
    server = HttpServer(Router(), "127.0.0.1", 0)
    try:
        assert server.port > 0
    finally:
        server.stop()
