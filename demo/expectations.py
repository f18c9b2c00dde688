"""What each demo incident should make alert, and when its alert's condition holds.

The demo's schedule, windows and `for:` scale are checked against this
(tests/demo/test_schedule.py) at durations from `simulator.MIN_PERIOD` up: each incident
must hold its alert's condition for `for:` plus the pipeline's lag, and the
condition must clear before the demo ends or the incident comes round again.

A monitor's condition is modelled by the incident's share of its window: on
once the share reaches `fire`, off again below `clear` (a window holds both
kinds of data for a while: the statistics need most of it to be sure, and let
go once the incident is a minority). The shares were measured by replaying the
simulator through the monitors' own statistics (e.g. the fairness gap over
`sex`: 23-43 s into the incident in a 1m window), then made conservative. The
fast SLO burn is computed: its windows (5m and 1h, 30m and 6h) are
Prometheus' own, they do not scale with the demo, so the latency regression is
kept to a share of the run small enough for the 30m ratio to drop under 6x.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from modelmon.demo.simulator import LATENCY_FACTOR, Incident

LAG = 7.0  # a monitor pass (every 5 s), then a scrape and a rule evaluation (every 1 s)
FRESHNESS = 20.0  # the demo's freshness threshold (demo/config.py)
FULL_PERIOD = 600.0  # from this period up: windows 1m and 5m, `for:` x 0.02

ALERTS = {
    "canary_regression": "ModelmonCandidateWorse",
    "class_shift": "ModelmonClassShift",
    "latency": "ModelmonSLOFastBurn",
    "fairness": "ModelmonFairnessGap",
    "pause": "ModelmonNoRecentPredictions",
}

# The fast burn: error ratios over 5m and 1h both above 14.4 x the 1% budget, or over
# 30m and 6h both above 6 x. Prometheus only counts from its first scrape, some
# seconds into the run. SLOW_SHARE: the share of fraud requests over the 300 ms SLO
# while latency is x LATENCY_FACTOR (lognormal, median 40 ms, sigma 0.45); about
# none otherwise.
_BURN_PAIRS = (((300.0, 3600.0), 14.4 * 0.01), ((1800.0, 21600.0), 6.0 * 0.01))
PROMETHEUS_START = 10.0
SLOW_SHARE = 0.5 * math.erfc(math.log(0.300 / (0.040 * LATENCY_FACTOR)) / 0.45 / math.sqrt(2))


@dataclass(frozen=True)
class Signal:
    fire: float  # share of a window that turns the condition on
    clear: float  # ... and below which it turns off
    labelled: bool = False  # seen through labels, so shifted by the label delay


SIGNALS = {
    # The rule takes PSI > 0.2 or JS distance > 0.1: JS crosses at a ~22% shifted mix
    # and was still over it at ~26% in a real run.
    "class_shift": Signal(0.35, 0.18),
    "canary_regression": Signal(0.60, 0.30, labelled=True),
    "fairness": Signal(0.80, 0.45),
}


def windows(period: float) -> list[float]:
    """The demo's monitor windows: a 5m window would span most of a short run and
    hold every alert on until its end, so short runs keep the 1m window only."""
    return [60.0, 300.0] if period >= FULL_PERIOD else [60.0]


def for_scale(period: float) -> float:
    """Multiplier of the rules' `for:` (10m -> 12 s from FULL_PERIOD up, shorter below)."""
    return 0.02 * min(1.0, period / FULL_PERIOD)


def label_delay(period: float) -> float:
    """The demo's mean label delay: a tenth of the period, at most 30 s."""
    return min(30.0, period / 10)


def _overlap(a: float, b: float, c: float, d: float) -> float:
    return max(0.0, min(b, d) - max(a, c))


def _share(
    t: float, start: float, end: float, window: float, gaps: tuple[tuple[float, float], ...] = (),
    since: float = 0.0,
) -> float:
    """The incident's share of the data in the window ending at `t` (`gaps`: no data)."""
    lo = max(since, t - window)
    data = (t - lo) - sum(_overlap(lo, t, a, b) for a, b in gaps)
    return _overlap(lo, t, start, end) / data if data > 0 else 0.0


def holds(inc: Incident, period: float, t: float, on: bool, gaps: tuple[tuple[float, float], ...] = ()) -> bool:
    """Whether the alert's condition holds at `t` (seconds of the run), given whether it held
    just before; `gaps`: when the model sends nothing (its pauses)."""
    if inc.kind == "pause":
        return inc.start + FRESHNESS <= t < inc.end + 2.0
    if inc.kind == "latency":
        return any(
            all(SLOW_SHARE * _share(t, inc.start, inc.end, w, since=PROMETHEUS_START) > burn for w in pair)
            for pair, burn in _BURN_PAIRS
        )
    sig = SIGNALS[inc.kind]
    shift = label_delay(period) if sig.labelled else 0.0
    need = sig.clear if on else sig.fire
    return any(_share(t, inc.start + shift, inc.end + shift, w, gaps) >= need for w in windows(period))


def condition_spans(
    inc: Incident, period: float, until: float, incidents: list[Incident] | None = None, step: float = 0.5
) -> list[tuple[float, float]]:
    """The (on, off) spans of the alert's condition from the incident's start to `until`
    (`incidents`: the whole schedule, whose pauses of the same model leave gaps)."""
    gaps = tuple((i.start, i.end) for i in incidents or [] if i.kind == "pause" and i.model == inc.model)
    spans, on, began, t = [], False, 0.0, inc.start
    while t < until:
        now = holds(inc, period, t, on, gaps)
        if now and not on:
            began = t
        elif on and not now:
            spans.append((began, t))
        on, t = now, t + step
    if on:
        spans.append((began, math.inf))
    return spans

