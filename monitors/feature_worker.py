"""The feature families' own process: evidently's cost never touches ingest or the other families.

evidently's import takes seconds and hundreds of MB, and a drift pass over 20k-row samples of
up to 100 features is heavy Python. So the `feature_drift` and `data_quality` jobs hand their
work to one long-lived worker process (multiprocessing "spawn": a clean interpreter, no forked
threads or connections), started on the first feature job that has something to compute. It
opens its own engine from `database.url`, reads the sample and the reference there
(modelmon.monitors.features), and sends back the result rows (picklable dataclasses); the
scheduler's job writes them in its own transaction as for any family. Jobs go through the one
process in turn.

* A model without a reference and without features in its windows is settled here, by two
  index lookups, without the worker (models without features are unaffected).
* After a job that leaves the worker above `features.worker_max_rss_bytes`, it is stopped;
  the next job starts a fresh one. If it dies during a job, that job fails with a message
  saying so (recorded in `monitor_runs` like any failure) and runs again at its next tick.
* An in-memory SQLite URL cannot be opened by another process: then the families compute
  in the scheduler's process, on its connection (logged once).
* `FeatureRuntime.stop()` (with the scheduler) ends the worker: a clean exit when it is idle,
  else it is terminated.

This module is imported by the scheduler's process and must stay light: pandas, evidently and
the maths are imported only where they run.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import sqlalchemy as sa

from modelmon.config import Config, FeaturesConfig, ResolvedModel, format_duration
from modelmon.monitors.base import Window, WindowedRow
from modelmon.monitors.windows import trailing, window_end
from modelmon.store.engine import shareable

log = logging.getLogger("modelmon.monitors.features")

POLL_SECONDS = 0.5  # how often a waiting job checks that the worker is still alive
STOP_GRACE = 5.0  # how long stop() waits for a running job before terminating the worker


class FeatureWorkerError(RuntimeError):
    """The worker process failed the job (it died, or was stopped)."""


def feature_windows(model: ResolvedModel, settings: FeaturesConfig, now: float) -> list[Window]:
    """`features.windows`, ending on the fine-bucket boundary like every family's windows."""
    end = window_end(model, now)
    return [trailing(format_duration(s), s, end) for s in settings.windows]


def has_work(conn: sa.Connection, model: str, windows: Sequence[Window]) -> bool:
    """A stored reference, or a prediction with features in the windows (two index lookups)."""
    from modelmon.store.features import with_features
    from modelmon.store.tables import feature_references, predictions

    t, p = feature_references, predictions
    if conn.execute(sa.select(t.c.model).where(t.c.model == model)).first() is not None:
        return True
    if not windows:
        return False
    start, end = min(w.start for w in windows), max(w.end for w in windows)
    found = sa.select(p.c.ts).where(p.c.model == model, p.c.ts >= start, p.c.ts < end, with_features())
    return conn.execute(found.limit(1)).first() is not None


@dataclass(frozen=True)
class FeatureJob:
    url: str
    family: str
    model: ResolvedModel
    now: float
    settings: FeaturesConfig


def rss_bytes() -> int:
    """This process's resident set size (Linux /proc; peak RSS elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def serve(conn: Connection) -> None:
    """The worker's main loop: a FeatureJob in, ("ok" | "error", rows | message, pid, rss) out."""
    from modelmon.monitors.features import FeatureComputer
    from modelmon.store.engine import make_engine

    computer = FeatureComputer()
    engines: dict[str, sa.Engine] = {}
    while True:
        try:
            job = conn.recv()
        except EOFError:
            break
        if job is None:
            break
        try:
            engine = engines.get(job.url)
            if engine is None:
                engine = engines[job.url] = make_engine(job.url, pool_size=1)
            with engine.connect() as db:
                rows = computer.rows(db, job.family, job.model, job.now, job.settings)
            reply: tuple[Any, ...] = ("ok", rows, os.getpid(), rss_bytes())
        except Exception as exc:  # noqa: BLE001 - reported to the job, the worker lives on
            reply = ("error", f"{type(exc).__name__}: {exc}", os.getpid(), rss_bytes())
        conn.send(reply)
    for engine in engines.values():
        engine.dispose()


class FeatureWorker:
    """The parent's handle on the worker process: one job at a time, restarted as needed."""

    def __init__(self, max_rss_bytes: int) -> None:
        self.max_rss_bytes = max_rss_bytes
        self.pid: int | None = None  # of the running worker
        self.started = 0  # processes started so far
        self.last_rss = 0  # the worker's RSS after its last job
        self._lock = threading.Lock()
        self._proc: Any = None
        self._conn: Connection | None = None

    def _start(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=serve, args=(child,), name="modelmon-features", daemon=True)
        proc.start()
        child.close()
        self._proc, self._conn, self.pid = proc, parent, proc.pid
        self.started += 1
        log.info("feature worker process started (pid %d)", proc.pid)

    def _discard(self) -> None:
        """Forget the process (after it died or was stopped), reaping it."""
        proc, conn = self._proc, self._conn
        self._proc = self._conn = self.pid = None
        if conn is not None:
            conn.close()
        if proc is not None:
            proc.join(STOP_GRACE)
            if proc.is_alive():
                proc.kill()
                proc.join()

    def _shutdown(self) -> None:
        """Ask an idle worker to exit; terminate it if it does not."""
        if self._proc is None:
            return
        try:
            assert self._conn is not None
            self._conn.send(None)
        except OSError:
            pass
        self._proc.join(STOP_GRACE)
        if self._proc.is_alive():
            self._proc.terminate()
        self._discard()

    def _reply(self, job: FeatureJob) -> tuple[Any, ...]:
        assert self._proc is not None and self._conn is not None
        pid = self._proc.pid
        try:
            self._conn.send(job)
            while True:
                if self._conn.poll(POLL_SECONDS):
                    return self._conn.recv()
                if not self._proc.is_alive():
                    break
        except (EOFError, OSError):
            pass
        self._proc.join(STOP_GRACE)  # reap it, so its exit code is known
        code = self._proc.exitcode
        self._discard()
        raise FeatureWorkerError(
            f"the feature worker process (pid {pid}) ended (exit code {code}) during "
            f"{job.family}:{job.model.name}; a new one is started for the next job"
        )

    def run(self, job: FeatureJob) -> list[WindowedRow]:
        with self._lock:
            if self._proc is None or not self._proc.is_alive():
                if self._proc is not None:
                    self._discard()
                self._start()
            status, payload, pid, rss = self._reply(job)
            self.last_rss = rss
            if rss > self.max_rss_bytes:
                log.info("feature worker (pid %d) at %d MB after %s:%s, above %d MB: restarting it",
                         pid, rss >> 20, job.family, job.model.name, self.max_rss_bytes >> 20)
                self._shutdown()
            if status != "ok":
                raise RuntimeError(payload)
            return payload

    def stop(self) -> None:
        """End the worker: cleanly when idle, terminated when a job is still running."""
        if self._lock.acquire(timeout=STOP_GRACE):
            try:
                self._shutdown()
            finally:
                self._lock.release()
            return
        proc = self._proc
        if proc is not None and proc.is_alive():
            log.warning("feature worker (pid %d) still running a job at stop; terminating it", proc.pid)
            proc.terminate()


def require_extra() -> None:
    """One clear line, not an ImportError traceback, when the families cannot run here."""
    import importlib.util

    if importlib.util.find_spec("evidently") is None or importlib.util.find_spec("pandas") is None:
        raise RuntimeError("feature monitoring needs the evidently extra: "
                           "pip install 'modelmon[evidently]'")


class FeatureRuntime:
    """What the feature families of one scheduler share: its config and its worker."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.worker = FeatureWorker(cfg.features.worker_max_rss_bytes)
        self.in_process = not shareable(cfg.database.url)
        self._computer: Any = None
        self._lock = threading.Lock()

    def _local(self) -> Any:
        with self._lock:
            if self._computer is None:
                from modelmon.monitors.features import FeatureComputer

                log.warning("database.url is an in-memory SQLite database, which another process "
                            "cannot open: the feature families compute in this process")
                self._computer = FeatureComputer()
            return self._computer

    def rows(self, family: str, conn: sa.Connection, model: ResolvedModel,
             now: float) -> list[WindowedRow]:
        settings = self.cfg.features
        if not has_work(conn, model.name, feature_windows(model, settings, now)):
            return []
        require_extra()
        if self.in_process:
            return self._local().rows(conn, family, model, now, settings)
        return self.worker.run(FeatureJob(self.cfg.database.url, family, model, now, settings))

    def stop(self) -> None:
        self.worker.stop()


_current: ContextVar[FeatureRuntime | None] = ContextVar("modelmon_features", default=None)


@contextmanager
def use(runtime: FeatureRuntime) -> Iterator[None]:
    """Install the scheduler's runtime around a job (as `aggregates.shared` does its cache)."""
    token = _current.set(runtime)
    try:
        yield
    finally:
        _current.reset(token)


def collect(family: str, conn: sa.Connection, model: ResolvedModel, now: float) -> list[WindowedRow]:
    """A feature family's rows: through the scheduler's runtime (its worker process) when one
    is installed, else computed here on `conn` with the default `features` settings."""
    runtime = _current.get()
    if runtime is not None:
        return runtime.rows(family, conn, model, now)
    settings = FeaturesConfig()
    if not has_work(conn, model.name, feature_windows(model, settings, now)):
        return []
    from modelmon.monitors.features import FeatureComputer

    return FeatureComputer().rows(conn, family, model, now, settings)
