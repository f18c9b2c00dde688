"""Accuracy proxies over the store (SQLite and PostgreSQL) against numpy on the
same events, including string class labels whose sort order differs from the
order of the scores (the NannyML multiclass bug, their issue #346)."""

from __future__ import annotations

import numpy as np
import pytest
from quality_events import HOUR, NOW, in_window, make_events, model_settings, rows_by_key, store

from modelmon.monitors import proxies


def _row(rows, metric):
    return rows[(metric, ())]


def _confidence(events, task, positive=None, negative=None):
    """Per-row CBPE estimate, computed from the logged scores by class name."""
    out = []
    for e in events:
        s = e["scores"]
        if task == "multiclass":
            out.append(s[e["prediction"]])
        else:
            p = s[positive] if positive in s else 1.0 - s[negative]
            y_hat = 1.0 if e["prediction"] == positive else 0.0
            out.append(1.0 - abs(y_hat - p))
    return np.array(out)


def _ece(conf, correct, bins):
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.digitize(conf, edges[1:-1], right=False)
    return sum(
        (idx == b).mean() * abs(correct[idx == b].mean() - conf[idx == b].mean())
        for b in range(bins)
        if (idx == b).any()
    )


def _check_window(rows, window, conf, model):
    smax = np.array([e["score_max"] for e in window])
    ent = np.array([e["entropy"] for e in window])
    n = len(window)
    for metric, expected in (
        ("mean_confidence_ratio", smax.mean()),
        ("mean_entropy_nats", ent.mean()),
        ("low_confidence_ratio", (smax < model.confidence_threshold).mean()),
        ("estimated_accuracy_ratio", conf.mean()),
    ):
        row = _row(rows, metric)
        assert (row.status, row.sample_count) == ("ok", n), metric
        assert row.value == pytest.approx(expected, abs=1e-9), metric
    lab = np.array([e["label"] is not None for e in window])
    correct = np.array([e["label"] == e["prediction"] for e in window])[lab].astype(float)
    gap = _row(rows, "estimated_accuracy_gap_ratio")
    assert gap.sample_count == lab.sum()
    assert gap.value == pytest.approx(conf[lab].mean() - correct.mean(), abs=1e-9)
    ece = _row(rows, "expected_calibration_error_ratio")
    assert ece.value == pytest.approx(_ece(conf[lab], correct, model.calibration_bins), abs=1e-9)
    assert ece.value >= abs(gap.value) - 1e-12  # ECE bounds the overall gap


def test_multiclass_proxies_with_string_labels(db_url):
    # Model output order dog, cat, bird; sorted order bird, cat, dog.
    classes = ["dog", "cat", "bird"]
    rng = np.random.default_rng(21)
    events = make_events(
        rng, 3000, classes, label_share=0.6, error_share=0.02, start=NOW - 2 * HOUR
    )
    engine = store(db_url, events)
    model = model_settings(windows=["1h", "2h"], calibration_bins=12, confidence_threshold=0.55)
    with engine.connect() as conn:
        result = proxies.collect(conn, model, NOW)
    engine.dispose()
    for name, length in (("1h", HOUR), ("2h", 2 * HOUR)):
        window = in_window(events, NOW - length, NOW)
        _check_window(rows_by_key(result, name), window, _confidence(window, "multiclass"), model)


def test_estimate_keys_scores_by_class_name_not_sorted_position(db_url):
    """NannyML #346: probabilities matched to sorted class names by position.

    Every prediction is the top class with probability 0.8, logged in the
    order dog, cat, bird; pairing sorted names (bird, cat, dog) with the values
    positionally would give a very different estimate. The test fails if the
    estimate is not the name-keyed one.
    """
    rng = np.random.default_rng(2)
    classes = ["dog", "cat", "bird"]
    events = make_events(rng, 400, classes, label_share=0.0, off_argmax_share=0.0)
    for e in events:
        top = e["prediction"]
        rest = [c for c in classes if c != top]
        probs = {top: 0.8, rest[0]: 0.15, rest[1]: 0.05}
        e["scores"] = {c: probs[c] for c in classes}  # logged order dog, cat, bird
        e["score_pred"] = e["score_max"] = 0.8
    engine = store(db_url, events)
    with engine.connect() as conn:
        rows = rows_by_key(proxies.collect(conn, model_settings(), NOW))
    engine.dispose()
    window = in_window(events, NOW - HOUR, NOW)
    right = _confidence(window, "multiclass").mean()
    positional = np.mean(
        [list(e["scores"].values())[sorted(classes).index(e["prediction"])] for e in window]
    )
    est = _row(rows, "estimated_accuracy_ratio").value
    assert est == pytest.approx(right, abs=1e-9)
    assert abs(est - positional) > 0.2


@pytest.mark.parametrize("single_score", [None, "yes"])
def test_binary_cbpe(db_url, single_score):
    """Binary: mean of 1 - |y_hat - p| with p = P(positive), string labels, and
    predictions that are not always the top class (a threshold other than 0.5)."""
    rng = np.random.default_rng(4)
    events = make_events(
        rng, 2500, ["no", "yes"], label_share=0.8, off_argmax_share=0.3, single_score=single_score
    )
    engine = store(db_url, events)
    model = model_settings(task="binary", positive_class="yes", calibration_bins=10)
    with engine.connect() as conn:
        rows = rows_by_key(proxies.collect(conn, model, NOW))
    engine.dispose()
    window = in_window(events, NOW - HOUR, NOW)
    conf = _confidence(window, "binary", positive="yes", negative="no")
    _check_window(rows, window, conf, model)


def test_proxies_gated_and_maturing(db_url):
    rng = np.random.default_rng(8)
    events = make_events(rng, 120, ["a", "b", "c"], label_share=0.3)
    for e in events[:10]:
        e["scores"] = e["score_pred"] = e["score_max"] = e["entropy"] = None  # no scores logged
    engine = store(db_url, events)
    window = in_window(events, NOW - HOUR, NOW)
    scored = sum(e["score_max"] is not None for e in window)
    labelled = sum(e["label"] is not None and e["score_max"] is not None for e in window)
    with engine.connect() as conn:
        gated = rows_by_key(proxies.collect(conn, model_settings(min_samples=scored + 1), NOW))
        ok = rows_by_key(
            proxies.collect(conn, model_settings(min_samples=scored, min_labels=labelled), NOW)
        )
        empty = rows_by_key(proxies.collect(conn, model_settings(), NOW + 10 * HOUR))
    engine.dispose()
    row = _row(gated, "estimated_accuracy_ratio")
    assert (row.value, row.status, row.sample_count) == (None, "insufficient_data", scored)
    assert _row(ok, "estimated_accuracy_ratio").status == "ok"
    assert _row(ok, "mean_entropy_nats").sample_count == scored
    # 30% coverage is below the default mature_coverage of 0.5.
    gap = _row(ok, "estimated_accuracy_gap_ratio")
    assert gap.status == "maturing" and gap.value is not None and gap.sample_count == labelled
    assert _row(ok, "expected_calibration_error_ratio").status == "maturing"
    assert all(r.status == "no_data" and r.value is None for r in empty.values())
