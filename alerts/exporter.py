"""Prometheus exposition of the monitors' latest results, rebuilt on each scrape.

One custom Collector reads the store, so a series exists only while the latest
monitor run still produces it: a model removed from the configuration (or one
whose discovered results went stale) disappears instead of lingering at its
last value. A monitor value is exposed only when its row's status is "ok";
every row, whatever its status, also yields a `modelmon_monitor_samples`
series (the sample count behind it, with its status as a label) so alert rules
can demand enough data and dashboards can say why a value is missing.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.samples import Sample
from sqlalchemy import Engine, func, select
from sqlalchemy.exc import SQLAlchemyError

from modelmon.config import Config
from modelmon.monitors.results import latest_results
from modelmon.store.tables import monitor_runs, predictions

log = logging.getLogger(__name__)

PREFIX = "modelmon_"
BASE_LABELS = ("model", "model_version", "window")
SAMPLE_LABELS = ("model", "model_version", "monitor", "metric", "window")
_NAME_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_LABEL_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")

# Families this collector or the ingest registry own; a monitor metric of the same
# name would produce a duplicate family, so it is dropped (and logged).
RESERVED = frozenset(
    {
        "monitor_samples",
        "monitor_last_success_timestamp_seconds",
        "monitor_last_run_duration_seconds",
        "last_prediction_timestamp_seconds",
        "store_up",
        "predictions_total",
        "feedback_total",
        "prediction_latency_seconds",
        "ingest_dead_letters_total",
        "consumer_lag_messages",
    }
)

METRIC_HELP: dict[str, str] = {
    "accuracy_ratio": "Share of labelled predictions that were correct in the window.",
    "accuracy_lower_ratio": "Lower bound of the 95% Wilson interval of accuracy_ratio.",
    "labeled_predictions": "Predictions in the window that have a label.",
    "label_coverage_ratio": "Share of the window's predictions that have a label.",
    "estimated_accuracy_ratio": "Accuracy estimated from the model's own scores (no labels needed).",
    "mean_confidence_ratio": "Mean probability of the predicted class.",
    "class_share_ratio": "Share of predictions per predicted class.",
    "class_shift_psi": "Population stability index of the predicted-class distribution against the baseline.",
    "class_shift_js_distance": "Jensen-Shannon distance of the predicted-class distribution against the baseline.",
    "class_shift_chi2_pvalue": "Chi-squared test p-value of the predicted-class counts against the baseline.",
    "label_share_ratio": "Share of labelled predictions per label (ground-truth class).",
    "label_shift_psi": "Population stability index of the label distribution against the baseline.",
    "label_shift_js_distance": "Jensen-Shannon distance of the label distribution against the baseline.",
    "label_shift_chi2_pvalue": "Chi-squared test p-value of the label counts against the baseline.",
    "latency_seconds": "Prediction latency quantile reported by the model service.",
    "slo_error_budget_remaining_ratio": "Share of the SLO's error budget left over its period.",
    "slo_burn_rate": "Error-budget burn rate over the window (1 = spends the budget exactly over the period).",
    "slice_selection_rate_ratio": "Share of the slice's predictions that are the positive class.",
    "fairness_demographic_parity_difference": "Largest minus smallest selection rate across the attribute's slices.",
    "fairness_disparate_impact_ratio": "Smallest over largest selection rate across the attribute's slices.",
    "fairness_equal_opportunity_difference": "Largest minus smallest true-positive rate across the attribute's slices.",
    "version_accuracy_difference": "Candidate minus baseline version accuracy (labelled predictions in the window).",
    "version_accuracy_difference_lower": "Lower bound of the Newcombe 95% interval of version_accuracy_difference.",
    "version_accuracy_difference_upper": "Upper bound of the Newcombe 95% interval of version_accuracy_difference.",
    "version_estimated_accuracy_difference": "Candidate minus baseline estimated accuracy (from scores, no labels).",
    "version_mean_confidence_difference": "Candidate minus baseline mean top-class probability.",
    "version_class_psi": "PSI of the candidate's predicted classes against the baseline version's.",
    "version_class_js_distance": "Jensen-Shannon distance between the two versions' predicted classes.",
    "version_class_chi2_statistic": "Chi-squared statistic of the test that both versions predict classes alike.",
    "version_class_chi2_pvalue": "P-value of the chi-squared test that both versions predict classes alike.",
    "version_latency_p95_ratio": "Candidate over baseline 95th-percentile latency.",
    "version_error_ratio_difference": "Candidate minus baseline error ratio.",
    "version_error_ratio_difference_lower": "Lower bound of the Newcombe 95% interval of version_error_ratio_difference.",
    "version_error_ratio_difference_upper": "Upper bound of the Newcombe 95% interval of version_error_ratio_difference.",
    "version_fairness_gap": "Largest demographic-parity difference over the slice attributes, per version role.",
    "version_worse": "1 if the candidate version is worse than the baseline beyond the margins, 0 if not; absent while inconclusive.",
    "version_verdict": "1 for the current verdict (worse, not_worse, inconclusive) of candidate against baseline, with its reason.",
}


def _labels_of(row: Mapping[str, Any]) -> dict[str, str]:
    labels = row.get("labels")
    if not labels and row.get("slice"):
        labels = dict(p.split("=", 1) for p in str(row["slice"]).split(",") if "=" in p)
    return {str(k): "" if v is None else str(v) for k, v in (labels or {}).items()}


class MonitorResultsCollector:
    """Yields monitor results, run freshness and last-prediction times from the store.

    `cache_seconds` lets several scrapers (HA Prometheus pairs, ad-hoc curls)
    share one store read; results change once per monitor interval anyway.
    """

    def __init__(
        self,
        engine: Engine,
        cfg: Config,
        cache_seconds: float = 1.0,
        stale_after: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._engine = engine
        self._cfg = cfg
        self._cache_seconds = cache_seconds
        self._clock = clock
        intervals = [cfg.model(m).interval for m in cfg.models] or [cfg.model("_").interval]
        # Results of models that are not configured (discovered from the store)
        # are dropped once no run has refreshed them for this long.
        self._stale_after = stale_after if stale_after is not None else max(900.0, 10 * max(intervals))
        self._lock = threading.Lock()
        self._cached: list[Metric] = []
        self._cached_at = -math.inf
        self._warned: set[str] = set()

    def describe(self) -> Iterable[Metric]:
        return []  # no store read when the registry registers us

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            now = self._clock()
            if now - self._cached_at >= self._cache_seconds:
                self._cached = self._build(now)
                self._cached_at = now
            families = list(self._cached)
        yield from families

    # -- building -----------------------------------------------------------

    def _visible(self, model: str, newest: float | None, now: float) -> bool:
        if model in self._cfg.models:
            return True
        if not self._cfg.monitors.discover_models or newest is None:
            return False
        return now - newest <= self._stale_after

    def _build(self, now: float) -> list[Metric]:
        store_up = GaugeMetricFamily(
            PREFIX + "store_up", "1 if the last scrape could read the store, else 0."
        )
        try:
            with self._engine.connect() as conn:
                rows = latest_results(conn)
                runs = [dict(r) for r in conn.execute(select(monitor_runs)).mappings()]
                newest: dict[str, float] = {}
                for r in rows:
                    newest[r["model"]] = max(newest.get(r["model"], -math.inf), float(r["computed_at"]))
                for r in runs:
                    at = r["last_attempt"] or r["last_success"]
                    if at is not None:
                        newest[r["model"]] = max(newest.get(r["model"], -math.inf), float(at))
                models = sorted(
                    m for m in set(self._cfg.models) | set(newest) if self._visible(m, newest.get(m), now)
                )
                last_pred = {
                    m: conn.execute(
                        select(func.max(predictions.c.ts)).where(predictions.c.model == m)
                    ).scalar()
                    for m in models
                }
        except SQLAlchemyError as exc:
            log.warning("metrics: cannot read the store: %s", exc.__class__.__name__)
            store_up.add_metric([], 0.0)
            return [store_up]
        store_up.add_metric([], 1.0)
        shown = set(models)
        families = self._result_families([r for r in rows if r["model"] in shown])
        families += self._run_families([r for r in runs if r["model"] in shown])
        ts = GaugeMetricFamily(
            PREFIX + "last_prediction_timestamp_seconds",
            "Event time of the newest stored prediction of the model (epoch seconds).",
            labels=["model"],
        )
        for m in models:
            if last_pred[m] is not None:
                ts.add_metric([m], float(last_pred[m]))
        families += [ts, store_up]
        return families

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message)

    def _result_families(self, rows: list[dict[str, Any]]) -> list[Metric]:
        by_metric: dict[str, list[tuple[dict[str, Any], dict[str, str]]]] = {}
        extra_keys: set[str] = set()
        for row in sorted(rows, key=lambda r: float(r["computed_at"])):
            metric = str(row["metric"])
            if metric in RESERVED:  # e.g. last_prediction_timestamp_seconds: read live instead
                continue
            if not _NAME_RE.match(metric):
                self._warn_once(metric, f"metrics: monitor metric {metric!r} is not a valid name; skipped")
                continue
            labels = _labels_of(row)
            bad = [k for k in labels if not _LABEL_RE.match(k) or k.startswith("__")
                   or k in SAMPLE_LABELS or k == "status"]
            if bad:
                self._warn_once(metric + repr(bad), f"metrics: {metric}: label(s) {bad} not exposable; skipped")
                continue
            by_metric.setdefault(metric, []).append((row, labels))
            extra_keys.update(labels)

        families: list[Metric] = []
        # Quantiles of one distribution share their sample count and status, and
        # only a summary may carry a "quantile" label (promtool check metrics).
        sample_keys = sorted(extra_keys - {"quantile"})
        samples = GaugeMetricFamily(
            PREFIX + "monitor_samples",
            "Samples behind each monitor result, with the result's status (ok, insufficient_data, "
            "maturing, no_baseline, no_data); the result's value is exposed only when status is ok.",
            labels=[*SAMPLE_LABELS, *sample_keys, "status"],
        )
        sample_series: dict[tuple[str, ...], tuple[str, float]] = {}
        for metric in sorted(by_metric):
            keys = sorted({k for _, labels in by_metric[metric] for k in labels})
            values: dict[tuple[str, ...], float] = {}
            counts: dict[tuple[str, ...], float] = {}
            for row, labels in by_metric[metric]:  # oldest first: a later duplicate wins
                base = [str(row["model"]), str(row["model_version"]), str(row["window"])]
                ident = tuple(base + [labels.get(k, "") for k in keys])
                value = row["value"]
                if row["status"] == "ok" and value is not None and not math.isnan(float(value)):
                    values[ident] = float(value)
                    counts[ident] = float(row["sample_count"] or 0)
                else:
                    values.pop(ident, None)
                sample_ident = (
                    str(row["model"]), str(row["model_version"]), str(row["monitor"]), metric,
                    str(row["window"]), *[labels.get(k, "") for k in sample_keys],
                )
                sample_series[sample_ident] = (str(row["status"]), float(row["sample_count"] or 0))
            if not values:
                continue
            help_text = METRIC_HELP.get(metric, f"modelmon monitor result {metric}.")
            names = [*BASE_LABELS, *keys]
            if "quantile" in keys:
                families.append(_summary(PREFIX + metric, help_text, names, values, counts))
                continue
            fam = GaugeMetricFamily(PREFIX + metric, help_text, labels=names)
            for ident in sorted(values):
                fam.add_metric(list(ident), values[ident])
            families.append(fam)
        for ident in sorted(sample_series):
            status, count = sample_series[ident]
            samples.add_metric([*ident, status], count)
        if sample_series:
            families.append(samples)
        return families

    def _run_families(self, runs: list[dict[str, Any]]) -> list[Metric]:
        success = GaugeMetricFamily(
            PREFIX + "monitor_last_success_timestamp_seconds",
            "When the monitor job last completed for the model (epoch seconds; 0 = attempted, never succeeded).",
            labels=["monitor", "model"],
        )
        duration = GaugeMetricFamily(
            PREFIX + "monitor_last_run_duration_seconds",
            "How long the monitor job's last run took.",
            labels=["monitor", "model"],
        )
        seen: set[tuple[str, str]] = set()
        for run in sorted(runs, key=lambda r: (str(r["monitor"]), str(r["model"]), str(r["job"]))):
            key = (str(run["monitor"]), str(run["model"]))
            if key in seen:
                continue
            seen.add(key)
            if run["last_success"] is not None or run["last_attempt"] is not None:
                success.add_metric(list(key), float(run["last_success"] or 0.0))
            if run["last_duration_seconds"] is not None:
                duration.add_metric(list(key), float(run["last_duration_seconds"]))
        return [f for f in (success, duration) if f.samples]


def _summary(
    name: str,
    help_text: str,
    label_names: list[str],
    values: dict[tuple[str, ...], float],
    counts: dict[tuple[str, ...], float],
) -> Metric:
    """Quantiles over a window as a summary: quantile samples plus `_count` (no `_sum`)."""
    fam = Metric(name, help_text, "summary")
    q = label_names.index("quantile")
    count_of: dict[tuple[tuple[str, str], ...], float] = {}
    for ident in sorted(values):
        labels = dict(zip(label_names, ident, strict=True))
        fam.samples.append(Sample(name, labels, values[ident]))
        rest = tuple((k, v) for i, (k, v) in enumerate(zip(label_names, ident, strict=True)) if i != q)
        count_of[rest] = counts[ident]
    for rest, count in sorted(count_of.items()):
        fam.samples.append(Sample(name + "_count", dict(rest), count))
    return fam
