"""/metrics, /healthz and /readyz on the service's Router.

/healthz answers whether the process should be restarted (a worker thread
died); /readyz whether it should get traffic and scrapes yet (store reachable
and the first monitor pass rendered, so Prometheus never sees a half-filled
exposition right after a restart). /metrics serves the last rendered
exposition (`MetricsExposition`); with `server.metrics_tokens` set it needs a
bearer token or basic auth, because slice values can identify people. The
probes stay open: kubelets do not authenticate, and they reveal nothing.

`/metrics?name[]=a&name[]=b` serves only those samples, as prometheus_client's
own WSGI app does (federation, debugging one series by hand). The results are
pre-rendered text, so such a scrape filters that text line by line: a full
scan, fine for a rare request, and the usual scrape stays a concatenation.
"""

from __future__ import annotations

import gzip
from collections.abc import Callable, Iterable
from urllib.parse import parse_qs

from prometheus_client.exposition import gzip_accepted

from modelmon.alerts.exposition import MetricsExposition
from modelmon.api.auth import ScrapeAuth
from modelmon.http import Request, Response, Router

Check = Callable[[], dict[str, bool]]


def register_endpoints(
    router: Router,
    exposition: MetricsExposition,
    health: Check,
    readiness: Check,
    auth: ScrapeAuth | None = None,
) -> None:
    """`health`/`readiness` return named checks; all true means 200, else 503."""

    def metrics(req: Request) -> Response:
        if auth is not None and not auth.allows(req):
            body = Response.json({"error": "/metrics needs a bearer token or basic auth"}, 401).body
            return Response(401, body, "application/json", list(ScrapeAuth.CHALLENGES))
        accept, encoding = req.headers.get("accept", ""), req.headers.get("accept-encoding", "")
        names = parse_qs(req.query).get("name[]")
        if not names:
            body, content_type, headers = exposition.serve(accept, encoding)
            return Response(200, body, content_type, headers)
        body, content_type, _ = exposition.serve(accept, "")
        body = b"".join(only_samples(body.splitlines(keepends=True), set(names)))
        if gzip_accepted(encoding):
            return Response(200, gzip.compress(body, 1), content_type, [("Content-Encoding", "gzip")])
        return Response(200, body, content_type, [])

    def _report(checks: dict[str, bool]) -> Response:
        ok = all(checks.values())
        return Response.json({"status": "ok" if ok else "unavailable", "checks": checks}, 200 if ok else 503)

    router.add("GET", "/metrics", metrics)
    router.add("GET", "/healthz", lambda req: _report(health()))
    router.add("GET", "/readyz", lambda req: _report(readiness()))


def only_samples(lines: Iterable[bytes], names: set[str]) -> Iterable[bytes]:
    """The exposition lines of the samples named in `names` (prometheus_client's
    `restricted_registry` semantics: `x_count` keeps only that series of a summary),
    each family's # HELP/TYPE/UNIT once if any of its samples is kept, and # EOF."""
    wanted = {n.encode() for n in names}
    meta: list[bytes] = []
    for line in lines:
        if line.startswith(b"#"):
            if line.startswith(b"# EOF"):
                yield line
            elif not meta or meta[0].split(b" ", 3)[2:3] == line.split(b" ", 3)[2:3]:
                meta.append(line)
            else:
                meta = [line]
            continue
        end = len(line)
        for sep in (b"{", b" "):
            i = line.find(sep)
            if 0 <= i < end:
                end = i
        if line[:end] in wanted:
            yield from meta
            meta = []
            yield line
