"""The monitor families the scheduler runs, by name.

Each module exposes
    collect(conn: sqlalchemy.Connection, model: ResolvedModel, now: float) -> list[WindowedRow]
which queries the store (aggregates in SQL) and hands the data to the family's
pure computation. The scheduler runs one job per (family, model).
"""

FAMILIES: dict[str, str] = {
    "accuracy": "modelmon.monitors.accuracy",
    "proxies": "modelmon.monitors.proxies",
    "shift": "modelmon.monitors.shift",
    "latency": "modelmon.monitors.latency",
    "fairness": "modelmon.monitors.fairness",
    "compare": "modelmon.monitors.compare",
}
