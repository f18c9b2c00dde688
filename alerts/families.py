"""Monitor results as Prometheus series, built one whole model at a time.

The exporter must decide model by model whether the next model still fits the
series budget, so each model's series are computed on their own
(`model_series`, with an exact `size`) before anything is rendered. A value is
exposed only when its row's status is "ok"; every row, whatever its status,
also yields a `modelmon_monitor_samples` series (the sample count behind it,
with its status as a label). Empty label values are left out: Prometheus drops
them on ingestion anyway, and they would only add bytes to the scrape.

Two renderings of the same series: `render_families` (prometheus_client
Metric objects, for a registry) and `render_text`, the bytes /metrics serves.
prometheus_client's encoders escape every name rune by rune, which takes tens
of seconds for a fleet's quarter of a million series; here metric and label
names are validated once per row, so only label values need escaping, and the
output is valid both as the text format 0.0.4 and as OpenMetrics (gauges and
summaries only, help texts without quotes), so one rendering serves both.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import Metric
from prometheus_client.samples import Sample

from modelmon.alerts.names import METRIC_HELP, PREFIX, RESERVED

SAMPLE_LABELS = ("model", "model_version", "monitor", "metric", "window")
_NAME_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")

# The columns of monitor_latest that model_series reads, in this order.
COLUMNS = ("model_version", "monitor", "metric", "window", "labels", "slice", "value", "sample_count",
           "status", "computed_at")

Pairs = tuple[tuple[str, str], ...]  # sorted (label, value), empty values left out
Ident = tuple[str, str, Pairs]  # model_version, window, labels
Warn = Callable[[str, str], None]  # (once-key, message)

SAMPLES_HELP = ("Samples behind each monitor result, with the result's status (ok, insufficient_data, "
                "maturing, no_baseline, no_data); the result's value is exposed only when status is ok.")
SUCCESS_HELP = ("When the monitor job last completed for the model (epoch seconds; 0 = never succeeded, "
                "including a job scheduled but not run yet).")
DURATION_HELP = "How long the monitor job's last run took."
LAST_PREDICTION_HELP = ("Event time of the newest stored prediction of the model at or before now "
                        "(epoch seconds; predictions stamped in the future are ignored).")


@dataclass
class ModelSeries:
    """Every series one model contributes to the exposition."""

    model: str
    values: dict[str, dict[Ident, tuple[float, float]]] = field(default_factory=dict)  # (value, count)
    summaries: set[str] = field(default_factory=set)  # metrics with a quantile label
    samples: dict[tuple[str, str, str, str, Pairs], tuple[str, float]] = field(default_factory=dict)
    success: dict[str, float] = field(default_factory=dict)  # monitor -> last success (0 = never)
    duration: dict[str, float] = field(default_factory=dict)
    last_prediction: float | None = None
    size: int = 0  # samples this model adds to the exposition (a summary's _count included)

    def count_of(self, metric: str) -> dict[Ident, float]:
        """A summary's `_count` samples: one per quantile-less label set."""
        return {_without_quantile(i): c for i, (_, c) in sorted(self.values[metric].items())}

    def samples_of(self, metric: str, summary: bool) -> list[tuple[str, Ident, float]]:
        """(suffix, ident, value) of the metric's samples; a summary's grouped by label set,
        its quantiles then its `_count` (OpenMetrics wants each group together)."""
        items = sorted(self.values.get(metric, {}).items())
        if not summary:
            return [("", ident, value) for ident, (value, _) in items]
        groups: dict[Ident, list[tuple[str, Ident, float]]] = {}
        for ident, (value, count) in items:
            group = groups.setdefault(_without_quantile(ident), [])
            if group and group[-1][0] == "_count":
                group.pop()
            group += [("", ident, value), ("_count", _without_quantile(ident), count)]
        return [s for g in groups.values() for s in g]


def _without_quantile(ident: Ident) -> Ident:
    return (ident[0], ident[1], tuple(p for p in ident[2] if p[0] != "quantile"))


class LabelCache:
    """Parsed label sets of one read: rows of a fleet repeat the same few hundred."""

    def __init__(self) -> None:
        self._pairs: dict[tuple[Any, Any], Pairs | list[str]] = {}

    def pairs(self, labels: Any, slice_: Any) -> Pairs | list[str]:
        """The sorted non-empty pairs, or the list of label names that cannot be exposed."""
        key = (labels if not isinstance(labels, dict) else json.dumps(labels, sort_keys=True), slice_)
        found = self._pairs.get(key)
        if found is None:
            found = self._pairs[key] = _parse(labels, slice_)
        return found


def _parse(labels: Any, slice_: Any) -> Pairs | list[str]:
    if isinstance(labels, str):
        labels = json.loads(labels) if labels else None
    if not labels and slice_:
        labels = dict(p.split("=", 1) for p in str(slice_).split(",") if "=" in p)
    items = {str(k): "" if v is None else str(v) for k, v in (labels or {}).items()}
    bad = [k for k in items if not _NAME_RE.match(k) or k.startswith("__") or k in SAMPLE_LABELS or k == "status"]
    return bad or tuple(sorted((k, v) for k, v in items.items() if v != ""))


def model_series(
    model: str,
    rows: Iterable[Sequence[Any]],
    runs: Iterable[Any],
    last_prediction: float | None,
    warn: Warn,
    cache: LabelCache | None = None,
) -> ModelSeries:
    """One model's series from its monitor_latest rows (`COLUMNS` order) and monitor_runs rows."""
    cache = cache or LabelCache()
    out = ModelSeries(model, last_prediction=last_prediction)
    for version, monitor, metric, window, labels, slice_, value, count, status, _ in sorted(rows, key=lambda r: r[9]):
        # oldest first: a later duplicate wins
        if metric in RESERVED:  # e.g. last_prediction_timestamp_seconds: the exporter's own
            continue
        if not _NAME_RE.match(metric):
            warn(metric, f"metrics: monitor metric {metric!r} is not a valid name; skipped")
            continue
        pairs = cache.pairs(labels, slice_)
        if isinstance(pairs, list):
            warn(metric + repr(pairs), f"metrics: {metric}: label(s) {pairs} not exposable; skipped")
            continue
        ident = (str(version), str(window), pairs)
        n = float(count or 0)
        per_metric = out.values.setdefault(metric, {})
        if status == "ok" and value is not None and not math.isnan(value):
            per_metric[ident] = (float(value), n)
            if any(k == "quantile" for k, _ in pairs):
                out.summaries.add(metric)
        else:
            per_metric.pop(ident, None)
        # Quantiles of one distribution share their sample count and status.
        rest = tuple(p for p in pairs if p[0] != "quantile")
        out.samples[(ident[0], str(monitor), metric, ident[1], rest)] = (str(status), n)
    out.values = {m: v for m, v in out.values.items() if v}
    out.summaries &= set(out.values)
    for run in sorted(runs, key=lambda r: (str(r["monitor"]), str(r["job"]))):
        monitor = str(run["monitor"])
        if monitor in out.success:
            continue
        # Exposed for every job, even one only scheduled so far: 0 = never succeeded.
        out.success[monitor] = float(run["last_success"] or 0.0)
        if run["last_duration_seconds"] is not None:
            out.duration[monitor] = float(run["last_duration_seconds"])
    out.size = (len(out.samples) + len(out.success) + len(out.duration) + (last_prediction is not None)
                + sum(len(v) for v in out.values.values())
                + sum(len(out.count_of(m)) for m in out.summaries))
    return out


def _help(metric: str) -> str:
    return METRIC_HELP.get(metric, f"modelmon monitor result {metric}.")


# -- prometheus_client families (for a registry) --------------------------------------


def render_families(models: list[ModelSeries]) -> list[Metric]:
    """The families of the given models' series."""
    families: list[Metric] = []
    for metric in sorted({m for ms in models for m in ms.values}):
        summary = any(metric in ms.summaries for ms in models)
        name = PREFIX + metric
        fam = Metric(name, _help(metric), "summary" if summary else "gauge")
        # A summary: quantile samples plus `_count` (no `_sum`).
        for ms in models:
            for suffix, ident, value in ms.samples_of(metric, summary):
                fam.samples.append(Sample(name + suffix, _labels(ms.model, ident), value))
        families.append(fam)
    samples = Metric(PREFIX + "monitor_samples", SAMPLES_HELP, "gauge")
    success = Metric(PREFIX + "monitor_last_success_timestamp_seconds", SUCCESS_HELP, "gauge")
    duration = Metric(PREFIX + "monitor_last_run_duration_seconds", DURATION_HELP, "gauge")
    last = Metric(PREFIX + "last_prediction_timestamp_seconds", LAST_PREDICTION_HELP, "gauge")
    for ms in models:
        for (version, monitor, metric, window, rest), (status, n) in sorted(ms.samples.items()):
            labels = {"model": ms.model, "model_version": version, "monitor": monitor, "metric": metric,
                      "window": window, **dict(rest), "status": status}
            samples.samples.append(Sample(samples.name, labels, n))
        for monitor, at in sorted(ms.success.items()):
            success.samples.append(Sample(success.name, {"monitor": monitor, "model": ms.model}, at))
        for monitor, seconds in sorted(ms.duration.items()):
            duration.samples.append(Sample(duration.name, {"monitor": monitor, "model": ms.model}, seconds))
        if ms.last_prediction is not None:
            last.samples.append(Sample(last.name, {"model": ms.model}, ms.last_prediction))
    return families + [f for f in (samples, success, duration, last) if f.samples]


def _labels(model: str, ident: Ident) -> dict[str, str]:
    return {"model": model, "model_version": ident[0], "window": ident[1], **dict(ident[2])}


# -- text (what /metrics serves) ------------------------------------------------------


def _esc(value: str) -> str:
    if "\\" in value or '"' in value or "\n" in value:
        return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
    return value


def _num(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _label_text(pairs: Iterable[tuple[str, str]]) -> str:
    """Labels sorted by name, as prometheus_client writes them (some readers match on the text)."""
    return ",".join(f'{k}="{_esc(v)}"' for k, v in sorted(pairs))


def header(name: str, help_text: str, kind: str) -> str:
    """HELP and TYPE lines valid in both formats (no escapes: quotes become apostrophes)."""
    text = help_text.replace("\\", "/").replace("\n", " ").replace('"', "'")
    return f"# HELP {name} {text}\n# TYPE {name} {kind}\n"


def render_text(models: list[ModelSeries]) -> list[bytes]:
    """The same series as `render_families`, as exposition text (UTF-8, no "# EOF"), a
    chunk per family: each is encoded as soon as it is complete, so at most one
    family's lines exist as separate strings at a time, and the whole text is
    never copied into one buffer unless a scrape wants it uncompressed."""
    chunks: list[bytes] = []
    out: list[str] = []

    def flush() -> None:
        chunks.append("".join(out).encode())
        out.clear()

    quoted = {ms.model: _esc(ms.model) for ms in models}
    for metric in sorted({m for ms in models for m in ms.values}):
        summary = any(metric in ms.summaries for ms in models)
        name = PREFIX + metric
        out.append(header(name, _help(metric), "summary" if summary else "gauge"))
        for ms in models:
            for suffix, (version, window, pairs), value in ms.samples_of(metric, summary):
                labels = (("model", ms.model), ("model_version", version), ("window", window), *pairs)
                out.append(f"{name}{suffix}{{{_label_text(labels)}}} {_num(value)}\n")
        flush()
    parts = [
        ("monitor_samples", SAMPLES_HELP, lambda ms, m: [
            "{" + _label_text((("model", ms.model), ("model_version", v), ("monitor", mon), ("metric", met),
                               ("window", w), ("status", st), *rest)) + f"}} {_num(n)}\n"
            for (v, mon, met, w, rest), (st, n) in sorted(ms.samples.items())]),
        ("monitor_last_success_timestamp_seconds", SUCCESS_HELP, lambda ms, m: [
            f'{{monitor="{_esc(mon)}",model="{m}"}} {_num(at)}\n' for mon, at in sorted(ms.success.items())]),
        ("monitor_last_run_duration_seconds", DURATION_HELP, lambda ms, m: [
            f'{{monitor="{_esc(mon)}",model="{m}"}} {_num(s)}\n' for mon, s in sorted(ms.duration.items())]),
        ("last_prediction_timestamp_seconds", LAST_PREDICTION_HELP, lambda ms, m: (
            [] if ms.last_prediction is None else [f'{{model="{m}"}} {_num(ms.last_prediction)}\n'])),
    ]
    for short, help_text, lines in parts:
        name = PREFIX + short
        body = [name + line for ms in models for line in lines(ms, quoted[ms.model])]
        if body:
            out.append(header(name, help_text, "gauge"))
            out += body
            del body
            flush()
    return chunks


def render_gauges(families: Iterable[Metric]) -> str:
    """Small gauge families (the exporter's own bookkeeping) as exposition text."""
    out = []
    for fam in families:
        out.append(header(fam.name, fam.documentation, "gauge"))
        for s in fam.samples:
            labels = _label_text(s.labels.items())
            out.append(f"{s.name}{{{labels}}} {_num(s.value)}\n" if labels else f"{s.name} {_num(s.value)}\n")
    return "".join(out)
