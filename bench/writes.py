"""Benchmark: `write_batch` + commit per event, on SQLite and PostgreSQL (no Kafka).

    python -m bench writes [--events 20000] [--batch 2000] [--backends sqlite,postgresql]
                           [--pg-url URL] [--repeat 3] [--profile]

The store half of `modelmon ingest`: the events of `bench ingest` (prediction logs
of three models, with scores, latency and slices) are decoded once, untimed, the way
ingest decodes them (`parse_records`), then written in batches of `--batch`, each
batch in its own transaction (`write_batch` + commit, timed together), into a fresh
SQLite file and a fresh database of a throwaway PostgreSQL (or one in `--pg-url`).
Scenarios, each timed on its own batches:
  predictions           rollups as the defaults count them (what `bench ingest` writes);
  predictions, sliced   the same events into a store whose models name a positive
                        class, two slice attributes and a latency SLO: every rollup
                        table is written;
  feedback (late)       a label for every prediction of the sliced store, in later
                        batches: the label join to stored rows and the rollup moves;
  redelivery            the sliced predictions again: all duplicates, nothing written.
Every repeat uses fresh stores; the table shows the fastest repeat of each scenario.
Target (issue 10): predictions <= 20 us per event on SQLite, <= 25 us on PostgreSQL.
The table shows the wall time (the target) and this process's CPU time of the same
batches (on PostgreSQL without the server's). `--profile` prints a cProfile of one
pass per backend instead.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TARGET_US = {"sqlite": 20.0, "postgresql": 25.0}
SCENARIOS = ("predictions", "predictions, sliced", "feedback (late)", "redelivery")
TARGETED = ("predictions", "predictions, sliced")


class _Record:
    """What ingest reads from a Kafka record."""

    __slots__ = ("headers", "offset", "partition", "topic", "value")

    def __init__(self, topic: str, offset: int, value: bytes) -> None:
        self.topic, self.partition, self.offset, self.value, self.headers = topic, 0, offset, value, []


def batches(n: int, size: int) -> tuple[list[list[Any]], list[list[Any]]]:
    """(prediction batches, feedback batches) as ingest hands them to write_batch."""
    import json

    from bench.ingest import event
    from modelmon.ingest.batch import parse_records

    rng = random.Random(1)
    records = [_Record("predictions", i, event(i, rng)) for i in range(n)]
    for i in range(n):  # a label a minute after each prediction, right 80% of the time
        p = json.loads(records[i].value)
        label = p["prediction"] if rng.random() < 0.8 else 1 - p["prediction"]
        records.append(_Record("feedback", i, json.dumps({
            "request_id": p["request_id"], "model": p["model"], "label": label,
            "timestamp": p["timestamp"] + 60,
        }).encode()))
    now = 1_790_000_000 + 1e6
    preds, fbs = [], []
    for i in range(0, len(records), size):
        parsed = parse_records(records[i:i + size], "predictions", "feedback", 1 << 20, 1 << 20, now=now)
        if parsed.dead_letters:
            raise RuntimeError(f"benchmark events refused: {parsed.dead_letters[0]}")
        if parsed.predictions:
            preds.append(parsed.predictions)
        if parsed.feedback:
            fbs.append(parsed.feedback)
    return preds, fbs


def sliced_config() -> Any:
    from modelmon.config import Config

    model = {"positive_class": "1", "slices": ["region", "device"],
             "slos": [{"name": "fast", "kind": "latency", "objective": 0.99, "threshold": "50ms"}]}
    return Config.model_validate({"models": {f"model-{i}": model for i in range(3)}})


def _analyzer() -> Any:
    """What ingest's writer runs after each commit on PostgreSQL (the planner statistics of
    the partitions it fills), when this checkout has it; None otherwise."""
    try:
        from modelmon.store.statistics import PartitionAnalyzer
    except ImportError:
        return None
    return PartitionAnalyzer()


def timed(engine: Any, preds: Sequence[list[Any]], fbs: Sequence[list[Any]], specs: Any) -> float:
    """Seconds of write_batch + commit over the batches (predictions, then feedback).

    After each commit, untimed, what ingest's writer does next: keep the planner
    statistics of the partitions written current (`_analyzer`), so each batch is
    planned as in ingest."""
    from modelmon.store.writes import write_batch

    analyzer = _analyzer()
    total = cpu = 0.0
    for p, f in [(p, []) for p in preds] + [([], f) for f in fbs]:
        started, used = time.perf_counter(), time.process_time()
        with engine.begin() as conn:
            out = write_batch(conn, p, f, [], now=1_790_000_000 + 1e6, specs=specs)
        total += time.perf_counter() - started
        cpu += time.process_time() - used
        if analyzer is not None:
            analyzer.stored(engine, [e.ts for e in out.stored_predictions])
    CPU.append(cpu)
    return total


#: CPU seconds of this process in each `timed` call (the wall time's own share; less
#: sensitive to other load on the machine than the wall time).
CPU: list[float] = []


def one_pass(url_a: str, url_b: str, preds: list[list[Any]], fbs: list[list[Any]]) -> dict[str, float]:
    """Seconds per scenario: the default store at url_a, the sliced one at url_b."""
    from modelmon.store.engine import make_engine
    from modelmon.store.migrate import upgrade
    from modelmon.store.rollups import Specs

    out = {}
    plain, sliced = make_engine(url_a), make_engine(url_b)
    try:
        upgrade(plain)
        upgrade(sliced)
        specs = Specs(sliced_config())
        for scenario, engine, p, f, s in (
            ("predictions", plain, preds, [], Specs()), ("predictions, sliced", sliced, preds, [], specs),
            ("feedback (late)", sliced, [], fbs, specs), ("redelivery", sliced, preds, [], specs),
        ):
            out[scenario] = timed(engine, p, f, s)
            out[f"{scenario} cpu"] = CPU[-1]
        with sliced.connect() as conn:
            labelled = conn.exec_driver_sql("SELECT count(*) FROM predictions WHERE label IS NOT NULL").scalar()
        expected = sum(len(b) for b in preds)
        if labelled != expected:
            raise RuntimeError(f"{labelled} predictions labelled, expected {expected}")
    finally:
        plain.dispose()
        sliced.dispose()
    return out


class _Stores:
    def __init__(self, tmp: str, pg_url: str | None) -> None:
        self.tmp, self.pg_url, self.server, self.n = tmp, pg_url, None, 0

    def fresh(self, backend: str) -> str:
        self.n += 1
        if backend == "sqlite":
            return f"sqlite:///{self.tmp}/writes-{self.n}.db"
        from bench.ingest import create_database

        if self.pg_url is None:
            sys.path.insert(0, str(ROOT / "tests"))
            import servers  # tests/servers.py: the PostgreSQL the tests use

            self.server = self.server or servers.start_postgres()
            self.pg_url = self.server.url("postgres")
        return create_database(self.pg_url)

    def cleanup(self) -> None:
        if self.server is not None:
            self.server.cleanup()


def print_table(n: int, size: int, best: dict[str, dict[str, float]], counts: dict[str, int]) -> None:
    print()
    print(f"write_batch + commit, batches of {size:,} ({n:,} prediction logs of `bench ingest`)")
    head = ["backend", "scenario", "events", "us/event", "events/s", "client CPU us/event", "target",
            "met"]
    lines = [head]
    for backend, times in best.items():
        for scenario in SCENARIOS:
            us = times[scenario] / counts[scenario] * 1e6
            cpu = times[f"{scenario} cpu"] / counts[scenario] * 1e6
            target = TARGET_US[backend] if scenario in TARGETED else None
            lines.append([
                backend, scenario, f"{counts[scenario]:,}", f"{us:.1f}", f"{1e6 / us:,.0f}", f"{cpu:.1f}",
                "-" if target is None else f"<= {target:g} us",
                "-" if target is None else ("yes" if us <= target else "NO"),
            ])
    widths = [max(len(r[i]) for r in lines) for i in range(len(head))]
    for i, row in enumerate(lines):
        print("  ".join(c.ljust(w) if j < 2 else c.rjust(w) for j, (c, w) in enumerate(zip(row, widths, strict=True))))
        if i == 0:
            print("  ".join("-" * w for w in widths))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench writes", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--batch", type=int, default=2_000)
    ap.add_argument("--backends", default="sqlite,postgresql")
    ap.add_argument("--pg-url", default=None, help="a PostgreSQL server URL (databases are created in it)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--profile", action="store_true", help="cProfile one pass per backend instead")
    args = ap.parse_args(argv)
    backends = [b for b in args.backends.split(",") if b]
    if unknown := set(backends) - set(TARGET_US):
        raise SystemExit(f"unknown backends {sorted(unknown)} (sqlite, postgresql)")
    preds, fbs = batches(args.events, args.batch)
    n_fb = sum(len(b) for b in fbs)
    counts = {s: args.events for s in SCENARIOS} | {"feedback (late)": n_fb}
    stores = _Stores(tempfile.mkdtemp(prefix="modelmon-bench-writes-"), args.pg_url)
    best: dict[str, dict[str, float]] = {}
    try:
        for _ in range(1 if args.profile else max(1, args.repeat)):
            for backend in backends:
                urls = stores.fresh(backend), stores.fresh(backend)
                if args.profile:
                    prof = cProfile.Profile()
                    prof.enable()
                got = one_pass(*urls, preds, fbs)
                if args.profile:
                    prof.disable()
                    print(f"\n== {backend}")
                    pstats.Stats(prof).sort_stats("tottime").print_stats(25)
                mine = best.setdefault(backend, got)
                for scenario in SCENARIOS:  # the fastest pass of each scenario, with its CPU
                    if got[scenario] < mine[scenario]:
                        mine[scenario], mine[f"{scenario} cpu"] = got[scenario], got[f"{scenario} cpu"]
                print(f"  {backend}: " + ", ".join(f"{s} {got[s] / counts[s] * 1e6:.1f} us" for s in SCENARIOS),
                      file=sys.stderr, flush=True)
    finally:
        stores.cleanup()
        for p in Path(stores.tmp).glob("*"):
            p.unlink()
        Path(stores.tmp).rmdir()
    print_table(args.events, args.batch, best, counts)
    return 0
