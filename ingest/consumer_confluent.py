"""The librdkafka consumer (`kafka.client: confluent`, `pip install 'modelmon[confluent]'`).

Same guarantees as the kafka-python one: automatic commits off, offsets
committed synchronously after the store's commit, rebalance callbacks (which
confluent-kafka runs inside `poll()` on the polling thread, so they may block and
commit synchronously), pause as backpressure, and lag from the high watermark of
the last fetch (`get_watermark_offsets(cached=True)`).

`kafka.consumer` and `kafka.security` keep kafka-python's names (so one
configuration works with both clients); `CONFLUENT_NAMES` maps them to
librdkafka's. Names with a dot are librdkafka's own and pass through as they are.
Anything else is refused at start-up with one line naming it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection
from typing import Any

from kafka.errors import KafkaConnectionError
from kafka.structs import TopicPartition

from modelmon.config import Config
from modelmon.ingest.consumer_base import (
    BOOTSTRAP_TIMEOUT_MS,
    CommitCallback,
    ConsumerError,
    RebalanceCallback,
)

log = logging.getLogger(__name__)

# kafka-python setting -> librdkafka property.
CONFLUENT_NAMES = {
    "bootstrap_servers": "bootstrap.servers",
    "group_id": "group.id",
    "client_id": "client.id",
    "group_instance_id": "group.instance.id",
    "auto_offset_reset": "auto.offset.reset",
    "session_timeout_ms": "session.timeout.ms",
    "heartbeat_interval_ms": "heartbeat.interval.ms",
    "max_poll_interval_ms": "max.poll.interval.ms",
    "fetch_max_bytes": "fetch.max.bytes",
    "fetch_min_bytes": "fetch.min.bytes",
    "fetch_max_wait_ms": "fetch.wait.max.ms",
    "max_partition_fetch_bytes": "max.partition.fetch.bytes",
    "receive_message_max_bytes": "receive.message.max.bytes",
    "request_timeout_ms": "socket.timeout.ms",
    "retry_backoff_ms": "retry.backoff.ms",
    "reconnect_backoff_ms": "reconnect.backoff.ms",
    "reconnect_backoff_max_ms": "reconnect.backoff.max.ms",
    "connections_max_idle_ms": "connections.max.idle.ms",
    "metadata_max_age_ms": "metadata.max.age.ms",
    "isolation_level": "isolation.level",
    "check_crcs": "check.crcs",
    "security_protocol": "security.protocol",
    "sasl_mechanism": "sasl.mechanism",
    "sasl_plain_username": "sasl.username",
    "sasl_plain_password": "sasl.password",
    "sasl_kerberos_service_name": "sasl.kerberos.service.name",
    "ssl_cafile": "ssl.ca.location",
    "ssl_certfile": "ssl.certificate.location",
    "ssl_keyfile": "ssl.key.location",
    "ssl_password": "ssl.key.password",
    "ssl_crlfile": "ssl.crl.location",
}
# kafka-python settings with no librdkafka meaning here: the loop passes the bound
# itself (max_poll_records), or librdkafka does it differently (bootstrap timeout).
IGNORED = {"max_poll_records", "bootstrap_timeout_ms", "enable_auto_commit"}
# librdkafka's "no offset" sentinel (OFFSET_INVALID).
_INVALID = -1001
# Say that the broker is unreachable at most this often.
ERROR_LOG_SECONDS = 30.0


def unmapped_settings(settings: dict[str, Any]) -> list[str]:
    """kafka.consumer / kafka.security names with no librdkafka equivalent here."""
    return sorted(name for name in settings
                  if name not in IGNORED and name not in CONFLUENT_NAMES
                  and name != "ssl_check_hostname" and "." not in name)


def unmapped_message(names: list[str]) -> str:
    return (f"kafka.client confluent: no librdkafka equivalent for {', '.join(names)}; "
            "use librdkafka's dotted property names for settings outside the common ones")


def confluent_settings(cfg: Config) -> dict[str, Any]:
    """librdkafka properties for ingest; ValueError naming any setting it cannot map."""
    k, ing = cfg.kafka, cfg.ingest
    settings: dict[str, Any] = {
        "bootstrap.servers": k.bootstrap_servers,
        "group.id": k.group_id,
        "client.id": k.client_id,
        "auto.offset.reset": "earliest",  # a new group starts at the beginning: nothing skipped
        "fetch.max.bytes": ing.batch_max_bytes,
        "max.partition.fetch.bytes": min(
            ing.batch_max_bytes, max(8 * 1024 * 1024, ing.max_message_bytes + 65536)
        ),
        # librdkafka wants fetch.max.bytes >= message.max.bytes (a producer setting
        # here) and receive.message.max.bytes > fetch.max.bytes + 512.
        "message.max.bytes": max(1000, min(ing.batch_max_bytes, 1_000_000)),
        "receive.message.max.bytes": max(64 * 1024 * 1024, ing.max_message_bytes * 2,
                                         ing.batch_max_bytes + 1024),
        # librdkafka prefetches up to 64 MB per consumer by default: bound it like a batch.
        "queued.max.messages.kbytes": max(1024, ing.batch_max_bytes // 1024),
    }
    unknown = unmapped_settings({**k.security, **k.consumer})
    if unknown:
        raise ValueError(unmapped_message(unknown))
    for name, value in [*k.security.items(), *k.consumer.items()]:
        if name in IGNORED:
            continue
        if name == "ssl_check_hostname":
            settings["ssl.endpoint.identification.algorithm"] = "https" if value else "none"
        else:
            settings[CONFLUENT_NAMES.get(name, name)] = value
    if isinstance(settings["bootstrap.servers"], list):
        settings["bootstrap.servers"] = ",".join(settings["bootstrap.servers"])
    settings["enable.auto.commit"] = False  # committing after the store is the point
    settings["enable.auto.offset.store"] = False
    return settings


class Record:
    """One message, with kafka-python's attribute names."""

    __slots__ = ("topic", "partition", "offset", "value", "headers")

    def __init__(self, topic: str, partition: int, offset: int, value: bytes | None,
                 headers: list[tuple[str, bytes]] | None) -> None:
        self.topic, self.partition, self.offset = topic, partition, offset
        self.value, self.headers = value, headers


# librdkafka's own log lines (connection attempts among them, summarised like
# kafka-python's by modelmon.ingest.kafka_logs).
LOGGER = "modelmon.ingest.librdkafka"


class ConfluentConsumer:
    """confluent_kafka.Consumer behind the ingest interface."""

    callbacks_may_block = True  # they run inside poll(), on the polling thread

    def __init__(self, cfg: Config) -> None:
        try:
            import confluent_kafka as ck
        except ImportError as exc:  # the extra is not installed
            raise ValueError("kafka.client confluent needs confluent-kafka: "
                             "pip install 'modelmon[confluent]'") from exc
        self.ck = ck
        self._paused: set[TopicPartition] = set()
        self._assigned: set[TopicPartition] = set()
        self._error_logged_at = -ERROR_LOG_SECONDS
        settings = confluent_settings(cfg)
        settings["error_cb"] = self._on_error
        settings["logger"] = logging.getLogger(LOGGER)
        try:
            self.consumer = ck.Consumer(settings)
        except ck.KafkaException as exc:
            raise ValueError(f"kafka.client confluent: {exc.args[0].str()}") from None
        # librdkafka connects lazily and would wait for a broker in silence: ask one for
        # metadata now, so "no broker" is the same error, retried the same way, as with
        # kafka-python, and /readyz does not report a consumer that never reached one.
        timeout = cfg.kafka.consumer.get("bootstrap_timeout_ms", BOOTSTRAP_TIMEOUT_MS) / 1000
        try:
            self.consumer.list_topics(timeout=timeout)
        except ck.KafkaException as exc:
            self.consumer.close()
            raise KafkaConnectionError(f"no Kafka broker reachable: {exc.args[0].str()}") from None

    def _on_error(self, err: Any) -> None:
        now = time.monotonic()
        if now - self._error_logged_at >= ERROR_LOG_SECONDS:
            self._error_logged_at = now
            # On librdkafka's logger: summarised with its lines while no broker answers.
            logging.getLogger(LOGGER).warning("Kafka (librdkafka): %s", err.str())

    def subscribe(self, topics: list[str], on_assigned: RebalanceCallback,
                  on_revoked: RebalanceCallback) -> None:
        def assigned(_: Any, parts: list[Any]) -> None:
            tps = [TopicPartition(p.topic, p.partition) for p in parts]
            self._assigned.update(tps)
            on_assigned(tps)

        def revoked(_: Any, parts: list[Any]) -> None:
            tps = [TopicPartition(p.topic, p.partition) for p in parts]
            try:
                on_revoked(tps)
            finally:
                self._assigned.difference_update(tps)
                self._paused.difference_update(tps)

        self.consumer.subscribe(topics, on_assign=assigned, on_revoke=revoked, on_lost=revoked)

    def poll(self, timeout_ms: int = 0,
             max_records: int | None = None) -> dict[TopicPartition, list[Any]]:
        msgs = self.consumer.consume(num_messages=max_records or 100_000,
                                     timeout=timeout_ms / 1000)
        out: dict[TopicPartition, list[Any]] = {}
        for m in msgs:
            err = m.error()
            if err is not None:
                if err.code() != self.ck.KafkaError._PARTITION_EOF:
                    self._on_error(err)
                continue
            topic, partition = m.topic(), m.partition()
            # Delivered even if paused meanwhile: librdkafka's position has moved past
            # it, so dropping it here would skip it (the loop holds it, bounded).
            out.setdefault(TopicPartition(topic, partition), []).append(
                Record(topic, partition, m.offset(), m.value(), m.headers()))
        return out

    def _ck(self, tps: Collection[TopicPartition]) -> list[Any]:
        return [self.ck.TopicPartition(tp.topic, tp.partition) for tp in tps]

    def pause(self, *partitions: TopicPartition) -> None:
        if partitions:
            self.consumer.pause(self._ck(partitions))
            self._paused.update(partitions)

    def resume(self, *partitions: TopicPartition) -> None:
        if partitions:
            self.consumer.resume(self._ck(partitions))
            self._paused.difference_update(partitions)

    def paused(self) -> Collection[TopicPartition]:
        return set(self._paused)

    def assignment(self) -> Collection[TopicPartition]:
        return set(self._assigned)

    def highwater(self, tp: TopicPartition) -> int | None:
        try:
            _, high = self.consumer.get_watermark_offsets(
                self.ck.TopicPartition(tp.topic, tp.partition), cached=True)
        except self.ck.KafkaException:
            return None
        return None if high < 0 else int(high)

    def position(self, tp: TopicPartition, timeout_ms: int | None = None) -> int | None:
        try:
            (part,) = self.consumer.position(self._ck([tp]))
        except self.ck.KafkaException as exc:
            raise ConsumerError(str(exc)) from exc
        return None if part.offset < 0 else int(part.offset)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        try:
            self.consumer.seek(self.ck.TopicPartition(tp.topic, tp.partition, offset))
        except self.ck.KafkaException as exc:
            raise ConsumerError(str(exc)) from exc

    def _offsets(self, offsets: dict[TopicPartition, int]) -> list[Any]:
        return [self.ck.TopicPartition(tp.topic, tp.partition, o) for tp, o in offsets.items()]

    def commit(self, offsets: dict[TopicPartition, int]) -> None:
        try:
            result = self.consumer.commit(offsets=self._offsets(offsets), asynchronous=False)
        except self.ck.KafkaException as exc:
            raise ConsumerError(exc.args[0].str()) from exc
        failed = [p for p in result or () if p.error is not None]
        if failed:
            raise ConsumerError(f"{failed[0].topic}[{failed[0].partition}]: {failed[0].error}")

    def commit_async(self, offsets: dict[TopicPartition, int], callback: CommitCallback) -> None:
        try:
            self.commit(offsets)
        except ConsumerError as exc:
            callback(offsets, exc)
        else:
            callback(offsets, None)

    def close(self) -> None:
        self.consumer.close()
