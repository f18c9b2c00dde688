"""A fair queue of periodic jobs: phases, oldest due first, coalescing, visible delay.

Why not one APScheduler interval job per (family, model): at fleet size every
job fell due at the same instant, APScheduler dropped the runs that started
later than their grace time and ran the rest in id order, so whole families
never ran and nothing said so. Here:

* a job has fixed *slots* `phase + k * interval`; the phase is a stable hash of
  the model name, so the models spread over the interval, a model's families
  share their slots (and so their scans, see `aggregates`), and a restart, or
  another process, keeps the same slots;
* a job's first run is due when it is added (readiness waits for one attempt
  of every job), each later one at the first slot at least half an interval
  after the tick it evaluated (a first run is not repeated right away);
* workers take the job that has been due the longest, across families and
  models; no family may hold every worker (`family_cap`), so one family that
  hangs leaves the others running;
* a job that falls behind runs once, evaluated at its latest slot, and its
  next run is due at a slot after that run ends: missed slots are coalesced
  and counted, never dropped;
* `delays()` says per family how long its most overdue job has been waiting,
  counting a job still running past its next slot as waiting.

Jobs marked `dedicated` are not run by the pool: their own thread waits for
them with `take(name)` (the label reconciliation must never queue behind a
backlog of model jobs), but they are timed and reported like the others.
"""

from __future__ import annotations

import hashlib
import heapq
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

RECENT_RUNS = 16  # (due, tick, started, finished) kept per job for tests and the benchmark


def phase_of(key: str, interval: float) -> float:
    """A stable offset in [0, interval), to the millisecond, from a hash of `key`."""
    h = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big")
    return (h % max(1, round(interval * 1000))) / 1000.0


@dataclass(frozen=True)
class Run:
    due: float
    tick: float  # the time the job evaluated (its latest slot when it started)
    started: float
    finished: float | None = None


@dataclass
class Job:
    name: str
    family: str
    model: str
    interval: float
    phase: float
    due: float  # when the next run is due (the job's current one while running)
    dedicated: bool = False
    order: int = 0  # tie-break between a model's families: the configured order
    running_since: float | None = None
    tick: float | None = None  # of the current or last run
    runs: int = 0
    late: int = 0  # runs that started more than one interval after they were due
    missed: int = 0  # slots folded into a later run
    recent: deque[Run] = field(default_factory=lambda: deque(maxlen=RECENT_RUNS))

    def slot_at_or_before(self, t: float) -> float:
        return self.phase + math.floor((t - self.phase) / self.interval) * self.interval

    def slot_after(self, t: float) -> float:
        return self.slot_at_or_before(t) + self.interval

    def next_due(self, finished: float) -> float:
        assert self.tick is not None
        return self.slot_after(max(finished, self.tick + self.interval / 2))

    def overdue(self, now: float) -> float:
        """How long the job's next run has been due without starting (0 if not yet due)."""
        due = self.due if self.running_since is None else self.next_due(self.running_since)
        return max(0.0, now - due)


class FairQueue:
    """Thread-safe; `clock` is injectable so the order can be tested without sleeping."""

    def __init__(
        self, clock: Callable[[], float] = time.time, family_cap: int | None = None,
        groups: dict[str, str] | None = None, group_caps: dict[str, int] | None = None,
    ) -> None:
        """`groups` pools families under one cap (family -> group; default: its own), and
        `group_caps` gives a group its own cap instead of `family_cap`: the two feature
        families wait on one worker process, so more threads than it runs jobs only idle."""
        self._clock = clock
        self._family_cap = family_cap
        self._groups = dict(groups or {})
        self._group_caps = dict(group_caps or {})
        self._cond = threading.Condition()
        self._jobs: dict[str, Job] = {}
        self._heap: list[tuple[float, str, int, str]] = []  # (due, model, order, name) of waiting pool jobs
        self._running: dict[str, int] = {}  # cap group -> pool jobs running
        self._closed = False

    def __contains__(self, name: str) -> bool:
        with self._cond:
            return name in self._jobs

    def add(
        self, name: str, family: str, model: str, interval: float, first_due: float | None = None,
        *, dedicated: bool = False, order: int = 0,
    ) -> bool:
        """Schedule a job (False if it already is); its first run is due at `first_due` (now)."""
        with self._cond:
            if name in self._jobs:
                return False
            due = self._clock() if first_due is None else first_due
            job = Job(name, family, model, float(interval), phase_of(model, interval), due,
                      dedicated=dedicated, order=order)
            self._jobs[name] = job
            self._running.setdefault(self._group(family), 0)
            if not dedicated:
                heapq.heappush(self._heap, (job.due, model, order, name))
            self._cond.notify_all()
            return True

    def _group(self, family: str) -> str:
        return self._groups.get(family, family)

    def _capped(self, family: str) -> bool:
        group = self._group(family)
        cap = self._group_caps.get(group, self._family_cap)
        return cap is not None and self._running[group] >= cap

    def _eligible(self) -> tuple[Job | None, float | None]:
        """Pop the waiting pool job due the longest whose family is under its cap.

        Returns (job, None), or (None, seconds until the next eligible job is due; None: none is).
        """
        now, skipped = self._clock(), []
        found: Job | None = None
        wait: float | None = None
        while self._heap:
            job = self._jobs[self._heap[0][3]]
            if self._capped(job.family):
                skipped.append(heapq.heappop(self._heap))
                continue
            if self._heap[0][0] <= now:
                heapq.heappop(self._heap)
                found = job
            else:
                wait = self._heap[0][0] - now
            break
        for entry in skipped:
            heapq.heappush(self._heap, entry)
        return found, wait

    def _start(self, job: Job) -> tuple[Job, float]:
        now = self._clock()
        tick = max(job.due, job.slot_at_or_before(now))
        if job.tick is not None:  # slots between the previous run's tick and this one's
            first = job.slot_after(job.tick + job.interval / 2)
            job.missed += max(0, round((tick - first) / job.interval))
        if now - job.due > job.interval:
            job.late += 1
        job.running_since, job.tick = now, tick
        job.recent.append(Run(job.due, tick, now))
        if not job.dedicated:
            self._running[self._group(job.family)] += 1
        return job, tick

    def take(self, name: str | None = None, timeout: float | None = None) -> tuple[Job, float] | None:
        """Block until a job is due and mark it started: (job, tick), or None when closed or timed out.

        Without `name`, the pool's most overdue eligible job; with it, that dedicated job.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._closed:
                wait: float | None
                if name is None:
                    job, wait = self._eligible()
                    if job is not None:
                        return self._start(job)
                else:
                    job = self._jobs[name]
                    wait = None if job.running_since is not None else job.due - self._clock()
                    if wait is not None and wait <= 0:
                        return self._start(job)
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return None
                    wait = left if wait is None else min(wait, left)
                # Wake at least every second: a stepped clock (tests, NTP) must not stall us.
                self._cond.wait(1.0 if wait is None else min(max(wait, 0.001), 1.0))
            return None

    def done(self, name: str) -> None:
        """The job's run ended (whatever its outcome): schedule its next one."""
        with self._cond:
            job = self._jobs[name]
            finished = self._clock()
            if job.recent and job.recent[-1].finished is None:
                job.recent[-1] = Run(job.recent[-1].due, job.recent[-1].tick, job.recent[-1].started, finished)
            job.due = job.next_due(finished)
            job.running_since = None
            job.runs += 1
            if not job.dedicated:
                self._running[self._group(job.family)] -= 1
                heapq.heappush(self._heap, (job.due, job.model, job.order, name))
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    # -- reporting --------------------------------------------------------------

    def delays(self) -> dict[str, float]:
        """Family -> seconds its most overdue job has been waiting (0 when none is)."""
        with self._cond:
            now = self._clock()
            out = {job.family: 0.0 for job in self._jobs.values()}
            for job in self._jobs.values():
                out[job.family] = max(out[job.family], job.overdue(now))
            return out

    def late_runs(self) -> dict[str, int]:
        """Family -> runs that started more than one interval after they were due."""
        with self._cond:
            out = {job.family: 0 for job in self._jobs.values()}
            for job in self._jobs.values():
                out[job.family] += job.late
            return out

    def jobs(self) -> list[Job]:
        """Copies of every job's state (due time, runs, recent start times)."""
        with self._cond:
            return [
                Job(j.name, j.family, j.model, j.interval, j.phase, j.due, j.dedicated, j.order,
                    j.running_since, j.tick, j.runs, j.late, j.missed, deque(j.recent, maxlen=RECENT_RUNS))
                for j in self._jobs.values()
            ]


class ScheduleCollector:
    """Per family: how far behind schedule it is, and how many runs started late.

    Read from the scheduler's memory at each scrape (no store access), so it
    reports even while the store is slow, which is when it matters.
    """

    def __init__(self, queue: Callable[[], FairQueue]) -> None:
        self._queue = queue

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        queue = self._queue()
        delay = GaugeMetricFamily(
            "modelmon_monitor_schedule_delay_seconds",
            "How long the family's most overdue job has been due without starting (0 when none is).",
            labels=["monitor"],
        )
        for family, seconds in sorted(queue.delays().items()):
            delay.add_metric([family], seconds)
        late = CounterMetricFamily(
            "modelmon_monitor_runs_late",
            "Runs of the family's jobs that started more than one interval after they were due.",
            labels=["monitor"],
        )
        for family, n in sorted(queue.late_runs().items()):
            late.add_metric([family], n)
        yield delay
        yield late
