"""The dead-letter limit's sliding window, against pandas' rolling sum, without a broker."""

from __future__ import annotations

import random

import pandas as pd
import pytest
from conftest import Rec
from kafka.structs import TopicPartition

from modelmon.ingest.batch import Batch, parse_records
from modelmon.ingest.deadletter_limit import DeadLetterLimit, cut

GOOD = (b'{"request_id":"r%d","model":"m","timestamp":1790000000,"prediction":1,'
        b'"scores":{"0":0.5,"1":0.5}}')


def reference_trip(bad: list[bool], window: int, share: float) -> int | None:
    """First position whose trailing full window has more than share bad (pandas)."""
    sums = pd.Series(bad, dtype=float).rolling(window, min_periods=window).sum()
    over = sums[sums > share * window]
    return None if over.empty else int(over.index[0])


def feed(limit: DeadLetterLimit, records: list[Rec], splits: list[int]) -> dict[TopicPartition, int]:
    """Parse and check the records in batches cut at `splits`; the first trip per partition."""
    trips: dict[TopicPartition, int] = {}
    bounds = [0, *splits, len(records)]
    for a, b in zip(bounds, bounds[1:], strict=False):
        batch = [r for r in records[a:b] if TopicPartition(r.topic, r.partition) not in trips]
        parsed = parse_records(batch, "P", "F", 1 << 20, 100)
        for tp, off in limit.check(batch, parsed.dead_letters).items():
            trips.setdefault(tp, off)
    return trips


@pytest.mark.parametrize("seed", range(12))
def test_the_limit_trips_where_a_rolling_window_first_exceeds_the_share(seed: int) -> None:
    rng = random.Random(seed)
    window, share = rng.choice([10, 20, 50]), rng.choice([0.3, 0.5, 0.8])
    per_part: dict[int, list[Rec]] = {0: [], 1: []}
    bad: dict[int, list[bool]] = {0: [], 1: []}
    for part in (0, 1):
        # A good run, then a stretch where the producer breaks with some probability.
        p_bad = rng.choice([0.1, 0.4, 0.6, 0.95])
        for off in range(300):
            is_bad = off >= 100 and rng.random() < p_bad
            bad[part].append(is_bad)
            per_part[part].append(Rec("P", part, off, b"{oops" if is_bad else GOOD % off))
    # Interleaved as a fetch returns them: each partition in its own order.
    records = [r for pair in zip(per_part[0], per_part[1], strict=True) for r in pair]
    splits = sorted(rng.sample(range(1, len(records)), 8))
    trips = feed(DeadLetterLimit(share, window), records, splits)
    expected = {TopicPartition("P", p): off for p in (0, 1)
                if (off := reference_trip(bad[p], window, share)) is not None}
    assert trips == expected


def test_no_trip_before_the_window_is_full() -> None:
    """3 bad of the first 4 (and every one of the first window - 1) never trips."""
    window = 10
    records = [Rec("P", 0, off, b"{oops") for off in range(window - 1)]
    limit = DeadLetterLimit(0.5, window)
    assert feed(limit, records, []) == {}
    assert feed(limit, [Rec("P", 0, window - 1, b"{oops")], []) == {TopicPartition("P", 0): 9}


def test_a_share_of_one_never_trips() -> None:
    records = [Rec("P", 0, off, b"{oops") for off in range(500)]
    assert feed(DeadLetterLimit(1.0, 10), records, [100, 200]) == {}


def test_forgotten_partitions_start_afresh() -> None:
    limit = DeadLetterLimit(0.5, 10)
    assert feed(limit, [Rec("P", 0, off, b"{oops") for off in range(9)], []) == {}
    limit.forget([TopicPartition("P", 0)])
    assert feed(limit, [Rec("P", 0, off, b"{oops") for off in range(9, 18)], []) == {}


def test_cut_drops_the_records_past_the_trip_and_their_parse() -> None:
    records = [Rec("P", p, off, b"{oops" if off % 2 else GOOD % (100 * p + off))
               for off in range(10) for p in (0, 1)]
    batch = Batch()
    for r in records:
        batch.add(TopicPartition(r.topic, r.partition), [r])
    parsed = parse_records(records, "P", "F", 1 << 20, 100)
    kept, kept_parsed = cut(batch, parsed, {TopicPartition("P", 0): 4})
    expected = [(r.partition, r.offset) for r in records if r.partition == 1 or r.offset <= 4]
    assert [(r.partition, r.offset) for r in kept.records] == expected
    assert kept.next_offsets == {TopicPartition("P", 0): 5, TopicPartition("P", 1): 10}
    positions = sorted([(pos.partition, pos.offset) for _, pos in kept_parsed.predictions]
                       + [(d.position.partition, d.position.offset)
                          for d in kept_parsed.dead_letters if d.position is not None])
    assert positions == sorted(expected)
