"""The /v1 HTTP API, mounted on the service's shared Router.

    register(router, cfg, engine, producer=None)

`producer` is a KafkaProducer (see `modelmon.api.producer.feedback_producer`)
when feedback should go through the Kafka feedback topic, or None to write it
straight to the store. All /v1 endpoints except the OpenAPI description need a
bearer token from `server.api_tokens`; with none configured they answer 403.
"""

from __future__ import annotations

import json
import logging
import time
from functools import cache
from importlib.resources import files
from typing import Any

import yaml
from sqlalchemy import Engine

from modelmon.api import feedback as fb
from modelmon.api import queries
from modelmon.api.auth import DISABLED_MESSAGE, TokenAuth
from modelmon.api.report_http import ReportPages
from modelmon.api.report_http import handler as report_handler
from modelmon.api.sinks import FeedbackSink, KafkaSink, StoreSink
from modelmon.config import Config
from modelmon.contract import MAX_REQUEST_ID, MODEL_RE
from modelmon.http import HttpError, Request, Response, Router

log = logging.getLogger(__name__)


@cache
def _openapi_source() -> str:
    return (files("modelmon.api") / "openapi.yaml").read_text(encoding="utf-8")


def openapi_document(cfg: Config) -> dict[str, Any]:
    """The OpenAPI description, with this server's batch limit."""
    doc = yaml.safe_load(_openapi_source())
    batch = doc["components"]["schemas"]["FeedbackBatch"]["properties"]["events"]
    batch["maxItems"] = cfg.server.max_feedback_batch
    return doc


def _model_param(req: Request) -> str:
    model = req.params["model"]
    if not MODEL_RE.match(model):
        raise HttpError(404, "no such model: model names match [A-Za-z0-9_.-]{1,64}")
    return model


def _request_id_param(req: Request) -> str:
    rid = req.params["request_id"]
    if not rid or len(rid) > MAX_REQUEST_ID or "\x00" in rid:
        raise HttpError(404, f"no such prediction: request ids have 1 to {MAX_REQUEST_ID} characters")
    return rid


class Api:
    def __init__(self, cfg: Config, engine: Engine, sink: FeedbackSink) -> None:
        self.cfg = cfg
        self.engine = engine
        self.sink = sink
        self.auth = TokenAuth(cfg.server.api_tokens)

    def post_feedback(self, req: Request) -> Response:
        self.auth.check(req)
        fb.check_content_type(req)
        body = fb.read_json(req, self.cfg.server.max_body_bytes)
        items, rejected = fb.validate(
            body, self.cfg.server.max_feedback_batch, self.cfg.ingest.max_message_bytes,
            self.cfg.ingest.max_future_skew,
        )
        reply: dict[str, Any] = {
            "accepted": len(items),
            "rejected": [r.as_dict() for r in rejected],
        }
        if not items:
            first = rejected[0]
            raise HttpError(422, f"no event accepted: {first.detail}", reply)
        reply.update(self.sink.write(items))
        return Response.json(reply, 200)

    def get_models(self, req: Request) -> Response:
        self.auth.check(req)
        now = time.time()
        with self.engine.connect() as conn:
            models = queries.list_models(conn, sorted(self.cfg.models), now, int(self.cfg.rollups.fine))
        return Response.json({"models": models, "generated_at": queries.moment(now)})

    def get_summary(self, req: Request) -> Response:
        self.auth.check(req)
        model = _model_param(req)
        from modelmon.monitors.results import latest_results

        now = time.time()
        with self.engine.connect() as conn:
            results = latest_results(conn, model)
            runs = queries.monitor_run_status(conn, model)
            known = model in self.cfg.models or bool(results) or queries.model_exists(conn, model)
        if not known:
            raise HttpError(404, f"no such model: {model!r} is neither configured nor seen")
        body = {
            "model": model,
            "configured": model in self.cfg.models,
            "results": [_result(r) for r in results],
            "monitor_runs": runs,
            "generated_at": queries.moment(now),
        }
        return Response.json(queries.finite(body))

    def get_prediction(self, req: Request) -> Response:
        self.auth.check(req)
        model = _model_param(req)
        rid = _request_id_param(req)
        with self.engine.connect() as conn:
            trace = queries.prediction_trace(conn, model, rid)
            label_waiting = trace is None and queries.feedback_only(conn, model, rid)
        if trace is None:
            raise HttpError(
                404,
                f"no prediction {rid!r} stored for model {model!r}",
                {"feedback_received": label_waiting},
            )
        return Response.json(trace)


def _result(row: dict[str, Any]) -> dict[str, Any]:
    """A monitor result with its times also in RFC 3339."""
    out = dict(row)
    for key in ("window_start", "window_end", "computed_at"):
        if isinstance(out.get(key), int | float):
            out[f"{key}_time"] = queries.rfc3339(out[key])
    return out



def make_sink(cfg: Config, engine: Engine, producer: object | None) -> FeedbackSink:
    if producer is None:
        from modelmon.store.rollups import Specs

        return StoreSink(engine, Specs(cfg))
    return KafkaSink(producer, cfg.kafka.feedback_topic)


def register(router: Router, cfg: Config, engine: Engine, producer: object | None = None) -> None:
    """Add the /v1 routes; feedback goes to Kafka through `producer`, or to the store if None."""
    api = Api(cfg, engine, make_sink(cfg, engine, producer))
    if not api.auth.enabled:
        log.warning("%s; every /v1 request except /v1/openapi.* gets 403", DISABLED_MESSAGE)
    doc = openapi_document(cfg)
    as_yaml = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True).encode()
    as_json = json.dumps(doc, indent=1).encode()
    router.add("GET", "/v1/openapi.yaml", lambda req: Response(200, as_yaml, "application/yaml"))
    router.add("GET", "/v1/openapi.json", lambda req: Response(200, as_json, "application/json"))
    router.add("POST", "/v1/feedback", api.post_feedback)
    router.add("GET", "/v1/models", api.get_models)
    router.add("GET", "/v1/models/{model}/summary", api.get_summary)
    router.add("GET", "/v1/models/{model}/predictions/{request_id}", api.get_prediction)
    router.add("GET", "/v1/report", report_handler(cfg, ReportPages(cfg, engine), api.auth))
    log.info(
        "HTTP API on /v1 (feedback to %s)",
        "the store" if producer is None else f"Kafka topic {cfg.kafka.feedback_topic}",
    )
