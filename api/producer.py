"""The Kafka producer behind POST /v1/feedback when Kafka is configured."""

from __future__ import annotations

from typing import Any

from modelmon.config import Config


def feedback_producer(cfg: Config, **overrides: Any) -> Any | None:
    """A KafkaProducer for the feedback topic, or None when Kafka is not configured.

    None (an empty `kafka.bootstrap_servers`) makes the API write feedback to the
    store directly. acks=all: an acknowledged event survives the loss of a
    broker; a retried send that lands twice is deduplicated by ingest.
    """
    if not cfg.kafka.enabled:
        return None
    from kafka import KafkaProducer

    settings: dict[str, Any] = {
        "bootstrap_servers": [s.strip() for s in cfg.kafka.bootstrap_servers.split(",") if s.strip()],
        "client_id": f"{cfg.kafka.client_id}-api",
        "acks": "all",
        "retries": 5,
        "linger_ms": 2,
        "request_timeout_ms": 10_000,
        "max_block_ms": 10_000,
        "max_request_size": max(cfg.server.max_body_bytes * 2, 1_048_576),
        **cfg.kafka.security,
        **overrides,
    }
    return KafkaProducer(**settings)
