"""`modelmon report`: write the Evidently deep-dive report of a window to an HTML file.

The command is also what the API runs, in a child process, for `GET /v1/report`
(`python -m modelmon.api.report_command --worker`, request on stdin): evidently's import
and the report's memory then live and die with that child, never in the API process.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from modelmon.config import Config, parse_duration

WORKER_FAILED = 3  # the worker's exit status when it reports a ReportError on stdout


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _time(text: str) -> float:
    from modelmon.cli import parse_time

    return parse_time(text)


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "report",
        help="write the Evidently deep-dive report (feature drift, classification quality) "
        "of a window against the model's reference",
        description="Write an Evidently HTML report of a window's prediction sample (the "
        "same deterministic sample of at most features.sample_rows rows the feature "
        "families read) against the model's stored reference: data drift of every feature, "
        "and classification quality on the labelled predictions. The page is self-contained "
        "(opens offline). Needs the [evidently] extra.",
    )
    p.add_argument("--model", required=True, metavar="M", help="the model to report on")
    p.add_argument("--version", metavar="V", help="only predictions of this model_version")
    p.add_argument(
        "--window", type=_duration, metavar="LEN",
        help="window length before its end, e.g. 1h, 1d (default: 1d, unless --from is given)",
    )
    p.add_argument(
        "--from", dest="start", type=_time, metavar="T",
        help="window start (epoch seconds or RFC 3339); with --window too, both bounds apply",
    )
    p.add_argument("--to", dest="end", type=_time, metavar="T",
                   help="window end, exclusive (epoch seconds or RFC 3339; default: the last "
                   "multiple of features.interval, 5 minutes by default)")
    p.add_argument("--out", required=True, type=Path, metavar="FILE",
                   help="the HTML file to write")
    p.add_argument("--json", dest="json_out", type=Path, metavar="FILE",
                   help="also write evidently's results (scores, thresholds, counts) as JSON")
    p.set_defaults(handler=_report)


def _report(args: argparse.Namespace, cfg: Config) -> int:
    from modelmon.api.report import ReportError

    try:
        report = run_report(cfg, args.model, args.version, args.window, args.start, args.end,
                            time.time())
    except ReportError as exc:
        print(f"modelmon: {exc.message}", file=sys.stderr)
        return 2
    _write(args.out, report.html)
    if args.json_out is not None:
        _write(args.json_out, json.dumps(report.results, indent=1))
    count, share = report.drifted
    plan = report.plan
    print(
        f"wrote {args.out}: {len(plan.columns)} features compared ({len(plan.numeric)} numeric, "
        f"{len(plan.categorical)} categorical), {count} drifted (share {share:.2f}); "
        f"{report.current_rows} predictions sampled; classification {report.classification}"
    )
    return 0


def _write(path: Path, text: str) -> None:
    """Write through a temporary file, so a reader never sees half a report."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def run_report(
    cfg: Config, model: str, version: str | None, window: float | None,
    start: float | None, end: float | None, now: float,
) -> Any:
    """Resolve the window, read the inputs, build the report (raises ReportError)."""
    from modelmon.api.report import ReportError, build, load_inputs, resolve_window
    from modelmon.contract import MODEL_RE
    from modelmon.store.engine import make_engine

    if not MODEL_RE.match(model):
        raise ReportError(404, "no such model: model names match [A-Za-z0-9_.-]{1,64}")
    span = resolve_window(cfg, model, version, window, start, end, now)
    engine = make_engine(cfg.database.url)
    try:
        inputs = load_inputs(cfg, engine, span)
    finally:
        engine.dispose()
    # evidently and its dependencies warn about their own deprecations: noise for a user.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build(cfg, inputs)


def worker(stdin: Any = None, stdout: Any = None) -> int:
    """The child process of `GET /v1/report`: a JSON request on stdin, the page written
    to request["out"], one JSON line on stdout ({"status": 200} or {"status", "error"})."""
    from modelmon.api.report import ReportError

    req = json.loads((stdin or sys.stdin).read())
    out = stdout or sys.stdout
    cfg = Config.model_validate(req["config"])
    try:
        report = run_report(cfg, req["model"], req.get("version"), None, req["start"],
                            req["end"], time.time())
    except ReportError as exc:
        out.write(json.dumps({"status": exc.status, "error": exc.message}) + "\n")
        return WORKER_FAILED
    Path(req["out"]).write_text(report.html, encoding="utf-8")
    out.write(json.dumps({"status": 200, "rows": report.current_rows}) + "\n")
    return 0


if __name__ == "__main__":
    if sys.argv[1:] != ["--worker"]:
        sys.exit("usage: python -m modelmon.api.report_command --worker < request.json")
    sys.exit(worker())
