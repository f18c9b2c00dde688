"""Scale-out: 2 `modelmon ingest` + 2 `modelmon monitor` processes, one broker, one PostgreSQL.

The layout docs/readme/scale-out.md recommends, as real subprocesses, with a
real Prometheus scraping all four with the generated rules:

* every event is stored exactly once (counts, and a digest of the stored
  content against what was produced), labels joined to their predictions;
* the ingest counters of the two processes add up to what was produced, and
  the SLO recording rules (summed across processes) match numpy's ratio over
  the produced latencies and statuses;
* each monitor job ran once per tick: the two schedulers share the slots, the
  advisory locks let one of them run each, and the history (every pass, here)
  has no pass twice and no two passes closer than half an interval;
* the dead-letter alert fires (once, not once per process) on bad messages;
* the consumer-lag alert fires while the store holds the ingest writes back
  (both processes stay up and export how far behind they are), and once the
  store lets go, everything is stored, once;
* no rule fails to evaluate and no alert comes twice (once per process).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
import servers
import sqlalchemy as sa
import yaml
from kafka import KafkaProducer
from promstack import Prometheus

from modelmon.alerts.rules import RuleOptions, write_rules
from modelmon.config import load_config
from modelmon.store.engine import make_engine
from modelmon.store.migrate import upgrade

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MODEL, VERSION = "fraud", "v1"
SLO_THRESHOLD = 0.3  # seconds: the latency SLO's "good"
INTERVAL = 3.0  # the monitors' interval, seconds
PRED_PARTITIONS, FB_PARTITIONS = 4, 2
N_PRED, N_BAD, N_LAG = 3000, 240, 800
LAG_THRESHOLD = 100
FOR_SCALE = 0.005  # 10m `for:` -> 3 s
SCRAPE_SECONDS = 1.0  # promstack.Prometheus' default scrape interval
MIN_SPAN = 60.0  # seconds of counter samples before the SLO ratios are compared
PROCESS_LABELS = ("instance", "job", "pod")


def _config(bootstrap: str, db_url: str, preds: str, fb: str) -> dict[str, Any]:
    return {
        "database": {"url": db_url},
        "kafka": {"bootstrap_servers": bootstrap, "predictions_topic": preds, "feedback_topic": fb,
                  "group_id": f"g-{preds}",
                  # Tansu completes a group join in about half the session timeout.
                  "consumer": {**servers.TANSU_CONSUMER_DEFAULTS, "max_poll_interval_ms": 20000}},
        "ingest": {"batch_max_events": 200, "batch_max_age": "200ms", "status_interval": "2s",
                   "db_retry_initial": "200ms", "db_retry_max": "1s", "http_port": 0},
        "server": {"host": servers.HOST},
        # Every pass goes to the history (a pass at the same tick as the last one would not).
        "monitors": {"advisory_locks": True, "history_interval": "1ms"},
        "features": {"enabled": False},
        "rollups": {"fine": "1s", "coarse": "1m"},
        "defaults": {"min_samples": 50, "min_labels": 50,
                     "thresholds": {"consumer_lag_messages": LAG_THRESHOLD, "dead_letter_rate": 0.01}},
        "models": {MODEL: {
            "task": "binary", "positive_class": "1", "classes": ["0", "1"], "windows": ["10m"],
            "interval": f"{INTERVAL:g}s",
            "slos": [
                {"name": "latency", "kind": "latency", "threshold": f"{SLO_THRESHOLD * 1000:g}ms",
                 "objective": 0.99, "period": "1h"},
                {"name": "errors", "kind": "error_rate", "objective": 0.99, "period": "1h"},
            ],
        }},
    }


# -- events -------------------------------------------------------------------------


def _predictions(rng: np.random.Generator, n: int, prefix: str, now: float) -> list[dict[str, Any]]:
    latency_ms = np.round(rng.lognormal(np.log(120), 0.8, n), 3)
    error = rng.random(n) < 0.05
    out = []
    for i in range(n):
        p1 = float(np.round(rng.random(), 3))
        out.append({
            "request_id": f"{prefix}{i}", "model": MODEL, "model_version": VERSION,
            "timestamp": now - 90 + i * 60 / n, "prediction": int(p1 >= 0.5),
            "scores": {"0": round(1 - p1, 3), "1": p1}, "latency_ms": float(latency_ms[i]),
            "status": "error" if error[i] else "ok",
        })
    return out


def _feedback(preds: list[dict[str, Any]], rng: np.random.Generator) -> list[dict[str, Any]]:
    chosen = [p for p in preds if rng.random() < 1 / 3]
    return [{"request_id": p["request_id"], "model": MODEL, "timestamp": p["timestamp"] + 5,
             "label": int(rng.random() < 0.5)} for p in chosen]


def _send(prod: KafkaProducer, topic: str, values: list[bytes], partition: int | None = None) -> None:
    futures = [prod.send(topic, value=v, key=None if partition is not None else str(i).encode(),
                         partition=partition) for i, v in enumerate(values)]
    prod.flush()
    for f in futures:
        f.get(timeout=30)


def _encode(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _content_digest(rows: list[tuple[Any, ...]]) -> str:
    h = hashlib.sha256()
    for row in sorted(rows):
        h.update(repr(row).encode())
    return h.hexdigest()


def _produced_rows(preds: list[dict[str, Any]], labels: dict[str, str]) -> list[tuple[Any, ...]]:
    return [(p["request_id"], str(p["prediction"]), p["status"], round(p["latency_ms"] / 1000, 9),
             labels.get(p["request_id"])) for p in preds]


def _stored_rows(engine: sa.Engine) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT request_id, prediction, status, latency_seconds, label FROM predictions"
        )).all()
    return [(r[0], r[1], r[2], round(r[3], 9), r[4]) for r in rows]


# -- processes ----------------------------------------------------------------------


def _port(path: Path, child: servers.Child, timeout: float = 30) -> int:
    def written() -> bool:
        assert child.running(), servers.log_tail(child.log_path, 40)
        return path.exists() and path.read_text().strip().isdigit()

    assert servers.wait_until(written, timeout), servers.log_tail(child.log_path, 40)
    return int(path.read_text())


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


class Process:
    def __init__(self, name: str, command: str, config: Path, workdir: Path, *extra: str) -> None:
        port_file = workdir / f"{name}.port"
        env = {k: v for k, v in os.environ.items() if not k.startswith("MODELMON_")}
        self.child = servers.Child(
            name, [sys.executable, "-m", "modelmon", "-c", str(config), command,
                   "--port", "0", "--port-file", str(port_file), *extra],
            workdir / f"{name}.log", env={**env, "PYTHONUNBUFFERED": "1"},
        )
        self.name = name
        self.port = _port(port_file, self.child)
        self.url = f"http://{servers.HOST}:{self.port}"
        self.target = f"{servers.HOST}:{self.port}"

    def ready(self) -> bool:
        assert self.child.running(), servers.log_tail(self.child.log_path, 40)
        return _get(self.url + "/readyz")[0] == 200

    def metrics(self) -> str:
        return _get(self.url + "/metrics")[1].decode()


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture
def processes(workdir: Path) -> Iterator[list[Process]]:
    started: list[Process] = []
    yield started
    for p in started:  # ingest first (it commits its last batch), then the monitors
        p.child.stop(30)


# -- Prometheus ---------------------------------------------------------------------


def _value(prom: Prometheus, expr: str) -> float | None:
    result = prom.query(expr)
    assert len(result) <= 1, (expr, result)
    return result[0]["value"] if result else None


def _firing(prom: Prometheus, alert: str) -> list[dict[str, Any]]:
    return [a for a in prom.alerts() if a["labels"]["alertname"] == alert and a["state"] == "firing"]


def _no_alert_twice(prom: Prometheus) -> None:
    seen: dict[tuple[tuple[str, str], ...], int] = {}
    for a in prom.alerts():
        if a["labels"]["alertname"] == "ModelmonStoreUnreachable":  # per process by design
            continue
        key = tuple(sorted((k, v) for k, v in a["labels"].items() if k not in PROCESS_LABELS))
        seen[key] = seen.get(key, 0) + 1
    twice = {k: n for k, n in seen.items() if n > 1}
    assert not twice, twice


def _wait(check: Callable[[], bool], timeout: float, what: str) -> None:
    errors: list[Exception] = []
    if not servers.wait_until(check, timeout, 0.5, errors):
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}: {errors[-1:]}")


# -- the test -----------------------------------------------------------------------


def test_two_ingest_and_two_monitor_processes(
    kafka_bootstrap: str, kafka_topics: Callable[..., str], pg_url: str, workdir: Path,
    processes: list[Process],
) -> None:
    preds_topic, fb_topic = kafka_topics("preds", PRED_PARTITIONS), kafka_topics("fb", FB_PARTITIONS)
    raw = _config(kafka_bootstrap, pg_url, preds_topic, fb_topic)
    config = workdir / "modelmon.yaml"
    config.write_text(yaml.safe_dump(raw))
    cfg = load_config(config, environ={})
    engine = make_engine(pg_url)
    upgrade(engine, cfg=cfg)

    for name, command in (("ingest-a", "ingest"), ("ingest-b", "ingest")):
        processes.append(Process(name, command, config, workdir))
    for name in ("monitor-a", "monitor-b"):  # DEBUG: each job run is logged
        processes.append(Process(name, "monitor", config, workdir, "--log-level", "DEBUG"))
    ingest, monitors = processes[:2], processes[2:]
    _wait(lambda: all(p.ready() for p in processes), 60, "every process ready")
    rule_files = write_rules(cfg, workdir / "rules", RuleOptions(for_scale=FOR_SCALE))
    prom = Prometheus(workdir / "prometheus", [p.target for p in processes], rule_files)
    try:
        _wait(prom.targets_up, 30, "Prometheus scraping all four processes")
        _run(prom, cfg, engine, kafka_bootstrap, preds_topic, fb_topic, ingest, monitors)
    finally:
        prom.stop()
        engine.dispose()


def _run(prom: Prometheus, cfg: Any, engine: sa.Engine, bootstrap: str, preds_topic: str,
         fb_topic: str, ingest: list[Process], monitors: list[Process]) -> None:
    rng = np.random.default_rng(10)
    now = time.time()
    prod = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, acks=1)

    # Warm-up: an ok and an error prediction on every partition, so each process's
    # counters exist (at their first value) before the load: rate() counts the
    # increase after a series' first sample only.
    warm = _predictions(rng, 2 * PRED_PARTITIONS, "w", now)
    for i, p in enumerate(warm):
        p["status"] = ("ok", "error")[i % 2]
        _send(prod, preds_topic, [_encode(p)], partition=i // 2)
    _wait(lambda: all("modelmon_predictions_total{" in p.metrics()
                      and 'status="error"' in p.metrics() for p in ingest), 60,
          "both ingest processes to store their warm-up share")
    series = 'count by (instance) (modelmon_predictions_total{status="error"})'
    _wait(lambda: len(prom.query(series)) == 2, 30, "Prometheus to see both processes' counters")

    # The load: predictions, bad messages between them, feedback for a third.
    preds = _predictions(rng, N_PRED, "r", time.time())
    fb = _feedback(preds, rng)
    bad = [b"{not json" for _ in range(N_BAD)]
    values = [_encode(p) for p in preds]
    for k, b in enumerate(bad):
        values.insert(k * (len(values) // N_BAD), b)
    _send(prod, preds_topic, values)
    _send(prod, fb_topic, [_encode(f) for f in fb])
    produced = warm + preds
    labels = {f["request_id"]: str(f["label"]) for f in fb}

    def stored() -> bool:
        with engine.connect() as conn:
            n = conn.execute(sa.text("SELECT count(*) FROM predictions")).scalar()
            labelled = conn.execute(sa.text("SELECT count(*) FROM predictions WHERE label IS NOT NULL")).scalar()
            dead = conn.execute(sa.text("SELECT count(*) FROM dead_letters")).scalar()
        return (n, labelled, dead) == (len(produced), len(fb), N_BAD)

    _wait(stored, 90, "every event stored")
    _assert_stored_once(engine, produced, labels)
    _assert_ingest_counters(prom, ingest, produced)
    _wait(lambda: len(_firing(prom, "ModelmonDeadLetterRate")) == 1, 30, "the dead-letter alert")
    assert prom.rule_health() == []
    _no_alert_twice(prom)
    more = _assert_lag_alert(prom, engine, prod, preds_topic, rng, len(produced))
    prod.close()
    _assert_slo_recording(prom, preds + more)
    _assert_monitor_jobs_once(engine, monitors)


def _assert_stored_once(engine: sa.Engine, produced: list[dict[str, Any]], labels: dict[str, str]) -> None:
    with engine.connect() as conn:
        dup = conn.execute(sa.text(
            "SELECT count(*) FROM (SELECT model, request_id FROM predictions "
            "GROUP BY model, request_id HAVING count(*) > 1) d")).scalar()
        feedback = conn.execute(sa.text("SELECT count(*), count(DISTINCT request_id) FROM feedback")).one()
    assert dup == 0
    assert tuple(feedback) == (len(labels), len(labels))
    assert _content_digest(_stored_rows(engine)) == _content_digest(_produced_rows(produced, labels))


def _counter_sum(text: str, name: str, **match: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in match.items()):
                total += s.value
    return total


def _assert_ingest_counters(prom: Prometheus, ingest: list[Process], produced: list[dict[str, Any]]) -> None:
    """Each process counts its share; the shares add up to what was produced, in Prometheus too."""
    statuses = np.array([p["status"] for p in produced])
    latency = np.array([p["latency_ms"] / 1000 for p in produced])
    ok = statuses == "ok"
    texts = [p.metrics() for p in ingest]
    per_process = [_counter_sum(t, "modelmon_predictions_total", model=MODEL) for t in texts]
    assert all(n > 0 for n in per_process), per_process  # both took part
    assert sum(per_process) == len(produced)
    good = sum(_counter_sum(t, "modelmon_prediction_latency_seconds_bucket", model=MODEL,
                            le=str(SLO_THRESHOLD)) for t in texts)
    assert good == int(np.sum(ok & (latency <= SLO_THRESHOLD)))
    assert sum(_counter_sum(t, "modelmon_ingest_dead_letters_total") for t in texts) == N_BAD

    def scraped() -> bool:
        total = _value(prom, f'sum(modelmon_predictions_total{{model="{MODEL}"}})')
        errors = _value(prom, f'sum(modelmon_predictions_total{{model="{MODEL}", status="error"}})')
        return (total, errors) == (len(produced), float(np.sum(~ok)))

    _wait(scraped, 30, "Prometheus to sum both processes' counters to what was produced")


def _assert_slo_recording(prom: Prometheus, preds: list[dict[str, Any]]) -> None:
    """The recorded 5m error ratios against numpy over the load (the warm-up is each series'
    first sample, which rate() does not count).

    rate() scales each series' increase by its extrapolation to the window's edges: at
    most 1.1 scrape intervals at either end over the span it sampled, so every factor
    lies in [1, 1 + eps] with eps = 2.2 intervals / span. A ratio of sums of such terms
    is then within eps * (1 + eps) * q of the exact one, q being the exact share the
    rule divides (good for the latency SLO, bad for the error SLO).
    """
    status = np.array([p["status"] for p in preds])
    latency = np.array([p["latency_ms"] / 1000 for p in preds])
    good = float(np.mean((status == "ok") & (latency <= SLO_THRESHOLD)))
    bad = float(np.mean(status == "error"))
    for slo, want, share in (("latency", 1 - good, good), ("errors", bad, bad)):
        expr = f'modelmon:slo_error_ratio:rate5m{{model="{MODEL}", slo="{slo}"}}'

        def close(expr: str = expr, want: float = want, share: float = share) -> bool:
            got = _value(prom, expr)
            eps = 2.2 * SCRAPE_SECONDS / _sampled_seconds(prom, MIN_SPAN)
            return got is not None and abs(got - want) <= eps * (1 + eps) * share

        _wait(close, 30, f"{expr} close to numpy's {want:.4f} (got {_value(prom, expr)})")


def _sampled_seconds(prom: Prometheus, at_least: float) -> float:
    """The shortest span Prometheus has sampled an ingest counter over in the last 5m,
    once it is `at_least` seconds (a longer span bounds the extrapolation tighter)."""
    expr = (f'min(max_over_time(timestamp(modelmon_predictions_total{{model="{MODEL}"}})[5m:1s]) '
            f'- min_over_time(timestamp(modelmon_predictions_total{{model="{MODEL}"}})[5m:1s]))')
    _wait(lambda: (_value(prom, expr) or 0) >= at_least, 2 * at_least, f"{at_least:g} s of samples")
    return float(_value(prom, expr) or 0)


def _assert_monitor_jobs_once(engine: sa.Engine, monitors: list[Process]) -> None:
    """Each job ran once per tick: the runs both processes logged are exactly the passes
    in the history, none at the same tick, none closer than half an interval; both ran."""
    for p in monitors:
        p.child.stop(30)  # SIGTERM: running jobs finish, then the counts are final
        assert p.child.proc.returncode == 0, servers.log_tail(p.child.log_path, 40)
    with engine.connect() as conn:
        passes = conn.execute(sa.text(
            "SELECT monitor, computed_at, count(*), "
            "count(DISTINCT (metric, \"window\", slice, model_version)) FROM monitor_results "
            "WHERE model = :m GROUP BY monitor, computed_at ORDER BY monitor, computed_at"
        ), {"m": MODEL}).all()
    history: dict[str, list[float]] = {}
    for monitor, computed_at, n_rows, n_keys in passes:
        assert n_rows == n_keys, f"{monitor} at {computed_at} written twice"
        history.setdefault(monitor, []).append(float(computed_at))
    logs = [p.child.log_path.read_text(errors="replace") for p in monitors]
    assert {"accuracy", "latency", "shift"} <= set(history), sorted(history)
    for monitor, ticks in history.items():
        runs = [log.count(f"job {monitor}:{MODEL} done in") for log in logs]
        assert sum(runs) == len(ticks), (monitor, runs, ticks)
        assert len(ticks) >= 3, (monitor, ticks)
        assert np.all(np.diff(ticks) >= INTERVAL / 2), (monitor, ticks)
    totals = [sum(log.count(f"job {m}:{MODEL} done in") for m in history) for log in logs]
    assert all(n > 0 for n in totals), totals  # both schedulers took part


def _assert_lag_alert(prom: Prometheus, engine: sa.Engine, prod: KafkaProducer, topic: str,
                      rng: np.random.Generator, stored_before: int) -> list[dict[str, Any]]:
    """While the store holds the writes back, both processes stay up and export their lag.
    Returns the predictions it produced."""
    conn = psycopg.connect(engine.url.set(drivername="postgresql").render_as_string(hide_password=False))
    try:
        conn.execute("BEGIN")
        conn.execute("LOCK TABLE predictions IN EXCLUSIVE MODE")  # reads go on, writes wait
        more = _predictions(rng, N_LAG, "lag", time.time())
        _send(prod, topic, [_encode(p) for p in more])
        lag = f'sum(max by (topic, partition) (modelmon_consumer_lag_messages{{topic="{topic}"}}))'
        _wait(lambda: (_value(prom, lag) or 0) > LAG_THRESHOLD, 60, "the exported lag to pass the threshold")
        _wait(lambda: len(_firing(prom, "ModelmonConsumerLagHigh")) == 1, 30, "the consumer-lag alert")
        _no_alert_twice(prom)
    finally:
        conn.execute("ROLLBACK")
        conn.close()

    def all_stored() -> bool:
        with engine.connect() as c:
            return c.execute(sa.text("SELECT count(*) FROM predictions")).scalar() == stored_before + N_LAG

    _wait(all_stored, 60, "the held-back events stored once the store lets go")
    with engine.connect() as c:
        dup = c.execute(sa.text(
            "SELECT count(*) FROM (SELECT request_id FROM predictions GROUP BY request_id "
            "HAVING count(*) > 1) d")).scalar()
    assert dup == 0
    return more
