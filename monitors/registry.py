"""The monitor families the scheduler runs, by name.

Each module exposes
    collect(conn: sqlalchemy.Connection, model: ResolvedModel, now: float) -> list[WindowedRow]
which queries the store (aggregates in SQL) and hands the data to the family's
pure computation. The scheduler runs one job per (family, model), at the model's
`interval` (the feature families at `features.interval`).
"""

FAMILIES: dict[str, str] = {
    "accuracy": "modelmon.monitors.accuracy",
    "proxies": "modelmon.monitors.proxies",
    "shift": "modelmon.monitors.shift",
    "latency": "modelmon.monitors.latency",
    "fairness": "modelmon.monitors.fairness",
    "compare": "modelmon.monitors.compare",
    "feature_drift": "modelmon.monitors.feature_drift",
    "data_quality": "modelmon.monitors.data_quality",
}

# Run at `features.interval` (not the model's), in the feature worker process, and not at
# all with `features.enabled: false` (monitors/feature_worker.py).
FEATURE_FAMILIES: tuple[str, ...] = ("feature_drift", "data_quality")
