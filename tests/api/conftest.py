from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import pytest
from api_helpers import make_config
from sqlalchemy import Engine

from modelmon.config import Config
from modelmon.ingest import IngestService
from modelmon.store.engine import make_engine
from modelmon.store.migrate import upgrade


@pytest.fixture
def sqlite_engine(tmp_path) -> Iterator[Engine]:
    """A migrated SQLite store in a temporary directory."""
    engine = make_engine(f"sqlite:///{tmp_path / 'api.db'}")
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def module_engine(tmp_path_factory) -> Iterator[Engine]:
    """A migrated SQLite store shared by a module's tests that write nothing."""
    engine = make_engine(f"sqlite:///{tmp_path_factory.mktemp('api') / 'api.db'}")
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def pipeline(kafka_bootstrap, kafka_topics, tmp_path):
    """Config + migrated SQLite store + ingest running in a thread (HTTP feedback through Kafka)."""
    preds, fb = kafka_topics("preds"), kafka_topics("feedback")
    base = make_config().model_dump()
    base["database"] = {"url": f"sqlite:///{tmp_path / 'e2e.db'}"}
    base["kafka"] = {
        "bootstrap_servers": kafka_bootstrap, "predictions_topic": preds, "feedback_topic": fb,
        "group_id": f"api-e2e-{uuid.uuid4().hex[:8]}",
        "consumer": {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000},
    }
    base["ingest"] = {"batch_max_age": 0.2}
    cfg = Config.model_validate(base)
    engine = make_engine(cfg.database.url)
    upgrade(engine)
    stop = threading.Event()
    thread = threading.Thread(target=IngestService(cfg, engine).run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield cfg, engine
    finally:
        stop.set()
        thread.join(30)
        engine.dispose()
