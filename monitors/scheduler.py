"""Runs every monitor family for every model on a schedule.

One job per (family, model) at the model's interval, run by a pool of
`monitors.max_workers` threads from a fair queue (monitors/schedule.py):
models are spread over the interval by a stable phase (a model's families
share it), the job due the longest runs first whatever its family or model,
and a job that falls behind is coalesced into one run at its latest slot,
never dropped. `collector()` exposes per family how far behind schedule it is
(`modelmon_monitor_schedule_delay_seconds`) and how many runs started more
than an interval late (`modelmon_monitor_runs_late_total`), so a slow pass
degrades visibly and fairly instead of starving families silently.

A job queries and computes through the family's `collect`, then replaces its
rows in `monitor_latest` (appending them to the `monitor_results` history at
most every `monitors.history_interval`) and upserts its `monitor_runs` row,
all in one transaction. A job that raises is logged with its name, its error
is recorded, and it simply runs again at its next slot. Every scheduled job
gets its `monitor_runs` row when it is queued (never attempted: NULL times),
so a job that never gets to run is as visible as one that fails.

The label reconciliation (`reconcile_labels:*`, at the shortest model
interval) and, when `retention.enabled`, the retention job ("retention:*",
every `retention.interval`, bounded deletes, see modelmon.store.retention)
each have a thread of their own: they never queue behind model jobs.
`run_once` leaves retention out so that a pass stays deterministic,
`retention(now)` runs it explicitly.

Several `modelmon monitor` processes may share one PostgreSQL database: each
job takes a transaction-level advisory lock keyed on its name and skips
quietly when another process holds it; a scheduled run also skips when the
job's last attempt (by any process) is younger than half its interval. The
phases are the same in every process, so they contend for the same slots
and the job runs in only one process per interval.

The families of one model share their scans: every job runs inside the
scheduler's `AggregateCache`, and one model's families have the same slots,
so they are queued side by side and evaluate at the same tick time; the
combined GROUP BY of `aggregates.window_groups` is computed once per
(model, tick).
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import threading
import time
from collections.abc import Callable, Mapping

import sqlalchemy as sa
from sqlalchemy import Engine

from modelmon.config import Config, ResolvedModel
from modelmon.monitors.aggregates import AggregateCache, shared
from modelmon.monitors.feature_worker import FeatureRuntime, use
from modelmon.monitors.registry import FAMILIES, FEATURE_FAMILIES
from modelmon.monitors.results import ensure_runs, record_run, write_results
from modelmon.monitors.schedule import FairQueue, Job, ScheduleCollector
from modelmon.store.rollups import Specs
from modelmon.store.tables import monitor_runs, predictions

log = logging.getLogger("modelmon.monitors")

RECONCILE_JOB = "reconcile_labels:*"
RETENTION_JOB = "retention:*"
RECONCILE_MARGIN = 300.0  # longer than one ingest transaction
DISCOVER_INTERVAL = 60.0
STOP_TIMEOUT = 60.0  # how long stop() waits for a running job


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
        if not cfg.features.enabled:
            for family in FEATURE_FAMILIES:
                self.families.pop(family, None)
        self._features = FeatureRuntime(cfg)  # its worker process starts on the first feature job
        self.first_pass_done = False
        self._queue = self._new_queue()
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._pending_first: set[str] = set()
        self._missing_logged: set[str] = set()
        self._reconciled_at: float | None = None
        self._aggregates = AggregateCache()
        self._specs = Specs(cfg)

    def _new_queue(self) -> FairQueue:
        # No family may take every worker: one that hangs leaves the others running.
        # The feature families share one worker process: one pool thread between them.
        workers = self.cfg.monitors.max_workers
        return FairQueue(
            family_cap=max(1, workers - 1),
            groups=dict.fromkeys(FEATURE_FAMILIES, "features"),
            group_caps={"features": 1},
        )

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

    def interval(self, family: str, model: str) -> float:
        """How often the job runs: `features.interval` for the feature families, else the model's."""
        return self.cfg.features.interval if family in FEATURE_FAMILIES else self.cfg.model(model).interval

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
                if not force and self._recently_attempted(conn, job, now, self.interval(family, model)):
                    return "skipped"
                with shared(self._aggregates), use(self._features):
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

    # -- the schedule (see monitors/schedule.py) --------------------------------

    def _attempted(self, job: str) -> None:
        with self._lock:
            self._pending_first.discard(job)
            if not self._pending_first:
                self.first_pass_done = True

    def _work(self) -> None:
        """A pool worker: the most overdue model job, again and again, until stopped."""
        while (got := self._queue.take()) is not None:
            job, tick = got
            try:
                self.run_job(job.family, job.model, tick, force=False)
            except Exception:  # noqa: BLE001 - run_job records its own errors; never lose a worker
                log.exception("monitor job %s failed outside its transaction", job.name)
            finally:
                self._queue.done(job.name)
                self._attempted(job.name)

    def _dedicated(self, name: str, run: Callable[[float], str]) -> None:
        """The thread of one service job (reconcile, retention): it never waits for the pool."""
        while (got := self._queue.take(name)) is not None:
            try:
                run(got[1])
            except Exception:  # noqa: BLE001
                log.exception("job %s failed", name)
            finally:
                self._queue.done(name)
                self._attempted(name)

    def _add_jobs(self) -> None:
        """Queue a job per (available family, model) not queued yet, each with a `monitor_runs` row.

        The rows of jobs that never ran (last_attempt and last_success NULL)
        let the exporter and `ModelmonMonitorStale` see a job that never gets
        to run, not only one that fails.
        """
        with self.engine.connect() as conn:
            models = self.models(conn)
        start = float(int(time.time()))  # one tick for the whole first pass: shared scans
        families = [f for f in self.families if self._module(f) is not None]
        new: list[tuple[str, str, str]] = []
        for model in models:
            for order, family in enumerate(families):
                interval = self.interval(family, model)
                job = f"{family}:{model}"
                if job in self._queue:
                    continue
                new.append((job, family, model))
                if not self.first_pass_done:
                    with self._lock:
                        self._pending_first.add(job)
                self._queue.add(job, family, model, interval, start, order=order)
        if new:
            with self.engine.begin() as conn:
                ensure_runs(conn, new)

    def _discover(self) -> None:
        try:
            self._add_jobs()
        except Exception:  # noqa: BLE001
            log.exception("could not list models for the monitors")

    def _discover_loop(self) -> None:
        while not self._stopping.wait(DISCOVER_INTERVAL):
            self._discover()

    def _thread(self, name: str, target: Callable[..., None], *args: object) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def start(self) -> None:
        """Start the pool (`monitors.max_workers` threads) and the service jobs' own threads."""
        if self._threads:
            raise RuntimeError("the monitor scheduler is already running")
        self._stopping.clear()
        if self._queue.closed:  # started again after a stop: a fresh schedule
            self._queue = self._new_queue()
        intervals = [self.cfg.model(m).interval for m in self.cfg.models] or [
            self.cfg.model("_").interval
        ]
        now = time.time()
        with self._lock:
            self._pending_first.add(RECONCILE_JOB)
        self._queue.add(RECONCILE_JOB, "reconcile_labels", "*", min(intervals), now, dedicated=True)
        try:
            with self.engine.begin() as conn:
                ensure_runs(conn, [(RECONCILE_JOB, "reconcile_labels", "*")])
        except Exception:  # noqa: BLE001 - the reconcile thread records its run anyway
            log.exception("could not create the monitor_runs row of %s", RECONCILE_JOB)
        if self.cfg.retention.enabled:
            from modelmon.store.retention import check

            check(self.cfg)
            every = self.cfg.retention.interval
            self._queue.add(RETENTION_JOB, "retention", "*", every, now + every, dedicated=True)
        # Every first-pass job is queued (and pending) before any thread can finish one.
        self._discover()
        self._thread("modelmon-reconcile", self._dedicated, RECONCILE_JOB, self.reconcile)
        if self.cfg.retention.enabled:
            self._thread("modelmon-retention", self._dedicated, RETENTION_JOB,
                         lambda t: self.retention(t, force=False))
        if self.cfg.monitors.discover_models:
            self._thread("modelmon-discover", self._discover_loop)
        for i in range(self.cfg.monitors.max_workers):
            self._thread(f"modelmon-monitor-{i}", self._work)
        log.info("monitor scheduler started with %d jobs and %d workers",
                 len(self._queue.jobs()), self.cfg.monitors.max_workers)

    def stop(self, wait: bool = True) -> None:
        """Stop taking jobs; with `wait`, let the running ones finish (up to STOP_TIMEOUT)."""
        self._stopping.set()
        self._queue.close()
        if wait:
            for thread in self._threads:
                thread.join(STOP_TIMEOUT)
                if thread.is_alive():
                    log.warning("%s still running a job after %.0fs; leaving it", thread.name, STOP_TIMEOUT)
        self._threads = []
        self._features.stop()

    # -- what the schedule looks like ----------------------------------------------

    def jobs(self) -> list[Job]:
        """Every scheduled job's state: due time, runs, recent (due, tick, start, end)."""
        return self._queue.jobs()

    def collector(self) -> ScheduleCollector:
        """A prometheus_client collector of the per-family schedule delay and late runs."""
        return ScheduleCollector(lambda: self._queue)
