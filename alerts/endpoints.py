"""/metrics, /healthz and /readyz on the service's Router.

/healthz answers whether the process should be restarted (a worker thread
died); /readyz whether it should get traffic and scrapes yet (store reachable
and the first monitor pass rendered, so Prometheus never sees a half-filled
exposition right after a restart). /metrics serves the last rendered
exposition (`MetricsExposition`); with `server.metrics_tokens` set it needs a
bearer token or basic auth, because slice values can identify people. The
probes stay open: kubelets do not authenticate, and they reveal nothing.
"""

from __future__ import annotations

from collections.abc import Callable

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
        body, content_type, headers = exposition.serve(
            req.headers.get("accept", ""), req.headers.get("accept-encoding", "")
        )
        return Response(200, body, content_type, headers)

    def _report(checks: dict[str, bool]) -> Response:
        ok = all(checks.values())
        return Response.json({"status": "ok" if ok else "unavailable", "checks": checks}, 200 if ok else 503)

    router.add("GET", "/metrics", metrics)
    router.add("GET", "/healthz", lambda req: _report(health()))
    router.add("GET", "/readyz", lambda req: _report(readiness()))
