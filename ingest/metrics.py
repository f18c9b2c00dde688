"""Ingest self-metrics, kept in-process and exposed by the /metrics endpoint.

Per-model series are capped: a misbehaving client that invents a new model
version per request must not blow up Prometheus, so label sets beyond the cap
are folded into "__other__".
"""

from __future__ import annotations

import bisect
import collections
import contextlib
import logging
import math
import threading
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from itertools import compress, repeat
from operator import attrgetter, eq
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from modelmon.refusals import REASONS

if TYPE_CHECKING:
    from modelmon.config import Config
    from modelmon.contract import Feedback, Prediction

log = logging.getLogger(__name__)

OTHER = "__other__"
DEFAULT_LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)
BATCH_SIZE_BUCKETS = (1, 10, 50, 100, 250, 500, 1000, 2000, 5000, 10000, 20000)
BATCH_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


_MODEL = attrgetter("model")
_MODEL_VERSION_STATUS = attrgetter("model", "model_version", "status")
_MODEL_VERSION_LATENCY = attrgetter("model", "model_version", "latency_seconds")
_STATUS = attrgetter("status")


def _observe_all(histogram: Histogram, values: list[float]) -> None:
    """`histogram.observe(v)` for each value, in bulk: bucket counts by bisection,
    each bucket incremented once. Same result as observing one by one: the bucket
    of v is the first upper bound >= v (bisect_left), the sum adds the values one by
    one in order, and a NaN (no bucket holds it) only reaches the sum. Falls back to
    `observe` if prometheus_client's Histogram internals ever change.
    """
    bounds = getattr(histogram, "_upper_bounds", None)
    buckets = getattr(histogram, "_buckets", None)
    total = getattr(histogram, "_sum", None)
    if bounds is None or buckets is None or total is None or len(bounds) != len(buckets):
        for v in values:
            histogram.observe(v)
        return
    check = getattr(histogram, "_raise_if_not_observable", None)
    if check is not None:
        check()
    deque(map(total.inc, values), maxlen=0)  # in order, as observe() adds them
    finite = [v for v in values if v == v] if any(map(math.isnan, values)) else values
    for at, n in collections.Counter(map(partial(bisect.bisect_left, bounds), finite)).items():
        buckets[at].inc(n)


def latency_buckets_for(cfg: Config) -> list[float]:
    """Default buckets plus every latency SLO threshold, so SLOs are exact bucket bounds."""
    buckets = set(DEFAULT_LATENCY_BUCKETS)
    # Models discovered from the store (not configured) get the defaults' SLOs.
    for name in [*cfg.models, "__defaults__"]:
        for slo in cfg.model(name).slos:
            if slo.kind == "latency" and slo.threshold is not None:
                buckets.add(float(slo.threshold))
    return sorted(buckets)


class IngestMetrics:
    """prometheus_client metrics the consumer increments; safe to share between threads."""

    def __init__(
        self,
        registry: CollectorRegistry,
        latency_buckets: Sequence[float] = DEFAULT_LATENCY_BUCKETS,
        max_model_series: int = 200,
    ) -> None:
        self.max_model_series = max_model_series
        self._models: set[str] = set()
        self._versions: set[tuple[str, str]] = set()
        self._folded_logged = False
        self._lock = threading.Lock()
        self.predictions = Counter(
            "modelmon_predictions_total",
            "Predictions stored, by model, version and status.",
            ["model", "model_version", "status"],
            registry=registry,
        )
        self.feedback = Counter(
            "modelmon_feedback_total", "Feedback events stored, by model.", ["model"],
            registry=registry,
        )
        # Successful predictions only: a latency SLO counts every error as bad however
        # fast it failed (monitors/latency.py), so the rules take the errors from
        # modelmon_predictions_total and "ok and under the threshold" from this.
        self.latency = Histogram(
            "modelmon_prediction_latency_seconds",
            "Model-reported latency of stored successful (status ok) predictions.",
            ["model"],
            buckets=sorted(set(latency_buckets)),
            registry=registry,
        )
        self.events = Counter(
            "modelmon_ingest_events_total", "Events stored by ingest, by topic.", ["topic"],
            registry=registry,
        )
        self.dead_letters = Counter(
            "modelmon_ingest_dead_letters_total", "Messages dead-lettered, by reason.", ["reason"],
            registry=registry,
        )
        # Every reason starts at 0: a series born at its first value shows no
        # increase, so a burst of bad messages right after start-up (all counted
        # before the next scrape) would never reach ModelmonDeadLetterRate.
        for reason in REASONS:
            self.dead_letters.labels(reason)
        self.duplicates = Counter(
            "modelmon_ingest_duplicates_total",
            "Redelivered events identical to what was stored (not written again).",
            ["kind"],
            registry=registry,
        )
        self.conflicts = Counter(
            "modelmon_ingest_conflicts_total",
            "Events whose key was stored with different content (first write kept).",
            ["kind"],
            registry=registry,
        )
        self.batch_size = Histogram(
            "modelmon_ingest_batch_size", "Messages per ingest batch.",
            buckets=BATCH_SIZE_BUCKETS, registry=registry,
        )
        self.batch_duration = Histogram(
            "modelmon_ingest_batch_duration_seconds",
            "Time to write and commit one batch to the store.",
            buckets=BATCH_SECONDS_BUCKETS, registry=registry,
        )
        self.lag = Gauge(
            "modelmon_consumer_lag_messages",
            "Messages not committed yet (held back in memory or not read), per partition.",
            ["topic", "partition"],
            registry=registry,
        )
        # Read at scrape time (watch_pending), so a writer that hangs still shows.
        self.batch_pending = Gauge(
            "modelmon_ingest_batch_pending_seconds",
            "Age of the oldest batch received but not committed yet; 0 when none. "
            "Grows while the writer makes no progress.",
            registry=registry,
        )
        self.db_errors = Counter(
            "modelmon_ingest_db_errors_total", "Failed attempts to write a batch to the store.",
            registry=registry,
        )
        self.halted = Gauge(
            "modelmon_ingest_partition_halted",
            "1 while the dead-letter limit holds this partition paused (too many bad "
            "messages in a row: a broken producer); nothing after it is committed.",
            ["topic", "partition"],
            registry=registry,
        )

    def _labels(self, model: str, version: str) -> tuple[str, str]:
        """Cap distinct (model, version) series; the overflow folds into __other__."""
        key = (model, version)
        if key in self._versions:
            return key
        with self._lock:
            if key in self._versions:
                return key
            if len(self._versions) < self.max_model_series:
                self._versions.add(key)
                self._models.add(model)
                return key
            if not self._folded_logged:
                self._folded_logged = True
                log.warning(
                    "more than %d (model, model_version) label sets: further ones are "
                    "reported as %s in metrics (the store keeps the real values)",
                    self.max_model_series, OTHER,
                )
            return (model if model in self._models else OTHER, OTHER)

    def _model_label(self, model: str) -> str:
        if model in self._models:
            return model
        with self._lock:
            if len(self._models) < self.max_model_series:
                self._models.add(model)
                return model
        return OTHER

    def observe_predictions(self, stored: Iterable[Prediction], topic: str | None) -> None:
        """Count a batch's stored predictions (and their latencies) in one pass per label set.

        Called with every stored event of a batch: each distinct (model, version,
        status) is counted with a C-level Counter and folded (`_labels`) once, in the
        order of first appearance, as event-by-event folding would; latencies are
        observed per model in bulk (`_observe_all`).
        """
        stored = stored if isinstance(stored, list) else list(stored)
        if not stored:
            return
        counts = collections.Counter(map(_MODEL_VERSION_STATUS, stored))
        folded: dict[tuple[str, str], tuple[str, str]] = {}
        totals: dict[tuple[str, str, str], int] = {}
        for (model, version, status), c in counts.items():
            labels = folded.get((model, version))
            if labels is None:
                labels = folded[(model, version)] = self._labels(model, version)
            key = (*labels, status)
            totals[key] = totals.get(key, 0) + c
        for (model, version, status), c in totals.items():
            self.predictions.labels(model, version, status).inc(c)
        latencies: dict[str, list[float]] = {}
        for model, version, lat in map(_MODEL_VERSION_LATENCY, compress(stored, map(eq, map(_STATUS, stored), repeat("ok")))):
            if lat is not None:
                latencies.setdefault(folded[(model, version)][0], []).append(lat)
        for model, values in latencies.items():
            _observe_all(self.latency.labels(model), values)
        if topic:
            self.events.labels(topic).inc(len(stored))

    def observe_feedback(self, stored: Iterable[Feedback], topic: str | None) -> None:
        stored = stored if isinstance(stored, list) else list(stored)
        if not stored:
            return
        totals: dict[str, int] = {}
        for model, c in collections.Counter(map(_MODEL, stored)).items():
            label = self._model_label(model)
            totals[label] = totals.get(label, 0) + c
        for model, c in totals.items():
            self.feedback.labels(model).inc(c)
        if topic:
            self.events.labels(topic).inc(len(stored))

    def observe_dead_letters(self, reasons: Iterable[str]) -> None:
        counts: dict[str, int] = {}
        for r in reasons:
            counts[r] = counts.get(r, 0) + 1
        for r, c in counts.items():
            self.dead_letters.labels(r).inc(c)

    def observe_outcome_counts(
        self, duplicates: dict[str, int], conflicts: dict[str, int]
    ) -> None:
        for kind, c in duplicates.items():
            if c:
                self.duplicates.labels(kind).inc(c)
        for kind, c in conflicts.items():
            if c:
                self.conflicts.labels(kind).inc(c)

    def watch_pending(self, age: Callable[[], float]) -> None:
        """Report `age()` (IngestService.stalled_for) as the pending-seconds gauge."""
        self.batch_pending.set_function(age)

    def set_lag(self, topic: str, partition: int, lag: int) -> None:
        self.lag.labels(topic, str(partition)).set(lag)

    def set_halted(self, topic: str, partition: int, halted: bool) -> None:
        self.halted.labels(topic, str(partition)).set(1 if halted else 0)

    def forget_partition(self, topic: str, partition: int) -> None:
        with contextlib.suppress(KeyError):
            self.lag.remove(topic, str(partition))
        with contextlib.suppress(KeyError):
            self.halted.remove(topic, str(partition))
