"""Mergeable quantile sketches for latency and label delay (DDSketch).

A value x > 0 is counted in the bin `key(x)` of ddsketch's LogarithmicMapping
with relative accuracy a: the bin (g^(k-1), g^k], g = (1 + a) / (1 - a), and
its representative value is within a relative error a of every value in the
bin. Bins are plain counts, so sketches merge by adding counts: the rollup
tables store one row per (bucket, bin), upserted with `n = n + excluded.n`,
and a window's sketch is a GROUP BY key over its buckets.

Quantiles follow numpy's default ("linear") definition on the same events:
with N values the q-quantile interpolates between the order statistics at
ranks floor(h) and floor(h) + 1, h = (N - 1) q, with weight h - floor(h). The
sketch replaces both order statistics by their bins' representative values,
each within relative error a of the true one; a convex combination of two
positive values each within a relative error a is within a relative error a
of the same combination of the true values. So for values >= 0 every
quantile lies within a * (true value) of numpy's, for any distribution and
any N >= 1 (plus a few ulps of floating-point rounding at bin edges).
Values of 0 (and below ZERO_BELOW) are counted exactly as 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import lru_cache

from ddsketch.mapping import LogarithmicMapping

#: The bin key of zero (and of values too small to map): far below any real key.
ZERO_KEY = -(2**31) + 1
#: Values below this (1 ns in seconds) count as 0.
ZERO_BELOW = 1e-9


@lru_cache(maxsize=8)
def mapping(relative_accuracy: float) -> LogarithmicMapping:
    return LogarithmicMapping(relative_accuracy)


def key(value: float, relative_accuracy: float) -> int:
    """The bin of a value >= 0 (negative values are clamped to 0)."""
    return key_function(relative_accuracy)(value)


@lru_cache(maxsize=8)
def key_function(relative_accuracy: float) -> Callable[[float], int]:
    """`key` with the accuracy bound: the ingest hot path calls it per event."""
    to_key = mapping(relative_accuracy).key

    def k(value: float) -> int:
        return ZERO_KEY if value < ZERO_BELOW else to_key(value)

    return k


def bin_value(k: int, relative_accuracy: float) -> float:
    """The representative value of a bin (0 for the zero bin)."""
    if k == ZERO_KEY:
        return 0.0
    return mapping(relative_accuracy).value(k)


def quantiles(
    bins: Mapping[int, int] | Iterable[tuple[int, int]],
    qs: Sequence[float],
    relative_accuracy: float,
) -> tuple[int, dict[float, float | None]]:
    """(N, {q: estimate}) from bin counts, numpy's linear definition (see above)."""
    items = sorted(bins.items() if isinstance(bins, Mapping) else bins)
    items = [(k, int(n)) for k, n in items if n > 0]
    total = sum(n for _, n in items)
    if total == 0:
        return 0, dict.fromkeys(qs)
    # cumulative counts: the order statistic of rank r (0-based) is in the first
    # bin whose cumulative count exceeds r
    cum = []
    acc = 0
    for k, n in items:
        acc += n
        cum.append((acc, k))

    def order_stat(r: int) -> float:
        lo, hi = 0, len(cum) - 1
        while lo < hi:
            mid = (lo + hi) // 2
            if cum[mid][0] > r:
                hi = mid
            else:
                lo = mid + 1
        return bin_value(cum[lo][1], relative_accuracy)

    out: dict[float, float | None] = {}
    for q in qs:
        h = (total - 1) * q
        r = math.floor(h)
        frac = h - r
        lower = order_stat(r)
        if frac == 0 or r + 1 >= total:
            out[q] = lower
        else:
            out[q] = lower + frac * (order_stat(r + 1) - lower)
    return total, out
