"""Ingest: Kafka prediction and feedback logs into the store (`modelmon ingest`)."""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    # Lazy, so `modelmon --help` does not import kafka-python.
    if name == "IngestService":
        from modelmon.ingest.service import IngestService

        return IngestService
    raise AttributeError(name)
