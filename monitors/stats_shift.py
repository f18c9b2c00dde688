"""Pure maths of the class-distribution shift monitors (numpy + scipy.special).

Inputs are class -> count (current window) and class -> share (baseline).
The class axis is the union of classes seen in either, so a class never
seen in the baseline is a category like any other, not a crash.

PSI smoothing (the one evidently 0.7 uses, so the numbers agree to 1e-12):
in each distribution separately, zero shares are replaced by
min(non-zero share) / 1e6 if that minimum is <= 1e-4, else by 1e-4, without
renormalising; PSI = sum((b - c) * ln(b / c)).
Jensen-Shannon distance: base 2 (in [0, 1]) on the unsmoothed shares.
evidently reports natural-log JS (in [0, sqrt(ln 2)]); ours = theirs / sqrt(ln 2).
Chi-square: goodness of fit of the current counts to the baseline shares,
over the classes the baseline has (a class with baseline share 0 has expected
count 0 and no defined contribution); the current share of classes outside the
baseline is reported separately as `unseen_share`, and PSI catches it too.
The per-class ratio current/baseline is likewise over baseline classes only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from scipy.special import chdtrc


@dataclass(frozen=True, slots=True)
class ShiftStats:
    n: int  # current sample count
    psi: float
    js_distance: float
    chi2_statistic: float | None  # None: fewer than 2 baseline classes or nothing observed in them
    chi2_pvalue: float | None
    max_ratio: float | None
    max_ratio_class: str | None
    unseen_share: float  # current share of classes absent from the baseline
    classes: list[str] = field(default_factory=list)
    current_shares: list[float] = field(default_factory=list)
    baseline_shares: list[float] = field(default_factory=list)


def fill_zeros(shares: np.ndarray) -> np.ndarray:
    """evidently's zero replacement for PSI (see module docstring)."""
    out = np.array(shares, dtype=np.float64)
    nonzero = out[out != 0]
    if nonzero.size == 0:
        return out
    low = nonzero.min()
    eps = low / 10**6 if low <= 0.0001 else 0.0001
    out[out == 0] = eps
    return out


def psi(baseline: np.ndarray, current: np.ndarray) -> float:
    b, c = fill_zeros(baseline), fill_zeros(current)
    return float(np.sum((b - c) * np.log(b / c)))


def _kl2(p: np.ndarray, m: np.ndarray) -> float:
    mask = p > 0
    return float(np.sum(p[mask] * np.log2(p[mask] / m[mask])))


def js_distance(baseline: np.ndarray, current: np.ndarray) -> float:
    """Jensen-Shannon distance, base 2; inputs are normalised to sum 1."""
    p = np.asarray(baseline, dtype=np.float64)
    q = np.asarray(current, dtype=np.float64)
    p, q = p / p.sum(), q / q.sum()
    m = (p + q) / 2.0
    d = (_kl2(p, m) + _kl2(q, m)) / 2.0
    return math.sqrt(max(d, 0.0))


def chi2_gof(observed: np.ndarray, expected_shares: np.ndarray) -> tuple[float, float] | None:
    """(statistic, p-value) as scipy.stats.chisquare(observed, n * shares)."""
    obs = np.asarray(observed, dtype=np.float64)
    shares = np.asarray(expected_shares, dtype=np.float64)
    n = obs.sum()
    if obs.size < 2 or n <= 0 or shares.sum() <= 0:
        return None
    exp = n * shares / shares.sum()
    stat = float(np.sum((obs - exp) ** 2 / exp))
    return stat, float(chdtrc(obs.size - 1, stat))


def shift_stats(current: Mapping[str, int], baseline: Mapping[str, float]) -> ShiftStats:
    """All shift statistics of current counts against baseline shares."""
    classes = sorted({k for k, v in current.items() if v > 0} | {k for k, v in baseline.items() if v > 0})
    counts = np.array([current.get(k, 0) for k in classes], dtype=np.float64)
    base = np.array([baseline.get(k, 0.0) for k in classes], dtype=np.float64)
    n = int(counts.sum())
    if n <= 0 or base.sum() <= 0:
        raise ValueError("shift_stats needs current counts and a non-empty baseline")
    base = base / base.sum()
    cur = counts / n
    seen = base > 0
    chi = chi2_gof(counts[seen], base[seen])
    ratios = cur[seen] / base[seen]
    seen_classes = [k for k, s in zip(classes, seen, strict=True) if s]
    i = int(np.argmax(ratios))
    return ShiftStats(
        n=n,
        psi=psi(base, cur),
        js_distance=js_distance(base, cur),
        chi2_statistic=None if chi is None else chi[0],
        chi2_pvalue=None if chi is None else chi[1],
        max_ratio=float(ratios[i]),
        max_ratio_class=seen_classes[i],
        unseen_share=float(cur[~seen].sum()),
        classes=classes,
        current_shares=[float(x) for x in cur],
        baseline_shares=[float(x) for x in base],
    )


def shares_from_counts(counts: Mapping[str, int]) -> dict[str, float]:
    n = sum(counts.values())
    return {k: v / n for k, v in counts.items() if v > 0} if n > 0 else {}


def marginals(
    counts: Mapping[tuple[str, str | None], int],
) -> tuple[dict[str, int], dict[str, int]]:
    """(predicted-class counts, label counts over labelled rows)."""
    pred: dict[str, int] = {}
    lab: dict[str, int] = {}
    for (p, label), n in counts.items():
        pred[p] = pred.get(p, 0) + n
        if label is not None:
            lab[label] = lab.get(label, 0) + n
    return pred, lab


