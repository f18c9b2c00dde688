"""The polling loop without a broker: held-back lag, the pending age, bounded fetching."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from conftest import Rec
from kafka.structs import TopicPartition
from prometheus_client import CollectorRegistry

from modelmon.config import Config
from modelmon.ingest.batch import Batch
from modelmon.ingest.metrics import IngestMetrics
from modelmon.ingest.service import MAX_IN_FLIGHT, IngestService
from modelmon.ingest.writer import Job

TP = TopicPartition("P", 0)



class FakeConsumer:
    """One partition holding `log`; poll hands out at most `per_poll` records (a fetch)."""

    def __init__(self, log: list[Rec], per_poll: int = 1_000_000) -> None:
        self.log = log
        self.per_poll = per_poll
        self.pos = 0
        self.is_paused = False
        self.delivered = 0

    def assignment(self) -> set[TopicPartition]:
        return {TP}

    def highwater(self, tp: TopicPartition) -> int:
        return len(self.log)

    def position(self, tp: TopicPartition, timeout_ms: int | None = None) -> int:
        return self.pos

    def pause(self, *tps: TopicPartition) -> None:
        self.is_paused = True

    def paused(self) -> set[TopicPartition]:
        return {TP} if self.is_paused else set()

    def resume(self, *tps: TopicPartition) -> None:
        self.is_paused = False

    def poll(self, timeout_ms: int = 0, max_records: int | None = None) -> dict[Any, list[Rec]]:
        if self.is_paused or self.pos >= len(self.log):
            return {}
        n = min(self.per_poll, max_records or self.per_poll)
        out = self.log[self.pos : self.pos + n]
        self.pos += len(out)
        self.delivered += len(out)
        return {TP: out}


def service(tmp_path: Path, registry: CollectorRegistry | None = None, **ingest: Any) -> IngestService:
    cfg = Config.model_validate({"ingest": ingest, "kafka": {"predictions_topic": "P"}})
    metrics = IngestMetrics(registry or CollectorRegistry(), [0.1])
    return IngestService(cfg, sa.create_engine(f"sqlite:///{tmp_path}/s.db"), metrics)


def batch(first: int, last: int, opened_at: float | None = None) -> Batch:
    b = Batch()
    b.add(TP, [Rec("P", 0, o, b"{}") for o in range(first, last + 1)])
    if opened_at is not None:
        b.opened_at = opened_at
    return b


def test_lag_counts_messages_received_but_not_committed(tmp_path: Path) -> None:
    s = service(tmp_path)
    s.consumer = FakeConsumer([Rec("P", 0, o, b"{}") for o in range(100)])
    s.consumer.pos = 100  # everything fetched ...
    s.jobs.append(Job(batch(40, 69), generation=0))  # ... but held back: a batch being written
    s.open = batch(70, 99)  # and the next one waiting for it
    assert s.lag() == {TP: 60}
    s.jobs.clear()
    s.open = Batch()
    assert s.lag() == {TP: 0}


def test_stalled_for_is_the_age_of_the_oldest_uncommitted_batch(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    s = service(tmp_path, registry)
    gauge = lambda: registry.get_sample_value("modelmon_ingest_batch_pending_seconds")  # noqa: E731
    assert s.stalled_for() == 0.0 and gauge() == 0.0
    now = time.monotonic()
    s.open = batch(70, 99, opened_at=now - 5)
    s.jobs.append(Job(batch(40, 69, opened_at=now - 400), generation=0))
    assert s.stalled_for(now) == pytest.approx(400)
    assert 400 <= gauge() < 400 + 3600  # read at scrape time
    s.jobs.clear()
    assert s.stalled_for(now) == pytest.approx(5)


def test_the_status_line_tells_stalled_from_unreachable(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="modelmon.ingest.service")
    s = service(tmp_path, stall_after="300s")
    s.consumer = FakeConsumer([Rec("P", 0, o, b"{}") for o in range(70)])
    s.consumer.pos = 70
    s.jobs.append(Job(batch(40, 69, opened_at=time.monotonic() - 400), generation=0))
    s._log_status()
    s.writer.failing_since = time.monotonic() - 30
    s._log_status()
    stalled, unreachable = (r.getMessage() for r in caplog.records[-2:])
    assert "store STALLED" in stalled and "UNREACHABLE" not in stalled and "lag 30," in stalled
    assert "store UNREACHABLE for 30s" in unreachable
    s.jobs.clear()
    s.writer.failing_since = None
    s._log_status()
    assert caplog.records[-1].getMessage().endswith("store ok")


def test_the_loop_stops_fetching_while_a_full_batch_waits(tmp_path: Path) -> None:
    """Batches close at batch_max_bytes; while the writer is stuck nothing more is fetched."""
    s = service(tmp_path, batch_max_bytes=1024, max_message_bytes=300, batch_max_age="1h")
    consumer = FakeConsumer([Rec("P", 0, o, b"x" * 300) for o in range(50)], per_poll=4)
    s.consumer = consumer
    # The writer thread is not started: no batch submitted ever completes.
    for _ in range(10):
        s._step()
    assert len(s.jobs) == MAX_IN_FLIGHT  # parsed and queued for the writer, no more
    offsets = [[r.offset for r in job.batch.records] for job in s.jobs]
    assert offsets == [[0, 1, 2], [3, 4, 5]]  # 900 bytes each; 4 would be 1200
    assert s.open.nbytes <= 1024 and len(s.open) == 3
    # Held in memory: the batches in flight, the open one and the rest of one fetch.
    held = 3 * MAX_IN_FLIGHT + 3
    assert consumer.delivered <= held + 4
    assert len(s.spill) == consumer.delivered - held
    assert s.lag() == {TP: 50}
