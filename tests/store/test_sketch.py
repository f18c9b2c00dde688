"""The sketch's documented bound, checked against numpy on awkward distributions.

`modelmon.store.sketch` promises: for values >= 0, every quantile it returns
from the bins lies within a * |true| of numpy's default (linear) percentile of
the same events, for any distribution and any N >= 1, and sketches merge by
adding bin counts. Latency SLO alerts and label-delay figures rely on this, so
it is checked where it is most likely to break: heavy tails, far-apart modes,
one or two events (interpolation between far-apart order statistics), exact
zeros next to positives, and merged halves.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from modelmon.store import sketch

QS = (0.0, 0.01, 0.25, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0)
ACCURACIES = (0.01, 0.02)
SLACK = 1e-12  # relative: floating-point rounding of keys and interpolation at bin edges


def bins_of(values: np.ndarray, a: float) -> Counter[int]:
    return Counter(sketch.key(float(v), a) for v in values)


def errors(values: np.ndarray, a: float) -> list[tuple[float, float, float]]:
    """(q, sketch estimate, numpy's) for every q, after checking N."""
    n, est = sketch.quantiles(bins_of(values, a), QS, a)
    assert n == len(values)
    return [(q, est[q], float(np.percentile(values, 100 * q))) for q in QS]  # type: ignore[misc]


def assert_within_bound(values: np.ndarray, a: float) -> None:
    for q, got, want in errors(values, a):
        assert got is not None
        assert abs(got - want) <= a * abs(want) * (1 + SLACK) + SLACK * abs(want), (q, got, want)


def lognormal() -> np.ndarray:
    return np.random.default_rng(1).lognormal(mean=-3.0, sigma=2.0, size=50_000)


def bimodal() -> np.ndarray:
    rng = np.random.default_rng(2)
    fast = rng.lognormal(np.log(1e-3), 0.1, size=30_000)  # ~1 ms
    slow = rng.lognormal(np.log(2.0), 0.1, size=10_000)  # ~2 s
    return rng.permutation(np.concatenate([fast, slow]))


def zeros_and_positives() -> np.ndarray:
    rng = np.random.default_rng(3)
    return rng.permutation(np.concatenate([np.zeros(3_000), rng.exponential(0.5, size=7_000)]))


CASES = {
    "lognormal sigma 2": lognormal,
    "bimodal 1ms / 2s": bimodal,
    "one event": lambda: np.array([0.123]),
    "two events far apart": lambda: np.array([1e-3, 5.0]),
    "zeros mixed with positives": zeros_and_positives,
}


@pytest.mark.parametrize("a", ACCURACIES)
@pytest.mark.parametrize("case", sorted(CASES))
def test_quantiles_within_relative_accuracy_of_numpy(case: str, a: float) -> None:
    assert_within_bound(CASES[case](), a)


@pytest.mark.parametrize("a", ACCURACIES)
def test_merged_halves_are_the_sketch_of_the_union(a: float) -> None:
    values = np.concatenate([lognormal(), bimodal(), zeros_and_positives()])
    first, second = values[: len(values) // 3], values[len(values) // 3 :]
    merged = bins_of(first, a) + bins_of(second, a)  # adding counts, as the rollup upserts do
    union = bins_of(values, a)
    assert merged == union
    assert sketch.quantiles(merged, QS, a) == sketch.quantiles(union, QS, a)
    # pairs (as read back from a GROUP BY) give the same answer as a mapping
    assert sketch.quantiles(list(merged.items()), QS, a) == sketch.quantiles(union, QS, a)
    assert_within_bound(values, a)


def test_bound_is_tight_enough_to_mean_something() -> None:
    """At a = 0.01 the estimates are not exact (errors exist), the largest
    relative error is at most a, and the bound is not slack by orders of
    magnitude: some error is a sizeable fraction of a."""
    a = 0.01
    rel = [abs(got - want) / want for _, got, want in errors(lognormal(), a) if want > 0]
    assert any(r > 0 for r in rel)
    assert max(rel) <= a * (1 + SLACK) + SLACK
    assert max(rel) > a / 10


def test_zero_bin_and_tiny_values_count_as_zero() -> None:
    a = 0.01
    assert sketch.key(0.0, a) == sketch.ZERO_KEY
    assert sketch.key(sketch.ZERO_BELOW / 2, a) == sketch.ZERO_KEY
    assert sketch.bin_value(sketch.ZERO_KEY, a) == 0.0
    assert sketch.quantiles({}, QS, a) == (0, dict.fromkeys(QS))
    n, est = sketch.quantiles({sketch.ZERO_KEY: 5}, QS, a)
    assert n == 5 and set(est.values()) == {0.0}
