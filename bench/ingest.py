"""Benchmark: Kafka -> committed store rows, beside the raw kafka-python consume-and-decode rate.

    python -m bench ingest [--events 200000] [--partitions 4] [--backends sqlite,postgresql]
                           [--pg-url URL] [--batch-max-events 2000] [--repeat 1]

Starts its own Tansu broker (and a throwaway PostgreSQL unless --pg-url, a server
in which it creates one database per run), produces
`--events` prediction logs once, then consumes the same messages several ways, each
with a fresh consumer group and the consumer settings ingest uses:
  raw         kafka-python poll + json.loads, nothing else (the ceiling);
  per backend `modelmon ingest` (IngestService) into a fresh SQLite file / PostgreSQL
              database, with rollup maintenance (as shipped) and without it
              (`modelmon.store.rollups.count` patched to a no-op in that run's process).
Each ingest run is a child process of its own. Rates are timed from partition
assignment to the last message consumed (raw) or the last row committed (ingest),
and printed as a table with the ratio to raw and, with rollups, to the run without
(target >= 0.9x). `--repeat N` runs each ingest path N times (alternating) and
keeps the fastest.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def _servers() -> Any:
    sys.path.insert(0, str(ROOT / "tests"))
    import servers  # tests/servers.py: the same broker and PostgreSQL the tests use

    return servers


def event(i: int, rng: random.Random) -> bytes:
    p1 = rng.random()
    return json.dumps({
        "request_id": f"req-{i:09d}", "model": f"model-{i % 3}", "model_version": "v7",
        "timestamp": 1_790_000_000 + i * 0.01, "prediction": int(p1 > 0.5),
        "scores": {"0": round(1 - p1, 6), "1": round(p1, 6)},
        "latency_ms": round(rng.expovariate(1 / 20), 3), "status": "ok",
        "slices": {"region": rng.choice(["eu", "us", "apac"]), "device": rng.choice(["ios", "web"])},
    }, separators=(",", ":")).encode()


def produce(bootstrap: str, topic: str, n: int) -> float:
    from kafka import KafkaProducer

    rng = random.Random(1)
    prod = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=50, batch_size=1 << 20, acks=1,
                         enable_idempotence=False, max_request_size=8 << 20)
    started = time.perf_counter()
    for i in range(n):
        prod.send(topic, value=event(i, rng), key=b"%d" % i)
    prod.flush()
    prod.close()
    return n / (time.perf_counter() - started)


def config(bootstrap: str, topic: str, db_url: str, batch_max_events: int) -> Any:
    from modelmon.config import Config

    return Config.model_validate({
        "database": {"url": db_url},
        "kafka": {"bootstrap_servers": bootstrap, "predictions_topic": topic,
                  "feedback_topic": f"{topic}-feedback", "group_id": f"bench-{uuid.uuid4().hex[:8]}",
                  "consumer": {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000}},
        "ingest": {"batch_max_events": batch_max_events, "status_interval": "1h"},
    })


def raw_rate(cfg: Any, n: int) -> float:
    """kafka-python poll + json.loads with the settings ingest uses."""
    from kafka import ConsumerRebalanceListener, KafkaConsumer

    from modelmon.ingest.service import consumer_settings

    assigned: list[float] = []

    class Listener(ConsumerRebalanceListener):
        def on_partitions_revoked(self, revoked: Any) -> None:
            pass

        def on_partitions_assigned(self, parts: Any) -> None:
            if parts and not assigned:
                assigned.append(time.perf_counter())

    consumer = KafkaConsumer(**consumer_settings(cfg))
    consumer.subscribe([cfg.kafka.predictions_topic], listener=Listener())
    seen = 0
    loads = json.loads
    while seen < n:
        for records in consumer.poll(timeout_ms=500).values():
            for r in records:
                loads(r.value)
            seen += len(records)
    elapsed = time.perf_counter() - assigned[0]
    consumer.close(autocommit=False)
    return n / elapsed


def ingest_rate(cfg: Any, n: int) -> tuple[float, float, float]:
    """(events/s to committed rows, share of wall time the writer thread was busy,
    share of wall time it spent decoding and validating)."""
    from modelmon.ingest.service import IngestService
    from modelmon.store.engine import make_engine
    from modelmon.store.migrate import upgrade

    engine = make_engine(cfg.database.url)
    upgrade(engine)
    service = IngestService(cfg, engine)
    stop = threading.Event()
    thread = threading.Thread(target=service.run, args=(stop,), daemon=True)
    thread.start()
    if not service.ready.wait(120):
        raise RuntimeError("the ingest consumer never got its partitions")
    started = time.perf_counter()
    while service.stored < n:
        if not thread.is_alive():
            raise RuntimeError("ingest stopped early")
        time.sleep(0.002)
    elapsed = time.perf_counter() - started
    busy = service.writer.busy_seconds / elapsed
    parse = service.writer.parse_seconds / elapsed
    stop.set()
    thread.join(60)
    with engine.connect() as conn:
        stored = conn.exec_driver_sql("SELECT count(*) FROM predictions").scalar()
    engine.dispose()
    if stored != n:
        raise RuntimeError(f"expected {n} rows, found {stored}")
    return n / elapsed, busy, parse


def child_ingest(bootstrap: str, topic: str, url: str, batch_max_events: int, n: int, with_rollups: bool) -> None:
    """One ingest run in this (fresh) process; prints its figures as JSON."""
    if not with_rollups:
        from modelmon.store import rollups

        # write_batch calls rollups.count(...) at call time: a no-op keeps everything else.
        rollups.count = lambda *args, **kwargs: rollups.Delta()  # type: ignore[assignment]
    rate, busy, parse = ingest_rate(config(bootstrap, topic, url, batch_max_events), n)
    print(json.dumps({"rate": rate, "busy": busy, "parse": parse}))


def run_ingest_child(*args: object) -> tuple[float, float, float]:
    call = f"child_ingest({', '.join(repr(a) for a in args)})"
    code = f"import sys; sys.path.insert(0, {str(ROOT)!r}); from bench.ingest import child_ingest; {call}"
    proc = subprocess.run([sys.executable, "-c", code], stdout=subprocess.PIPE, cwd=ROOT, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"ingest child failed (exit {proc.returncode})")
    out = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    return out["rate"], out["busy"], out["parse"]


def create_database(server_url: str) -> str:
    """A fresh database in the server of `server_url` (every ingest run needs an empty one)."""
    import sqlalchemy as sa

    from modelmon.store.engine import make_engine

    name = f"bench_{uuid.uuid4().hex[:8]}"
    admin = make_engine(server_url).execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return sa.make_url(server_url).set(database=name).render_as_string(hide_password=False)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench ingest", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--backends", default="sqlite,postgresql")
    ap.add_argument("--pg-url", help="a PostgreSQL server URL, databases are created in it (default: a throwaway server)")
    ap.add_argument("--batch-max-events", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=1, help="runs per ingest path (alternating); fastest kept")
    args = ap.parse_args(argv)
    backends = [b for b in args.backends.split(",") if b]
    servers = _servers()
    broker = servers.start_tansu()
    pg = None
    try:
        topic = f"bench-{uuid.uuid4().hex[:8]}"
        servers.create_topics(broker.bootstrap, [topic, f"{topic}-feedback"], args.partitions)
        print(f"producing {args.events:,} prediction logs to {args.partitions} partitions ...",
              flush=True)
        produced = produce(broker.bootstrap, topic, args.events)
        print(f"  produced at {produced:,.0f} msg/s", flush=True)
        results: list[tuple[str, float, str]] = []
        raw = raw_rate(config(broker.bootstrap, topic, "sqlite://", args.batch_max_events),
                       args.events)
        results.append(("raw kafka-python poll + json.loads", raw, ""))
        print(f"  raw: {raw:,.0f} msg/s", flush=True)
        with tempfile.TemporaryDirectory(prefix="modelmon-bench-") as tmp:
            for backend in backends:
                if backend not in ("sqlite", "postgresql"):
                    raise SystemExit(f"unknown backend {backend!r}")
                best: dict[bool, tuple[float, float, float]] = {}
                for i in range(max(1, args.repeat)):
                    for with_rollups in (False, True):
                        if backend == "sqlite":
                            url = f"sqlite:///{tmp}/bench-{i}-{int(with_rollups)}.db"
                        elif args.pg_url:
                            url = create_database(args.pg_url)
                        else:
                            pg = pg or servers.start_postgres()
                            name = f"bench_{uuid.uuid4().hex[:8]}"
                            pg.create_database(name)
                            url = pg.url(name)
                        got = run_ingest_child(broker.bootstrap, topic, url, args.batch_max_events, args.events,
                                               with_rollups)
                        label = "with" if with_rollups else "without"
                        print(f"  {backend} ({label} rollups): {got[0]:,.0f} events/s", flush=True)
                        if with_rollups not in best or got[0] > best[with_rollups][0]:
                            best[with_rollups] = got
                for with_rollups in (True, False):
                    rate, busy, parse = best[with_rollups]
                    name = f"modelmon ingest -> {backend}" + ("" if with_rollups else " (rollups off)")
                    note = f"writer busy {busy:.0%} (decode+validate {parse:.0%})"
                    if with_rollups:
                        note += f"; {rate / best[False][0]:.2f}x the run without rollups"
                    results.append((name, rate, note))
    finally:
        broker.stop()
        if pg is not None:
            pg.cleanup()
    print()
    print(f"ingest benchmark: {args.events:,} prediction logs, {args.partitions} partitions, "
          f"batch {args.batch_max_events}")
    print(f"{'path':<46} {'events/s':>10} {'x raw':>7}  note")
    print(f"{'-' * 46} {'-' * 10} {'-' * 7}  {'-' * 60}")
    for name, rate, note in results:
        print(f"{name:<46} {rate:>10,.0f} {rate / raw:>7.2f}  {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
