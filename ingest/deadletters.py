"""`modelmon deadletters list` and `modelmon deadletters replay` (logic: modelmon.ingest.replay).

Heavy imports stay inside the handlers so `modelmon --help` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from typing import Any

from modelmon.config import Config


def _selection(args: argparse.Namespace) -> Any:
    from modelmon.ingest.replay import Selection

    return Selection(reason=args.reason, since=args.since, until=args.until, limit=args.limit)


def _engine(cfg: Config) -> Any:
    from modelmon.store.engine import make_engine

    return make_engine(cfg.database.url, echo=cfg.database.echo)


def _utc(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _list(args: argparse.Namespace, cfg: Config) -> int:
    import sqlalchemy as sa

    from modelmon.store.tables import dead_letters as dl

    sel = _selection(args)
    stmt = (
        sa.select(dl.c.id, dl.c.received_at, dl.c.reason, dl.c.topic, dl.c.partition, dl.c.offset,
                  dl.c.payload_bytes, dl.c.payload_truncated, dl.c.replayed_at, dl.c.detail)
        .where(*sel.where())
        .order_by(dl.c.id.desc())
        .limit(sel.limit)
    )
    engine = _engine(cfg)
    try:
        with engine.connect() as conn:
            rows = conn.execute(stmt).all()
    finally:
        engine.dispose()
    print(f"{'id':>8}  {'received':20}  {'reason':22}  {'position':32}  {'bytes':>8}  "
          f"{'state':10}  detail")
    for r in rows:
        where = "-" if r.topic is None else f"{r.topic}[{r.partition}]@{r.offset}"
        state = "replayed" if r.replayed_at is not None else (
            "truncated" if r.payload_truncated else "")
        print(f"{r.id:>8}  {_utc(r.received_at):20}  {r.reason:22}  {where:32}  "
              f"{r.payload_bytes:>8}  {state:10}  {r.detail[:100]}")
    print(f"{len(rows)} dead letter(s), newest first", file=sys.stderr)
    return 0


def _replay(args: argparse.Namespace, cfg: Config) -> int:
    from modelmon.ingest.replay import replay

    engine = _engine(cfg)
    try:
        report = replay(engine, cfg, _selection(args), dry_run=args.dry_run,
                        batch_size=args.batch_size)
    finally:
        engine.dispose()
    print(report.summary())
    return 0


def _filters(p: argparse.ArgumentParser, limit_help: str, limit_default: int | None) -> None:
    from modelmon.cli import parse_time

    p.add_argument("--reason", metavar="R", help="only this dead-letter reason (e.g. timestamp_in_future)")
    p.add_argument("--since", metavar="T", type=parse_time,
                   help="received at T or later (epoch seconds or RFC 3339, e.g. 2026-01-31T12:00:00Z)")
    p.add_argument("--until", metavar="T", type=parse_time, help="received before T")
    p.add_argument("--limit", metavar="N", type=_positive, default=limit_default, help=limit_help)


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return n


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    dead = sub.add_parser("deadletters", help="inspect and replay stored dead letters")
    dsub = dead.add_subparsers(dest="deadletters_command", required=True)
    ls = dsub.add_parser("list", help="print stored dead letters, newest first")
    _filters(ls, "at most N (default 50)", 50)
    ls.set_defaults(handler=_list)
    rp = dsub.add_parser(
        "replay",
        help="feed stored dead letters back through validation and the write path",
        description="Parse the selected dead letters again as ingest does and store those that are "
        "valid now (after a fix: a producer's clock, ingest.max_future_skew, ...), in batches of "
        "ingest.batch_max_events, with ingest's guarantees: first write wins, nothing stored twice. "
        "Replayed dead letters are marked and skipped by a rerun; truncated payloads "
        "(longer than ingest.dead_letter_payload_bytes) cannot be replayed and are only counted.",
    )
    _filters(rp, "at most N dead letters (default: all that match)", None)
    rp.add_argument("--dry-run", action="store_true",
                    help="only validate: count what would be replayed, write nothing")
    rp.add_argument("--batch-size", metavar="N", type=_positive, default=None,
                    help="dead letters per transaction (default ingest.batch_max_events)")
    rp.set_defaults(handler=_replay)
