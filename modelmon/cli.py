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

from modelmon.config import Config, ConfigError, load_config

STAGE_COMMANDS = (
    "modelmon.ingest.commands",
    "modelmon.monitors.commands",
    "modelmon.alerts.commands",
    "modelmon.dashboards.commands",
    "modelmon.demo.commands",
    "modelmon.api.commands",
    "modelmon.runtime",
)

Handler = Callable[[argparse.Namespace, Config], int | None]


def _db_upgrade(args: argparse.Namespace, cfg: Config) -> int:
    from modelmon.store.engine import make_engine
    from modelmon.store.migrate import current, upgrade

    engine = make_engine(cfg.database.url)
    upgrade(engine, args.revision)
    print(f"database {engine.url.render_as_string(hide_password=True)} at revision {current(engine)}")
    return 0


def _config_check(args: argparse.Namespace, cfg: Config) -> int:
    names = sorted(cfg.models) or ["(none configured; models are discovered from the store)"]
    print("configuration is valid; models: " + ", ".join(names))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="modelmon", description="Production monitoring for ML models.")
    parser.add_argument("-c", "--config", help="YAML configuration (default: ./modelmon.yaml or $MODELMON_CONFIG)")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ERROR")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    db = sub.add_parser("db", help="database schema").add_subparsers(dest="db_command", required=True)
    up = db.add_parser("upgrade", help="create or migrate the store's tables")
    up.add_argument("revision", nargs="?", default="head")
    up.set_defaults(handler=_db_upgrade)

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
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
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


if __name__ == "__main__":
    sys.exit(main())
