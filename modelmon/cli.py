"""The `modelmon` command. Each stage registers its own subcommands.

A stage module `commands` exposes `register(subparsers)`; handlers receive the
parsed arguments and the validated configuration. Heavy imports stay inside
handlers so `modelmon --help` is fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable
from datetime import UTC, datetime

from modelmon.config import Config, ConfigError, load_config

STAGE_COMMANDS = (
    "modelmon.ingest.commands",
    "modelmon.ingest.deadletters",
    "modelmon.monitors.commands",
    "modelmon.alerts.commands",
    "modelmon.dashboards.commands",
    "modelmon.demo.commands",
    "modelmon.api.commands",
    "modelmon.api.report_command",
    "modelmon.runtime",
)

Handler = Callable[[argparse.Namespace, Config], int | None]


def _db_upgrade(args: argparse.Namespace, cfg: Config) -> int:
    from modelmon.store.engine import make_engine
    from modelmon.store.migrate import current, upgrade

    engine = make_engine(cfg.database.url)
    upgrade(engine, args.revision, cfg)  # cfg: what a rollups backfill counts
    print(f"database {engine.url.render_as_string(hide_password=True)} at revision {current(engine)}")
    return 0


def parse_time(text: str) -> float:
    """Epoch seconds, or an RFC 3339 time (a 'Z' or an offset; none means UTC)."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text.strip().upper())  # 2026-01-31t12:00:00z too
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected epoch seconds or an RFC 3339 time like 2026-01-31T12:00:00Z, got {text!r}"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def _utc(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _rollups_rebuild(args: argparse.Namespace, cfg: Config) -> int:
    from modelmon.store.engine import make_engine
    from modelmon.store.rebuild import RebuildReport, rebuild, stored_models
    from modelmon.store.rollups import Specs

    engine = make_engine(cfg.database.url, echo=cfg.database.echo)
    try:
        models = stored_models(engine) if args.all else [args.model]

        def progress(r: RebuildReport) -> None:
            print(f"{r.model}: rebuilt up to {_utc(r.end or 0.0)}, {r.rows} rows", flush=True)

        specs = Specs(cfg)
        rows = chunks = 0
        for model in models:
            r = rebuild(engine, specs, model, since=args.since, progress=progress)
            rows, chunks = rows + r.rows, chunks + r.chunks
            if r.start is None:
                print(f"{model}: no predictions stored, nothing to rebuild")
            elif r.chunks:
                print(f"{model}: done, {_utc(r.start)} to {_utc(r.end or r.start)}, "
                      f"{r.rows} rows in {r.chunks} chunks, {r.seconds:.1f} s")
            else:
                print(f"{model}: nothing stored from {_utc(r.start)} on")
        print(f"rollups rebuilt for {len(models)} model(s): {rows} rows in {chunks} chunks")
    finally:
        engine.dispose()
    return 0


def _config_check(args: argparse.Namespace, cfg: Config) -> int:
    from modelmon.store.engine import url_problem

    problem = url_problem(cfg.database.url)
    if problem:
        print(f"modelmon: {problem}", file=sys.stderr)
        return 2
    names = sorted(cfg.models) or ["(none configured; models are discovered from the store)"]
    print("configuration is valid; models: " + ", ".join(names))
    return 0


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("modelmon")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown"


def _common_options(parser: argparse.ArgumentParser, default: object) -> None:
    """-c and --log-level. Every subcommand accepts them too (`modelmon run -c prod.yaml`) with
    SUPPRESS as default, so a value given after the subcommand wins and none given leaves the
    top-level one (or its default) in place."""
    parser.add_argument("-c", "--config", default=default,
                        help="YAML configuration (default: $MODELMON_CONFIG, else ./modelmon.yaml "
                        "if present, else built-in defaults)")
    parser.add_argument("--log-level", default="INFO" if default is None else default,
                        help="DEBUG, INFO, WARNING or ERROR (default: INFO)")


def _subparsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """Every (sub)command parser below `parser`, depth first, each once."""
    found: list[argparse.ArgumentParser] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                found += [sub, *_subparsers(sub)]
    return found


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="modelmon", description="Production monitoring for ML models.")
    parser.add_argument("--version", action="version", version=f"modelmon {_version()}",
                        help="print modelmon's version and exit")
    _common_options(parser, None)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    db = sub.add_parser("db", help="database schema").add_subparsers(dest="db_command", required=True)
    up = db.add_parser("upgrade", help="create or migrate the store's tables")
    up.add_argument("revision", nargs="?", default="head",
                    help="Alembic revision to migrate to (default: head)")
    up.set_defaults(handler=_db_upgrade)

    rollups = sub.add_parser("rollups", help="pre-aggregated buckets the monitors read")
    rsub = rollups.add_subparsers(dest="rollups_command", required=True)
    rb = rsub.add_parser(
        "rebuild",
        help="recompute rollups from the stored predictions",
        description="Recompute rollups from the stored predictions, one chunk of coarse buckets "
        "per transaction, oldest first: needed after changing slices, positive_class, "
        "confidence_threshold, calibration_bins, latency SLO thresholds or "
        "rollups.sketch_relative_accuracy. Prints a line per chunk; an interrupted rebuild "
        "resumes with --since at the last chunk end printed.",
    )
    which = rb.add_mutually_exclusive_group(required=True)
    which.add_argument("--model", metavar="M", help="the model whose rollups to rebuild")
    which.add_argument("--all", action="store_true", help="every model with stored predictions")
    rb.add_argument(
        "--since", metavar="T", type=parse_time, default=None,
        help="rebuild from the coarse bucket holding T on (epoch seconds or RFC 3339, e.g. "
        "2026-01-31T12:00:00Z); earlier buckets are left as they are (default: the first "
        "stored prediction)",
    )
    rb.set_defaults(handler=_rollups_rebuild)

    conf = sub.add_parser("config", help="configuration").add_subparsers(dest="config_command", required=True)
    conf.add_parser("check", help="validate the configuration and exit").set_defaults(handler=_config_check)

    for module_name in STAGE_COMMANDS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue
        module.register(sub)
    for subparser in _subparsers(parser):
        _common_options(subparser, argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = getattr(logging, str(args.log_level).upper(), logging.INFO)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if level > logging.DEBUG:  # Alembic names each of its plugins on every run: noise
        logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(f"modelmon: {exc}", file=sys.stderr)
        return 2
    handler: Handler = args.handler
    try:
        return int(handler(args, cfg) or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        from modelmon.store.engine import database_error_message

        message = database_error_message(exc, cfg.database.url)
        if message is None:
            raise
        print(f"modelmon: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
