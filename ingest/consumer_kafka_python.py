"""The default consumer: kafka-python, pure Python (`kafka.client: kafka-python`)."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Any

from kafka import ConsumerRebalanceListener, KafkaConsumer
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata, TopicPartition

from modelmon.config import Config
from modelmon.ingest.consumer_base import (
    BOOTSTRAP_TIMEOUT_MS,
    CommitCallback,
    ConsumerError,
    RebalanceCallback,
)


def consumer_settings(cfg: Config) -> dict[str, Any]:
    """KafkaConsumer keyword arguments: ingest's needs, then security, then user extras."""
    k, ing = cfg.kafka, cfg.ingest
    settings: dict[str, Any] = {
        "bootstrap_servers": k.bootstrap_servers.split(","),
        "group_id": k.group_id,
        "client_id": k.client_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",  # a new group starts at the beginning: nothing skipped
        "max_poll_records": ing.batch_max_events,
        # One fetch response is buffered per broker beside the two batches: bound it
        # like a batch (a larger first message still comes, alone).
        "fetch_max_bytes": ing.batch_max_bytes,
        "max_partition_fetch_bytes": min(
            ing.batch_max_bytes, max(8 * 1024 * 1024, ing.max_message_bytes + 65536)
        ),
        "receive_message_max_bytes": max(64 * 1024 * 1024, ing.max_message_bytes * 2),
        "bootstrap_timeout_ms": BOOTSTRAP_TIMEOUT_MS,
    }
    settings.update(k.security)
    settings.update(k.consumer)
    settings["enable_auto_commit"] = False  # committing after the store is the point
    return settings


class _Listener(ConsumerRebalanceListener):
    def __init__(self, on_assigned: RebalanceCallback, on_revoked: RebalanceCallback) -> None:
        self.on_assigned, self.on_revoked = on_assigned, on_revoked

    def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        self.on_revoked(list(revoked))

    def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        self.on_assigned(list(assigned))


class KafkaPythonConsumer:
    """KafkaConsumer behind the ingest interface; raises KafkaError if no broker answers."""

    callbacks_may_block = False  # kafka-python 3 calls the listener on its IO thread

    def __init__(self, cfg: Config) -> None:
        self.consumer = KafkaConsumer(**consumer_settings(cfg))

    def subscribe(self, topics: list[str], on_assigned: RebalanceCallback,
                  on_revoked: RebalanceCallback) -> None:
        self.consumer.subscribe(topics, listener=_Listener(on_assigned, on_revoked))

    def poll(self, timeout_ms: int = 0,
             max_records: int | None = None) -> dict[TopicPartition, list[Any]]:
        return self.consumer.poll(timeout_ms=timeout_ms, max_records=max_records)

    def pause(self, *partitions: TopicPartition) -> None:
        self.consumer.pause(*partitions)

    def resume(self, *partitions: TopicPartition) -> None:
        self.consumer.resume(*partitions)

    def paused(self) -> Collection[TopicPartition]:
        return self.consumer.paused()

    def assignment(self) -> Collection[TopicPartition]:
        return self.consumer.assignment()

    def highwater(self, tp: TopicPartition) -> int | None:
        return self.consumer.highwater(tp)

    def position(self, tp: TopicPartition, timeout_ms: int | None = None) -> int | None:
        try:
            return self.consumer.position(tp, timeout_ms=timeout_ms)
        except KafkaError as exc:
            raise ConsumerError(str(exc)) from exc

    def seek(self, tp: TopicPartition, offset: int) -> None:
        try:
            self.consumer.seek(tp, offset)
        except (KafkaError, AssertionError, ValueError) as exc:  # not assigned any more
            raise ConsumerError(str(exc)) from exc

    def commit(self, offsets: dict[TopicPartition, int]) -> None:
        try:
            self.consumer.commit({tp: OffsetAndMetadata(o, "", -1) for tp, o in offsets.items()})
        except KafkaError as exc:
            raise ConsumerError(str(exc)) from exc

    def commit_async(self, offsets: dict[TopicPartition, int], callback: CommitCallback) -> None:
        def done(_: Any, result: Any) -> None:
            callback(offsets, result if isinstance(result, BaseException) else None)

        payload = {tp: OffsetAndMetadata(o, "", -1) for tp, o in offsets.items()}
        try:
            self.consumer.commit_async(payload, callback=done)
        except KafkaError as exc:
            callback(offsets, exc)

    def close(self) -> None:
        self.consumer.close(autocommit=False)
