"""Latency, errors, throughput, SLOs and freshness.

Per window and version ("*" and the busiest `version_top_k`):
latency_seconds{quantile} (p50/p90/p95/p99 of successful requests with a
latency, from the rollups' DDSketch bins: within `rollups.sketch_relative_accuracy`
of numpy's linear definition on the same requests), error_ratio,
requests_per_second. SLO counts are exact (counts under each threshold). Per configured SLO: slo_sli_ratio, slo_error_budget_remaining_ratio
(over the SLO period, window label = the period, e.g. "28d"), slo_objective_ratio,
and slo_burn_rate over 5m/30m/1h/2h/6h/1d/3d (window label = that window).
Latency SLO events: good = status ok and latency <= threshold; an error is bad
(a failed request did not meet the objective, however fast it failed); an ok
request without a latency is left out. Error-rate SLO: bad = status error.
Freshness (window "now"): last_prediction_timestamp_seconds, seconds_since_last_prediction.

Gating: quantiles, error ratio, SLI and budget need min_samples requests.
Burn rates are reported from the first request on, with the request count as
sample_count: the alert rules apply their own minimum-traffic guard
(modelmon_monitor_samples), and a page-worthy burn on a quiet service
should not wait for a window of 100 requests.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sqlalchemy as sa

from modelmon.config import ResolvedModel, SLOConfig, format_duration
from modelmon.monitors.base import MetricRow, Window, WindowedRow, gated
from modelmon.monitors.buckets import (
    ALL_VERSIONS,
    all_versions,
    versioned,
    versions_per_window,
    window_sums,
)
from modelmon.monitors.stats_latency import (
    QUANTILES,
    budget_remaining,
    burn_rate,
    quantile_label,
    ratio,
)
from modelmon.monitors.windows import BURN_RATE_WINDOWS, current_windows, trailing, window_end
from modelmon.store import sketch
from modelmon.store.tables import rollup_latency_good, rollup_requests, rollup_sketches


@dataclass(slots=True)
class Counts:
    """One window's request counts (one version or all)."""

    total: int = 0
    errors: int = 0
    ok_with_latency: int = 0
    good_under: dict[float, int] = field(default_factory=dict)

    def bad_total(self, slo: SLOConfig) -> tuple[int, int]:
        """(bad, total) SLO events: an error is bad however fast; an ok request
        without a latency is left out of a latency SLO."""
        if slo.kind == "error_rate":
            return self.errors, self.total
        assert slo.threshold is not None
        total = self.ok_with_latency + self.errors
        return total - self.good_under.get(slo.threshold, 0), total


def _counts(
    conn: sa.Connection, model: ResolvedModel, windows: list[Window], now: float
) -> list[dict[str, Counts]]:
    """Per window: {version: Counts} ("*" and every version)."""
    requests = window_sums(conn, rollup_requests, model, windows, (), now)
    good = window_sums(conn, rollup_latency_good, model, windows, ("threshold",), now)
    out = []
    for req, gd in zip(requests, good, strict=True):
        per: dict[str, Counts] = {}
        for v, vals in all_versions(req, 0).items():
            n, errors, ok_lat = vals[()][:3]
            per[v] = Counts(int(n), int(errors), int(ok_lat))
        for v, vals in all_versions(gd, 1).items():
            per.setdefault(v, Counts()).good_under = {float(t): int(x[0]) for (t,), x in vals.items()}
        out.append(per)
    return out


def collect(conn: sa.Connection, model: ResolvedModel, now: float) -> list[WindowedRow]:
    windows = current_windows(model, now)
    end = window_end(model, now)
    versions = versions_per_window(conn, model, windows, now)
    out: list[WindowedRow] = []

    sketches = window_sums(conn, rollup_sketches, model, windows, ("kind", "key"), now)
    counts = _counts(conn, model, windows, now)
    for i, w in enumerate(windows):
        per_sketch = all_versions(sketches[i], 2)
        for v in versions[i]:
            bins = {k: int(x[0]) for (kind, k), x in per_sketch.get(v, {}).items() if kind == "latency"}
            n, qv = sketch.quantiles(bins, QUANTILES, model.sketch_relative_accuracy)
            rc = counts[i].get(v, Counts())
            rows = []
            for q in QUANTILES:
                value, status = gated(qv[q], n, model.min_samples)
                rows.append(MetricRow("latency_seconds", value, n, status, {"quantile": quantile_label(q)}))
            value, status = gated(ratio(rc.errors, rc.total), rc.total, model.min_samples)
            rows.append(MetricRow("error_ratio", value, rc.total, status))
            rows.append(MetricRow("requests_per_second", rc.total / w.seconds, rc.total, "ok"))
            out += [WindowedRow(w, r) for r in versioned(rows, v)]

    # SLOs: the period and every burn-rate window, all versions together.
    slo_windows = [trailing(format_duration(s.period), s.period, end) for s in model.slos]
    burn = [trailing(name, seconds, end) for name, seconds in BURN_RATE_WINDOWS.items()]
    if model.slos:
        slo_counts = _counts(conn, model, slo_windows + burn, now)
        periods = {s.name: slo_counts[i].get(ALL_VERSIONS, Counts()) for i, s in enumerate(model.slos)}
        burns = [slo_counts[len(slo_windows) + j].get(ALL_VERSIONS, Counts()) for j in range(len(burn))]
    for k, slo in enumerate(model.slos):
        labels = {"slo": slo.name}
        period = slo_windows[k]
        bad, total = periods[slo.name].bad_total(slo)
        sli, status = gated(ratio(total - bad, total), total, model.min_samples)
        budget, _ = gated(budget_remaining(bad, total, slo.objective), total, model.min_samples)
        out.append(WindowedRow(period, MetricRow("slo_sli_ratio", sli, total, status, labels)))
        out.append(WindowedRow(period, MetricRow("slo_error_budget_remaining_ratio", budget, total, status, labels)))
        out.append(WindowedRow(period, MetricRow("slo_objective_ratio", slo.objective, total, "ok", labels)))
        for j, bw in enumerate(burn):
            bad, total = burns[j].bad_total(slo)
            rate = burn_rate(bad, total, slo.objective)
            out.append(WindowedRow(bw, MetricRow("slo_burn_rate", rate, total, "ok" if total else "no_data", labels)))

    last = last_prediction_ts(conn, model, now)
    fresh = Window("now", now, now)
    status = "ok" if last is not None else "no_data"
    out.append(WindowedRow(fresh, MetricRow("last_prediction_timestamp_seconds", last, 1 if last else 0, status)))
    out.append(
        WindowedRow(
            fresh,
            MetricRow("seconds_since_last_prediction", None if last is None else now - last, 1 if last else 0, status),
        )
    )
    return out


def last_prediction_ts(conn: sa.Connection, model: ResolvedModel, now: float) -> float | None:
    """Latest prediction time at or before `now`, from the newest fine bucket
    that starts at or before it (two index seeks). A bucket that also holds
    predictions stamped after `now` (clock skew) reads as `now`."""
    r = rollup_requests
    fine = int(model.bucket_seconds)
    where = sa.and_(r.c.model == model.name, r.c.res == fine)
    newest = conn.execute(sa.select(sa.func.max(r.c.bucket)).where(where, r.c.bucket <= now)).scalar()
    if newest is None:
        return None
    last = conn.execute(sa.select(sa.func.max(r.c.last_ts)).where(where, r.c.bucket == newest)).scalar()
    return None if last is None else min(float(last), now)
