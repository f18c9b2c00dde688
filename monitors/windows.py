"""Window semantics shared by every monitor family.

Windows are *trailing* and cut at fine-bucket boundaries (`rollups.fine`,
1 minute by default): the window of length L evaluated at `now` is
[end - L, end) on prediction time (`predictions.ts`), end = `now` rounded down
to the bucket length, so it holds whole buckets of the rollups; a result row
records the exact start and end it covered. Predictions of the current,
unfinished bucket enter the windows at the next bucket boundary. Rolling baselines are the same
length, shifted back: the previous window [now - 2L, now - L), or the same
window one day earlier [now - L - 1d, now - 1d).
"""

from __future__ import annotations

from modelmon.config import ResolvedModel, format_duration
from modelmon.monitors.base import Window

DAY = 86400.0

# Burn-rate windows of the multi-window, multi-burn-rate SLO alerts (Google SRE
# workbook): 5m/1h and 30m/6h pairs page, 2h/1d and 6h/3d pairs ticket.
BURN_RATE_WINDOWS: dict[str, float] = {
    "5m": 300.0,
    "30m": 1800.0,
    "1h": 3600.0,
    "2h": 7200.0,
    "6h": 21600.0,
    "1d": 86400.0,
    "3d": 259200.0,
}


def trailing(name: str, seconds: float, end: float) -> Window:
    return Window(name, end - seconds, end)


def window_end(model: ResolvedModel, now: float) -> float:
    """`now` rounded down to the model's fine bucket: where every window ends."""
    b = model.bucket_seconds
    return float(int(now // b) * b)


def current_windows(model: ResolvedModel, now: float) -> list[Window]:
    """One trailing window per configured length, ending at `window_end(now)`."""
    end = window_end(model, now)
    return [trailing(format_duration(s), s, end) for s in model.windows]


def rolling_baseline(window: Window, mode: str) -> Window:
    """The window a rolling baseline compares against (same name, earlier span)."""
    if mode == "previous_window":
        return window.shifted(window.seconds)
    if mode == "day_before":
        return window.shifted(DAY)
    raise ValueError(f"unknown rolling baseline {mode!r}")


def span(windows: list[Window]) -> tuple[float, float]:
    """The smallest [start, end) covering all windows, for one range scan."""
    return min(w.start for w in windows), max(w.end for w in windows)


def pass_windows(model: ResolvedModel, now: float) -> list[Window]:
    """The current windows, then their rolling baselines (not already listed).

    The families that share one scan (`aggregates.window_groups`) all ask for
    this same list, so the scan is done once per (model, tick).
    """
    current = current_windows(model, now)
    rolls = [rolling_baseline(w, model.rolling_baseline) for w in current]
    return current + [r for r in dict.fromkeys(rolls) if r not in current]
