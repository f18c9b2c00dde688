"""Class-shift maths and the shift family against evidently and scipy on the same data."""

from __future__ import annotations

import math
from collections import Counter
from functools import cache

import numpy as np
import pytest
from scipy.stats import chisquare
from synth_events import NOW, events, in_range, migrated_engine, store

from modelmon.config import Config
from modelmon.monitors import shift
from modelmon.monitors.baselines import store_baseline
from modelmon.monitors.stats_shift import shift_stats

SQRT_LN2 = math.sqrt(math.log(2))


@cache
def _evidently():
    """Imported once per module: it costs seconds and hundreds of MB."""
    import pandas as pd
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift

    return pd, DataDefinition, Dataset, Report, ValueDrift


def evidently_psi_js(reference: list[str], current: list[str]) -> tuple[float, float]:
    pd, DataDefinition, Dataset, Report, ValueDrift = _evidently()
    dd = DataDefinition(categorical_columns=["prediction"])
    ref = Dataset.from_pandas(pd.DataFrame({"prediction": reference}), data_definition=dd)
    cur = Dataset.from_pandas(pd.DataFrame({"prediction": current}), data_definition=dd)
    report = Report(
        [
            ValueDrift(column="prediction", method="psi"),
            ValueDrift(column="prediction", method="jensenshannon"),
        ]
    )
    values = [
        m["value"] for m in report.run(current_data=cur, reference_data=ref).dict()["metrics"]
    ]
    return float(values[0]), float(values[1])


def _shares(values: list[str]) -> dict[str, float]:
    c = Counter(values)
    return {k: v / len(values) for k, v in c.items()}


CASES = {
    "same classes": (list("abcd"), [0.4, 0.3, 0.2, 0.1], list("abcd"), [0.25, 0.25, 0.3, 0.2]),
    "class unseen in baseline": (list("abc"), [0.5, 0.3, 0.2], list("abcz"), [0.4, 0.3, 0.2, 0.1]),
    "class absent now": (list("abcd"), [0.4, 0.3, 0.2, 0.1], list("abc"), [0.5, 0.3, 0.2]),
}


def _draw(rng, classes, weights, n):
    return [str(x) for x in rng.choice(classes, size=n, p=weights)]


@pytest.mark.parametrize("case", list(CASES))
def test_psi_and_js_match_evidently(case):
    rng = np.random.default_rng(len(case))
    bc, bw, cc, cw = CASES[case]
    reference = _draw(rng, bc, bw, 3000)
    current = _draw(rng, cc, cw, 2000)
    s = shift_stats(Counter(current), _shares(reference))
    psi, js_e = evidently_psi_js(reference, current)
    assert s.psi == pytest.approx(psi, rel=1e-9, abs=1e-12)
    # evidently's JS distance uses the natural log; ours is base 2.
    assert s.js_distance == pytest.approx(js_e / SQRT_LN2, rel=1e-9, abs=1e-12)
    assert 0 <= s.js_distance <= 1


def test_psi_smoothing_of_tiny_shares_matches_evidently():
    # A baseline class seen once in 20 000 (share 5e-5 <= 1e-4) switches evidently's
    # zero replacement to min/1e6; a current class absent from the baseline then
    # weighs in with that replacement.
    rng = np.random.default_rng(3)
    reference = _draw(rng, list("abc"), [0.6, 0.3, 0.1], 19_999) + ["rare"]
    current = _draw(rng, list("abcn"), [0.5, 0.3, 0.1, 0.1], 5000)
    s = shift_stats(Counter(current), _shares(reference))
    psi, js_e = evidently_psi_js(reference, current)
    assert s.psi == pytest.approx(psi, rel=1e-9)
    assert s.js_distance == pytest.approx(js_e / SQRT_LN2, rel=1e-9)


def test_identical_distributions_give_zero_shift():
    s = shift_stats({"a": 50, "b": 50}, {"a": 0.5, "b": 0.5})
    assert s.psi == 0 and s.js_distance == 0 and s.chi2_statistic == 0 and s.chi2_pvalue == 1
    assert s.max_ratio == 1


def test_chi_square_matches_scipy_over_baseline_classes():
    rng = np.random.default_rng(5)
    base = {"a": 0.5, "b": 0.3, "c": 0.2}
    current = Counter(_draw(rng, list("abcz"), [0.45, 0.3, 0.2, 0.05], 1500))
    s = shift_stats(current, base)
    seen = ["a", "b", "c"]
    obs = np.array([current[k] for k in seen], float)
    exp = obs.sum() * np.array([base[k] for k in seen])
    ref = chisquare(obs, f_exp=exp)
    assert s.chi2_statistic == pytest.approx(ref.statistic, rel=1e-12)
    assert s.chi2_pvalue == pytest.approx(ref.pvalue, rel=1e-9, abs=1e-300)
    assert s.unseen_share == pytest.approx(current["z"] / sum(current.values()), rel=1e-12)


def test_max_ratio_is_the_positive_5_to_15_percent_case():
    s = shift_stats({"positive": 150, "negative": 850}, {"positive": 0.05, "negative": 0.95})
    assert s.max_ratio == pytest.approx(3.0, rel=1e-12)
    assert s.max_ratio_class == "positive"


def test_only_unseen_classes_does_not_crash():
    s = shift_stats({"new": 300}, {"a": 0.5, "b": 0.5})
    assert s.unseen_share == 1.0
    assert s.chi2_statistic is None and s.chi2_pvalue is None
    assert s.max_ratio == 0.0
    assert math.isfinite(s.psi) and s.psi > 1 and s.js_distance == pytest.approx(1.0)


def _rows(out):
    return {(r.window.name, r.row.metric, tuple(sorted(r.row.labels.items()))): r.row for r in out}


def test_compare_gates_on_min_samples_and_baseline():
    few = shift.compare("class", {"a": 10, "b": 9}, {"a": 0.5, "b": 0.5}, "research", 100)
    stats = [r for r in few if r.metric.startswith("class_shift_")]
    assert stats and all(r.value is None and r.status == "insufficient_data" for r in stats)
    none = shift.compare("class", {"a": 100, "b": 90}, None, "research", 100)
    assert all(r.value is None and r.status == "no_baseline" for r in none)
    small_rolling = shift.compare(
        "class", {"a": 100, "b": 90}, {"a": 0.5, "b": 0.5}, "rolling", 100, 20
    )
    stats = [r for r in small_rolling if r.metric.startswith("class_shift_")]
    assert all(r.value is None and r.status == "insufficient_data" for r in stats)


def test_shift_family_on_the_store(db_url):
    """Windows and baselines from the store agree with evidently / scipy on the same rows."""
    engine = migrated_engine(db_url)
    rng = np.random.default_rng(7)
    classes = ["cat", "dog", "bird", "fish"]
    rows = events(
        rng,
        3000,
        classes,
        [4, 3, 2, 1],
        start=NOW - 7200,
        end=NOW - 3600,
        label_share=0.5,
        label_weights=[1, 1, 1, 1],
        prefix="old",
    )
    rows += events(
        rng,
        2500,
        classes + ["newt"],
        [3, 3, 2, 1, 1],
        start=NOW - 3600,
        end=NOW,
        label_share=0.5,
        label_weights=[2, 1, 1, 1, 0],
        prefix="new",
        error_share=0.1,
    )
    rows += events(rng, 400, ["x"], start=NOW - 3600, end=NOW, model="other", prefix="o")
    store(engine, rows)
    validation = _draw(rng, classes, [0.4, 0.3, 0.2, 0.1], 5000)
    val_labels = _draw(rng, classes, [0.25, 0.25, 0.25, 0.25], 5000)
    with engine.begin() as conn:
        store_baseline(conn, "m", "predictions", _shares(validation), 5000, "test", created_at=1.0)
        store_baseline(conn, "m", "labels", _shares(val_labels), 5000, "test", created_at=1.0)
    model = Config.model_validate(
        {"models": {"m": {"windows": ["5m", "1h"], "min_samples": 50, "min_labels": 50}}}
    ).model("m")
    with engine.connect() as conn:
        out = _rows(shift.collect(conn, model, NOW))

    # Failed requests are not predictions: the shift family leaves them out.
    cur = [r for r in in_range(rows, NOW - 3600, NOW) if r["status"] == "ok"]
    prev = [r for r in in_range(rows, NOW - 7200, NOW - 3600) if r["status"] == "ok"]
    assert len(cur) < len(in_range(rows, NOW - 3600, NOW))
    cur_pred = [r["prediction"] for r in cur]
    cur_lab = [r["label"] for r in cur if r["label"] is not None]
    prev_pred = [r["prediction"] for r in prev]

    research = ("baseline", "research")
    rolling = ("baseline", "rolling")
    psi, js_e = evidently_psi_js(validation, cur_pred)
    assert out[("1h", "class_shift_psi", (research,))].value == pytest.approx(psi, rel=1e-9)
    assert out[("1h", "class_shift_js_distance", (research,))].value == pytest.approx(
        js_e / SQRT_LN2, rel=1e-9
    )
    psi, js_e = evidently_psi_js(prev_pred, cur_pred)
    assert out[("1h", "class_shift_psi", (rolling,))].value == pytest.approx(psi, rel=1e-9)
    assert out[("1h", "class_shift_js_distance", (rolling,))].value == pytest.approx(
        js_e / SQRT_LN2, rel=1e-9
    )
    psi, _ = evidently_psi_js(val_labels, cur_lab)
    assert out[("1h", "label_shift_psi", (research,))].value == pytest.approx(psi, rel=1e-9)
    assert out[("1h", "label_shift_psi", (research,))].sample_count == len(cur_lab)

    seen = list(classes)
    counts = Counter(cur_pred)
    obs = np.array([counts[c] for c in seen], float)
    vs = _shares(validation)
    ref = chisquare(obs, f_exp=obs.sum() * np.array([vs[c] for c in seen]))
    assert out[("1h", "class_shift_chi2_statistic", (research,))].value == pytest.approx(
        ref.statistic, rel=1e-9
    )
    assert out[("1h", "class_shift_unseen_share_ratio", (research,))].value == pytest.approx(
        counts["newt"] / len(cur_pred), rel=1e-12
    )
    for c in classes + ["newt"]:
        row = out[("1h", "class_share_ratio", (("class", c),))]
        assert row.value == pytest.approx(counts[c] / len(cur_pred), rel=1e-12)
        assert row.sample_count == len(cur_pred)
    ratios = {c: counts[c] / len(cur_pred) / vs[c] for c in classes}
    best = max(ratios, key=ratios.get)
    assert out[("1h", "class_shift_max_ratio", (research, ("class", best)))].value == pytest.approx(
        ratios[best]
    )

    # The 5m window's rows are gated on their own count.
    n5 = sum(r["status"] == "ok" for r in in_range(rows, NOW - 300, NOW))
    psi5 = out[("5m", "class_shift_psi", (research,))]
    assert psi5.sample_count == n5
    assert (psi5.status == "ok") == (n5 >= 50)


def test_shift_family_gates_small_windows(db_url):
    engine = migrated_engine(db_url)
    rng = np.random.default_rng(8)
    store(engine, events(rng, 30, ["a", "b"], start=NOW - 3600, end=NOW))
    with engine.begin() as conn:
        store_baseline(conn, "m", "predictions", {"a": 0.5, "b": 0.5}, None, "test")
    model = Config.model_validate({"models": {"m": {"windows": ["1h"], "min_samples": 100}}}).model(
        "m"
    )
    with engine.connect() as conn:
        out = shift.collect(conn, model, NOW)
    gated = [r.row for r in out if r.row.metric.startswith(("class_shift_", "class_share_ratio"))]
    assert gated and all(r.value is None and r.status == "insufficient_data" for r in gated)
    labels = [r.row for r in out if r.row.metric.startswith("label_shift_")]
    assert labels and all(r.value is None and r.status == "no_data" for r in labels)
