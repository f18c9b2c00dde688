"""Types shared by every monitor family.

A monitor family is a pure function from window data (handed over by
`modelmon.monitors.queries`) to a typed result; each result flattens to
`MetricRow`s, which the scheduler writes to `monitor_results` and the exporter
turns into Prometheus series. `MetricRow.metric` is the Prometheus name without
the `modelmon_` prefix (e.g. "accuracy_ratio"), `labels` the extra labels
(class, baseline, quantile, slo, attribute, slice).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Status = Literal["ok", "insufficient_data", "maturing", "no_baseline", "no_data"]


@dataclass(frozen=True, slots=True)
class Window:
    name: str  # "5m", "1h", ...
    start: float  # epoch seconds, inclusive
    end: float  # epoch seconds, exclusive

    @property
    def seconds(self) -> float:
        return self.end - self.start

    def shifted(self, seconds: float) -> Window:
        return Window(self.name, self.start - seconds, self.end - seconds)


@dataclass(frozen=True, slots=True)
class MetricRow:
    metric: str
    value: float | None
    sample_count: int
    status: Status = "ok"
    labels: dict[str, str] = field(default_factory=dict)
    model_version: str = "*"  # "*" = all versions of the model together

    @property
    def slice_key(self) -> str:
        """Canonical text form of `labels`, one series per distinct key."""
        return ",".join(f"{k}={v}" for k, v in sorted(self.labels.items()))


def gated(value: float | None, n: int, minimum: int) -> tuple[float | None, Status]:
    """No value an alert could fire on below the minimum sample size."""
    if n == 0:
        return None, "no_data"
    if n < minimum:
        return None, "insufficient_data"
    return value, "ok"


@dataclass(frozen=True, slots=True)
class WindowedRow:
    """A metric row with the window it was computed over."""

    window: Window
    row: MetricRow
