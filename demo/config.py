"""The demo's modelmon.yaml: short windows and small minimums sized for the simulated rate."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from modelmon.config import Config, load_config
from modelmon.demo.simulator import FRAUD, SPECIES, SPECIES_CLASSES


def demo_settings(
    db_url: str, bootstrap: str, port: int, rate: float, windows: list[str] | None = None
) -> dict[str, Any]:
    """Windows 1m/5m (short demos: 1m, see demo/expectations.py), a 5 s interval,
    minimums of a few seconds of traffic."""
    return {
        "database": {"url": db_url},
        "kafka": {"bootstrap_servers": bootstrap,
                  # A group join takes about half the session timeout on the demo broker.
                  "consumer": {"session_timeout_ms": 3000, "heartbeat_interval_ms": 500}},
        "ingest": {"batch_max_age": "500ms", "status_interval": "30s"},
        "server": {"host": "127.0.0.1", "port": port},
        # Every pass kept in the history, for the demo's own checks and the live view.
        "monitors": {"discover_models": False, "history_interval": "5s"},
        # Windows of a minute need buckets finer than the default minute.
        "rollups": {"fine": "1s", "coarse": "1m"},
        "defaults": {
            "windows": windows or ["1m", "5m"],
            "interval": "5s",
            "min_samples": max(20, int(rate * 5)),
            "min_labels": max(20, int(rate * 3)),
            # Fairness compares rates between slices: small slices make the ratio noisy.
            "min_slice_samples": max(50, int(rate * 8)),
            # The previous window as a rolling baseline sees the mix *returning* after a
            # class shift as a new shift, for another two windows: no demo length leaves
            # room for that, so the demo compares with a day before (none: research only).
            "rolling_baseline": "day_before",
            "mature_coverage": 0.3,
            "thresholds": {"freshness": "20s"},
        },
        "models": {
            FRAUD: {
                "task": "binary", "positive_class": 1, "slices": ["sex", "region"],
                "slos": [
                    {"name": "latency-300ms", "kind": "latency", "threshold": "300ms", "objective": 0.99,
                     "period": "1d"},
                    {"name": "errors", "kind": "error_rate", "objective": 0.99, "period": "1d"},
                ],
            },
            SPECIES: {
                "task": "multiclass", "classes": list(SPECIES_CLASSES),
                "slos": [{"name": "latency-200ms", "kind": "latency", "threshold": "200ms", "objective": 0.99,
                          "period": "1d"}],
            },
        },
    }


def write_demo_config(path: Path, settings: dict[str, Any]) -> Config:
    path.write_text("# Written by `modelmon demo`.\n" + yaml.safe_dump(settings, sort_keys=False))
    return load_config(path, environ={})
