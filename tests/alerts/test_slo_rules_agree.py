"""The generated SLO recording rules and the latency monitor count the same events as bad.

Issue 13: the latency rules judged an error by its latency, so a fast failure
counted as good while the monitor (and the README) count every error as bad.
One stream of predictions goes both ways: into ingest's metrics (scraped once a
minute into promtool input series, then evaluated by Prometheus' own engine
through the generated rules) and into the store (the monitor's burn rates);
both must match a direct numpy count of the same events.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from prometheus_client import CollectorRegistry

from modelmon.alerts.rules import generate
from modelmon.config import Config
from modelmon.contract import Prediction
from modelmon.ingest.metrics import IngestMetrics, latency_buckets_for
from modelmon.monitors import latency
from modelmon.store.engine import make_engine
from modelmon.store.migrate import upgrade
from modelmon.store.rollups import Specs
from modelmon.store.writes import write_batch

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
NOW = 1_800_000_000.0  # a whole minute: the store's windows end here, Prometheus evaluates at 60m
MINUTES = 60
THRESHOLD = 0.3
WINDOWS = {"5m": 300, "30m": 1800, "1h": 3600}
CFG = {
    "rollups": {"fine": "1m"},
    "models": {"fraud": {"min_samples": 10, "slos": [
        {"name": "latency-300ms", "kind": "latency", "threshold": "300ms", "objective": 0.99, "period": "28d"},
        {"name": "errors", "kind": "error_rate", "objective": 0.999, "period": "28d"},
    ]}},
}


def _events(rng: np.random.Generator, n: int) -> list[Prediction]:
    """Errors mostly fast (or without a latency), ok requests around the threshold.

    No event sits on a minute boundary, and the minute just after each window
    start stays empty, so whether Prometheus' range includes its first sample
    or extrapolates to it, every series' increase covers exactly the window.
    """
    minutes = [m for m in range(MINUTES) if m not in (4, 29, 59)]  # minutes before NOW
    out = []
    for i in range(n):
        m = int(rng.choice(minutes))
        ts = NOW - (m + 1) * 60 + float(rng.uniform(1, 59))
        error = rng.random() < 0.15
        lat: float | None
        if rng.random() < 0.1:
            lat = None
        elif error:
            lat = float(rng.uniform(0.001, 0.05))  # a fast failure
        else:
            lat = float(rng.choice([THRESHOLD, rng.uniform(0.01, 0.29), rng.uniform(0.31, 2.0)], p=[0.1, 0.8, 0.1]))
        out.append(Prediction(
            request_id=f"r{i}", model="fraud", model_version=f"v{i % 2}", ts=ts, prediction="1",
            scores=None, score_pred=None, score_max=None, entropy=None, latency_seconds=lat,
            status="error" if error else "ok", slices=None, features=None, schema_version=1, digest=f"d{i}",
        ))
    return out


def _reference(events: list[Prediction], seconds: int) -> dict[str, float]:
    """numpy: error ratio per SLO over (NOW - seconds, NOW]."""
    ts = np.array([e.ts for e in events])
    inside = (ts > NOW - seconds) & (ts <= NOW)
    err = np.array([e.status == "error" for e in events]) & inside
    ok = ~np.array([e.status == "error" for e in events]) & inside
    has_lat = np.array([e.latency_seconds is not None for e in events])
    lat = np.array([np.inf if e.latency_seconds is None else e.latency_seconds for e in events])
    total = err.sum() + (ok & has_lat).sum()
    bad = err.sum() + (ok & has_lat & (lat > THRESHOLD)).sum()
    return {"latency-300ms": float(bad / total), "errors": float(err.sum() / inside.sum())}


def _scraped_series(events: list[Prediction], cfg: Config) -> list[dict[str, str]]:
    """Ingest's metrics scraped at every minute 0..MINUTES (minute MINUTES = NOW)."""
    registry = CollectorRegistry()
    metrics = IngestMetrics(registry, latency_buckets=latency_buckets_for(cfg))
    values: dict[str, list[float]] = {}
    for k in range(MINUTES + 1):
        start, end = NOW - (MINUTES - k + 1) * 60, NOW - (MINUTES - k) * 60
        metrics.observe_predictions([e for e in events if start < e.ts <= end], "preds")
        for family in registry.collect():
            for s in family.samples:
                if s.name.endswith("_created"):
                    continue
                body = ",".join(f'{key}="{v}"' for key, v in sorted(s.labels.items()))
                values.setdefault(f"{s.name}{{{body}}}", [0.0] * k).append(s.value)
    return [{"series": name, "values": " ".join(repr(v) for v in vs)} for name, vs in sorted(values.items())]


def _monitor_burn(events: list[Prediction], cfg: Config, tmp_path: Path) -> dict[tuple[str, str], float]:
    engine = make_engine(f"sqlite:///{tmp_path}/store.db")
    upgrade(engine)
    with engine.begin() as conn:
        write_batch(conn, [(e, None) for e in events], [], [], source="http", now=NOW, specs=Specs(cfg))
    with engine.connect() as conn:
        rows = latency.collect(conn, cfg.model("fraud"), NOW)
    return {(r.window.name, r.row.labels["slo"]): r.row.value for r in rows
            if r.row.metric == "slo_burn_rate" and r.row.model_version == "*"}


@pytest.fixture
def events() -> list[Prediction]:
    return _events(np.random.default_rng(13), 3000)


def test_rules_and_monitor_count_fast_failures_as_bad(events: list[Prediction], tmp_path: Path) -> None:
    """Per SLO and burn window: the monitor's burn rate x budget = the rules' error ratio = numpy."""
    cfg = Config.model_validate(CFG)
    burn = _monitor_burn(events, cfg, tmp_path)
    budgets = {s.name: 1 - s.objective for s in cfg.model("fraud").slos}
    for window, seconds in WINDOWS.items():
        for slo, expected in _reference(events, seconds).items():
            assert burn[(window, slo)] * budgets[slo] == pytest.approx(expected, rel=1e-12), (window, slo)

    (tmp_path / "model-fraud.yml").write_text(generate(cfg)["model-fraud.yml"])
    exprs = []
    for window, seconds in WINDOWS.items():
        ref = _reference(events, seconds)
        assert 0.1 < ref["latency-300ms"] < 0.5  # fast failures are a good part of it
        for slo, expected in ref.items():
            sel = f'{{model="fraud",slo="{slo}"}}'
            exprs.append({
                "expr": f"abs(modelmon:slo_error_ratio:rate{window}{sel} - {expected!r}) < bool 1e-9",
                "eval_time": f"{MINUTES}m",
                "exp_samples": [{"labels": sel, "value": 1}],
            })
    unit = {
        "rule_files": ["model-fraud.yml"],
        "evaluation_interval": "1m",
        "tests": [{"interval": "1m", "input_series": _scraped_series(events, cfg), "promql_expr_test": exprs}],
    }
    (tmp_path / "agree.test.yml").write_text(yaml.safe_dump(unit, sort_keys=False))
    result = subprocess.run([PROMTOOL, "test", "rules", "agree.test.yml"], capture_output=True, text=True,
                            cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
