"""`modelmon dashboards generate | push | check`.

`generate` writes to --out (default ./modelmon-dashboards in the working directory),
never into the installed package unless asked (the repository regenerates its
committed copies with `--out dashboards/json`), and never overwrites a file that is
not the modelmon dashboard of that name. `check` first makes sure a Prometheus answers,
so an outage is not reported as panels without data.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from modelmon.config import Config

DEFAULT_OUT = "modelmon-dashboards"


def _foreign(out: Path, dashboards: dict[str, dict[str, Any]]) -> list[str]:
    """Existing `<name>.json` files in `out` that are not a modelmon dashboard of that name
    (JSON with the generated dashboard's uid): generate never overwrites those."""
    found = []
    for name, dash in dashboards.items():
        path = out / f"{name}.json"
        if not path.exists():
            continue
        try:
            ours = json.loads(path.read_text(encoding="utf-8")).get("uid") == dash.get("uid")
        except (OSError, ValueError, AttributeError):
            ours = False
        if not ours:
            found.append(path.name)
    return found


def _generate(args: argparse.Namespace, cfg: Config) -> int:
    from modelmon.dashboards.generate import JSON_DIR, build_all, generate, render

    if args.check:
        out = Path(args.out or JSON_DIR)
        stale = []
        for name, dash in build_all(cfg.alerts.api_base_url).items():
            path = out / f"{name}.json"
            if not path.is_file() or path.read_text(encoding="utf-8") != render(dash):
                stale.append(name)
        if stale:
            print(f"dashboards out of date in {out}: {', '.join(stale)} "
                  "(run `modelmon dashboards generate`)", file=sys.stderr)
            return 1
        print(f"dashboards in {out} are up to date")
        return 0
    out = Path(args.out or DEFAULT_OUT)
    foreign = _foreign(out, build_all(cfg.alerts.api_base_url))
    if foreign:
        print(f"modelmon: {', '.join(foreign)} in {out} not written by modelmon (not a modelmon "
              "dashboard); not overwriting: move it or choose another --out", file=sys.stderr)
        return 2
    for path in generate(out, cfg.alerts.api_base_url):
        print(f"wrote {path}")
    return 0


def _check(args: argparse.Namespace, cfg: Config) -> int:
    from modelmon.dashboards.check import PrometheusUnreachable, check_dashboard, probe
    from modelmon.dashboards.generate import build_all

    prometheus = args.prometheus.rstrip("/")
    try:
        probe(prometheus)
    except PrometheusUnreachable as exc:
        print(f"modelmon: {exc}; nothing checked: check --prometheus and that Prometheus is "
              "running", file=sys.stderr)
        return 2
    preferred = dict(item.split("=", 1) for item in args.set or [] if "=" in item)
    failed = False
    for name, dash in build_all().items():
        report = check_dashboard(prometheus, name, dash, preferred)
        chosen = ", ".join(f"{k}={v}" for k, v in report.chosen.items()) or "no variables"
        print(f"{name}: {report.checked - len(report.empty)} of {report.checked} queries return data ({chosen})")
        for var, found in report.variables.items():
            if not found:
                print(f"  variable ${var} has no values")
        for line in report.empty:
            print(f"  no data: {line}")
        for line in report.errors:
            print(f"  error: {line}")
        failed |= not report.ok
    return 1 if failed else 0


def _push(args: argparse.Namespace, cfg: Config) -> int:
    from modelmon.dashboards.generate import build_all, load_dir
    from modelmon.dashboards.push import PushError, push

    url = args.grafana_url or os.environ.get("MODELMON_GRAFANA_URL")
    token = args.token or os.environ.get("MODELMON_GRAFANA_TOKEN")
    if not url:
        print("modelmon: no Grafana URL: pass --grafana-url or set MODELMON_GRAFANA_URL", file=sys.stderr)
        return 2
    if not token:
        print("modelmon: no Grafana token: pass --token or set MODELMON_GRAFANA_TOKEN", file=sys.stderr)
        return 2
    dashboards: dict[str, dict[str, Any]] = load_dir(args.dir) if args.dir else build_all(cfg.alerts.api_base_url)
    if not dashboards:
        print(f"modelmon: no dashboard JSON files in {args.dir}", file=sys.stderr)
        return 2
    try:
        results = push(url, token, dashboards, folder=args.folder, timeout=args.timeout)
    except PushError as exc:
        print(f"modelmon: {exc}", file=sys.stderr)
        return 1
    base = url.rstrip("/")
    for r in results:
        print(f"pushed {r.title!r} (uid {r.uid}, version {r.version}) -> {base}{r.url}")
    return 0


def register(subparsers: Any) -> None:
    dash = subparsers.add_parser("dashboards", help="Grafana dashboards")
    sub = dash.add_subparsers(dest="dashboards_command", required=True)
    gen = sub.add_parser(
        "generate", help="write the dashboard JSON files",
        description="Write one JSON file per dashboard into --out. A file of the same name that "
        "is not that modelmon dashboard is never overwritten; nothing is deleted.",
    )
    gen.add_argument("-o", "--out", metavar="DIR",
                     help=f"output folder, created if missing (default: ./{DEFAULT_OUT}; with "
                     "--check: the JSON shipped in the package, which `push` uploads)")
    gen.add_argument("--check", action="store_true",
                     help="only check the files in --out are up to date (exit 1 if not)")
    gen.set_defaults(handler=_generate)
    p = sub.add_parser("push", help="upload the dashboards to Grafana (folder, overwrite)")
    p.add_argument("--grafana-url", help="e.g. http://127.0.0.1:3000 (or $MODELMON_GRAFANA_URL)")
    p.add_argument("--token", help="service-account token, or user:password (or $MODELMON_GRAFANA_TOKEN)")
    p.add_argument("--folder", default="modelmon", help="Grafana folder title (created if missing)")
    p.add_argument("--dir", help="push the JSON files in this folder instead of the built-in dashboards")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per HTTP request")
    p.set_defaults(handler=_push)
    chk = sub.add_parser("check", help="run every panel query through Prometheus; list those without data")
    chk.add_argument("--prometheus", required=True, help="Prometheus base URL, e.g. http://127.0.0.1:9090")
    chk.add_argument("--set", action="append", metavar="VAR=VALUE",
                     help="preferred variable value, e.g. model=fraud (default: the first value found)")
    chk.set_defaults(handler=_check)
