"""What the ingest loop needs from a Kafka consumer, whichever library runs it.

IngestService talks to one small interface so that its guarantees (commit after
the store's commit, rewind on a lost batch, pause as backpressure, lag from the
fetch high watermark) are written once; `kafka.client` picks the implementation:
`consumer_kafka_python.KafkaPythonConsumer` (the default) or
`consumer_confluent.ConfluentConsumer` (librdkafka).

Partitions are kafka-python's `TopicPartition` named tuples on both sides, and
records anything with `topic`, `partition`, `offset`, `value` and `headers`.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any, Protocol

from kafka.structs import TopicPartition

from modelmon.config import Config

# How long a new consumer waits for a broker before it gives up (the service then
# retries with backoff, so a stop request is noticed); `kafka.consumer` may override.
BOOTSTRAP_TIMEOUT_MS = 10_000

# Called with the partitions assigned or revoked by a rebalance.
RebalanceCallback = Callable[[list[TopicPartition]], None]
# Called with the offsets an asynchronous commit carried and None, or the error.
CommitCallback = Callable[[dict[TopicPartition, int], BaseException | None], None]


class ConsumerError(Exception):
    """A consumer call failed (broker gone, rebalance in progress, ...); say it and go on."""


class Consumer(Protocol):
    # True when rebalance callbacks run on the thread that calls poll(), so they may
    # block and commit synchronously (confluent-kafka); kafka-python 3 runs them on
    # its IO thread, where a blocking call fails the rebalance.
    callbacks_may_block: bool

    def subscribe(self, topics: list[str], on_assigned: RebalanceCallback,
                  on_revoked: RebalanceCallback) -> None: ...

    def poll(self, timeout_ms: int = 0,
             max_records: int | None = None) -> dict[TopicPartition, list[Any]]: ...

    def pause(self, *partitions: TopicPartition) -> None: ...

    def resume(self, *partitions: TopicPartition) -> None: ...

    def paused(self) -> Collection[TopicPartition]: ...

    def assignment(self) -> Collection[TopicPartition]: ...

    def highwater(self, tp: TopicPartition) -> int | None: ...

    def position(self, tp: TopicPartition, timeout_ms: int | None = None) -> int | None: ...

    def seek(self, tp: TopicPartition, offset: int) -> None: ...

    def commit(self, offsets: dict[TopicPartition, int]) -> None:
        """Synchronous; raises ConsumerError when the broker refused it."""

    def commit_async(self, offsets: dict[TopicPartition, int], callback: CommitCallback) -> None: ...

    def close(self) -> None: ...


def make_consumer(cfg: Config) -> Consumer:
    """The consumer `kafka.client` names; raises ValueError on settings it cannot take."""
    if cfg.kafka.client == "confluent":
        from modelmon.ingest.consumer_confluent import ConfluentConsumer

        return ConfluentConsumer(cfg)
    from modelmon.ingest.consumer_kafka_python import KafkaPythonConsumer

    return KafkaPythonConsumer(cfg)
