"""Per-slice fairness over the store (SQLite and PostgreSQL) against fairlearn's
MetricFrame and its disparity metrics on the same events."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
from fairlearn.metrics import (
    MetricFrame,
    demographic_parity_difference,
    demographic_parity_ratio,
    equal_opportunity_difference,
    equalized_odds_difference,
    false_positive_rate,
    selection_rate,
    true_positive_rate,
)
from quality_events import HOUR, NOW, in_window, make_events, model_settings, rows_by_key, store
from scipy.stats import norm
from sklearn.metrics import accuracy_score

from modelmon.monitors import fairness

REGIONS = [f"r{i:02d}" for i in range(25)]
SLICES = {
    "sex": (["f", "m", "x"], [0.48, 0.47, 0.05]),
    "region": (REGIONS, [1.0 / (i + 1) ** 1.1 for i in range(25)]),
}


def _wilson(k, n):
    z = norm.ppf(0.975)
    p = k / n
    root = z * math.sqrt(z * z + 4 * n * p * (1 - p))
    return (2 * n * p + z * z - root) / (2 * (n + z * z)), (2 * n * p + z * z + root) / (
        2 * (n + z * z)
    )


def _groups(window, attribute, k):
    """Independent pooling: top k values by count (ties by value), rest __other__."""
    values = [(e["slices"] or {}).get(attribute) for e in window]
    counts = Counter(v for v in values if v is not None)
    top = {v for v, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:k]}
    return np.array(
        ["__missing__" if v is None else v if v in top else "__other__" for v in values]
    )


@pytest.fixture(scope="module")
def events():
    rng = np.random.default_rng(31)
    events = make_events(
        rng,
        6000,
        ["0", "1"],
        label_share=0.75,
        error_share=0.02,
        slices=SLICES,
        missing_share=0.04,
        start=NOW - 2 * HOUR,
    )
    # Make slice x stand out, so leaving it out of the gaps changes them.
    for e in events:
        if e["slices"] and e["slices"].get("sex") == "x":
            e["prediction"] = "1"
    return events


@pytest.fixture
def stored(db_url, events):
    engine = store(db_url, events)
    yield engine, events
    engine.dispose()


def _row(rows, metric, **labels):
    return rows[(metric, tuple(sorted(labels.items())))]


def test_slices_match_fairlearn(stored):
    engine, events = stored
    k, min_n = 6, 40
    model = model_settings(
        task="binary",
        positive_class="1",
        slices=["sex", "region"],
        slice_top_k=k,
        min_slice_samples=min_n,
        mature_coverage=0.5,
    )
    with engine.connect() as conn:
        result = fairness.collect(conn, model, NOW)
    rows = rows_by_key(result, "1h")
    window = in_window(events, NOW - HOUR, NOW)
    y_pred = np.array([e["prediction"] == "1" for e in window], dtype=int)
    labelled = np.array([e["label"] is not None for e in window])
    y_true = np.array([e["label"] == "1" for e in window], dtype=int)

    for attribute in ("sex", "region"):
        groups = _groups(window, attribute, k)
        names = set(groups)
        assert names == {
            r[1][1][1] for r in rows if r[0] == "slice_predictions" and r[1][0][1] == attribute
        }
        assert len(names) <= k + 2
        sel = MetricFrame(
            metrics=selection_rate, y_true=y_true, y_pred=y_pred, sensitive_features=groups
        ).by_group
        lab = MetricFrame(
            metrics={"acc": accuracy_score, "tpr": true_positive_rate, "fpr": false_positive_rate},
            y_true=y_true[labelled],
            y_pred=y_pred[labelled],
            sensitive_features=groups[labelled],
        ).by_group
        for g in names:
            in_g = groups == g
            n = int(in_g.sum())
            assert _row(rows, "slice_predictions", attribute=attribute, slice=g).value == n
            s = _row(rows, "slice_selection_rate_ratio", attribute=attribute, slice=g)
            assert s.sample_count == n
            if n < min_n:
                assert (s.status, s.value) == ("insufficient_data", None)
                continue
            assert s.status == "ok"
            assert s.value == pytest.approx(sel[g], abs=1e-9)
            lo, hi = _wilson(int(y_pred[in_g].sum()), n)
            assert _row(
                rows, "slice_selection_rate_lower_ratio", attribute=attribute, slice=g
            ).value == pytest.approx(lo, abs=1e-9)
            assert _row(
                rows, "slice_selection_rate_upper_ratio", attribute=attribute, slice=g
            ).value == pytest.approx(hi, abs=1e-9)
            pos = int((in_g & labelled & (y_true == 1)).sum())
            neg = int((in_g & labelled & (y_true == 0)).sum())
            for metric, col, denom in (
                ("slice_accuracy", "acc", int((in_g & labelled).sum())),
                ("slice_true_positive_rate", "tpr", pos),
                ("slice_false_positive_rate", "fpr", neg),
            ):
                row = _row(rows, f"{metric}_ratio", attribute=attribute, slice=g)
                assert row.sample_count == denom
                if denom < min_n:
                    assert (row.status, row.value) == ("insufficient_data", None)
                else:
                    assert row.status == "ok"  # 75% labelled > mature_coverage
                    assert row.value == pytest.approx(lab.loc[g, col], abs=1e-9)

        # Gaps over every slice whose rate is defined (small ones too), through fairlearn's
        # own functions; each within its interval.
        dpd = _row(rows, "fairness_demographic_parity_difference", attribute=attribute)
        assert dpd.value == pytest.approx(
            demographic_parity_difference(
                y_true, y_pred, sensitive_features=groups, method="between_groups"
            ),
            abs=1e-12,
        )
        assert dpd.sample_count == len(groups)
        assert _row(
            rows, "fairness_disparate_impact_ratio", attribute=attribute
        ).value == pytest.approx(
            demographic_parity_ratio(
                y_true, y_pred, sensitive_features=groups, method="between_groups"
            ),
            abs=1e-12,
        )
        lg = groups[labelled]
        yt, yp = y_true[labelled], y_pred[labelled]
        pos_n = Counter(lg[yt == 1])
        neg_n = Counter(lg[yt == 0])
        eo_ok = np.array([pos_n[g] >= 1 for g in lg])
        eodds_ok = np.array([pos_n[g] >= 1 and neg_n[g] >= 1 for g in lg])
        eo = _row(rows, "fairness_equal_opportunity_difference", attribute=attribute)
        assert eo.status == "ok"
        assert eo.value == pytest.approx(
            equal_opportunity_difference(yt[eo_ok], yp[eo_ok], sensitive_features=lg[eo_ok]),
            abs=1e-12,
        )
        assert _row(
            rows, "fairness_equalized_odds_difference", attribute=attribute
        ).value == pytest.approx(
            equalized_odds_difference(yt[eodds_ok], yp[eodds_ok], sensitive_features=lg[eodds_ok]),
            abs=1e-12,
        )
        for metric in (
            "fairness_demographic_parity_difference",
            "fairness_disparate_impact_ratio",
            "fairness_equal_opportunity_difference",
            "fairness_equalized_odds_difference",
        ):
            point = _row(rows, metric, attribute=attribute).value
            lo = _row(rows, f"{metric}_lower", attribute=attribute).value
            hi = _row(rows, f"{metric}_upper", attribute=attribute).value
            assert lo <= point <= hi


def test_small_slices_enter_the_gaps_and_widen_the_interval(stored):
    engine, events = stored
    window = in_window(events, NOW - HOUR, NOW)
    n_x = sum(1 for e in window if e["slices"] and e["slices"].get("sex") == "x")
    model = model_settings(
        task="binary", positive_class="1", slices=["sex"], min_slice_samples=n_x + 1
    )
    with engine.connect() as conn:
        rows = rows_by_key(fairness.collect(conn, model, NOW))
    x = _row(rows, "slice_selection_rate_ratio", attribute="sex", slice="x")
    assert (x.status, x.value, x.sample_count) == ("insufficient_data", None, n_x)
    assert _row(rows, "slice_predictions", attribute="sex", slice="x").value == n_x

    groups = _groups(window, "sex", 20)
    y_pred = np.array([e["prediction"] == "1" for e in window], dtype=int)
    without_x = demographic_parity_difference(
        y_pred[groups != "x"], y_pred[groups != "x"], sensitive_features=groups[groups != "x"]
    )
    with_x = demographic_parity_difference(y_pred, y_pred, sensitive_features=groups)
    assert abs(with_x - without_x) > 0.1  # slice x (always predicted positive) dominates
    dpd = _row(rows, "fairness_demographic_parity_difference", attribute="sex")
    assert (dpd.status, dpd.value) == ("ok", pytest.approx(with_x, abs=1e-12))
    lo = _row(rows, "fairness_demographic_parity_difference_lower", attribute="sex").value
    assert 0.1 < lo < with_x  # x's 100% selection rate is clear even on its few predictions


def test_top_k_pools_the_rest_as_other(stored):
    engine, events = stored
    model = model_settings(
        task="binary", positive_class="1", slices=["region"], slice_top_k=3, min_slice_samples=1
    )
    with engine.connect() as conn:
        rows = rows_by_key(fairness.collect(conn, model, NOW))
    window = in_window(events, NOW - HOUR, NOW)
    values = [(e["slices"] or {}).get("region") for e in window]
    counts = Counter(v for v in values if v is not None)
    top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
    reported = {
        labels[1][1]: row.value
        for (metric, labels), row in rows.items()
        if metric == "slice_predictions"
    }
    expected = {v: c for v, c in top}
    expected["__other__"] = sum(counts.values()) - sum(c for _, c in top)
    expected["__missing__"] = sum(v is None for v in values)
    assert reported == expected


def test_no_rows_without_a_positive_class(stored):
    engine, _ = stored
    model = model_settings(slices=["sex"])  # multiclass, no positive_class
    with engine.connect() as conn:
        assert fairness.collect(conn, model, NOW) == []


def test_empty_window_gives_no_data(stored):
    engine, _ = stored
    model = model_settings(task="binary", positive_class="1", slices=["sex"])
    with engine.connect() as conn:
        rows = fairness.collect(conn, model, NOW + 10 * HOUR)
    assert rows and all(wr.row.status == "no_data" and wr.row.value is None for wr in rows)


def test_gaps_do_not_wait_for_min_slice_samples(stored):
    """No slice reaches min_slice_samples: the per-slice rates are withheld, the gaps
    (and their intervals) are not; "insufficient_data" needs fewer than two slices."""
    engine, events = stored
    n = len(in_window(events, NOW - HOUR, NOW))
    model = model_settings(task="binary", positive_class="1", slices=["sex"], min_slice_samples=n)
    with engine.connect() as conn:
        rows = rows_by_key(fairness.collect(conn, model, NOW))
    gaps = [r for (metric, _), r in rows.items() if metric.startswith("fairness_")]
    assert len(gaps) == 12  # four gaps, each with _lower and _upper
    assert all(r.status in ("ok", "maturing") and r.value is not None for r in gaps)
    rates = [r for (metric, _), r in rows.items() if metric == "slice_selection_rate_ratio"]
    assert rates and all(r.status == "insufficient_data" for r in rates)
