"""write_batch / reconcile_labels on SQLite and PostgreSQL: idempotence, conflicts, label join."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa
from conftest import Rec
from kafka.structs import TopicPartition

from modelmon.contract import parse_feedback, parse_prediction
from modelmon.ingest.batch import Batch
from modelmon.ingest.errors import Failure, classify
from modelmon.ingest.writer import BatchWriter, Job
from modelmon.store.engine import make_engine
from modelmon.store.migrate import upgrade
from modelmon.store.tables import dead_letters, feedback, ingest_conflicts, predictions
from modelmon.store.writes import DeadLetter, Position, reconcile_labels, write_batch

T0 = 1_790_000_000.0


@pytest.fixture
def engine(db_url: str) -> sa.Engine:
    eng = make_engine(db_url)
    upgrade(eng)
    yield eng
    eng.dispose()


def pred(rid: str, prediction: object = 1, model: str = "m", **extra: object):
    obj = {"request_id": rid, "model": model, "timestamp": T0, "prediction": prediction, **extra}
    return parse_prediction(obj)


def fb(rid: str, label: object = 1, model: str = "m", ts: float = T0 + 60):
    return parse_feedback({"request_id": rid, "model": model, "timestamp": ts, "label": label})


def rows(engine: sa.Engine, table: sa.Table) -> list[sa.Row]:
    with engine.connect() as conn:
        order = table.c.id if "id" in table.c else table.c.ingested_at  # predictions: no id
        return list(conn.execute(sa.select(table).order_by(order, *table.primary_key.columns)))


def write(engine: sa.Engine, p=(), f=(), d=(), **kw):
    with engine.begin() as conn:
        return write_batch(conn, list(p), list(f), list(d), **kw)


def test_stores_every_column_and_the_kafka_position(engine: sa.Engine) -> None:
    p = pred("a", prediction="cat", scores={"cat": 0.7, "dog": 0.3}, latency_ms=250,
             slices={"sex": "F"}, features={"x": [1, 2]}, model_version="v2")
    out = write(engine, [(p, Position("preds", 3, 42))], now=T0 + 1)
    assert out.predictions_stored == 1 and out.duplicates == 0
    (row,) = rows(engine, predictions)
    assert (row.topic, row.partition, row.offset) == ("preds", 3, 42)
    assert row.model_version == "v2" and row.prediction == "cat"
    assert row.scores == {"cat": 0.7, "dog": 0.3} and row.slices == {"sex": "F"}
    assert row.features == {"x": [1, 2]}
    assert row.latency_seconds == pytest.approx(0.25)
    assert row.score_pred == pytest.approx(0.7) and row.ingested_at == T0 + 1
    assert row.digest == p.digest and row.label is None


def test_absent_json_fields_are_sql_null(engine: sa.Engine) -> None:
    write(engine, [(pred("a"), None)])
    with engine.connect() as conn:
        n = conn.execute(
            sa.select(sa.func.count()).where(
                predictions.c.scores.is_(None), predictions.c.slices.is_(None),
                predictions.c.features.is_(None),
            )
        ).scalar()
    assert n == 1


def test_identical_redelivery_is_a_duplicate_not_a_conflict(engine: sa.Engine) -> None:
    batch = [(pred(f"r{i}"), Position("t", 0, i)) for i in range(5)]
    assert write(engine, batch).predictions_stored == 5
    again = write(engine, batch)
    assert (again.predictions_stored, again.duplicates, again.conflicts) == (0, 5, 0)
    assert again.duplicates_by_kind["prediction"] == 5
    assert len(rows(engine, predictions)) == 5
    assert rows(engine, ingest_conflicts) == []


def test_same_key_different_content_is_a_recorded_conflict_and_first_wins(engine: sa.Engine) -> None:
    write(engine, [(pred("a", prediction=1), Position("t", 0, 1))])
    out = write(engine, [(pred("a", prediction=0), Position("t", 0, 7))])
    assert (out.predictions_stored, out.duplicates, out.conflicts) == (0, 0, 1)
    (row,) = rows(engine, predictions)
    assert row.prediction == "1"  # first write wins
    (c,) = rows(engine, ingest_conflicts)
    assert (c.kind, c.request_id, c.offset) == ("prediction", "a", 7)
    assert c.stored_digest == pred("a", prediction=1).digest
    assert c.new_digest == pred("a", prediction=0).digest
    # the conflicting message redelivered from the same offset is not a second conflict
    again = write(engine, [(pred("a", prediction=0), Position("t", 0, 7))])
    assert (again.conflicts, again.duplicates) == (0, 1)
    assert len(rows(engine, ingest_conflicts)) == 1


def test_duplicates_inside_one_batch_first_wins(engine: sa.Engine) -> None:
    batch = [
        (pred("a", prediction=1), Position("t", 0, 1)),
        (pred("a", prediction=1), Position("t", 0, 2)),  # identical
        (pred("a", prediction=0), Position("t", 0, 3)),  # conflicting
        (pred("b"), Position("t", 0, 4)),
    ]
    out = write(engine, batch)
    assert (out.predictions_stored, out.duplicates, out.conflicts) == (2, 1, 1)
    assert {r.request_id: r.prediction for r in rows(engine, predictions)} == {"a": "1", "b": "1"}


def test_same_request_id_in_two_models_are_two_predictions(engine: sa.Engine) -> None:
    out = write(engine, [(pred("a", model="m1"), None), (pred("a", model="m2"), None)])
    assert out.predictions_stored == 2


def test_feedback_after_prediction_labels_it(engine: sa.Engine) -> None:
    write(engine, [(pred("a"), None), (pred("b"), None)])
    out = write(engine, f=[(fb("a", label="true"), Position("f", 0, 0))])
    assert (out.feedback_stored, out.labels_joined) == (1, 1)
    got = {r.request_id: (r.label, r.label_ts) for r in rows(engine, predictions)}
    assert got == {"a": ("1", T0 + 60), "b": (None, None)}


def test_feedback_before_prediction_is_picked_up_at_insert(engine: sa.Engine) -> None:
    out = write(engine, f=[(fb("a", label=0), None)])
    assert (out.feedback_stored, out.labels_joined) == (1, 0)
    out = write(engine, [(pred("a"), None), (pred("b"), None)])
    assert out.labels_joined == 1
    got = {r.request_id: r.label for r in rows(engine, predictions)}
    assert got == {"a": "0", "b": None}


def test_feedback_and_prediction_in_the_same_batch_join(engine: sa.Engine) -> None:
    out = write(engine, [(pred("a"), None)], [(fb("a", label=0), None)])
    assert out.labels_joined == 1
    assert rows(engine, predictions)[0].label == "0"


def test_first_feedback_wins_and_later_feedback_does_not_relabel(engine: sa.Engine) -> None:
    write(engine, [(pred("a"), None)], [(fb("a", label=1), Position("f", 0, 0))])
    out = write(engine, f=[(fb("a", label=0), Position("f", 0, 1))])
    assert (out.feedback_stored, out.conflicts, out.labels_joined) == (0, 1, 0)
    assert rows(engine, predictions)[0].label == "1"
    assert out.conflicts_by_kind["feedback"] == 1


def test_http_feedback_has_no_position_and_conflicts_every_time(engine: sa.Engine) -> None:
    write(engine, f=[(fb("a", label=1), None)], source="http")
    (row,) = rows(engine, feedback)
    assert (row.source, row.topic, row.offset) == ("http", None, None)
    out1 = write(engine, f=[(fb("a", label=0), None)], source="http")
    out2 = write(engine, f=[(fb("a", label=0), None)], source="http")
    assert out1.conflicts == out2.conflicts == 1


def test_dead_letters_are_stored_once_per_position(engine: sa.Engine) -> None:
    d = DeadLetter("invalid_json", "not JSON", b"{oops", 5, "kafka", Position("t", 1, 9))
    h = DeadLetter("missing_field", "label missing", b"{}", 2, "http", None)
    out = write(engine, d=[d, h])
    assert out.dead_letters_stored == 2
    assert out.dead_letter_reasons == {"invalid_json": 1, "missing_field": 1}
    assert write(engine, d=[d]).dead_letters_stored == 0
    stored = rows(engine, dead_letters)
    assert [(r.reason, r.payload, r.payload_bytes, r.offset) for r in stored] == [
        ("invalid_json", b"{oops", 5, 9), ("missing_field", b"{}", 2, None)
    ]


def test_batch_runs_inside_the_callers_transaction(engine: sa.Engine) -> None:
    with pytest.raises(RuntimeError), engine.begin() as conn:
        write_batch(conn, [(pred("a"), None)], [], [])
        raise RuntimeError("roll back")
    assert rows(engine, predictions) == []


def test_many_rows_across_insert_chunks(engine: sa.Engine) -> None:
    n = 1234  # more than one multi-row INSERT
    batch = [(pred(f"r{i}"), Position("t", 0, i)) for i in range(n)]
    fbs = [(fb(f"r{i}", label=i % 2), Position("f", 0, i)) for i in range(0, n, 2)]
    out = write(engine, batch[: n // 2], fbs)
    assert out.labels_joined == len(range(0, n // 2, 2))
    out = write(engine, batch, fbs)
    assert out.predictions_stored == n - n // 2
    assert out.duplicates == n // 2 + len(fbs)
    with engine.connect() as conn:
        labelled = conn.execute(sa.select(predictions.c.request_id, predictions.c.label)
                                .where(predictions.c.label.is_not(None))).all()
    assert {r: lab for r, lab in labelled} == {f"r{i}": str(i % 2) for i in range(0, n, 2)}


def test_reconcile_labels_fills_what_concurrent_writers_missed(engine: sa.Engine) -> None:
    # Simulate the race: the prediction was stored without seeing the feedback.
    write(engine, [(pred("a"), None), (pred("b"), None)])
    with engine.begin() as conn:
        conn.execute(feedback.insert(), [
            {"model": "m", "request_id": "a", "label": "0", "ts": T0 + 5, "source": "kafka",
             "digest": "x", "ingested_at": T0 + 100},
            {"model": "m", "request_id": "b", "label": "1", "ts": T0 + 6, "source": "kafka",
             "digest": "y", "ingested_at": T0 - 100},  # older than `since`: left alone
        ])
    with engine.begin() as conn:
        assert reconcile_labels(conn, since_ingested_at=T0) == 1
    got = {r.request_id: (r.label, r.label_ts) for r in rows(engine, predictions)}
    assert got == {"a": ("0", T0 + 5), "b": (None, None)}
    with engine.begin() as conn:
        assert reconcile_labels(conn, since_ingested_at=T0) == 0  # idempotent
        assert reconcile_labels(conn, since_ingested_at=0) == 1


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_postgresql_key_lookups_probe_the_index_not_every_row(engine: sa.Engine) -> None:
    """A batch's label/digest lookups stay one index probe per key on fresh statistics.

    `request_id IN (SELECT jsonb_array_elements_text(...))` was planned as a nested
    loop over every feedback row of the model times every key (quadratic: 0.8 s
    per 2,000-key batch with 2,000 stored rows, 12 s for 20,000 predictions).
    """
    import json

    from modelmon.store.writes import _lookup, _pg_lookup_sql

    write(engine, f=[(fb(f"r{i}"), None) for i in range(0, 3000)])
    keys = [("m", f"r{i}") for i in range(2000, 4000)]
    with engine.connect() as conn:
        found = _lookup(conn, feedback, keys, feedback.c.label)
        sql = _pg_lookup_sql(conn, feedback, [feedback.c.label])
        plan = "\n".join(r[0] for r in conn.exec_driver_sql(
            "EXPLAIN " + sql, (json.dumps([rid for _, rid in keys]), "m")))
    assert found == {("m", f"r{i}"): ("1",) for i in range(2000, 3000)}
    assert "Index Cond" in plan and "request_id" in plan.split("Index Cond", 1)[1], plan
    assert "Join Filter" not in plan, plan


# -- PostgreSQL: COPY into the session's staging table -------------------------------

def test_two_batches_in_one_transaction_are_both_stored_once(engine: sa.Engine) -> None:
    """The staging table is reused within a transaction: the second batch must not see
    the first one's rows again (on SQLite: the same guarantee through plain inserts)."""
    with engine.begin() as conn:
        first = write_batch(conn, [(pred(f"a{i}"), Position("t", 0, i)) for i in range(3)], [], [])
        second = write_batch(conn, [(pred(f"b{i}"), Position("t", 0, 10 + i)) for i in range(2)],
                             [(fb("a0"), Position("f", 0, 0))], [])
    assert (first.predictions_stored, second.predictions_stored) == (3, 2)
    assert (second.duplicates, second.labels_joined) == (0, 1)
    assert sorted(r.request_id for r in rows(engine, predictions)) == ["a0", "a1", "a2", "b0", "b1"]



@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_a_value_the_table_refuses_is_refused_by_the_copy_and_only_that_event_dead_lettered(
    db_url: str,
) -> None:
    """A column narrower than the contract allows: COPY into the staging table (which
    takes the table's column types) refuses the value with the table's own SQLSTATE,
    classified as a refusal, and the writer splits down to that one event."""
    eng = make_engine(db_url)
    upgrade(eng)
    with eng.begin() as conn:  # before any write: the staging table copies the new type
        conn.exec_driver_sql("ALTER TABLE predictions ALTER COLUMN model_version TYPE varchar(8)")
    long_version = "v" * 20
    try:
        with pytest.raises(sa.exc.DataError) as refused, eng.begin() as conn:
            write_batch(conn, [(pred("x", model_version=long_version), Position("P", 0, 0))], [], [])
        assert refused.value.orig.sqlstate == "22001"  # type: ignore[union-attr]
        assert str(refused.value.statement).startswith("COPY ")
        assert classify(refused.value) is Failure.REJECT

        values = [{"request_id": rid, "model": "m", "timestamp": T0, "prediction": 1,
                   **({"model_version": long_version} if rid == "long" else {})}
                  for rid in ("a", "b", "long", "c")]
        batch = Batch()
        batch.add(TopicPartition("P", 0),
                  [Rec("P", 0, n, json.dumps(v).encode()) for n, v in enumerate(values)])
        writer = BatchWriter(eng, "P", "F", 1 << 20, 1 << 20, retry_initial=0.01, retry_max=0.02)
        writer.start()
        job = writer.submit(Job(batch, generation=0))
        assert job.done.wait(60)
        writer.stop()
        assert job.outcome is not None and job.error is None
        assert job.outcome.predictions_stored == 3
        assert job.outcome.dead_letter_reasons == {"store_rejected": 1}
        assert sorted(r.request_id for r in rows(eng, predictions)) == ["a", "b", "c"]
        (letter,) = rows(eng, dead_letters)
        assert (letter.offset, letter.reason) == (2, "store_rejected")
        assert json.loads(letter.payload) == values[2]
    finally:
        eng.dispose()


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_a_connection_lost_during_the_copy_is_a_connection_failure(engine: sa.Engine) -> None:
    """The session is killed before the batch: the COPY path raises what SQLAlchemy would
    (connection invalidated), the writer's classification says retry, and the engine's
    next connection works."""
    with pytest.raises(sa.exc.DBAPIError) as lost, engine.begin() as conn:
        pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
        with engine.connect() as other:
            other.exec_driver_sql(f"SELECT pg_terminate_backend({int(pid)})")
            other.commit()
        write_batch(conn, [(pred("a"), Position("t", 0, 0))], [], [])
    assert classify(lost.value) is Failure.CONNECTION
    assert write(engine, [(pred("a"), Position("t", 0, 0))]).predictions_stored == 1
