"""The `feature_drift` and `data_quality` families: a window's input features against the reference.

Both read the same two sides, so one computation (`compute`) makes the rows of both;
the worker process (monitors/feature_worker.py) runs it and keeps the other family's
rows for its job of the same tick. Per model and window (`features.windows`, ending on
the fine-bucket boundary like every window, all versions together):

* the **sample**: the window's `features.sample_rows` predictions carrying features with
  the smallest digest (modelmon.store.features.sample_window: deterministic, unbiased);
* the **reference**: the model's stored reference (`modelmon baseline set --features`),
  read as columns once per (model, reference) and cached (`ReferenceCache`);
* the **features**: the reference's, in its order, then the current-only ones by
  frequency, at most `features.max_per_model`; the others are counted in
  `features_omitted`.

Rows (MetricRow.metric, exported with the `modelmon_` prefix):
  feature_drift: feature_drift_score / _threshold / _detected {feature, stattest},
      feature_drift_share_ratio, feature_drift_detected_features,
      feature_drift_compared_features, feature_reference_only_features,
      feature_current_only_features, features_omitted
  data_quality: feature_missing_ratio / feature_reference_missing_ratio /
      feature_type_change_ratio {feature}, feature_unseen_category_ratio {feature}
      (categorical), feature_out_of_range_ratio {feature} (numerical),
      features_present_ratio
A window with no reference and no features gives no rows at all (models without
features are unaffected); without a reference the drift rows are `no_baseline`.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa

from modelmon.config import FeaturesConfig, ResolvedModel
from modelmon.monitors.base import MetricRow, Status, Window, WindowedRow, gated
from modelmon.monitors.feature_worker import feature_windows, has_work
from modelmon.monitors.stats_features import (
    Column,
    Drift,
    Kind,
    Quality,
    column,
    column_kind,
    drift,
    drift_share,
    quality,
)
from modelmon.store.features import (
    FeatureReference,
    WindowSample,
    load_reference,
    sample_window,
)
from modelmon.store.tables import feature_references

DRIFT = "feature_drift"
QUALITY = "data_quality"
FAMILIES = (DRIFT, QUALITY)


@dataclass(frozen=True)
class Reference:
    """A reference read as columns: what every window of the model is compared with."""

    created_at: float
    rows: int
    columns: dict[str, Column]  # in the reference's order
    kinds: dict[str, Kind]


def prepare(ref: FeatureReference) -> Reference:
    columns = {name: column(values) for name, values in ref.columns.items()}
    return Reference(ref.created_at, ref.rows, columns, {k: column_kind(c) for k, c in columns.items()})


class ReferenceCache:
    """Prepared references by (model, created_at), least recently used evicted first.

    Bounded by values held (rows x features, `max_values`; the latest reference is always
    kept), not by models: one 50k-row reference of 100 features is 5M values, and the
    worker restarts above `features.worker_max_rss_bytes`, which would empty the cache.
    """

    def __init__(self, max_values: int = 10_000_000) -> None:
        self.max_values = max_values
        self._items: OrderedDict[str, Reference] = OrderedDict()

    def get(self, conn: sa.Connection, model: str) -> Reference | None:
        t = feature_references
        created = conn.execute(sa.select(t.c.created_at).where(t.c.model == model)).scalar()
        if created is None:
            self._items.pop(model, None)
            return None
        cached = self._items.get(model)
        if cached is None or cached.created_at != float(created):
            self._items.pop(model, None)
            raw = load_reference(conn, model)
            if raw is None:  # deleted meanwhile
                return None
            cached = prepare(raw)
            self._items[model] = cached
        self._items.move_to_end(model)
        while len(self._items) > 1 and self._values() > self.max_values:
            self._items.popitem(last=False)
        return cached

    def _values(self) -> int:
        return sum(r.rows * len(r.columns) for r in self._items.values())

    def __len__(self) -> int:
        return len(self._items)


def present_counts(sample: WindowSample) -> dict[str, int]:
    """Non-missing values per feature of the sample (a feature never given is absent)."""
    out = {}
    for name, values in sample.columns.items():
        n = len(values) - values.count(None)
        if n:
            out[name] = n
    return out


def select(reference: Sequence[str], present: dict[str, int], cap: int) -> tuple[list[str], int]:
    """The reference's features first, then current-only ones by frequency; (kept, omitted)."""
    ref = set(reference)
    extra = sorted((k for k in present if k not in ref), key=lambda k: (-present[k], k))
    ordered = [*reference, *extra]
    return ordered[:cap], max(0, len(ordered) - cap)


def _row(window: Window, metric: str, value: float | None, n: int, status: Status,
         **labels: str) -> WindowedRow:
    return WindowedRow(window, MetricRow(metric, value, n, status, labels))


def _gated_row(window: Window, metric: str, part: int | None, whole: int, minimum: int,
               **labels: str) -> WindowedRow:
    value, status = gated(Quality.ratio(part, whole), whole, minimum)
    return _row(window, metric, value, whole, status, **labels)


def drift_rows(window: Window, ref: Reference | None, sample: WindowSample, kept: list[str],
               present: dict[str, int], omitted: int, minimum: int) -> list[WindowedRow]:
    n = sample.rows
    ref_names = [] if ref is None else [k for k in kept if k in ref.columns]
    both = [k for k in ref_names if k in present]
    current_only = [k for k in kept if k in present and (ref is None or k not in ref.columns)]
    rows = [
        _row(window, "feature_reference_only_features", len(ref_names) - len(both), n, "ok"),
        _row(window, "feature_current_only_features", len(current_only), n, "ok"),
        _row(window, "features_omitted", omitted, n, "ok"),
    ]
    if ref is None:
        rows += [_row(window, m, None, n, "no_baseline") for m in (
            "feature_drift_share_ratio", "feature_drift_detected_features")]
        rows.append(_row(window, "feature_drift_compared_features", 0, n, "ok"))
        return rows
    results: list[Drift] = []
    for name in both:
        kind = ref.kinds[name]
        cur = column(sample.columns[name], ref.columns[name].type)
        try:
            d = drift(ref.columns[name], cur, kind, minimum)
        except Exception as exc:  # noqa: BLE001 - name the feature in the job's error
            raise ValueError(f"drift test of feature {name!r} ({kind}) failed: {exc}") from exc
        results.append(d)
        labels = {"feature": name, "stattest": d.stattest}
        detected = None if d.detected is None else float(d.detected)
        rows += [
            _row(window, "feature_drift_score", d.score, d.n, d.status, **labels),
            _row(window, "feature_drift_threshold", d.threshold, d.n, "ok", **labels),
            _row(window, "feature_drift_detected", detected, d.n, d.status, **labels),
        ]
    share, detected_n, tested = drift_share(results)
    status: Status = "no_data" if n == 0 else "insufficient_data" if share is None else "ok"
    rows += [
        _row(window, "feature_drift_share_ratio", share, n, status),
        _row(window, "feature_drift_detected_features",
             None if share is None else detected_n, n, status),
        _row(window, "feature_drift_compared_features", tested, n, "ok"),
    ]
    return rows


def quality_rows(window: Window, ref: Reference | None, sample: WindowSample, kept: list[str],
                 present: dict[str, int], minimum: int) -> list[WindowedRow]:
    n = sample.rows
    rows = [_gated_row(window, "features_present_ratio", sample.with_features, sample.total, minimum)]
    for name in kept:
        values = sample.columns.get(name) or [None] * n
        missing = n - present.get(name, 0)
        rows.append(_gated_row(window, "feature_missing_ratio", missing, n, minimum, feature=name))
        if ref is None or name not in ref.columns:
            continue
        r, kind = ref.columns[name], ref.kinds[name]
        q = quality(r, column(values, r.type), kind)
        rows.append(_row(window, "feature_reference_missing_ratio",
                         Quality.ratio(r.missing, r.rows), r.rows, "ok", feature=name))
        rows.append(_gated_row(window, "feature_type_change_ratio", q.type_changed, q.present,
                               minimum, feature=name))
        metric = "feature_unseen_category_ratio" if kind == "categorical" else "feature_out_of_range_ratio"
        part = q.unseen if kind == "categorical" else q.out_of_range
        rows.append(_gated_row(window, metric, part, q.typed, minimum, feature=name))
    return rows


def window_rows(window: Window, ref: Reference | None, sample: WindowSample, cap: int,
                minimum: int) -> dict[str, list[WindowedRow]]:
    """Both families' rows of one window (empty when there is nothing to compare)."""
    present = present_counts(sample)
    if ref is None and not present:
        return {DRIFT: [], QUALITY: []}
    kept, omitted = select(list(ref.columns) if ref else [], present, cap)
    omitted += sample.columns_left_out
    return {
        DRIFT: drift_rows(window, ref, sample, kept, present, omitted, minimum),
        QUALITY: quality_rows(window, ref, sample, kept, present, minimum),
    }


def compute(conn: sa.Connection, model: ResolvedModel, now: float, settings: FeaturesConfig,
            references: ReferenceCache | None = None) -> dict[str, list[WindowedRow]]:
    """Both families' rows for every feature window of the model at `now`."""
    ref = (references or ReferenceCache()).get(conn, model.name)
    out: dict[str, list[WindowedRow]] = {DRIFT: [], QUALITY: []}
    width = settings.max_per_model + (len(ref.columns) if ref else 0)
    for window in feature_windows(model, settings, now):
        sample = sample_window(conn, model.name, window.start, window.end, settings.sample_rows,
                               max_columns=width)
        for family, rows in window_rows(window, ref, sample, settings.max_per_model,
                                        model.min_samples).items():
            out[family] += rows
    return out


class FeatureComputer:
    """Computes both families at once and keeps the other family's rows for its job of the
    same (model, tick): the two jobs share their slots, so the sample and the reference are
    read once per tick. Thread-safe (the in-process fallback runs it from the pool)."""

    KEPT = 256  # (model, tick, family) entries waiting for their job

    def __init__(self, reference_values: int = 10_000_000) -> None:
        self.references = ReferenceCache(reference_values)
        self._waiting: OrderedDict[tuple[str, float, str], list[WindowedRow]] = OrderedDict()
        self._lock = threading.Lock()

    def rows(self, conn: sa.Connection, family: str, model: ResolvedModel, now: float,
             settings: FeaturesConfig) -> list[WindowedRow]:
        if family not in FAMILIES:
            raise ValueError(f"unknown feature family {family!r}")
        with self._lock:
            kept = self._waiting.pop((model.name, now, family), None)
            if kept is not None:
                return kept
            if not has_work(conn, model.name, feature_windows(model, settings, now)):
                return []
            out = compute(conn, model, now, settings, self.references)
            for key in [k for k in self._waiting if k[0] == model.name]:
                del self._waiting[key]
            for other, rows in out.items():
                if other != family:
                    self._waiting[(model.name, now, other)] = rows
            while len(self._waiting) > self.KEPT:
                self._waiting.popitem(last=False)
            return out[family]
