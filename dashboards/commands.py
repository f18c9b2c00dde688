"""`modelmon dashboards generate | push`."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from modelmon.config import Config


def _generate(args: argparse.Namespace, cfg: Config) -> int:
    from modelmon.dashboards.generate import JSON_DIR, build_all, generate, render

    out = args.out or JSON_DIR
    if args.check:
        stale = []
        for name, dash in build_all().items():
            path = Path(out) / f"{name}.json"
            if not path.is_file() or path.read_text(encoding="utf-8") != render(dash):
                stale.append(name)
        if stale:
            print(f"dashboards out of date in {out}: {', '.join(stale)} "
                  "(run `modelmon dashboards generate`)", file=sys.stderr)
            return 1
        print(f"dashboards in {out} are up to date")
        return 0
    for path in generate(out):
        print(f"wrote {path}")
    return 0


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
    dashboards: dict[str, dict[str, Any]] = load_dir(args.dir) if args.dir else build_all()
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


def _check(args: argparse.Namespace, cfg: Config) -> int:
    from modelmon.dashboards.check import check_dashboard
    from modelmon.dashboards.generate import build_all

    preferred = dict(item.split("=", 1) for item in args.set or [] if "=" in item)
    failed = False
    for name, dash in build_all().items():
        report = check_dashboard(args.prometheus.rstrip("/"), name, dash, preferred)
        chosen = ", ".join(f"{k}={v}" for k, v in report.chosen.items()) or "no variables"
        print(f"{name}: {report.checked - len(report.empty)} of {report.checked} queries return data ({chosen})")
        for var, found in report.variables.items():
            if not found:
                print(f"  variable ${var} has no values")
        for line in report.empty + report.errors:
            print(f"  no data: {line}")
        failed |= not report.ok
    return 1 if failed else 0


def register(subparsers: Any) -> None:
    dash = subparsers.add_parser("dashboards", help="Grafana dashboards")
    sub = dash.add_subparsers(dest="dashboards_command", required=True)
    gen = sub.add_parser("generate", help="write the dashboard JSON files")
    gen.add_argument("--out", help="output folder (default: the package's dashboards/json)")
    gen.add_argument("--check", action="store_true", help="only check the files are up to date (exit 1 if not)")
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
