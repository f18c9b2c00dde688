"""Accuracy monitors over the store (SQLite and PostgreSQL) against scikit-learn,
numpy and scipy on the same events."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from quality_events import HOUR, NOW, in_window, make_events, model_settings, rows_by_key, store
from scipy.stats import norm
from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

from modelmon.monitors import accuracy

CLASSES = ["cat", "dog", "bird", "fish"]


def _wilson(k: int, n: int) -> tuple[float, float]:
    z = norm.ppf(0.975)
    p = k / n
    root = z * math.sqrt(z * z + 4 * n * p * (1 - p))
    return (2 * n * p + z * z - root) / (2 * (n + z * z)), (2 * n * p + z * z + root) / (
        2 * (n + z * z)
    )


def _value(rows, metric, **labels):
    return rows[(metric, tuple(sorted(labels.items())))]


@pytest.fixture
def stored(db_url):
    rng = np.random.default_rng(11)
    events = make_events(
        rng, 4000, CLASSES, label_share=0.7, error_share=0.03, start=NOW - 2 * HOUR, end=NOW + 600
    )
    events += make_events(rng, 300, CLASSES, model="other", start=NOW - HOUR, end=NOW)
    for i, e in enumerate(events[-300:]):
        e["request_id"] = f"o{i}"
    engine = store(db_url, events)
    yield engine, events
    engine.dispose()


def test_accuracy_rows_match_sklearn_and_numpy(stored):
    engine, events = stored
    model = model_settings(windows=["30m", "1h"], mature_coverage=0.5)
    with engine.connect() as conn:
        result = accuracy.collect(conn, model, NOW)
    # All versions ("*") and each version on its own, against its own events.
    for (name, length), version in itertools.product((("30m", 1800.0), ("1h", HOUR)), ("*", "v1", "v2")):
        rows = rows_by_key(result, name, version)
        window = [e for e in in_window(events, NOW - length, NOW) if version in ("*", e["model_version"])]
        labelled = [e for e in window if e["label"] is not None]
        y_true = np.array([e["label"] for e in labelled])
        y_pred = np.array([e["prediction"] for e in labelled])
        n = len(labelled)
        assert 200 < n < len(window)

        acc = _value(rows, "accuracy_ratio")
        assert (acc.status, acc.sample_count) == ("ok", n)
        assert acc.value == pytest.approx(accuracy_score(y_true, y_pred), abs=1e-9)
        lo, hi = _wilson(int((y_true == y_pred).sum()), n)
        assert _value(rows, "accuracy_lower_ratio").value == pytest.approx(lo, abs=1e-9)
        assert _value(rows, "accuracy_upper_ratio").value == pytest.approx(hi, abs=1e-9)
        assert _value(rows, "macro_f1_ratio").value == pytest.approx(
            f1_score(y_true, y_pred, average="macro"), abs=1e-9
        )
        prec, rec, f1, support = precision_recall_fscore_support(
            y_true, y_pred, labels=sorted(CLASSES), zero_division=np.nan
        )
        for i, cls in enumerate(sorted(CLASSES)):
            p = _value(rows, "precision_ratio", **{"class": cls})
            assert p.value == pytest.approx(prec[i], abs=1e-9)
            assert p.sample_count == int((y_pred == cls).sum())
            r = _value(rows, "recall_ratio", **{"class": cls})
            assert r.value == pytest.approx(rec[i], abs=1e-9)
            assert r.sample_count == support[i]
            assert _value(rows, "f1_ratio", **{"class": cls}).value == pytest.approx(
                f1[i], abs=1e-9
            )

        assert _value(rows, "labeled_predictions").value == n
        cov = _value(rows, "label_coverage_ratio")
        assert (cov.value, cov.sample_count) == (
            pytest.approx(n / len(window), abs=1e-12),
            len(window),
        )
        delays = np.array([e["label_ts"] - e["ts"] for e in labelled])
        for q in (0.5, 0.95):
            d = _value(rows, "label_delay_seconds", quantile=f"{q:g}")
            assert d.status == "ok" and d.sample_count == n
            # From DDSketch bins: within the documented relative error of numpy's.
            true = np.quantile(delays, q)
            assert abs(d.value - true) <= model.sketch_relative_accuracy * true * (1 + 1e-9)
    assert {wr.row.model_version for wr in result} == {"*", "v1", "v2"}
    assert all(wr.window.end == NOW for wr in result)


def test_below_min_labels_is_insufficient_and_carries_no_value(stored):
    engine, events = stored
    window = in_window(events, NOW - HOUR, NOW)
    n_labelled = sum(e["label"] is not None for e in window)
    model = model_settings(min_labels=n_labelled + 1, min_samples=len(window) + 1)
    with engine.connect() as conn:
        rows = rows_by_key(accuracy.collect(conn, model, NOW))
    for key, row in rows.items():
        if key[0] == "labeled_predictions":
            assert row.status == "ok" and row.value == n_labelled
            continue
        assert row.status == "insufficient_data", key
        assert row.value is None, key
    assert _value(rows, "accuracy_ratio").sample_count == n_labelled


def test_low_coverage_window_is_maturing(db_url):
    rng = np.random.default_rng(5)
    events = make_events(rng, 2000, CLASSES, label_share=0.2)
    engine = store(db_url, events)
    model = model_settings(mature_coverage=0.5)
    with engine.connect() as conn:
        rows = rows_by_key(accuracy.collect(conn, model, NOW))
    engine.dispose()
    labelled = [e for e in in_window(events, NOW - HOUR, NOW) if e["label"] is not None]
    acc = _value(rows, "accuracy_ratio")
    assert acc.status == "maturing"
    expected = accuracy_score([e["label"] for e in labelled], [e["prediction"] for e in labelled])
    assert acc.value == pytest.approx(expected, abs=1e-9)
    assert _value(rows, "macro_f1_ratio").status == "maturing"
    assert _value(rows, "precision_ratio", **{"class": "cat"}).status == "maturing"
    # Coverage and delay describe the labels themselves: they are not maturing.
    assert _value(rows, "label_coverage_ratio").status == "ok"
    assert _value(rows, "label_delay_seconds", quantile="0.5").status == "ok"


def test_empty_window_and_unpredicted_class(db_url):
    rng = np.random.default_rng(9)
    events = make_events(rng, 500, ["a", "b"], label_share=1.0, off_argmax_share=0.0)
    for e in events:
        e["prediction"] = "a"  # "b" is never predicted: precision of b is undefined
    engine = store(db_url, events)
    model = model_settings(min_labels=10, classes=["a", "b", "c"])
    with engine.connect() as conn:
        rows = rows_by_key(accuracy.collect(conn, model, NOW))
        empty = rows_by_key(accuracy.collect(conn, model, NOW - 10 * HOUR))
    engine.dispose()
    b = _value(rows, "precision_ratio", **{"class": "b"})
    assert (b.value, b.status, b.sample_count) == (None, "no_data", 0)
    assert _value(rows, "recall_ratio", **{"class": "b"}).value == 0.0
    c = _value(rows, "f1_ratio", **{"class": "c"})  # configured, never seen
    assert (c.value, c.status) == (None, "no_data")
    assert _value(empty, "accuracy_ratio").status == "no_data"
    assert _value(empty, "accuracy_ratio").value is None
    assert _value(empty, "label_coverage_ratio").status == "no_data"
    assert _value(empty, "labeled_predictions").value == 0
