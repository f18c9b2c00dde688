"""The batch writer: retries transient store errors on the same batch, isolates rejected events."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import Rec, pg_error
from kafka.structs import TopicPartition

import modelmon.ingest.writer as writer_mod
from modelmon.ingest.batch import Batch
from modelmon.ingest.writer import BatchWriter, Job
from modelmon.store.engine import make_engine
from modelmon.store.migrate import upgrade
from modelmon.store.writes import write_batch


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


# -- what the writer does with each -----------------------------------------

def refusing_more_than(limit: int, sqlstate: str, calls: list[int] | None = None):  # type: ignore[no-untyped-def]
    """write_batch, except that the store refuses transactions of more than `limit` events."""
    def write(conn, predictions, feedback, dead_letters, **kw):  # type: ignore[no-untyped-def]
        if calls is not None:
            calls.append(len(predictions) + len(feedback))
        if len(predictions) + len(feedback) > limit:
            raise pg_error(sqlstate, "total size of jsonb array elements exceeds the maximum")
        return write_batch(conn, predictions, feedback, dead_letters, **kw)
    return write


def stored_ids(engine: sa.Engine) -> list[str]:
    with engine.connect() as conn:
        return sorted(r[0] for r in conn.execute(sa.text("SELECT request_id FROM predictions")))


def test_a_batch_the_store_refuses_as_too_large_is_split_not_retried_forever(
    engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    monkeypatch.setattr(writer_mod, "write_batch", refusing_more_than(3, "54000", calls))
    ids = [f"r{i:02d}" for i in range(20)]
    writer = make_writer(engine)
    job = run(writer, Job(batch_of(ids), generation=0))
    assert job.error is None and job.outcome is not None
    assert job.outcome.predictions_stored == 20 and job.outcome.dead_letters_stored == 0
    assert stored_ids(engine) == ids
    # Halves, recursively, until they fit: 20 -> 10 -> 5 -> 3 + 2; each event written once.
    assert calls[:4] == [20, 10, 5, 3] and sum(n for n in calls if n <= 3) == 20
    assert writer.failing_since is None  # the store was never unreachable


def test_a_single_event_the_store_refuses_as_too_large_is_dead_lettered(
    engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    def write(conn, predictions, feedback, dead_letters, **kw):  # type: ignore[no-untyped-def]
        if any(p.request_id == "huge" for p, _ in predictions):
            raise pg_error("54000", "total size of jsonb array elements exceeds the maximum")
        return write_batch(conn, predictions, feedback, dead_letters, **kw)

    monkeypatch.setattr(writer_mod, "write_batch", write)
    b = batch_of(["a", "b", "huge", "c"])
    b.add(TopicPartition("P", 0), [Rec("P", 0, 4, b"not json")])
    job = run(make_writer(engine), Job(b, generation=0))
    assert job.outcome is not None
    assert job.outcome.dead_letter_reasons == {"store_rejected": 1, "invalid_json": 1}
    assert stored_ids(engine) == ["a", "b", "c"]
    with engine.connect() as conn:
        letters = dict(conn.execute(sa.text('SELECT "offset", detail FROM dead_letters')).all())
    assert set(letters) == {2, 4} and "exceeds the maximum" in letters[2]


def test_a_statement_timeout_splits_but_never_dead_letters_a_single_event(
    engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    singles_refused = [2]

    def write(conn, predictions, feedback, dead_letters, **kw):  # type: ignore[no-untyped-def]
        n = len(predictions) + len(feedback)
        if n > 2 or (n == 1 and singles_refused[0] and predictions[0][0].request_id == "c"):
            if n == 1:
                singles_refused[0] -= 1
            raise pg_error("57014", "canceling statement due to statement timeout")
        return write_batch(conn, predictions, feedback, dead_letters, **kw)

    monkeypatch.setattr(writer_mod, "write_batch", write)
    job = run(make_writer(engine), Job(batch_of(["a", "b", "c", "d", "e"]), generation=0))
    assert job.outcome is not None and job.outcome.dead_letters_stored == 0
    assert stored_ids(engine) == ["a", "b", "c", "d", "e"]
    assert singles_refused == [0]


def test_splitting_keeps_first_write_wins_labels_and_rollups(
    engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The parts are written in batch order: the first of two versions still wins."""
    monkeypatch.setattr(writer_mod, "write_batch", refusing_more_than(2, "54000"))
    b = Batch()
    values = [
        {"request_id": "x", "model": "m", "timestamp": 1, "prediction": 1},
        {"request_id": "y", "model": "m", "timestamp": 1, "prediction": 0},
        {"request_id": "z", "model": "m", "timestamp": 1, "prediction": 0},
        {"request_id": "x", "model": "m", "timestamp": 1, "prediction": 0},  # a conflict
        {"request_id": "y", "model": "m", "timestamp": 1, "prediction": 0},  # a duplicate
    ]
    b.add(TopicPartition("P", 0), [Rec("P", 0, n, json.dumps(v).encode())
                                   for n, v in enumerate(values)])
    b.add(TopicPartition("F", 0), [Rec("F", 0, 0, json.dumps(
        {"request_id": "x", "model": "m", "timestamp": 2, "label": 1}).encode())])
    job = run(make_writer(engine), Job(b, generation=0))
    out = job.outcome
    assert out is not None
    assert (out.predictions_stored, out.feedback_stored, out.conflicts, out.duplicates) == (3, 1, 1, 1)
    assert out.labels_joined == 1
    with engine.connect() as conn:
        rows = dict(conn.execute(sa.text("SELECT request_id, prediction FROM predictions")).all())
        label = conn.execute(sa.text("SELECT label FROM predictions WHERE request_id = 'x'")).scalar()
        n = conn.execute(sa.text(
            "SELECT sum(n) FROM rollup_requests WHERE res = (SELECT min(res) FROM rollup_requests)")).scalar()
    assert rows == {"x": "1", "y": "0", "z": "0"} and label == "1"
    assert n == 3


def test_connection_loss_while_splitting_resumes_with_the_part_that_failed(
    engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    refuse = refusing_more_than(2, "54000", calls)
    down = [2]

    def write(conn, predictions, feedback, dead_letters, **kw):  # type: ignore[no-untyped-def]
        if len(calls) == 2 and down[0]:  # the store goes away after the first part
            down[0] -= 1
            raise pg_error("57P01", "terminating connection due to administrator command")
        return refuse(conn, predictions, feedback, dead_letters, **kw)

    monkeypatch.setattr(writer_mod, "write_batch", write)
    errors: list[int] = []
    writer = make_writer(engine, errors)
    job = run(writer, Job(batch_of(["a", "b", "c", "d"]), generation=0))
    assert job.outcome is not None and job.outcome.predictions_stored == 4
    assert job.outcome.duplicates == 0  # no part written twice
    assert calls == [4, 2, 2] and len(errors) == 3  # one refusal, two connection failures
    assert writer.failing_since is None  # reachable again


def test_kafka_ingest_refuses_far_future_timestamps(engine: sa.Engine) -> None:
    now = time.time()
    b = Batch()
    values = [
        {"request_id": "far", "model": "m", "timestamp": "9999-12-31T23:59:59Z", "prediction": 1},
        {"request_id": "soon", "model": "m", "timestamp": now + 600, "prediction": 1},
    ]
    b.add(TopicPartition("P", 0), [Rec("P", 0, n, json.dumps(v).encode())
                                   for n, v in enumerate(values)])
    writer = BatchWriter(engine, "P", "F", 1 << 20, 64, retry_initial=0.01, retry_max=0.02,
                         max_future_skew=3600)
    job = run(writer, Job(b, generation=0))
    assert job.outcome is not None
    assert job.outcome.dead_letter_reasons == {"timestamp_in_future": 1}
    assert stored_ids(engine) == ["soon"]
    with engine.connect() as conn:
        assert conn.execute(sa.text('SELECT "offset", reason FROM dead_letters')).all() == [
            (0, "timestamp_in_future")]


# -- busy time ---------------------------------------------------------------

def test_busy_time_counts_only_the_time_inside_each_interval(
    engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch written across two status lines counts in both, never more than 100%."""
    clock = [0.0]
    writing, release = threading.Event(), threading.Event()

    def slow(conn, *args, **kw):  # type: ignore[no-untyped-def]
        writing.set()
        assert release.wait(30)
        return write_batch(conn, *args, **kw)

    monkeypatch.setattr(writer_mod, "write_batch", slow)
    writer = BatchWriter(engine, "P", "F", 1 << 20, 64, retry_initial=0.01, retry_max=0.02,
                         clock=lambda: clock[0])
    writer.start()
    job = writer.submit(Job(batch_of(["a"]), generation=0))
    assert writing.wait(30)
    clock[0] = 10.0
    first = writer.busy_total()  # status line at t=10: the batch started at 0
    clock[0] = 20.0
    release.set()
    assert job.done.wait(30)
    second = writer.busy_total()  # busy until 20
    clock[0] = 30.0
    third = writer.busy_total()  # idle since 20
    writer.stop()
    assert (first, second - first, third - second) == (10.0, 10.0, 0.0)
