"""Runs every monitor family for every model on a schedule.

One APScheduler job per (family, model) at the model's interval (coalesced,
one instance at a time). A job queries and computes through the family's
`collect`, then replaces its rows in `monitor_latest` (appending them to the
`monitor_results` history at most every `monitors.history_interval`) and
upserts its `monitor_runs` row, all in one transaction. A job that raises is
logged with its name, its error is recorded, and it simply runs again at its
next tick.

A "retention:*" job (every `retention.interval` when `retention.enabled`)
deletes rows past their configured age in bounded steps
(modelmon.store.retention); `run_once` leaves it out so that a pass stays
deterministic, `retention(now)` runs it explicitly.

Several `modelmon monitor` processes may share one PostgreSQL database: each
job takes a transaction-level advisory lock keyed on its name and skips
quietly when another process holds it; a scheduled tick also skips when the
job's last attempt (by any process) is younger than half its interval, so the
job runs in only one process per interval.

The families of one model share their scans: every job runs inside the
scheduler's `AggregateCache`, and the scheduled ticks of one model's families
all evaluate at the same tick time (the scheduled fire time), so the combined
GROUP BY of `aggregates.window_groups` is computed once per (model, tick).
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy import Engine

from modelmon.config import Config, ResolvedModel
from modelmon.monitors.aggregates import AggregateCache, shared
from modelmon.monitors.registry import FAMILIES
from modelmon.monitors.results import record_run, write_results
from modelmon.store.rollups import Specs
from modelmon.store.tables import monitor_runs, predictions

log = logging.getLogger("modelmon.monitors")

RECONCILE_JOB = "reconcile_labels:*"
RETENTION_JOB = "retention:*"
RECONCILE_MARGIN = 300.0  # longer than one ingest transaction
DISCOVER_INTERVAL = 60.0


def lock_key(job: str) -> int:
    """A stable signed 64-bit key for pg_try_advisory_xact_lock."""
    return int.from_bytes(hashlib.blake2b(job.encode(), digest_size=8).digest(), "big", signed=True)


def stored_models(conn: sa.Connection) -> list[str]:
    """Distinct models in `predictions` by a loose index scan on (model, ts).

    A recursive CTE hops from one model to the next through the index, so the
    cost is one seek per model, not a scan of the table.
    """
    p = predictions
    first = sa.select(sa.func.min(p.c.model).label("m")).cte("models", recursive=True)
    nxt = sa.select(sa.func.min(p.c.model)).where(p.c.model > first.c.m).scalar_subquery()
    walk = first.union_all(sa.select(nxt.label("m")).where(first.c.m.is_not(None)))
    return [m for (m,) in conn.execute(sa.select(walk.c.m).where(walk.c.m.is_not(None)))]


class MonitorScheduler:
    def __init__(
        self, cfg: Config, engine: Engine, families: Mapping[str, str] | None = None
    ) -> None:
        self.cfg = cfg
        self.engine = engine
        self.families = dict(FAMILIES if families is None else families)
        self.first_pass_done = False
        self._scheduler = None  # APScheduler BackgroundScheduler once started
        self._lock = threading.Lock()
        self._pending_first: set[str] = set()
        self._missing_logged: set[str] = set()
        self._reconciled_at: float | None = None
        self._aggregates = AggregateCache()
        self._specs = Specs(cfg)

    # -- what to run ---------------------------------------------------------

    def models(self, conn: sa.Connection) -> list[str]:
        names = set(self.cfg.models)
        if self.cfg.monitors.discover_models:
            names.update(stored_models(conn))
        return sorted(names)

    def _module(self, family: str):  # type: ignore[no-untyped-def]
        name = self.families[family]
        try:
            return importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            if family not in self._missing_logged:
                log.warning("monitor family %s is not installed (%s); skipping it", family, name)
                self._missing_logged.add(family)
            return None

    def available_families(self) -> list[str]:
        return [f for f in self.families if self._module(f) is not None]

    # -- one job -------------------------------------------------------------

    def _locked(self, conn: sa.Connection, job: str) -> bool:
        """Take the job's advisory lock on PostgreSQL; False if another process has it."""
        if conn.dialect.name != "postgresql" or not self.cfg.monitors.advisory_locks:
            return True
        return bool(conn.execute(sa.select(sa.func.pg_try_advisory_xact_lock(lock_key(job)))).scalar())

    @staticmethod
    def _recently_attempted(conn: sa.Connection, job: str, now: float, interval: float) -> bool:
        last = conn.execute(
            sa.select(monitor_runs.c.last_attempt).where(monitor_runs.c.job == job)
        ).scalar()
        return last is not None and 0 <= now - last < interval / 2

    def run_job(self, family: str, model: str, now: float | None = None, force: bool = True) -> str:
        """Run one (family, model) job: "ok", "skipped", "missing" or "error: ...".

        `force=False` (scheduled ticks) also skips when the job was attempted
        less than half an interval ago, by this or another process.
        """
        module = self._module(family)
        if module is None:
            return "missing"
        job = f"{family}:{model}"
        resolved: ResolvedModel = self.cfg.model(model)
        now = time.time() if now is None else now
        started = time.monotonic()
        try:
            with self.engine.begin() as conn:
                if not self._locked(conn, job):
                    log.debug("job %s is running in another process; skipped", job)
                    return "skipped"
                if not force and self._recently_attempted(conn, job, now, resolved.interval):
                    return "skipped"
                with shared(self._aggregates):
                    rows = module.collect(conn, resolved, now)
                write_results(
                    conn, model, family, rows, computed_at=now,
                    history_interval=self.cfg.monitors.history_interval, job=job,
                )
                record_run(conn, job, family, model, now, time.monotonic() - started, None)
        except Exception as exc:  # noqa: BLE001 - one family must not stop the others
            duration = time.monotonic() - started
            log.exception("monitor job %s failed (will retry at its next tick)", job)
            message = f"{type(exc).__name__}: {exc}"[:2000]
            try:
                with self.engine.begin() as conn:
                    record_run(conn, job, family, model, now, duration, message)
            except Exception:  # noqa: BLE001
                log.exception("could not record the failure of job %s", job)
            return f"error: {message}"
        log.debug("job %s done in %.3fs", job, time.monotonic() - started)
        return "ok"

    def reconcile(self, now: float | None = None) -> str:
        """Label predictions whose feedback a concurrent ingest transaction missed."""
        try:
            from modelmon.store.writes import reconcile_labels
        except ImportError:
            return "missing"
        now = time.time() if now is None else now
        if self._reconciled_at is None:
            horizon = max((max(self.cfg.model(m).windows) for m in self.cfg.models), default=86400.0)
            since = now - 2 * horizon - 86400.0
        else:
            since = self._reconciled_at - RECONCILE_MARGIN
        started = time.monotonic()
        try:
            with self.engine.begin() as conn:
                if not self._locked(conn, RECONCILE_JOB):
                    return "skipped"
                n = reconcile_labels(conn, since, self._specs)
                record_run(conn, RECONCILE_JOB, "reconcile_labels", "*", now, time.monotonic() - started, None)
        except Exception as exc:  # noqa: BLE001
            log.exception("job %s failed (will retry at its next tick)", RECONCILE_JOB)
            return f"error: {type(exc).__name__}: {exc}"
        self._reconciled_at = now
        if n:
            log.info("reconciled labels of %d predictions", n)
        return "ok"

    def retention(self, now: float | None = None, force: bool = True) -> str:
        """One bounded retention pass: "ok", "skipped" or "error: ...".

        The job's advisory lock is held (in a transaction of its own
        connection) while the tables are trimmed, each in its own short
        transaction; the run is then recorded in `monitor_runs`. `force=False`
        (scheduled ticks) also skips when another process ran it less than
        half an interval ago.
        """
        from modelmon.store.retention import run_retention

        now = time.time() if now is None else now
        started = time.monotonic()
        try:
            with self.engine.connect() as conn, conn.begin():
                if not self._locked(conn, RETENTION_JOB):
                    return "skipped"
                if not force and self._recently_attempted(conn, RETENTION_JOB, now, self.cfg.retention.interval):
                    return "skipped"
                run_retention(self.engine, self.cfg, now)
                record_run(conn, RETENTION_JOB, "retention", "*", now, time.monotonic() - started, None)
        except Exception as exc:  # noqa: BLE001 - retention must not stop the monitors
            log.exception("job %s failed (will retry at its next tick)", RETENTION_JOB)
            message = f"{type(exc).__name__}: {exc}"[:2000]
            try:
                with self.engine.begin() as conn:
                    record_run(conn, RETENTION_JOB, "retention", "*", now, time.monotonic() - started, message)
            except Exception:  # noqa: BLE001
                log.exception("could not record the failure of job %s", RETENTION_JOB)
            return f"error: {message}"
        return "ok"

    # -- passes ----------------------------------------------------------------

    def run_once(self, now: float | None = None) -> dict[str, str]:
        """Run every job once, synchronously; job name -> outcome."""
        now = time.time() if now is None else now
        out = {RECONCILE_JOB: self.reconcile(now)}
        with self.engine.connect() as conn:
            models = self.models(conn)
        for model in models:
            for family in self.families:
                out[f"{family}:{model}"] = self.run_job(family, model, now)
        self.first_pass_done = True
        return out

    def _tick(self, family: str, model: str, start: float, interval: float) -> None:
        # The scheduled fire time: the same for every family of the model, so they share scans.
        slack = min(1.0, interval / 10)  # a fire a hair early still belongs to its tick
        now = start + max(0, (time.time() - start + slack) // interval) * interval
        self.run_job(family, model, now, force=False)
        self._attempted(f"{family}:{model}")

    def _retention_tick(self) -> None:
        self.retention(time.time(), force=False)

    def _reconcile_tick(self) -> None:
        self.reconcile(time.time())
        self._attempted(RECONCILE_JOB)

    def _attempted(self, job: str) -> None:
        with self._lock:
            self._pending_first.discard(job)
            if not self._pending_first:
                self.first_pass_done = True

    def _add_jobs(self) -> None:
        assert self._scheduler is not None
        with self.engine.connect() as conn:
            models = self.models(conn)
        start = datetime.now(UTC).replace(microsecond=0)
        for model in models:
            interval = self.cfg.model(model).interval
            for family in self.families:
                job = f"{family}:{model}"
                if self._scheduler.get_job(job) is not None or self._module(family) is None:
                    continue
                if not self.first_pass_done:
                    with self._lock:
                        self._pending_first.add(job)
                self._scheduler.add_job(
                    self._tick,
                    "interval",
                    seconds=interval,
                    args=(family, model, start.timestamp(), interval),
                    id=job,
                    name=job,
                    coalesce=True,
                    max_instances=1,
                    misfire_grace_time=max(1, int(interval)),
                    next_run_time=start,
                )

    def _discover(self) -> None:
        try:
            self._add_jobs()
        except Exception:  # noqa: BLE001
            log.exception("could not list models for the monitors")

    def start(self) -> None:
        from apscheduler.executors.pool import ThreadPoolExecutor
        from apscheduler.schedulers.background import BackgroundScheduler

        self._scheduler = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(max_workers=4)}, timezone=UTC
        )
        intervals = [self.cfg.model(m).interval for m in self.cfg.models] or [
            self.cfg.model("_").interval
        ]
        with self._lock:
            self._pending_first.add(RECONCILE_JOB)
        self._scheduler.add_job(
            self._reconcile_tick, "interval", seconds=min(intervals), id=RECONCILE_JOB,
            coalesce=True, max_instances=1, next_run_time=datetime.now(UTC),
        )
        if self.cfg.retention.enabled:
            from modelmon.store.retention import check

            check(self.cfg)
            self._scheduler.add_job(
                self._retention_tick, "interval", seconds=self.cfg.retention.interval, id=RETENTION_JOB,
                coalesce=True, max_instances=1,
            )
        self._discover()
        if self.cfg.monitors.discover_models:
            self._scheduler.add_job(
                self._discover, "interval", seconds=DISCOVER_INTERVAL, id="discover_models",
                coalesce=True, max_instances=1,
            )
        self._scheduler.start()
        log.info("monitor scheduler started with %d jobs", len(self._scheduler.get_jobs()))

    def stop(self, wait: bool = True) -> None:
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=wait)
            self._scheduler = None
