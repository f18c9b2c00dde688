"""`modelmon rules generate`: write the Prometheus rule files from modelmon.yaml."""

from __future__ import annotations

import argparse

from modelmon.config import Config


def _generate(args: argparse.Namespace, cfg: Config) -> int:
    from modelmon.alerts.rules import RuleOptions, stale_files, write_rules

    options = RuleOptions(runbook_base=args.runbook_base, for_scale=args.for_scale)
    if args.check:
        stale = stale_files(cfg, args.out, options)
        for name in stale:
            print(f"{args.out}/{name}: differs from the configuration; run `modelmon rules generate`")
        return 1 if stale else 0
    for path in write_rules(cfg, args.out, options):
        print(path)
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from modelmon.alerts.rules import DEFAULT_RUNBOOK_BASE

    rules = sub.add_parser("rules", help="Prometheus alerting rules").add_subparsers(
        dest="rules_command", required=True
    )
    gen = rules.add_parser(
        "generate",
        help="write Prometheus rule files from the configuration",
        description="Write one rule file per configured model, one for every other (discovered) "
        "model and one for the service, deleting generated files no longer produced.",
    )
    gen.add_argument("--out", default="alerts/rules", help="directory (default: alerts/rules)")
    gen.add_argument(
        "--runbook-base", default=DEFAULT_RUNBOOK_BASE,
        help="URL of the document holding the 'Runbook: <alert>' sections (default: %(default)s)",
    )
    gen.add_argument(
        "--for-scale", type=float, default=1.0,
        help="multiply every alert's `for:` duration (tests: 0.01); default 1",
    )
    gen.add_argument("--check", action="store_true", help="only report files that differ; exit 1 if any")
    gen.set_defaults(handler=_generate)
