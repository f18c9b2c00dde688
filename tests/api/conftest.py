from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

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
