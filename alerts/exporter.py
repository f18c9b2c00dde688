"""Prometheus exposition of the monitors' latest results, bounded in models and series.

One read of the store yields the families: a series exists only while the
latest monitor run still produces it, so a model removed from the configuration
(or one whose discovered results went stale) disappears instead of lingering
at its last value (see `modelmon.alerts.families` for the per-row rules).

A fleet of discovered models must not turn /metrics into a multi-gigabyte,
minute-long scrape, so the exposition is bounded:

- at most `server.metrics_max_models` models, in priority order: the configured
  ones (sorted by name), then discovered ones by most recent activity (newest
  prediction at or before now, then newest monitor run, then name). The
  service-wide jobs (model "*": retention, label reconciliation) are not a
  model and always come first. Models beyond the cap are left out, not folded
  into "__other__": accuracies, PSIs or quantiles of different models cannot
  be summed or averaged into a meaningful value.
- at most `server.metrics_max_series` series: models are added whole, in the
  same order, until the next one would exceed the budget; it and every later
  one are left out, so what is shown is always the top of the priority list.

Only the chosen models' results are read. What is left out is exposed as
gauges (a state of the current exposition, not events, so not counters):
`modelmon_metrics_models_omitted{reason="max_models"|"max_series"}` and
`modelmon_metrics_results_omitted` (their `monitor_latest` rows; each row
would be one or two series), and logged once per change.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric
from sqlalchemy import Connection, Engine, Text, cast, func, select
from sqlalchemy.exc import SQLAlchemyError

from modelmon.alerts.families import (
    COLUMNS,
    LabelCache,
    ModelSeries,
    model_series,
    render_families,
    render_gauges,
    render_text,
)
from modelmon.alerts.names import METRIC_HELP, PREFIX, RESERVED
from modelmon.config import Config
from modelmon.monitors.latency import last_prediction_ts
from modelmon.store.tables import monitor_latest, monitor_runs

__all__ = ["METRIC_HELP", "PREFIX", "RESERVED", "MonitorResultsCollector", "Reading", "store_up_family"]

log = logging.getLogger(__name__)

SERVICE = "*"  # the model of service-wide jobs
_CHUNK = 64  # models per monitor_latest read


@dataclass
class Reading:
    """One read of the store: the chosen models' series and the omission gauges
    (both empty and ok=False if the store failed)."""

    models: list[ModelSeries] = field(default_factory=list)
    gauges: list[Metric] = field(default_factory=list)
    ok: bool = True
    started: float = 0.0  # time.monotonic() when the read began
    seconds: float = 0.0

    @property
    def families(self) -> list[Metric]:
        return render_families(self.models) + self.gauges

    def text(self) -> list[bytes]:
        """The exposition text of the read in chunks (valid as text 0.0.4 and OpenMetrics, no "# EOF")."""
        return [*render_text(self.models), render_gauges(self.gauges).encode()]


def store_up_family(up: bool) -> Metric:
    fam = GaugeMetricFamily(PREFIX + "store_up", "1 if the last read of the store for /metrics succeeded.")
    fam.add_metric([], 1.0 if up else 0.0)
    return fam


class MonitorResultsCollector:
    """Monitor results, run freshness and last-prediction times, read from the store.

    Three ways to use it:

    - `read()`: one store read, the families without `modelmon_store_up`; what
      `modelmon.alerts.exposition.MetricsExposition` renders once per refresh
      (the service's /metrics).
    - as a prometheus_client collector (`registry.register(collector)`):
      `collect()` yields the families of a read at most `cache_seconds` old,
      plus `modelmon_store_up`. prometheus_client's encoders then render them,
      which is fine for tests and small stores but takes tens of seconds for a
      fleet's 250,000 series: to time a scrape as the service serves it, use
      `MetricsExposition(collector, live_registry)`: `.refresh()` (the
      background work, once per period) then `.serve(accept, accept_encoding)`.
    - `render()`: one read rendered as exposition text (bytes, what /metrics
      serves for the results), e.g. to time the store read plus rendering in a
      benchmark.
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
        self.max_models = cfg.server.metrics_max_models
        self.max_series = cfg.server.metrics_max_series
        intervals = [cfg.model(m).interval for m in cfg.models] or [cfg.model("_").interval]
        # Results of models that are not configured (discovered from the store)
        # are dropped once no run has refreshed them for this long.
        self._stale_after = stale_after if stale_after is not None else max(900.0, 10 * max(intervals))
        self._lock = threading.Lock()
        self._cached: list[Metric] = []
        self._cached_at = -math.inf
        self._warned: set[str] = set()
        self._last_cut: tuple[int, int] = (0, 0)

    def describe(self) -> Iterable[Metric]:
        return []  # no store read when the registry registers us

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            now = self._clock()
            if now - self._cached_at >= self._cache_seconds:
                reading = self.read()
                self._cached = [*reading.families, store_up_family(reading.ok)]
                self._cached_at = now
            families = list(self._cached)
        yield from families

    def render(self) -> bytes:
        """One store read rendered as exposition text (no `modelmon_store_up`)."""
        return b"".join(self.read().text())

    # -- reading --------------------------------------------------------------

    def read(self) -> Reading:
        started = time.monotonic()
        now = self._clock()
        try:
            with self._engine.connect() as conn:
                reading = self._read(conn, now)
        except SQLAlchemyError as exc:
            log.warning("metrics: cannot read the store: %s", exc.__class__.__name__)
            reading = Reading(ok=False)
        reading.started, reading.seconds = started, time.monotonic() - started
        return reading

    def _read(self, conn: Connection, now: float) -> Reading:
        runs = [dict(r) for r in conn.execute(select(monitor_runs)).mappings()]
        activity: dict[str, float] = {}
        runs_of: dict[str, list[dict[str, Any]]] = {}
        for r in runs:
            runs_of.setdefault(r["model"], []).append(r)
            # write_results stamps last_history, record_run last_attempt/last_success.
            stamps = [float(t) for t in (r["last_success"], r["last_attempt"], r["last_history"]) if t is not None]
            if stamps:
                activity[r["model"]] = max(activity.get(r["model"], -math.inf), *stamps)
        visible = [m for m in set(self._cfg.models) | set(activity) if self._visible(m, activity.get(m), now)]
        last_pred = {m: last_prediction_ts(conn, self._cfg.model(m), now) for m in visible if m != SERVICE}
        configured = sorted(m for m in visible if m in self._cfg.models)
        discovered = sorted(
            (m for m in visible if m not in self._cfg.models and m != SERVICE),
            key=lambda m: (-_or_inf(last_pred.get(m)), -activity.get(m, -math.inf), m),
        )
        ranked = configured + discovered
        candidates = ([SERVICE] if SERVICE in visible else []) + ranked[: self.max_models]
        over_cap = ranked[self.max_models:]
        shown, over_budget = self._fill(conn, candidates, runs_of, last_pred)
        gauges = self._omitted_families(conn, len(over_cap), len(over_budget), over_budget + over_cap)
        return Reading(shown, gauges)

    def _visible(self, model: str, newest: float | None, now: float) -> bool:
        if model in self._cfg.models:
            return True
        if not self._cfg.monitors.discover_models or newest is None:
            return False
        return now - newest <= self._stale_after

    def _fill(
        self,
        conn: Connection,
        candidates: list[str],
        runs_of: Mapping[str, list[dict[str, Any]]],
        last_pred: Mapping[str, float | None],
    ) -> tuple[list[ModelSeries], list[str]]:
        """Whole models in priority order while they fit the series budget; the rest."""
        shown: list[ModelSeries] = []
        total = 0
        t = monitor_latest.c
        # Labels as JSON text: one parse per distinct label set (LabelCache), not per row.
        columns = [cast(t.labels, Text) if c == "labels" else t[c] for c in COLUMNS]
        cache = LabelCache()
        for start in range(0, len(candidates), _CHUNK):
            chunk = candidates[start:start + _CHUNK]
            rows: dict[str, list[Any]] = {m: [] for m in chunk}
            for model, *row in conn.execute(select(t.model, *columns).where(t.model.in_(chunk))):
                rows[model].append(row)
            for i, model in enumerate(chunk):
                ms = model_series(model, rows.pop(model), runs_of.get(model, []), last_pred.get(model),
                                  self._warn_once, cache)
                if total + ms.size > self.max_series:
                    return shown, candidates[start + i:]
                total += ms.size
                shown.append(ms)
        return shown, []

    def _omitted_families(self, conn: Connection, over_cap: int, over_budget: int, omitted: list[str]) -> list[Metric]:
        models = GaugeMetricFamily(
            PREFIX + "metrics_models_omitted",
            "Models whose monitor results /metrics leaves out: beyond server.metrics_max_models "
            "(reason max_models) or beyond the series budget server.metrics_max_series (max_series).",
            labels=["reason"],
        )
        models.add_metric(["max_models"], float(over_cap))
        models.add_metric(["max_series"], float(over_budget))
        results = 0
        for start in range(0, len(omitted), 500):
            chunk = omitted[start:start + 500]
            results += conn.execute(
                select(func.count()).select_from(monitor_latest).where(monitor_latest.c.model.in_(chunk))
            ).scalar() or 0
        left_out = GaugeMetricFamily(
            PREFIX + "metrics_results_omitted",
            "Monitor result rows of the models /metrics leaves out (each would be one or two series).",
        )
        left_out.add_metric([], float(results))
        self._log_cut(over_cap, over_budget, len(omitted), results)
        return [models, left_out]

    def _log_cut(self, over_cap: int, over_budget: int, omitted: int, results: int) -> None:
        cut = (over_cap, over_budget)
        if cut == self._last_cut:
            return
        self._last_cut = cut
        if omitted:
            log.warning(
                "metrics: %d model(s) left out of /metrics (%d beyond server.metrics_max_models=%d, "
                "%d beyond the series budget server.metrics_max_series=%d), %d result rows in all",
                omitted, over_cap, self.max_models, over_budget, self.max_series, results,
            )
        else:
            log.info("metrics: every visible model is exposed again")

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message)


def _or_inf(value: float | None) -> float:
    return -math.inf if value is None else value
