"""Schema migrations (Alembic), driven from `modelmon db ...` and tests.

Revision 0002 introduced the rollups that ingest maintains at write time; a
store that already holds predictions gets them backfilled here, after the
schema change commits, by the same chunked rebuild as `modelmon rollups
rebuild` (one transaction per chunk, so memory stays bounded and the schema
change is not held open for the length of a scan). An interrupted backfill is
finished with `modelmon rollups rebuild --all`.
"""

from __future__ import annotations

import logging
from importlib.resources import files

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from modelmon.config import Config

log = logging.getLogger(__name__)

#: The revision that created the rollup tables: crossing it means a backfill.
ROLLUPS_REVISION = "0002"


def alembic_config(engine: Engine) -> AlembicConfig:
    ini = files("modelmon.migrations") / "alembic.ini"
    cfg = AlembicConfig(str(ini))
    cfg.set_main_option("script_location", str(files("modelmon.migrations")))
    cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False))
    return cfg


def upgrade(engine: Engine, revision: str = "head", cfg: Config | None = None) -> None:
    """Migrate to `revision`; when that adds the rollups, count the stored predictions
    into them with the rollup settings of `cfg` (built-in defaults if None)."""
    alembic_cfg = alembic_config(engine)
    before = current(engine)
    with engine.begin() as conn:
        alembic_cfg.attributes["connection"] = conn
        command.upgrade(alembic_cfg, revision)
    after = current(engine)
    if _applied(alembic_cfg, before, after, ROLLUPS_REVISION):
        backfill_rollups(engine, cfg)
    ensure_partitions_now(engine, cfg)


def ensure_partitions_now(engine: Engine, cfg: Config | None = None) -> None:
    """PostgreSQL: partitions of `predictions` for now and the next spans."""
    import time

    from modelmon.store.partitions import ensure_partitions

    if engine.dialect.name != "postgresql" or current(engine) is None:
        return
    span = (cfg or Config()).retention.partition
    with engine.begin() as conn:
        for name in ensure_partitions(conn, time.time(), span):
            log.info("created partition %s", name)


def _applied(alembic_cfg: AlembicConfig, before: str | None, after: str | None, rev: str) -> bool:
    """Whether going from `before` to `after` ran the migration `rev`."""
    if after is None or after == before:
        return False
    script = ScriptDirectory.from_config(alembic_cfg)
    ran = script.iterate_revisions(after, before if before is not None else "base")
    return any(r.revision == rev for r in ran)


def backfill_rollups(engine: Engine, cfg: Config | None = None) -> None:
    """Rebuild the rollups of every model with stored predictions."""
    from modelmon.store.rebuild import rebuild, stored_models
    from modelmon.store.rollups import Specs

    specs = Specs(cfg)
    for model in stored_models(engine):
        report = rebuild(engine, specs, model)
        log.info(
            "rollups of %s backfilled: %d predictions in %d chunks, %.1f s",
            model, report.rows, report.chunks, report.seconds,
        )


def current(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()
