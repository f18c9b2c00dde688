"""Where accepted feedback goes: the Kafka feedback topic, or the store directly.

With Kafka, the reply waits for the broker's acknowledgement (acks=all), so an
accepted event is as durable as one a service produced itself, and ingest joins
it to its prediction through the very same path (a header marks the
message, so the trace still says `source: http`). Without Kafka (`producer` is
None) events are written with `write_batch(source="http")`, which applies the
same idempotency and label join as ingest.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Protocol

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, OperationalError

from modelmon.api.feedback import Item
from modelmon.http import HttpError
from modelmon.store.writes import SOURCE_HEADER

# Ingest records what this sink produces as `source: http`, like what StoreSink writes.
HEADERS = [(SOURCE_HEADER, b"http")]

log = logging.getLogger(__name__)


class FeedbackSink(Protocol):
    def write(self, items: list[Item]) -> dict[str, Any]:
        """Store the items durably or raise HttpError (503); returns extra reply fields."""
        ...


def _key(item: Item) -> bytes:
    # The same key as ModelmonClient uses, so HTTP and Kafka feedback for one
    # request land on the same partition.
    return item.event.request_id.encode("utf-8")


class KafkaSink:
    def __init__(self, producer: Any, topic: str, timeout: float = 10.0) -> None:
        self.producer = producer
        self.topic = topic
        self.timeout = timeout

    def write(self, items: list[Item]) -> dict[str, Any]:
        deadline = time.monotonic() + self.timeout
        acked = 0
        try:
            futures = [
                self.producer.send(self.topic, key=_key(i), value=i.encoded(), headers=HEADERS)
                for i in items
            ]
            self.producer.flush(timeout=max(deadline - time.monotonic(), 0.1))
            for fut in futures:
                fut.get(timeout=max(deadline - time.monotonic(), 0.1))
                acked += 1
        except Exception as exc:  # KafkaError, KafkaTimeoutError, a closed producer, ...
            log.warning("feedback not acknowledged by Kafka (%d/%d): %s", acked, len(items), exc)
            raise HttpError(
                503,
                f"Kafka did not acknowledge the feedback ({type(exc).__name__}); "
                "nothing is guaranteed stored, retry the request (it is idempotent)",
                {"acknowledged": acked},
            ) from None
        return {"destination": "kafka"}


class StoreSink:
    def __init__(self, engine: Engine, specs: Any = None) -> None:
        self.engine = engine
        self.specs = specs  # modelmon.store.rollups.Specs of the configuration

    def write(self, items: list[Item]) -> dict[str, Any]:
        from modelmon.store.writes import write_batch

        try:
            with self.engine.begin() as conn:
                outcome = write_batch(conn, [], [(i.event, None) for i in items], [], source="http",
                                      specs=self.specs)
        except (OperationalError, DBAPIError) as exc:
            if isinstance(exc, DBAPIError) and not (
                isinstance(exc, OperationalError) or exc.connection_invalidated
            ):
                raise
            log.warning("feedback not written, the store is unavailable: %s", exc)
            raise HttpError(503, "the store is unavailable; retry the request (it is idempotent)") from None
        return {"destination": "store", **_outcome_fields(outcome)}


def _outcome_fields(outcome: Any) -> dict[str, Any]:
    return {
        "stored": outcome.feedback_stored,
        "duplicates": outcome.duplicates_by_kind.get("feedback", 0),
        "conflicts": outcome.conflicts_by_kind.get("feedback", 0),
        "labels_joined": outcome.labels_joined,
    }
