"""Shared helpers for the API tests: a served Router and a raw HTTP client."""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, func, select

from modelmon.api.routes import register
from modelmon.config import Config
from modelmon.http import HttpServer, Router
from modelmon.store import tables

TOKEN = "test-token-0123456789"


def make_config(tokens: list[str] | None = None, ingest: dict[str, Any] | None = None, **server: Any) -> Config:
    return Config.model_validate(
        {
            "ingest": ingest or {},
            "server": {"api_tokens": [TOKEN] if tokens is None else tokens, **server},
            "models": {"fraud": {"task": "binary", "positive_class": 1}},
        }
    )


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Served:
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        token: str | None = TOKEN,
    ) -> Reply:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        try:
            hdrs = dict(headers or {})
            if token is not None:
                hdrs.setdefault("Authorization", f"Bearer {token}")
            if body is not None:
                hdrs.setdefault("Content-Type", "application/json")
            conn.request(method, path, body=body, headers=hdrs)
            resp = conn.getresponse()
            return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
        finally:
            conn.close()

    def post_json(self, path: str, obj: Any, **kw: Any) -> Reply:
        return self.request("POST", path, json.dumps(obj).encode(), **kw)


@contextmanager
def serve(cfg: Config, engine: Engine, producer: object | None = None) -> Iterator[Served]:
    router = Router()
    register(router, cfg, engine, producer)
    server = HttpServer(router, "127.0.0.1", 0)
    server.start()
    try:
        yield Served("127.0.0.1", server.port)
    finally:
        server.stop()


def row_counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {
            t.name: conn.execute(select(func.count()).select_from(t)).scalar_one()
            for t in tables.metadata.sorted_tables
        }


def feedback_event(request_id: str = "r-1", label: Any = 1, model: str = "fraud", **extra: Any) -> dict[str, Any]:
    return {"request_id": request_id, "model": model, "label": label,
            "timestamp": "2026-11-23T10:00:00Z", **extra}


def prediction_event(request_id: str = "r-1", model: str = "fraud", **extra: Any) -> dict[str, Any]:
    return {
        "request_id": request_id,
        "model": model,
        "model_version": "v3",
        "timestamp": "2026-11-23T09:59:00.250Z",
        "prediction": 1,
        "scores": {"0": 0.2, "1": 0.8},
        "latency_ms": 12.5,
        "slices": {"region": "eu"},
        "features": {"amount": 12.5, "country": "FR"},
        **extra,
    }


def store_predictions(engine: Engine, events: list[dict[str, Any]], topic: str = "modelmon.predictions") -> None:
    """Write predictions the way ingest does, with a Kafka position each."""
    from modelmon.contract import parse_prediction
    from modelmon.store.writes import Position, write_batch

    items = [(parse_prediction(e), Position(topic, 0, i)) for i, e in enumerate(events)]
    with engine.begin() as conn:
        write_batch(conn, items, [], [], source="kafka")


def label_of(engine: Engine, model: str, request_id: str) -> tuple[Any, Any]:
    p = tables.predictions
    with engine.connect() as conn:
        row = conn.execute(
            select(p.c.label, p.c.label_ts).where(p.c.model == model, p.c.request_id == request_id)
        ).one()
    return row[0], row[1]


def wait_for(predicate: Any, timeout: float = 60.0, what: str = "condition") -> Any:
    """Poll `predicate` until it returns something truthy (returned), else fail naming `what`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")
