"""The batch writer: retries transient store errors on the same batch, isolates rejected events."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
from kafka.structs import TopicPartition

import modelmon.ingest.writer as writer_mod
from modelmon.ingest.batch import Batch
from modelmon.ingest.writer import BatchWriter, Job
from modelmon.store.engine import make_engine
from modelmon.store.migrate import upgrade
from modelmon.store.writes import write_batch


@dataclass
class Rec:
    topic: str
    partition: int
    offset: int
    value: bytes | None


@pytest.fixture
def engine(tmp_path: Path) -> sa.Engine:
    eng = make_engine(f"sqlite:///{tmp_path}/w.db")
    upgrade(eng)
    yield eng
    eng.dispose()


def batch_of(ids: list[str]) -> Batch:
    b = Batch()
    records = [Rec("P", 0, n, json.dumps({"request_id": rid, "model": "m", "timestamp": 1,
                                          "prediction": 1}).encode()) for n, rid in enumerate(ids)]
    b.add(TopicPartition("P", 0), records)
    return b


def make_writer(engine: sa.Engine, errors: list[int] | None = None) -> BatchWriter:
    calls = errors if errors is not None else []
    return BatchWriter(engine, "P", "F", 1 << 20, 64, retry_initial=0.01, retry_max=0.02,
                       on_db_error=lambda: calls.append(1))


def run(writer: BatchWriter, job: Job) -> Job:
    writer.start()
    writer.submit(job)
    assert job.done.wait(30)
    writer.stop()
    return job


def test_transient_errors_retry_the_same_batch(engine: sa.Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    failures = [2]

    def flaky(conn, *args, **kw):  # type: ignore[no-untyped-def]
        if failures[0]:
            failures[0] -= 1
            raise sa.exc.OperationalError("INSERT", {}, ConnectionError("server closed the connection"))
        return write_batch(conn, *args, **kw)

    monkeypatch.setattr(writer_mod, "write_batch", flaky)
    errors: list[int] = []
    job = run(make_writer(engine, errors), Job(batch_of(["a", "b"]), generation=0))
    assert job.outcome is not None and job.outcome.predictions_stored == 2
    assert job.attempts == 3 and len(errors) == 2


def test_an_event_the_store_rejects_is_dead_lettered_and_the_rest_stored(
    engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    def picky(conn, predictions, feedback, dead_letters, **kw):  # type: ignore[no-untyped-def]
        if any(p.request_id == "poison" for p, _ in predictions):
            raise sa.exc.DataError("INSERT", {}, ValueError("value too long"))
        return write_batch(conn, predictions, feedback, dead_letters, **kw)

    monkeypatch.setattr(writer_mod, "write_batch", picky)
    job = run(make_writer(engine), Job(batch_of(["a", "poison", "b"]), generation=0))
    assert job.outcome is not None
    assert job.outcome.predictions_stored == 2 and job.outcome.dead_letters_stored == 1
    # The reasons reach the dead-letter metrics too (the fallback merges them).
    assert job.outcome.dead_letter_reasons == {"store_rejected": 1}
    with engine.connect() as conn:
        (letter,) = conn.execute(sa.text("SELECT reason, \"offset\", payload_bytes FROM dead_letters")).all()
        ids = {r[0] for r in conn.execute(sa.text("SELECT request_id FROM predictions"))}
    assert letter[0] == "store_rejected" and letter[1] == 1 and letter[2] > 0
    assert ids == {"a", "b"}


def test_a_cancelled_batch_has_no_outcome(engine: sa.Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    def down(conn, *args, **kw):  # type: ignore[no-untyped-def]
        raise sa.exc.OperationalError("INSERT", {}, ConnectionError("refused"))

    monkeypatch.setattr(writer_mod, "write_batch", down)
    writer = make_writer(engine)
    writer.start()
    job = writer.submit(Job(batch_of(["a"]), generation=0))
    job.cancelled.set()
    assert job.done.wait(10)
    writer.stop()
    assert job.outcome is None and job.error == "cancelled"
    assert writer.failing_since is not None or job.attempts <= 1
