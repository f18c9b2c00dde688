"""Latency, errors, throughput, SLOs and freshness.

Per window: latency_seconds{quantile} (p50/p90/p95/p99 of successful requests
with a latency; exact, numpy's linear definition), error_ratio,
requests_per_second. Per configured SLO: slo_sli_ratio, slo_error_budget_remaining_ratio
(over the SLO period, window label = the period, e.g. "28d"), slo_objective_ratio,
and slo_burn_rate over 5m/30m/1h/2h/6h/1d/3d (window label = that window).
Latency SLO events: good = status ok and latency <= threshold; an error is bad
(a failed request did not meet the objective, however fast it failed); an ok
request without a latency is left out. Error-rate SLO: bad = status error.
Freshness (window "now"): last_prediction_timestamp_seconds, seconds_since_last_prediction.

Gating: quantiles, error ratio, SLI and budget need min_samples requests.
Burn rates are reported from the first request on, with the request count as
sample_count: the alert rules apply their own minimum-traffic guard
(modelmon_monitor_sample_count), and a page-worthy burn on a quiet service
should not wait for a window of 100 requests.
"""

from __future__ import annotations

import sqlalchemy as sa

from modelmon.config import ResolvedModel, format_duration
from modelmon.monitors.aggregates import ok_quantiles
from modelmon.monitors.base import MetricRow, Window, WindowedRow, gated
from modelmon.monitors.queries import last_prediction_ts, request_counts
from modelmon.monitors.stats_latency import (
    QUANTILES,
    budget_remaining,
    burn_rate,
    quantile_label,
    ratio,
)
from modelmon.monitors.windows import BURN_RATE_WINDOWS, current_windows, trailing


def collect(conn: sa.Connection, model: ResolvedModel, now: float) -> list[WindowedRow]:
    windows = current_windows(model, now)
    out: list[WindowedRow] = []

    quantiles = ok_quantiles(conn, model.name, windows, "latency", QUANTILES)  # shared with accuracy
    for w, (n, qv) in zip(windows, quantiles, strict=True):
        for q in QUANTILES:
            value, status = gated(qv[q], n, model.min_samples)
            out.append(WindowedRow(w, MetricRow("latency_seconds", value, n, status, {"quantile": quantile_label(q)})))

    lengths = {f"w:{w.name}": w.seconds for w in windows}
    lengths |= {f"b:{k}": v for k, v in BURN_RATE_WINDOWS.items()}
    lengths |= {f"s:{s.name}": s.period for s in model.slos}
    thresholds = sorted({s.threshold for s in model.slos if s.kind == "latency" and s.threshold is not None})
    counts = request_counts(conn, model.name, now, lengths, thresholds)

    for w in windows:
        rc = counts[f"w:{w.name}"]
        value, status = gated(ratio(rc.errors, rc.total), rc.total, model.min_samples)
        out.append(WindowedRow(w, MetricRow("error_ratio", value, rc.total, status)))
        out.append(WindowedRow(w, MetricRow("requests_per_second", rc.total / w.seconds, rc.total, "ok")))

    for slo in model.slos:
        def bad_total(key: str, slo=slo) -> tuple[int, int]:
            rc = counts[key]
            if slo.kind == "error_rate":
                return rc.errors, rc.total
            assert rc.good_under is not None and slo.threshold is not None
            total = rc.ok_with_latency + rc.errors
            return total - rc.good_under[slo.threshold], total

        labels = {"slo": slo.name}
        period = trailing(format_duration(slo.period), slo.period, now)
        bad, total = bad_total(f"s:{slo.name}")
        sli, status = gated(ratio(total - bad, total), total, model.min_samples)
        budget, _ = gated(budget_remaining(bad, total, slo.objective), total, model.min_samples)
        out.append(WindowedRow(period, MetricRow("slo_sli_ratio", sli, total, status, labels)))
        out.append(WindowedRow(period, MetricRow("slo_error_budget_remaining_ratio", budget, total, status, labels)))
        out.append(WindowedRow(period, MetricRow("slo_objective_ratio", slo.objective, total, "ok", labels)))
        for name, seconds in BURN_RATE_WINDOWS.items():
            bad, total = bad_total(f"b:{name}")
            rate = burn_rate(bad, total, slo.objective)
            out.append(
                WindowedRow(
                    trailing(name, seconds, now),
                    MetricRow("slo_burn_rate", rate, total, "ok" if total else "no_data", labels),
                )
            )

    last = last_prediction_ts(conn, model.name, now)
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
