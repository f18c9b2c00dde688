"""Stored dead letters fed back through validation and the write path, after a fix.

A producer's clock corrected, `ingest.max_future_skew` relaxed, a contract change:
the dead letters whose payload is kept whole (`ingest.dead_letter_payload_bytes`)
are parsed again exactly as ingest parses Kafka records (`parse_records`) and
written by the same writer (`BatchWriter`: one transaction per bounded batch,
split when the store refuses one), keeping their original Kafka position. So
the guarantees are ingest's: first write wins, an event stored already (by an
earlier replay, or re-sent by its producer) is a duplicate or a conflict, never
stored twice. A dead letter whose event is now stored, or found stored, gets
`replayed_at` and a rerun skips it; one still invalid stays as it is (a later
fix can replay it); a truncated payload is counted, never replayed.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from modelmon.config import Config
from modelmon.ingest.batch import Batch, parse_records
from modelmon.ingest.writer import BatchWriter, Job
from modelmon.store.rollups import Specs
from modelmon.store.tables import dead_letters as dl


@dataclass(frozen=True, slots=True)
class Selection:
    """Which dead letters: by reason, received in [since, until), at most `limit`."""

    reason: str | None = None
    since: float | None = None
    until: float | None = None
    limit: int | None = None

    def where(self) -> list[sa.ColumnElement[bool]]:
        conds: list[sa.ColumnElement[bool]] = []
        if self.reason is not None:
            conds.append(dl.c.reason == self.reason)
        if self.since is not None:
            conds.append(dl.c.received_at >= self.since)
        if self.until is not None:
            conds.append(dl.c.received_at < self.until)
        return conds


@dataclass(slots=True)
class ReplayReport:
    dry_run: bool = False
    selected: int = 0  # matched and not replayed before
    truncated: int = 0  # payload cut short: cannot be replayed
    replayed: int = 0  # valid now and written (stored, duplicate or conflict); in a dry run: would be
    stored: int = 0
    duplicates: int = 0
    conflicts: int = 0
    still_invalid: Counter[str] = field(default_factory=Counter)  # by the reason now

    def summary(self) -> str:
        invalid = sum(self.still_invalid.values())
        reasons = ", ".join(f"{r} {n}" for r, n in sorted(self.still_invalid.items()))
        tail = (f"still invalid {invalid}" + (f" ({reasons})" if reasons else "")
                + f"; truncated {self.truncated} (cannot replay)")
        if self.dry_run:
            return (f"dry run: {self.replayed} of {self.selected} dead letters would be "
                    f"replayed; {tail}; nothing written")
        return (f"replayed {self.replayed} of {self.selected} dead letters: {self.stored} stored, "
                f"{self.duplicates} duplicates, {self.conflicts} conflicts; {tail}")


@dataclass(frozen=True, slots=True)
class _Record:
    """A dead letter as the Kafka record it came from (what parse_records reads)."""

    topic: str
    partition: int
    offset: int
    value: bytes | None
    headers: tuple[()] = ()


def _chunks(engine: sa.Engine, sel: Selection, size: int) -> Iterator[list[Any]]:
    """Dead letters not replayed yet, oldest first, `size` at a time, at most sel.limit."""
    after, left = 0, sel.limit
    while left is None or left > 0:
        n = size if left is None else min(size, left)
        stmt = (
            sa.select(dl.c.id, dl.c.topic, dl.c.partition, dl.c.offset, dl.c.payload,
                      dl.c.payload_truncated)
            .where(dl.c.replayed_at.is_(None), dl.c.id > after, *sel.where())
            .order_by(dl.c.id)
            .limit(n)
        )
        with engine.connect() as conn:
            rows = conn.execute(stmt).all()
        if not rows:
            return
        after = rows[-1].id
        if left is not None:
            left -= len(rows)
        yield rows


def make_writer(engine: sa.Engine, cfg: Config) -> BatchWriter:
    ing = cfg.ingest
    return BatchWriter(
        engine, cfg.kafka.predictions_topic, cfg.kafka.feedback_topic, ing.max_message_bytes,
        ing.dead_letter_payload_bytes, ing.db_retry_initial, ing.db_retry_max,
        specs=Specs(cfg), max_future_skew=ing.max_future_skew,
    )


def replay(
    engine: sa.Engine, cfg: Config, sel: Selection | None = None, dry_run: bool = False,
    batch_size: int | None = None,
) -> ReplayReport:
    """Replay the selected dead letters (default: all) in batches of `batch_size`
    (default ingest.batch_max_events), each written in its own transaction(s)."""
    sel = sel or Selection()
    report = ReplayReport(dry_run=dry_run)
    writer = make_writer(engine, cfg)
    size = batch_size or cfg.ingest.batch_max_events
    for rows in _chunks(engine, sel, size):
        report.selected += len(rows)
        whole = [r for r in rows if not r.payload_truncated]
        report.truncated += len(rows) - len(whole)
        if not whole:
            continue
        records = [_Record(r.topic, r.partition, r.offset, r.payload) for r in whole]
        if dry_run:
            parsed = parse_records(records, writer.predictions_topic, writer.feedback_topic,
                                   writer.max_message_bytes, writer.payload_limit,
                                   writer.max_future_skew)
            report.replayed += len(parsed.predictions) + len(parsed.feedback)
            report.still_invalid.update(d.reason for d in parsed.dead_letters)
            continue
        job = Job(Batch(records=list(records)), generation=0)
        writer.process(job)
        if job.outcome is None or job.parsed is None:
            raise RuntimeError(f"replay stopped: {job.error or 'the batch was not written'}")
        _count(report, job)
        _mark_replayed(engine, whole, job)
    return report


def _count(report: ReplayReport, job: Job) -> None:
    assert job.outcome is not None and job.parsed is not None
    out, parsed = job.outcome, job.parsed
    valid = len(parsed.predictions) + len(parsed.feedback)
    report.replayed += valid - len(job.rejected)
    report.stored += out.predictions_stored + out.feedback_stored
    report.duplicates += out.duplicates
    report.conflicts += out.conflicts
    report.still_invalid.update(d.reason for d in parsed.dead_letters)
    if job.rejected:
        report.still_invalid["store_rejected"] += len(job.rejected)


def _mark_replayed(engine: sa.Engine, rows: list[Any], job: Job) -> None:
    """replayed_at on the dead letters whose event is now stored (or was already).

    After the write committed: a crash in between leaves them unmarked, and the
    rerun finds their events stored (duplicates), which is what marking saves.
    """
    assert job.parsed is not None
    rejected = {(p.topic, p.partition, p.offset) for p in job.rejected}
    written = {
        (pos.topic, pos.partition, pos.offset)
        for _, pos in (*job.parsed.predictions, *job.parsed.feedback)
    } - rejected
    ids = [r.id for r in rows if (r.topic, r.partition, r.offset) in written]
    if not ids:
        return
    now = time.time()
    with engine.begin() as conn:
        for i in range(0, len(ids), 900):  # SQLite's bound on parameters per statement
            conn.execute(dl.update().where(dl.c.id.in_(ids[i : i + 900])).values(replayed_at=now))
