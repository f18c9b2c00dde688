"""The monitor tests store raw predictions directly (the same rows feed the
reference computations); the families read rollups. This fixture gives every
family call rollups of exactly those raw rows, built by the same counting code
as ingest (`rebuild_chunk`) with the model settings the test passes, as an
ingest with that configuration would have written them. That write-time
maintenance equals this is tested in tests/store/test_rollups.py."""

from __future__ import annotations

import pytest

from modelmon.monitors.registry import FAMILIES
from modelmon.store.rebuild import rebuild_chunk
from modelmon.store.rollups import Specs

EVERYTHING = (0.0, 4e9)  # epoch range covering every test's events


@pytest.fixture(autouse=True)
def rollups_from_raw(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    for name in FAMILIES.values():
        module = importlib.import_module(name)
        original = module.collect

        def collect(conn, model, now, _original=original):  # type: ignore[no-untyped-def]
            rebuild_chunk(conn, Specs.of(model), model.name, *EVERYTHING)
            return _original(conn, model, now)

        monkeypatch.setattr(module, "collect", collect)
