"""Store writes in a child process (`ingest.write_process`): what the in-thread path writes,
and a child that dies or is left behind costs nothing."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from conftest import (
    T0,
    Rec,
    assert_no_duplicate_positions,
    count,
    encode,
    feedback,
    make_config,
    prediction,
    producer,
    running,
    send_all,
    wait_for,
    write_config,
)
from kafka.structs import TopicPartition
from store.rollup_check import INGEST_MODELS

from modelmon.config import Config
from modelmon.ingest.batch import Batch, parse_records
from modelmon.ingest.errors import Failure, StoreProcessError, classify
from modelmon.ingest.store_process import (
    Part,
    StoreProcess,
    decode_part,
    encode_part,
    store_process_for,
)
from modelmon.ingest.writer import BatchWriter, Job
from modelmon.store import tables
from modelmon.store.engine import make_engine
from modelmon.store.migrate import upgrade
from modelmon.store.rollups import Specs

P, F = "P", "F"
# Wall-clock columns (set at write time) and generated ids: they differ between two runs.
VOLATILE = {"id", "ingested_at", "received_at", "first_seen", "updated_at", "replayed_at"}



# -- helpers ---------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def two_stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """Two empty, migrated stores of one kind: one per write path."""
    if request.param == "sqlite":
        urls = [f"sqlite:///{tmp_path}/{name}.db" for name in ("thread", "child")]
        created: list[str] = []
    else:
        pg = request.getfixturevalue("pg_server")
        created = [f"modelmon_sp_{os.getpid()}_{n}_{time.monotonic_ns() % 10**8}" for n in (0, 1)]
        for name in created:
            pg.create_database(name)
        urls = [pg.url(name) for name in created]
    for url in urls:
        eng = make_engine(url)
        upgrade(eng)
        eng.dispose()
    yield urls[0], urls[1]
    for name in created:
        request.getfixturevalue("pg_server").drop_database(name)


def records(specs: list[tuple[str, bytes | None]], first_offset: int) -> Batch:
    batch = Batch()
    for n, (topic, value) in enumerate(specs):
        offset = first_offset + n
        batch.add(TopicPartition(topic, 0), [Rec(topic, 0, offset, value)])
    return batch


def batches() -> list[list[tuple[str, bytes | None]]]:
    """Three batches with everything a write decides: new events, labels joined both ways,
    duplicates, conflicts, dead letters, features (one beyond MessagePack's integers)."""
    one = [(F, encode(feedback(i))) for i in range(0, 10)]  # labels before their predictions
    one += [(P, encode(prediction(i, features={"x": i * 0.5, "tags": ["a", None, "é"]})))
            for i in range(0, 50)]
    one += [(P, b"not json"), (P, encode({"request_id": "no-model"}))]
    two = [(P, encode(prediction(i))) for i in range(40, 60)]  # 40-49: redeliveries of one
    two += [(P, encode(prediction(50, model_version="v2")))]  # 50 again, other content
    two += [(F, encode(feedback(i))) for i in (*range(20, 30), 55)]  # labels stored rows
    two += [(P, encode(prediction(60, features={"big": 2**70})))]  # pickled, not MessagePack
    three = [(F, encode({**feedback(20), "label": "9"})), (P, None)]  # a conflict, an empty value
    three += [(P, encode(prediction(i, model=("m", "n")[i % 2]))) for i in range(100, 130)]
    return [one, two, three]


def write_all(writer: BatchWriter) -> list[Job]:
    writer.start()
    jobs, offset = [], 0
    try:
        for specs in batches():
            job = writer.submit(Job(records(specs, offset), generation=0))
            assert job.done.wait(120), "the writer did not finish a batch"
            assert job.error is None, job.error
            jobs.append(job)
            offset += len(specs)
    finally:
        writer.stop()
    return jobs


def make_writer(url: str, cfg: Config, in_process: bool) -> tuple[BatchWriter, sa.Engine]:
    engine = make_engine(url)
    process = store_process_for(cfg, engine) if in_process else None
    return BatchWriter(engine, P, F, 1 << 20, 1 << 20, retry_initial=0.05, retry_max=0.2,
                       specs=Specs(cfg), store_process=process), engine


def table_rows(engine: sa.Engine) -> dict[str, list[tuple[Any, ...]]]:
    """Every table's rows (volatile columns left out), in a stable order."""
    out: dict[str, list[tuple[Any, ...]]] = {}
    with engine.connect() as conn:
        for table in tables.metadata.sorted_tables:
            cols = [c for c in table.c if c.name not in VOLATILE]
            rows = [tuple(r) for r in conn.execute(sa.select(*cols))]
            out[table.name] = sorted(rows, key=repr)
    return out


def digest(event: dict[str, Any]) -> str:
    """The content digest, computed here as the contract documents it."""
    text = json.dumps(event, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def children_of(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[1]) == pid:
                out.append(int(entry.name))
    return out


def gone(pid: int) -> bool:
    """Exited: no such process, or a zombie (exited, not reaped by whoever adopted it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state == "Z"


# -- what is written -------------------------------------------------------------


def test_the_child_writes_what_the_in_thread_path_writes(two_stores: tuple[str, str]) -> None:
    url_thread, url_child = two_stores
    cfg = Config.model_validate({"models": INGEST_MODELS})  # slices and an SLO: more rollups
    runs = {}
    for url, in_process in ((url_thread, False), (url_child, True)):
        writer, engine = make_writer(url, cfg, in_process)
        assert (writer.store_process is not None) is in_process
        runs[in_process] = (write_all(writer), table_rows(engine))
        if in_process:
            assert writer.store_process is not None and writer.store_process.started == 1
        engine.dispose()
    (jobs_t, rows_t), (jobs_c, rows_c) = runs[False], runs[True]

    for jt, jc in zip(jobs_t, jobs_c, strict=True):
        ot, oc = jt.outcome, jc.outcome
        assert ot is not None and oc is not None
        assert (oc.labels_joined, oc.duplicates_by_kind, oc.conflicts_by_kind,
                oc.dead_letter_reasons) == (ot.labels_joined, ot.duplicates_by_kind,
                                            ot.conflicts_by_kind, ot.dead_letter_reasons)
        assert oc.stored_predictions == ot.stored_predictions
        assert oc.stored_feedback == ot.stored_feedback
        # Rebuilt from the parent's own objects, not copies shipped back.
        assert jc.parsed is not None
        mine = {id(ev) for ev, _ in jc.parsed.predictions + jc.parsed.feedback}
        assert all(id(ev) in mine for ev in oc.stored_predictions + oc.stored_feedback)
    assert rows_c == rows_t

    # And what both wrote is what these batches hold, counted here from the inputs.
    sent = [v for specs in batches() for t, v in specs if t == P]
    readable = [json.loads(v) for v in sent if v and v != b"not json"]
    valid = {(e["model"], e["request_id"]) for e in readable if "model" in e}
    assert len(rows_c["predictions"]) == len(valid)
    assert sum(len(j.outcome.stored_predictions) for j in jobs_c if j.outcome) == len(valid)
    assert len(rows_c["dead_letters"]) == len(sent) - sum(1 for e in readable if "model" in e)
    assert any(len(r) for r in rows_c["rollup_requests"])


def test_a_part_msgpack_cannot_carry_is_pickled() -> None:
    """An integer beyond 64 bits in features: MessagePack refuses it, pickle takes it."""
    def part(features: dict[str, Any]) -> Part:
        batch = records([(P, encode(prediction(1, features=features)))], 0)
        parsed = parse_records(batch.records, P, F, 1 << 20, 1 << 20)
        assert len(parsed.predictions) == 1
        return Part(parsed.predictions, [], [])

    small, big = part({"big": 2**63}), part({"big": 2**70})
    assert encode_part(small)[:1] == b"m" and encode_part(big)[:1] == b"p"
    assert decode_part(encode_part(big)) == big and decode_part(encode_part(small)) == small


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_an_error_of_the_store_in_the_child_dead_letters_only_that_event(db_url: str) -> None:
    """PostgreSQL refuses a value too long for its column (SQLSTATE 22001) in the child:
    classified there, raised here as that refusal, split down to the one event."""
    eng = make_engine(db_url)
    upgrade(eng)
    with eng.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE predictions ALTER COLUMN model_version TYPE varchar(8)")
    values = [{"request_id": rid, "model": "m", "timestamp": T0, "prediction": 1,
               "model_version": "v" * (20 if rid == "long" else 3)}
              for rid in ("a", "b", "long", "c", "d")]
    too_long = [n for n, v in enumerate(values) if len(v["model_version"]) > 8]
    writer, _ = make_writer(db_url, Config(), in_process=True)
    writer.start()
    job = writer.submit(Job(records([(P, json.dumps(v).encode()) for v in values], 0), 0))
    assert job.done.wait(120)
    writer.stop()
    try:
        assert job.outcome is not None and job.error is None
        assert job.outcome.predictions_stored == len(values) - len(too_long)
        assert job.outcome.dead_letter_reasons == {"store_rejected": len(too_long)}
        assert [pos.offset for pos in job.rejected] == too_long
        with eng.connect() as conn:
            stored = sorted(r[0] for r in conn.execute(sa.text("SELECT request_id FROM predictions")))
            letters = conn.execute(sa.text('SELECT "offset", reason, detail FROM dead_letters')).all()
        assert stored == sorted(v["request_id"] for n, v in enumerate(values) if n not in too_long)
        assert [(r.offset, r.reason) for r in letters] == [(n, "store_rejected") for n in too_long]
        assert "too long" in letters[0].detail
    finally:
        eng.dispose()


def test_a_verdict_of_the_child_is_classified_as_the_child_saw_it() -> None:
    for failure in Failure:
        assert classify(StoreProcessError(failure, "text")) is failure


def test_the_store_stays_in_process_where_a_child_could_not_share_it(tmp_path: Path) -> None:
    for url in ("sqlite://", "sqlite:///:memory:"):
        assert store_process_for(Config(), sa.create_engine(url)) is None
    file_engine = sa.create_engine(f"sqlite:///{tmp_path}/x.db")
    off = Config.model_validate({"ingest": {"write_process": False}})
    assert store_process_for(off, file_engine) is None
    assert isinstance(store_process_for(Config(), file_engine), StoreProcess)


# -- children that die, children left behind --------------------------------------


def test_a_child_killed_mid_stream_is_restarted_and_every_event_stored_once(
    kafka_bootstrap: str, kafka_topics: Callable[..., str], store: sa.Engine, db_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    n, kills = 20_000, 3
    preds_topic, fb_topic = kafka_topics("sp-preds", 4), kafka_topics("sp-fb", 1)
    events = [prediction(i) for i in range(n)]
    prod = producer(kafka_bootstrap)
    send_all(prod, preds_topic, [encode(e) for e in events])
    prod.close()
    cfg = Config.model_validate(make_config(kafka_bootstrap, db_url, preds_topic, fb_topic,
                                            f"g-{preds_topic}", batch_max_events=300))
    children: list[int] = []
    caplog.set_level(logging.WARNING, logger="modelmon.ingest.writer")
    with running(cfg, store) as service:
        process = service.writer.store_process
        assert process is not None
        for k in range(kills):
            wait_for(lambda k=k: count(store, "predictions") > (k + 1) * n // (kills + 2), 120,
                     "progress before a kill")
            pid = process.pid
            assert pid is not None
            children.append(pid)
            os.kill(pid, signal.SIGKILL)
            wait_for(lambda p=pid: process.pid not in (None, p), 60, "a new store process")
        wait_for(lambda: count(store, "predictions") >= n, 240, "every event stored")
        children.append(process.pid)  # type: ignore[arg-type]
        assert process.started == kills + 1
    assert all(gone(pid) for pid in children), "a store process outlived stop()"
    assert caplog.text.count("the store process exited (code -9)") >= kills
    with store.connect() as conn:
        stored = dict(conn.execute(sa.text("SELECT request_id, digest FROM predictions")).all())
    assert stored == {e["request_id"]: digest(e) for e in events}
    assert count(store, "predictions") == n and count(store, "dead_letters") == 0
    assert_no_duplicate_positions(store)


def test_no_store_process_outlives_a_killed_ingest(
    kafka_bootstrap: str, kafka_topics: Callable[..., str], tmp_path: Path
) -> None:
    db_url = f"sqlite:///{tmp_path}/modelmon.db"
    engine = make_engine(db_url)
    upgrade(engine)
    preds_topic, fb_topic = kafka_topics("sp-orphan", 1), kafka_topics("sp-orphan-fb", 1)
    prod = producer(kafka_bootstrap)
    send_all(prod, preds_topic, [encode(prediction(i)) for i in range(2000)])
    prod.close()
    config = write_config(tmp_path, make_config(kafka_bootstrap, db_url, preds_topic, fb_topic,
                                                f"g-{preds_topic}"))
    log = tmp_path / "ingest.log"
    proc = subprocess.Popen([sys.executable, "-m", "modelmon", "-c", str(config), "ingest"],
                            stdout=log.open("ab"), stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: count(engine, "predictions") >= 2000 or proc.poll() is not None, 120,
                 "ingest storing")
        assert proc.poll() is None, log.read_text()[-3000:]
        children = children_of(proc.pid)
        assert children, "no store process"
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        wait_for(lambda: all(gone(pid) for pid in children), 30, "the store process to exit")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        engine.dispose()
