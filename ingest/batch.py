"""An open batch of Kafka records, and turning records into store rows.

A batch closes when it holds `ingest.batch_max_events` messages, or
`ingest.batch_max_bytes` of message values (so memory and one store round trip
stay bounded whatever the size of the events), or its first message is
`ingest.batch_max_age` old. Its offsets (last processed + 1 per partition) are
committed only after the batch's database transaction commits.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from kafka.structs import TopicPartition

from modelmon.contract import (
    ContractError,
    Feedback,
    Prediction,
    check_not_future,
    decode_feedback,
    decode_prediction,
)
from modelmon.store.writes import DeadLetter, Position, header_source


class Record(Protocol):
    """The part of a consumed message ingest reads (kafka-python's ConsumerRecord, or
    consumer_confluent.Record), plus `headers` for the source header."""

    topic: str
    partition: int
    offset: int
    value: bytes | None


def size(record: Any) -> int:
    """What a message weighs in a batch: its value's bytes (a tombstone: 0)."""
    return 0 if record.value is None else len(record.value)


@dataclass(slots=True)
class Batch:
    records: list[Any] = field(default_factory=list)
    opened_at: float | None = None  # time.monotonic() of the first record
    next_offsets: dict[TopicPartition, int] = field(default_factory=dict)
    first_offsets: dict[TopicPartition, int] = field(default_factory=dict)
    nbytes: int = 0  # sum of the records' value sizes

    def __len__(self) -> int:
        return len(self.records)

    def add(self, tp: TopicPartition, records: list[Any]) -> None:
        if not records:
            return
        if self.opened_at is None:
            self.opened_at = time.monotonic()
        self.records.extend(records)
        self.nbytes += sum(map(size, records))
        self.first_offsets.setdefault(tp, records[0].offset)
        self.next_offsets[tp] = records[-1].offset + 1

    def take(self, tp: TopicPartition, records: list[Any], max_events: int, max_bytes: float) -> int:
        """Add the longest prefix of `records` that fits; how many were taken.

        An empty batch always takes one record, however large, so that a
        message above the byte bound still moves (it is dead-lettered later).
        """
        n, nbytes, events = 0, self.nbytes, len(self.records)
        for r in records:
            if events + n >= max_events or (events + n and nbytes + size(r) > max_bytes):
                break
            nbytes += size(r)
            n += 1
        self.add(tp, records[:n] if n < len(records) else records)
        return n

    def age(self, now: float | None = None) -> float:
        if self.opened_at is None:
            return 0.0
        return (time.monotonic() if now is None else now) - self.opened_at

    def is_due(self, max_events: int, max_age: float, max_bytes: float = math.inf) -> bool:
        return bool(self.records) and (
            len(self.records) >= max_events or self.nbytes >= max_bytes or self.age() >= max_age
        )

    def without(self, partitions: Iterable[TopicPartition]) -> Batch:
        """This batch minus the records of some partitions (revoked in a rebalance)."""
        gone = set(partitions)
        kept = Batch(opened_at=self.opened_at)
        for r in self.records:
            tp = TopicPartition(r.topic, r.partition)
            if tp not in gone:
                kept.add(tp, [r])
        if not kept.records:
            kept.opened_at = None
        return kept


@dataclass(slots=True)
class Parsed:
    predictions: list[tuple[Prediction, Position]]
    feedback: list[tuple[Feedback, Position]]
    dead_letters: list[DeadLetter]


def dead_letter(
    reason: str, detail: str, raw: bytes | None, position: Position | None, payload_limit: int,
    source: str = "kafka",
) -> DeadLetter:
    payload = None if raw is None else bytes(raw[:payload_limit])
    return DeadLetter(
        reason=reason,
        detail=detail[:2000].replace("\x00", "\\0"),  # PostgreSQL text refuses NUL
        payload=payload,
        payload_bytes=0 if raw is None else len(raw),
        source=source,
        position=position,
    )


def parse_records(
    records: Iterable[Any],
    predictions_topic: str,
    feedback_topic: str,
    max_message_bytes: int,
    payload_limit: int,
    max_future_skew: float = math.inf,
    now: float | None = None,
) -> Parsed:
    """Decode and validate; anything that breaks the contract becomes a dead letter.

    That includes an event time more than `max_future_skew` seconds ahead of
    `now` (this process's clock): one far-future timestamp would otherwise stay
    the newest event forever and hide a model that went quiet.
    """
    now = time.time() if now is None else now
    latest = now + max_future_skew  # what check_not_future allows, computed once per batch
    preds: list[tuple[Prediction, Position]] = []
    fbs: list[tuple[Feedback, Position]] = []
    dead: list[DeadLetter] = []
    add_pred, add_fb = preds.append, fbs.append
    for r in records:
        topic = r.topic
        position = Position(topic, r.partition, r.offset,
                            header_source(r) if getattr(r, "headers", None) else "kafka")
        try:
            # One compiled pass from bytes to the event (modelmon.events); its refusals carry
            # the same reasons and wording as decode() + parse_*().
            if topic == predictions_topic:
                pred = decode_prediction(r.value, max_message_bytes)
                if pred.ts > latest:
                    check_not_future(pred.ts, now, max_future_skew)
                add_pred((pred, position))
            elif topic == feedback_topic:
                fb = decode_feedback(r.value, max_message_bytes)
                if fb.ts > latest:
                    check_not_future(fb.ts, now, max_future_skew)
                add_fb((fb, position))
            else:  # not subscribed; only if the configuration changed under us
                raise ContractError("unknown_topic", f"topic {topic!r} is not an ingest topic")
        except ContractError as exc:
            dead.append(dead_letter(exc.reason, exc.detail, r.value, position, payload_limit))
        except Exception as exc:  # a validator bug must not stall or crash ingest
            dead.append(dead_letter("invalid_value", f"could not be validated: {exc!r}", r.value,
                                    position, payload_limit))
    return Parsed(preds, fbs, dead)
