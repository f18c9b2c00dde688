"""Research-baseline rows carry the baseline's own sample count (issue 13: they said 0)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from synth_events import NOW, events, migrated_engine, store

from modelmon.config import Config
from modelmon.monitors import shift
from modelmon.monitors.baselines import store_baseline

EVENTS = events(np.random.default_rng(3), 300, ["a", "b"], [3, 1], start=NOW - 3600, end=NOW, label_share=0.5)


def _collect(tmp_path: Path, predictions_n: int | None, labels_n: int | None) -> list:
    engine = migrated_engine(f"sqlite:///{tmp_path}/m.db")
    store(engine, EVENTS)
    with engine.begin() as conn:
        store_baseline(conn, "m", "predictions", {"a": 0.7, "b": 0.3}, predictions_n, "test", created_at=1.0)
        store_baseline(conn, "m", "labels", {"a": 0.6, "b": 0.4}, labels_n, "test", created_at=1.0)
    model = Config.model_validate(
        {"models": {"m": {"windows": ["1h"], "min_samples": 50, "min_labels": 50}}}
    ).model("m")
    with engine.connect() as conn:
        return [r.row for r in shift.collect(conn, model, NOW)]


def test_research_share_rows_carry_the_baselines_sample_count(tmp_path: Path) -> None:
    rows = _collect(tmp_path, 5000, 1234)
    research = [r for r in rows if r.metric.endswith("_baseline_share_ratio") and r.labels["baseline"] == "research"]
    assert {(r.metric, r.labels["class"]) for r in research} == {
        (f"{p}_baseline_share_ratio", c) for p in ("class", "label") for c in "ab"}
    for r in research:
        assert r.sample_count == (5000 if r.metric.startswith("class_") else 1234), r


def test_a_small_research_baseline_is_reported_not_gated(tmp_path: Path) -> None:
    """The chi-squared test takes the research shares as given: their size does not gate it."""
    rows = _collect(tmp_path, 20, None)
    share = [r for r in rows if r.metric == "class_baseline_share_ratio" and r.labels["baseline"] == "research"]
    assert share and all(r.sample_count == 20 for r in share)
    psi = [r for r in rows if r.metric == "class_shift_psi" and r.labels["baseline"] == "research"]
    ok = sum(e["status"] == "ok" for e in EVENTS)
    assert psi and {(r.status, r.sample_count) for r in psi} == {("ok", ok)}  # "*" and v1
    # A baseline stored without a count (shares only) has none to report.
    label_share = [r for r in rows if r.metric == "label_baseline_share_ratio" and r.labels["baseline"] == "research"]
    assert label_share and all(r.sample_count == 0 for r in label_share)
