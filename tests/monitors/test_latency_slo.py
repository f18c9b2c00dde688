"""Latency quantiles, error ratio, throughput, SLOs and freshness from the store,
against numpy (np.percentile, linear) and direct counting on the same events."""

from __future__ import annotations

import numpy as np
import pytest
from synth_events import NOW, events, in_range, migrated_engine, store

from modelmon.config import Config
from modelmon.monitors import latency, stats_latency
from modelmon.monitors.windows import BURN_RATE_WINDOWS

DAY = 86400.0


def _model(**kw):
    settings = {
        "windows": ["5m", "1h"],
        "min_samples": 50,
        "slos": [
            {"name": "fast", "kind": "latency", "objective": 0.99, "threshold": "250ms", "period": "6d"},
            {"name": "errors", "kind": "error_rate", "objective": 0.995, "period": "6d"},
        ],
    }
    settings.update(kw)
    return Config.model_validate({"models": {"m": settings}}).model("m")


def _by_key(out):
    return {
        (r.window.name, r.row.metric, tuple(sorted(r.row.labels.items()))): r.row
        for r in out
        if r.row.model_version == "*"
    }


@pytest.fixture
def stored(db_url):
    engine = migrated_engine(db_url)
    rng = np.random.default_rng(21)
    rows = events(rng, 4000, ["a", "b"], start=NOW - 4 * DAY, end=NOW, error_share=0.01,
                  no_latency_share=0.02, prefix="bg")
    rows += events(rng, 1500, ["a", "b"], start=NOW - 3600, end=NOW, error_share=0.03,
                   no_latency_share=0.02, prefix="hot")
    # Exactly on window edges: `now - 1h` is inside, `now` is outside.
    rows += events(rng, 1, ["a"], start=NOW - 3600, end=NOW - 3600, prefix="edge0")
    rows += events(rng, 1, ["a"], start=NOW, end=NOW, prefix="edge1")
    rows += events(rng, 200, ["a"], start=NOW - 3600, end=NOW, model="other", prefix="o")
    store(engine, rows)
    return engine, rows


def test_latency_family_matches_direct_counts(stored):
    engine, rows = stored
    model = _model()
    with engine.connect() as conn:
        out = _by_key(latency.collect(conn, model, NOW))

    for name, seconds in (("5m", 300.0), ("1h", 3600.0)):
        win = in_range(rows, NOW - seconds, NOW)
        ok_lat = np.array([r["latency_seconds"] for r in win if r["status"] == "ok" and r["latency_seconds"] is not None])
        for q in stats_latency.QUANTILES:
            row = out[(name, "latency_seconds", (("quantile", f"{q:g}"),))]
            assert row.sample_count == ok_lat.size
            if ok_lat.size >= model.min_samples:
                # From DDSketch bins: within the documented relative error of numpy's.
                true = np.percentile(ok_lat, 100 * q)
                assert abs(row.value - true) <= model.sketch_relative_accuracy * true * (1 + 1e-9)
            else:
                assert row.value is None and row.status == "insufficient_data"
        errors = sum(r["status"] == "error" for r in win)
        er = out[(name, "error_ratio", ())]
        assert er.sample_count == len(win)
        if len(win) >= model.min_samples:
            assert er.value == pytest.approx(errors / len(win), rel=1e-12)
        assert out[(name, "requests_per_second", ())].value == pytest.approx(len(win) / seconds, rel=1e-12)

    def bad_total(win, slo):
        if slo == "errors":
            return sum(r["status"] == "error" for r in win), len(win)
        counted = [r for r in win if r["status"] == "error" or r["latency_seconds"] is not None]
        bad = sum(r["status"] == "error" or r["latency_seconds"] > 0.25 for r in counted)
        return bad, len(counted)

    for slo, objective in (("fast", 0.99), ("errors", 0.995)):
        bad, total = bad_total(in_range(rows, NOW - 6 * DAY, NOW), slo)
        sli = out[("6d", "slo_sli_ratio", (("slo", slo),))]
        assert sli.sample_count == total
        assert sli.value == pytest.approx(1 - bad / total, rel=1e-12)
        budget = out[("6d", "slo_error_budget_remaining_ratio", (("slo", slo),))]
        assert budget.value == pytest.approx(1 - (bad / total) / (1 - objective), rel=1e-12)
        for name, seconds in BURN_RATE_WINDOWS.items():
            bad, total = bad_total(in_range(rows, NOW - seconds, NOW), slo)
            burn = out[(name, "slo_burn_rate", (("slo", slo),))]
            assert burn.sample_count == total
            assert burn.value == pytest.approx((bad / total) / (1 - objective), rel=1e-12)

    last = max(r["ts"] for r in rows if r["model"] == "m" and r["ts"] <= NOW)
    assert out[("now", "last_prediction_timestamp_seconds", ())].value == last
    assert out[("now", "seconds_since_last_prediction", ())].value == pytest.approx(NOW - last)


def test_burn_rate_is_reported_with_few_requests_but_quantiles_are_gated(db_url):
    engine = migrated_engine(db_url)
    rng = np.random.default_rng(2)
    rows = events(rng, 20, ["a"], start=NOW - 200, end=NOW, error_share=0.5)
    store(engine, rows)
    with engine.connect() as conn:
        out = _by_key(latency.collect(conn, _model(min_samples=100), NOW))
    q = out[("5m", "latency_seconds", (("quantile", "0.99"),))]
    assert q.value is None and q.status == "insufficient_data"
    assert out[("5m", "error_ratio", ())].value is None
    assert out[("6d", "slo_sli_ratio", (("slo", "errors"),))].status == "insufficient_data"
    burn = out[("5m", "slo_burn_rate", (("slo", "errors"),))]
    errors = sum(r["status"] == "error" for r in rows)
    assert burn.status == "ok" and burn.sample_count == 20
    assert burn.value == pytest.approx(errors / 20 / 0.005)


def test_no_data_is_visible(db_url):
    engine = migrated_engine(db_url)
    with engine.connect() as conn:
        out = _by_key(latency.collect(conn, _model(), NOW))
    fresh = out[("now", "seconds_since_last_prediction", ())]
    assert fresh.value is None and fresh.status == "no_data"
    assert out[("5m", "requests_per_second", ())].value == 0
    assert out[("1h", "slo_burn_rate", (("slo", "fast"),))].status == "no_data"


def test_budget_can_go_negative():
    assert stats_latency.budget_remaining(3, 100, 0.99) == pytest.approx(-2.0)
    assert stats_latency.burn_rate(0, 0, 0.99) is None
