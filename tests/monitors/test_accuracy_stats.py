"""The pure maths behind the accuracy monitors, against published values and
independent implementations (scipy, scikit-learn, numpy)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm
from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

from modelmon.monitors.stats_classification import (
    Z95,
    CalibrationBin,
    expected_calibration_error,
    summarize_confusion,
    wilson_interval,
)


def test_z95_is_the_normal_quantile():
    assert pytest.approx(norm.ppf(0.975), abs=1e-15) == Z95


# Newcombe R.G. (1998) "Two-sided confidence intervals for the single proportion:
# comparison of seven methods", Statistics in Medicine 17:857-872, Table II,
# method 3 (Wilson score interval without continuity correction), 95% limits
# printed to four decimals.
NEWCOMBE_1998_METHOD_3 = [
    (81, 263, 0.2553, 0.3662),
    (15, 148, 0.0624, 0.1605),
    (0, 20, 0.0000, 0.1611),
    (1, 29, 0.0061, 0.1718),
]


@pytest.mark.parametrize(("k", "n", "lower", "upper"), NEWCOMBE_1998_METHOD_3)
def test_wilson_matches_newcombe_1998(k, n, lower, upper):
    lo, hi = wilson_interval(k, n)
    assert round(lo, 4) == lower
    assert round(hi, 4) == upper


def _wilson_reference(k: int, n: int, conf: float = 0.95) -> tuple[float, float]:
    """Wilson (1927) in its quadratic-root form, z from scipy."""
    z = norm.ppf(1 - (1 - conf) / 2)
    p = k / n
    root = z * math.sqrt(z * z + 4 * n * p * (1 - p))
    return (2 * n * p + z * z - root) / (2 * (n + z * z)), (2 * n * p + z * z + root) / (
        2 * (n + z * z)
    )


def test_wilson_matches_independent_formula():
    rng = np.random.default_rng(7)
    for _ in range(500):
        n = int(rng.integers(1, 100_000))
        k = int(rng.integers(0, n + 1))
        lo, hi = wilson_interval(k, n)
        ref_lo, ref_hi = _wilson_reference(k, n)
        assert lo == pytest.approx(max(ref_lo, 0.0), abs=1e-12)
        assert hi == pytest.approx(min(ref_hi, 1.0), abs=1e-12)
        assert 0.0 <= lo <= k / n <= hi <= 1.0


def test_wilson_none_without_samples():
    assert wilson_interval(0, 0) is None


def _as_nan(x):
    return float("nan") if x is None else x


def test_confusion_summary_matches_sklearn_with_string_labels():
    rng = np.random.default_rng(3)
    classes = np.array(["cat", "dog", "bird", "Zebra", "ant"])
    y_true = rng.choice(classes[:4], size=3000, p=[0.5, 0.3, 0.15, 0.05])
    y_pred = np.where(rng.random(3000) < 0.7, y_true, rng.choice(classes, size=3000))
    cells: dict[tuple[str, str], int] = {}
    for p, t in zip(y_pred, y_true, strict=True):
        cells[(str(p), str(t))] = cells.get((str(p), str(t)), 0) + 1
    summary = summarize_confusion(cells, extra_classes=["never"])

    assert summary.labelled == 3000
    assert summary.accuracy == pytest.approx(accuracy_score(y_true, y_pred), abs=1e-12)
    assert summary.macro_f1 == pytest.approx(f1_score(y_true, y_pred, average="macro"), abs=1e-12)
    names = [c.cls for c in summary.classes]
    assert names == sorted([*classes.tolist(), "never"])
    prec, rec, f1, _ = precision_recall_fscore_support(
        y_true, y_pred, labels=names, zero_division=np.nan
    )
    for c, p, r, f in zip(summary.classes, prec, rec, f1, strict=True):
        np.testing.assert_allclose(_as_nan(c.precision), p, atol=1e-12, equal_nan=True)
        np.testing.assert_allclose(_as_nan(c.recall), r, atol=1e-12, equal_nan=True)
        np.testing.assert_allclose(_as_nan(c.f1), f, atol=1e-12, equal_nan=True)
    # "ant" is predicted but never the truth: recall undefined, F1 = 0 (sklearn agrees).
    ant = next(c for c in summary.classes if c.cls == "ant")
    assert ant.recall is None and ant.f1 == 0.0
    never = next(c for c in summary.classes if c.cls == "never")
    assert never.precision is None and never.recall is None and never.f1 is None


def _ece_reference(conf: np.ndarray, correct: np.ndarray, bins: int) -> float:
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.digitize(conf, edges[1:-1], right=False)
    ece = 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            ece += m.mean() * abs(correct[m].mean() - conf[m].mean())
    return ece


@pytest.mark.parametrize("bins", [2, 10, 15])
def test_ece_matches_numpy(bins):
    rng = np.random.default_rng(bins)
    conf = rng.beta(5, 2, size=5000)
    conf[:10] = 1.0  # the closed upper edge of the last bin
    correct = (rng.random(5000) < conf**1.5).astype(int)
    idx = np.minimum(np.floor(conf * bins), bins - 1).astype(int)
    cal = [
        CalibrationBin(
            b, int((idx == b).sum()), float(conf[idx == b].sum()), int(correct[idx == b].sum())
        )
        for b in range(bins)
    ]
    ece, n = expected_calibration_error(cal)
    assert n == 5000
    assert ece == pytest.approx(_ece_reference(conf, correct, bins), abs=1e-12)
    assert expected_calibration_error([]) == (None, 0)


@pytest.mark.parametrize(("k", "n"), [(81, 263), (15, 148), (0, 20), (1, 29), (999, 1000), (5, 5)])
def test_wilson_matches_scipy_binomtest(k, n):
    from scipy.stats import binomtest

    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    lo, hi = wilson_interval(k, n)
    assert lo == pytest.approx(ci.low, abs=1e-12)
    assert hi == pytest.approx(ci.high, abs=1e-12)
