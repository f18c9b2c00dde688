"""Class-distribution shift: predicted classes (and labels once they arrive)
in each window against the research baseline and a rolling baseline.

One rollup read (`buckets.class_cells` over the current and the rolling
windows, shared with accuracy) feeds every window and version ("*" and the
busiest `version_top_k`, each against its own rolling baseline); the maths
is in `stats_shift`.
Rows per window:
  {p}_share_ratio{class}                        current share (p = class | label)
  {p}_baseline_share_ratio{class, baseline}     baseline share (research | rolling)
  {p}_shift_psi / _js_distance / _chi2_statistic / _chi2_pvalue {baseline}
  {p}_shift_max_ratio{baseline, class}          largest current/baseline share ratio
  {p}_shift_unseen_share_ratio{baseline}        current share of classes the baseline lacks
Gating: below min_samples (labels: min_labels) every value is None with
status insufficient_data; without a baseline, status no_baseline.
"""

from __future__ import annotations

from collections.abc import Mapping

import sqlalchemy as sa

from modelmon.config import ResolvedModel
from modelmon.monitors.base import MetricRow, Status, Window, WindowedRow
from modelmon.monitors.baselines import latest_baseline
from modelmon.monitors.buckets import class_cells, versioned, versions_per_window
from modelmon.monitors.stats_shift import marginals, shares_from_counts, shift_stats
from modelmon.monitors.windows import current_windows, pass_windows, rolling_baseline

MAX_REPORTED_CLASSES = 100  # share series per window; the statistics use every class
STAT_METRICS = ("psi", "js_distance", "chi2_statistic", "chi2_pvalue")


def _reported_classes(*dists: Mapping[str, float], configured: list[str] | None) -> list[str]:
    weight: dict[str, float] = dict.fromkeys(configured or [], 0.0)
    for d in dists:
        for k, v in d.items():
            weight[k] = weight.get(k, 0.0) + v
    ranked = sorted(weight, key=lambda k: (-weight[k], k))
    return sorted(ranked[:MAX_REPORTED_CLASSES])


def compare(
    prefix: str,
    current: Mapping[str, int],
    baseline: Mapping[str, float] | None,
    baseline_name: str,
    minimum: int,
    baseline_n: int | None = None,
    baseline_minimum: int | None = None,
) -> list[MetricRow]:
    """Statistics of one current distribution against one baseline.

    `baseline_n` is the baseline's own sample count, reported on its share rows
    (0 when unknown). Below `baseline_minimum` (default `minimum`) the baseline
    is too small to compare with: that gates a rolling baseline, whereas the
    research one is taken as given (pass 0), as the chi-squared test takes it.
    """
    n = sum(current.values())
    labels = {"baseline": baseline_name}
    status: Status = "ok"
    if n == 0:
        status = "no_data"
    elif n < minimum:
        status = "insufficient_data"
    elif not baseline or sum(baseline.values()) <= 0:
        status = "no_baseline"
    elif baseline_n is not None and baseline_n < (minimum if baseline_minimum is None else baseline_minimum):
        status = "insufficient_data"  # a rolling baseline too small to compare with
    rows: list[MetricRow] = []
    if baseline:
        for k, v in baseline.items():
            rows.append(MetricRow(f"{prefix}_baseline_share_ratio", v, baseline_n or 0, "ok", {**labels, "class": k}))
    if status != "ok":
        for m in STAT_METRICS:
            rows.append(MetricRow(f"{prefix}_shift_{m}", None, n, status, labels))
        rows.append(MetricRow(f"{prefix}_shift_max_ratio", None, n, status, {**labels, "class": ""}))
        rows.append(MetricRow(f"{prefix}_shift_unseen_share_ratio", None, n, status, labels))
        return rows
    assert baseline is not None
    s = shift_stats(current, baseline)
    values = {
        "psi": s.psi,
        "js_distance": s.js_distance,
        "chi2_statistic": s.chi2_statistic,
        "chi2_pvalue": s.chi2_pvalue,
    }
    for m, v in values.items():
        rows.append(MetricRow(f"{prefix}_shift_{m}", v, n, "ok" if v is not None else "insufficient_data", labels))
    rows.append(
        MetricRow(f"{prefix}_shift_max_ratio", s.max_ratio, n, "ok", {**labels, "class": s.max_ratio_class or ""})
    )
    rows.append(MetricRow(f"{prefix}_shift_unseen_share_ratio", s.unseen_share, n, "ok", labels))
    return rows


def _distribution_rows(
    prefix: str,
    current: Mapping[str, int],
    research: Mapping[str, float] | None,
    research_n: int | None,
    rolling: Mapping[str, int],
    minimum: int,
    configured: list[str] | None,
) -> list[MetricRow]:
    n = sum(current.values())
    shares = shares_from_counts(current)
    value_status: Status = "ok" if n >= minimum else ("no_data" if n == 0 else "insufficient_data")
    rows = [
        MetricRow(f"{prefix}_share_ratio", shares.get(k, 0.0) if value_status == "ok" else None, n, value_status, {"class": k})
        for k in _reported_classes(shares, research or {}, configured=configured)
    ]
    rolling_shares = shares_from_counts(rolling)
    rows += compare(prefix, current, research, "research", minimum, research_n, baseline_minimum=0)
    rows += compare(prefix, current, rolling_shares or None, "rolling", minimum, sum(rolling.values()))
    # Baseline share series are bounded like the current ones.
    keep = set(_reported_classes(shares, research or {}, rolling_shares, configured=configured))
    return [r for r in rows if "baseline_share" not in r.metric or r.labels.get("class") in keep]


def collect(conn: sa.Connection, model: ResolvedModel, now: float) -> list[WindowedRow]:
    windows = current_windows(model, now)
    rolls = [rolling_baseline(w, model.rolling_baseline) for w in windows]
    versions = versions_per_window(conn, model, windows, now)
    every = pass_windows(model, now)  # the windows, then their rolling baselines
    cells = dict(zip(every, class_cells(conn, model, every, now), strict=True))
    research = {k: latest_baseline(conn, model.name, k) for k in ("predictions", "labels")}
    out: list[WindowedRow] = []
    for i, w in enumerate(windows):
        for v in versions[i]:
            pred, lab = marginals(cells[w].get(v, {}))
            rpred, rlab = marginals(cells[rolls[i]].get(v, {}))
            for prefix, cur, roll, kind, minimum in (
                ("class", pred, rpred, "predictions", model.min_samples),
                ("label", lab, rlab, "labels", model.min_labels),
            ):
                base = research[kind]
                rows = _distribution_rows(
                    prefix,
                    cur,
                    base.shares if base else None,
                    base.sample_count if base else None,
                    roll,
                    minimum,
                    model.classes,
                )
                out += [WindowedRow(_window_of(w, r, rolls[i]), r) for r in versioned(rows, v)]
    return out


def _window_of(w: Window, row: MetricRow, rolling: Window) -> Window:
    """Rolling-baseline share rows cover the baseline's span; the rest the window's."""
    if row.metric.endswith("_baseline_share_ratio") and row.labels.get("baseline") == "rolling":
        return rolling
    return w
