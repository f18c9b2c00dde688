"""Window semantics shared by every monitor family.

Windows are *trailing*: the window of length L evaluated at `now` is
[now - L, now) on prediction time (`predictions.ts`). They are not aligned to
clock boundaries, so every pass sees the freshest L seconds; a result row
records the exact start and end it covered. Rolling baselines are the same
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


def trailing(name: str, seconds: float, now: float) -> Window:
    return Window(name, now - seconds, now)


def current_windows(model: ResolvedModel, now: float) -> list[Window]:
    """One trailing window per configured length, ending at `now`."""
    return [trailing(format_duration(s), s, now) for s in model.windows]


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
