"""/metrics, /healthz and /readyz on the service's Router.

/healthz answers whether the process should be restarted (a worker thread
died); /readyz whether it should get traffic and scrapes yet (store reachable
and the first monitor pass done, so Prometheus never sees a half-filled
exposition right after a restart).
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from modelmon.http import Request, Response, Router

Check = Callable[[], dict[str, bool]]


def register_endpoints(
    router: Router, registry: CollectorRegistry, health: Check, readiness: Check
) -> None:
    """`health`/`readiness` return named checks; all true means 200, else 503."""

    def metrics(req: Request) -> Response:
        encoder, content_type = choose_encoder(req.headers.get("accept", ""))
        return Response(200, encoder(registry), content_type)

    def _report(checks: dict[str, bool]) -> Response:
        ok = all(checks.values())
        return Response.json({"status": "ok" if ok else "unavailable", "checks": checks}, 200 if ok else 503)

    router.add("GET", "/metrics", metrics)
    router.add("GET", "/healthz", lambda req: _report(health()))
    router.add("GET", "/readyz", lambda req: _report(readiness()))
