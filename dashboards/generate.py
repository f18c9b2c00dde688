"""Write the dashboards as JSON files: deterministic, so a diff shows what changed."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from modelmon.config import AlertsConfig
from modelmon.dashboards import fairness, fleet, model_detail

# File name (without .json) -> builder, given `alerts.api_base_url` (the report link).
DASHBOARDS: dict[str, Callable[[str], dict[str, Any]]] = {
    "fleet-overview": lambda _api: fleet.build(),
    "model-detail": model_detail.build,
    "fairness": lambda _api: fairness.build(),
}
DEFAULT_API_BASE_URL = AlertsConfig().api_base_url

JSON_DIR = Path(__file__).resolve().parent / "json"
PROVISIONING_DIR = Path(__file__).resolve().parent / "provisioning"


def render(dashboard: dict[str, Any]) -> str:
    """The file text: sorted keys, two-space indent, trailing newline."""
    return json.dumps(dashboard, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def build_all(api_base_url: str = DEFAULT_API_BASE_URL) -> dict[str, dict[str, Any]]:
    return {name: build(api_base_url) for name, build in DASHBOARDS.items()}


def generate(out_dir: str | Path = JSON_DIR, api_base_url: str = DEFAULT_API_BASE_URL) -> list[Path]:
    """Write every dashboard to `out_dir/<name>.json`; returns the paths written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, dash in build_all(api_base_url).items():
        path = out / f"{name}.json"
        path.write_text(render(dash), encoding="utf-8")
        paths.append(path)
    return paths


def load_dir(directory: str | Path = JSON_DIR) -> dict[str, dict[str, Any]]:
    """The dashboards in a folder of JSON files, by file stem (sorted)."""
    return {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in sorted(Path(directory).glob("*.json"))}
