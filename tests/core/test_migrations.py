"""`modelmon db upgrade` on an empty store, then autogenerate finds nothing to change."""

from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from modelmon.store.engine import make_engine
from modelmon.store.migrate import current, upgrade
from modelmon.store.tables import metadata


def test_upgrade_then_autogenerate_finds_no_difference(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        upgrade(engine)
        assert current(engine) == "0001"
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            diff = compare_metadata(ctx, metadata)
            tables = set(sa.inspect(conn).get_table_names())
        assert diff == []
        assert set(metadata.tables) <= tables
        upgrade(engine)  # a second upgrade is a no-op
        assert current(engine) == "0001"
    finally:
        engine.dispose()


def test_store_has_the_indexes_ingest_and_monitors_rely_on(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        upgrade(engine)
        insp = sa.inspect(engine)
        uniques = {tuple(u["column_names"]) for u in insp.get_unique_constraints("predictions")}
        assert ("model", "request_id") in uniques
        assert ("model", "request_id") in {
            tuple(u["column_names"]) for u in insp.get_unique_constraints("feedback")
        }
        assert ("topic", "partition", "offset") in {
            tuple(u["column_names"]) for u in insp.get_unique_constraints("dead_letters")
        }
        assert ["model", "ts"] in [i["column_names"] for i in insp.get_indexes("predictions")]
    finally:
        engine.dispose()
