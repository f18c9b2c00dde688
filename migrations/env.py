"""Alembic environment: runs against the engine `modelmon db` hands it."""

from __future__ import annotations

from alembic import context
from sqlalchemy import engine_from_config, pool

from modelmon.store.partitions import include_name
from modelmon.store.tables import metadata

config = context.config


def run_migrations() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, target_metadata=metadata, compare_type=True,
                          render_as_batch=connection.dialect.name == "sqlite", include_name=include_name)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = engine_from_config(config.get_section(config.config_ini_section) or {},
                                prefix="sqlalchemy.", poolclass=pool.NullPool)
    with engine.connect() as conn:
        context.configure(connection=conn, target_metadata=metadata, compare_type=True,
                          render_as_batch=conn.dialect.name == "sqlite", include_name=include_name)
        with context.begin_transaction():
            context.run_migrations()


run_migrations()
