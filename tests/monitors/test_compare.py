"""Version comparison: intervals and tests against statsmodels / scipy, the
verdict on a worse and on an equal candidate, and the false-verdict rate."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from quality_events import HOUR, NOW, model_settings, rows_by_key, store
from scipy.stats import chi2_contingency
from statsmodels.stats.proportion import confint_proportions_2indep

from modelmon.monitors import compare
from modelmon.monitors.stats_versions import chi2_homogeneity, newcombe_interval

DAY = 86400.0


def test_newcombe_interval_equals_statsmodels() -> None:
    rng = np.random.default_rng(1)
    cases = [(0, 10, 0, 10), (10, 10, 0, 10), (5, 7, 900, 1000), (1, 1, 0, 1)]
    for _ in range(300):
        n1, n2 = int(rng.integers(1, 5000)), int(rng.integers(1, 5000))
        cases.append((int(rng.integers(0, n1 + 1)), n1, int(rng.integers(0, n2 + 1)), n2))
    for c1, n1, c2, n2 in cases:
        ours = newcombe_interval(c1, n1, c2, n2)
        theirs = confint_proportions_2indep(c1, n1, c2, n2, method="newcomb", compare="diff")
        assert ours == pytest.approx(tuple(float(x) for x in theirs), abs=1e-9), (c1, n1, c2, n2)
    assert newcombe_interval(1, 0, 1, 2) is None


def test_homogeneity_test_equals_scipy_chi2_contingency() -> None:
    rng = np.random.default_rng(2)
    for k in (2, 3, 10):
        for _ in range(50):
            a = {f"c{i}": int(x) for i, x in enumerate(rng.integers(0, 400, size=k))}
            b = {f"c{i}": int(x) for i, x in enumerate(rng.integers(0, 400, size=k))}
            b["c0"] = 0  # a class one version never predicts
            stat, p, dof = chi2_homogeneity(a, b)
            classes = [c for c in sorted(a) if a[c] + b[c] > 0]
            table = np.array([[a[c] for c in classes], [b[c] for c in classes]])
            ref = chi2_contingency(table, correction=False)
            assert stat == pytest.approx(ref.statistic, rel=1e-9)
            assert p == pytest.approx(ref.pvalue, rel=1e-9, abs=1e-300)
            assert dof == ref.dof
    assert chi2_homogeneity({"a": 5}, {"a": 7}) is None


def _events(rng: np.random.Generator, version: str, n: int, accuracy: float, start: float,
            prefix: str, error_share: float = 0.01) -> list[dict[str, Any]]:
    out = []
    ts = rng.uniform(start, NOW, size=n)
    for i in range(n):
        truth = str(rng.integers(0, 2))
        right = rng.random() < accuracy
        pred = truth if right else str(1 - int(truth))
        conf = float(rng.uniform(0.5, 1.0))
        out.append({
            "model": "m", "model_version": version, "request_id": f"{prefix}{i}", "ts": float(ts[i]),
            "prediction": pred, "scores": None, "score_pred": conf, "score_max": conf, "entropy": 0.5,
            "latency_seconds": float(rng.lognormal(-3, 0.5)),
            "status": "error" if rng.random() < error_share else "ok",
            "slices": {"g": "a" if rng.random() < 0.5 else "b"}, "features": None, "schema_version": 1,
            "label": truth, "label_ts": float(ts[i]) + 30.0, "digest": f"d{prefix}{i}", "ingested_at": float(ts[i]),
        })
    return out


def _scenario(db_url: str, n: int, cand_accuracy: float, seed: int):
    rng = np.random.default_rng(seed)
    # v3 has been live for days; v4 is the canary that started an hour ago.
    events = _events(rng, "v3", 50, 0.9, NOW - 3 * DAY, "old")
    events += _events(rng, "v3", n, 0.9, NOW - HOUR, "b")
    events += _events(rng, "v4", n, cand_accuracy, NOW - HOUR, "c")
    return store(db_url, events), events


def _verdict(result) -> tuple[str, str, dict]:
    rows = rows_by_key(result, "1h")
    (key,) = [k for k in rows if k[0] == "version_verdict"]
    labels = dict(key[1])
    return labels["verdict"], labels["reason"], rows


@pytest.mark.parametrize(("n", "expected"), [(150, "inconclusive"), (4000, "worse")])
def test_candidate_five_points_worse_is_inconclusive_then_worse(db_url: str, n: int, expected: str) -> None:
    model = model_settings(positive_class="1", task="binary", slices=["g"], min_labels=100, min_samples=100)
    engine, events = _scenario(db_url, n, 0.85, seed=n)
    with engine.connect() as conn:
        result = compare.collect(conn, model, NOW)
    engine.dispose()
    verdict, reason, rows = _verdict(result)
    assert verdict == expected, (n, reason)
    labels = {"baseline": "v3", "candidate": "v4"}
    diff = rows[("version_accuracy_difference", tuple(sorted(labels.items())))]
    # the independent numbers on the same events
    window = [e for e in events if NOW - HOUR <= e["ts"] < NOW and e["status"] == "ok"]
    c = {v: sum(e["prediction"] == e["label"] for e in window if e["model_version"] == v) for v in ("v3", "v4")}
    t = {v: sum(e["model_version"] == v for e in window) for v in ("v3", "v4")}
    assert diff.value == pytest.approx(c["v4"] / t["v4"] - c["v3"] / t["v3"], abs=1e-12)
    lo, hi = confint_proportions_2indep(c["v4"], t["v4"], c["v3"], t["v3"], method="newcomb")
    low = rows[("version_accuracy_difference_lower", tuple(sorted(labels.items())))]
    high = rows[("version_accuracy_difference_upper", tuple(sorted(labels.items())))]
    assert (low.value, high.value) == (pytest.approx(lo, abs=1e-9), pytest.approx(hi, abs=1e-9))
    counts = {v: {k: sum(e["prediction"] == k for e in window if e["model_version"] == v) for k in "01"}
              for v in ("v3", "v4")}
    ref = chi2_contingency(np.array([[counts[v][k] for k in "01"] for v in ("v3", "v4")]), correction=False)
    p = rows[("version_class_chi2_pvalue", tuple(sorted(labels.items())))]
    assert p.value == pytest.approx(ref.pvalue, rel=1e-9)
    worse = rows[("version_worse", tuple(sorted(labels.items())))]
    assert worse.value == (1.0 if expected == "worse" else None)
    if expected == "inconclusive":
        assert reason == "accuracy_undecided"


def test_equal_candidate_is_not_worse_and_one_version_has_no_verdict(db_url: str) -> None:
    model = model_settings(min_labels=100, min_samples=100)
    engine, _ = _scenario(db_url, 4000, 0.9, seed=7)
    with engine.connect() as conn:
        verdict, reason, rows = _verdict(compare.collect(conn, model, NOW))
        assert (verdict, reason) == ("not_worse", "within_margins")
        # Long before v4 existed, only v3 has traffic: no comparison.
        verdict, reason, _ = _verdict(compare.collect(conn, model, NOW - 2 * DAY + HOUR))
        assert (verdict, reason) == ("none", "one_version")
    engine.dispose()


def test_configured_pair_overrides_auto(db_url: str) -> None:
    engine, _ = _scenario(db_url, 500, 0.9, seed=9)
    model = model_settings(compare={"baseline": "v4", "candidate": "v3"})
    with engine.connect() as conn:
        rows = rows_by_key(compare.collect(conn, model, NOW), "1h")
    engine.dispose()
    assert ("version_worse", (("baseline", "v4"), ("candidate", "v3"))) in rows


def test_equal_versions_false_worse_rate_over_many_windows() -> None:
    """Two equal versions (accuracy 0.9, error rate 1%), 1,000 seeded windows of
    5,000 predictions each: the count of `worse` verdicts (documented in the README)."""
    model = model_settings(min_labels=100, min_samples=100)
    rng = np.random.default_rng(12)
    verdicts: dict[str, int] = {}
    for _ in range(1000):
        summaries = []
        for _ in range(2):
            n = 5000
            errors = int(rng.binomial(n, 0.01))
            ok = n - errors
            correct = int(rng.binomial(ok, 0.9))
            summaries.append(compare.VersionSummary(
                total=n, errors=errors, ok=ok, labelled=ok, correct=correct,
                classes={"0": ok // 2, "1": ok - ok // 2},
            ))
        _, decided, _ = compare.compare(summaries[0], summaries[1], model)
        verdicts[decided] = verdicts.get(decided, 0) + 1
    assert verdicts.get("worse", 0) == 0, verdicts
    assert verdicts.get("not_worse", 0) > 700, verdicts  # the test has power, too
