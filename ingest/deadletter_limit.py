"""The dead-letter limit: a broken producer deploy halts its partition, not the pipeline.

Dead-lettering one bad message and moving on is right; dead-lettering a whole
partition because a producer started writing garbage is not: offsets get
committed past data someone will want back once the producer is fixed. So each
partition keeps a sliding window of its last `ingest.dead_letter_limit_messages`
verdicts (bad = dead-lettered by the contract); once the window is full (the
minimum sample: no halt on 3 bad of the first 4) and more than
`ingest.dead_letter_limit_share` of it is bad, the limit trips at that message.
The loop then stores and commits up to it and pauses the partition: everything
after it stays in Kafka. A share of 1 turns the limit off.

A halted partition stays halted until ingest restarts (or a rebalance moves it):
the window starts empty again then, so at most one more window of messages is
dead-lettered before a still-broken producer trips it again.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any

from kafka.structs import TopicPartition

from modelmon.ingest.batch import Batch, Parsed
from modelmon.store.writes import DeadLetter


class Window:
    """The last `size` verdicts of one partition and how many of them were bad."""

    __slots__ = ("bad", "verdicts")

    def __init__(self, size: int) -> None:
        self.verdicts: deque[bool] = deque(maxlen=size)
        self.bad = 0

    def add(self, bad: bool) -> None:
        if len(self.verdicts) == self.verdicts.maxlen and self.verdicts[0]:
            self.bad -= 1
        self.verdicts.append(bad)
        self.bad += bad


class DeadLetterLimit:
    def __init__(self, share: float, window: int) -> None:
        self.share = share
        self.window = window
        self._windows: dict[TopicPartition, Window] = {}

    def check(self, records: Sequence[Any], dead_letters: Iterable[DeadLetter]
              ) -> dict[TopicPartition, int]:
        """Feed a batch (in offset order per partition); where the limit trips, per partition.

        Returns {partition: offset of the message that tripped it}; partitions
        that trip stop being fed (the rest of their records is not looked at).
        """
        if self.share >= 1:
            return {}
        bad = {(d.position.topic, d.position.partition, d.position.offset)
               for d in dead_letters if d.position is not None}
        threshold = self.share * self.window
        trips: dict[TopicPartition, int] = {}
        for r in records:
            tp = TopicPartition(r.topic, r.partition)
            if tp in trips:
                continue
            w = self._windows.get(tp)
            if w is None:
                w = self._windows[tp] = Window(self.window)
            w.add((r.topic, r.partition, r.offset) in bad)
            if w.bad > threshold and len(w.verdicts) == self.window:
                trips[tp] = r.offset
        for tp in trips:
            self._windows.pop(tp, None)
        return trips

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
        """Revoked partitions: their next owner judges them afresh."""
        for tp in partitions:
            self._windows.pop(tp, None)


def cut(batch: Batch, parsed: Parsed, last: dict[TopicPartition, int]) -> tuple[Batch, Parsed]:
    """The batch and its parse without the records past `last[partition]`."""
    def keep(topic: str, partition: int, offset: int) -> bool:
        limit = last.get(TopicPartition(topic, partition))
        return limit is None or offset <= limit

    kept = Batch(opened_at=batch.opened_at)
    for r in batch.records:
        if keep(r.topic, r.partition, r.offset):
            kept.add(TopicPartition(r.topic, r.partition), [r])
    if not kept.records:
        kept.opened_at = None
    return kept, Parsed(
        predictions=[(e, p) for e, p in parsed.predictions
                     if keep(p.topic, p.partition, p.offset)],
        feedback=[(e, p) for e, p in parsed.feedback if keep(p.topic, p.partition, p.offset)],
        dead_letters=[d for d in parsed.dead_letters if d.position is None
                      or keep(d.position.topic, d.position.partition, d.position.offset)],
    )
