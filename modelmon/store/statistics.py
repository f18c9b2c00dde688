"""Planner statistics of the partitions ingest fills, kept fresh by ingest itself.

Why: keeping predictions unique per (model, request_id) means probing every
partition once per new event (`modelmon.store.writes`). On a partition that
PostgreSQL has not analyzed yet (a new week, DEFAULT, a restored database) the
planner cannot tell the primary key (model, request_id, ts) from the
(model, ts) index and may probe through the latter, reading every row of the
model per event: 1.4-1.8 ms per event at 6-28k rows, measured, growing with the
partition until autovacuum's first ANALYZE of it (`autovacuum_naptime`, a
minute by default, later on a busy server). The ingest rate collapses exactly
when a new partition starts.

So the writer counts the rows it stores per partition and analyzes a partition
once those reach the partition's analyzed size (at least `min_rows`): at 500,
1k, 2k, 4k ... rows, a logarithmic number of ANALYZEs (each samples at most
30k rows) until autovacuum's own thresholds keep up. It runs after the batch's
commit, in its own short transaction, so no batch holds its lock.
"""

from __future__ import annotations

import bisect
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable

import sqlalchemy as sa

from modelmon.store.partitions import DEFAULT, partitions

log = logging.getLogger(__name__)


class PartitionAnalyzer:
    """Per process: rows stored per partition since this process last analyzed it."""

    def __init__(self, min_rows: int = 500, refresh_seconds: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.min_rows = min_rows
        self.refresh_seconds = refresh_seconds
        self.clock = clock
        self._starts: list[float] = []
        self._spans: list[tuple[str, float, float]] = []
        self._listed_at: float | None = None
        self._pending: dict[str, int] = {}  # partition -> rows stored since our last ANALYZE
        self._analyzed: dict[str, float] = {}  # partition -> reltuples when we last looked
        self.analyzed: list[str] = []  # every ANALYZE run, oldest first (status, tests)

    def stored(self, engine: sa.Engine, timestamps: Iterable[float]) -> list[str]:
        """Count newly stored rows by their ts; analyze the partitions that grew enough.

        Returns the partitions analyzed now. Never raises: statistics are an
        optimisation, the batch they follow is already committed.
        """
        if engine.dialect.name != "postgresql":
            return []
        try:
            return self._stored(engine, list(timestamps))
        except sa.exc.SQLAlchemyError as exc:
            log.debug("could not refresh partition statistics: %s", exc)
            return []

    def _stored(self, engine: sa.Engine, timestamps: list[float]) -> list[str]:
        if not timestamps:
            return []
        if self._listed_at is None:
            self._list(engine)
        names = Counter(map(self._partition, timestamps))
        if DEFAULT in names and self.clock() - self._listed_at >= self.refresh_seconds:
            self._list(engine)  # a partition created since (ensure_partitions, by retention)
            names = Counter(map(self._partition, timestamps))
        for name, n in names.items():
            self._pending[name] = self._pending.get(name, 0) + n
        due = [name for name, n in self._pending.items()
               if n >= max(self.min_rows, self._analyzed.get(name, 0.0))]
        if not due:
            return []
        with engine.connect() as conn:
            quote = conn.dialect.identifier_preparer.quote
            for name in due:
                conn.exec_driver_sql(f"ANALYZE {quote(name)}")
            sizes = dict(conn.exec_driver_sql(
                "SELECT relname, reltuples FROM pg_class WHERE relname = ANY(%s) "
                "AND relnamespace = to_regnamespace(current_schema())::oid", (due,),
            ).all())
            conn.commit()
        for name in due:
            self._pending[name] = 0
            self._analyzed[name] = float(sizes.get(name) or 0.0)
            self.analyzed.append(name)
        log.debug("analyzed %s", ", ".join(due))
        return due

    def _list(self, engine: sa.Engine) -> None:
        with engine.connect() as conn:
            self._spans = partitions(conn)
        self._starts = [start for _, start, _ in self._spans]
        self._listed_at = self.clock()

    def _partition(self, ts: float) -> str:
        i = bisect.bisect_right(self._starts, ts) - 1
        if i >= 0:
            name, _, end = self._spans[i]
            if ts < end:
                return name
        return DEFAULT
