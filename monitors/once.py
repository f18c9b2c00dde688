"""`modelmon monitor --once`: one synchronous pass of every family, printed as a table.

For cron, CI and first contact: no HTTP server, no Prometheus needed to see what the
monitors make of the store. The exit status says whether every job ran (0) or one
failed (1); the failures are listed on stderr, one line each.
"""

from __future__ import annotations

import sys
from typing import Any

from modelmon.config import Config

COLUMNS = ("model", "family", "window", "metric", "slice", "value", "status", "samples")


def _value(v: float | None) -> str:
    return "-" if v is None else f"{v:.4g}"


def _first_line(text: str) -> str:
    return (text.strip().splitlines() or [""])[0]


def render_table(rows: list[dict[str, Any]]) -> None:
    """The `monitor_latest` rows as a table on stdout; a model version other than "*" is
    shown after the model name. Never wrapped when piped, so each row stays one line."""
    from rich.console import Console
    from rich.table import Table

    table = Table(*COLUMNS, box=None, pad_edge=False, header_style="bold")
    for column in ("value", "samples"):
        table.columns[COLUMNS.index(column)].justify = "right"
    for r in rows:
        model = r["model"] if r["model_version"] == "*" else f"{r['model']}@{r['model_version']}"
        table.add_row(
            model,
            r["monitor"],
            r["window"],
            r["metric"],
            r["slice"] or "-",
            _value(r["value"]),
            r["status"],
            str(r["sample_count"]),
        )
    console = Console(width=None if sys.stdout.isatty() else 10_000, highlight=False)
    console.print(table)


def monitor_once(cfg: Config) -> int:
    """Migrate like `modelmon monitor` does, run every job once, print the latest results."""
    from modelmon.monitors.results import latest_results
    from modelmon.monitors.scheduler import MonitorScheduler
    from modelmon.store.engine import make_engine
    from modelmon.store.migrate import upgrade

    engine = make_engine(cfg.database.url, echo=cfg.database.echo)
    try:
        upgrade(engine, cfg=cfg)
        scheduler = MonitorScheduler(cfg, engine)
        try:
            outcomes = scheduler.run_once()
        finally:
            scheduler.stop()  # ends the feature worker process, if a feature job started it
        with engine.connect() as conn:
            rows = latest_results(conn)
    finally:
        engine.dispose()
    if rows:
        render_table(rows)
    else:
        print("no monitor results: no model configured or stored yet")
    failed = {job: out for job, out in outcomes.items() if out.startswith("error")}
    for job, out in failed.items():
        print(
            f"modelmon: monitor job {job} failed: {_first_line(out.removeprefix('error: '))}",
            file=sys.stderr,
        )
    return 1 if failed else 0
