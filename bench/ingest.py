"""Benchmark: Kafka -> committed store rows, beside the raw consume-and-decode rates of both clients.

    python -m bench ingest [--events 200000] [--partitions 4] [--backends sqlite,postgresql]
                           [--clients kafka-python,confluent] [--pg-url URL]
                           [--batch-max-events 2000] [--repeat 1] [--no-group]

Starts its own Tansu broker (and a throwaway PostgreSQL unless --pg-url, a server
in which it creates one database per run), produces
`--events` prediction logs once, then consumes the same messages several ways, each
with a fresh consumer group and the consumer settings ingest uses:
  raw kafka-python      poll + json.loads, nothing else (the ceiling of that client);
  raw confluent-kafka   consume + json.loads (the ceiling of librdkafka);
  per store and client  `modelmon ingest` (IngestService, `kafka.client` kafka-python or
              confluent) into a fresh SQLite file / PostgreSQL database, with rollup
              maintenance (as shipped) and without it (`modelmon.store.rollups.count`
              patched to a no-op in that run's process);
  2 processes           two `modelmon ingest` processes in one consumer group writing
              one PostgreSQL database (kafka-python), against one process.
Each ingest run is a child process of its own. Rates are timed from partition
assignment to the last message consumed (raw) or the last row committed (ingest),
and printed as a table with the ratio to the raw rate of the same client and, with
rollups, to the run without. Beside each rate: the CPU microseconds per event the
consuming process, the broker and (PostgreSQL) the database server spent over the
same interval (/proc), which shows where the machine's cores went: on a machine
whose cores are all busy, a rate is bounded by the sum of these. Targets: the kafka-python backend >= 0.8x raw
kafka-python; the confluent backend into PostgreSQL >= 0.5x raw confluent-kafka.
A client that cannot run (confluent-kafka missing, `kafka.client: confluent` not
supported by this checkout) gets "n/a" rows. `--repeat N` runs each ingest path N
times (alternating) and keeps the fastest.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable
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


def config(bootstrap: str, topic: str, db_url: str, batch_max_events: int, client: str = "kafka-python",
           group: str | None = None) -> Any:
    from modelmon.config import Config

    return Config.model_validate({
        "database": {"url": db_url},
        "kafka": {"bootstrap_servers": bootstrap, "predictions_topic": topic, "client": client,
                  "feedback_topic": f"{topic}-feedback", "group_id": group or f"bench-{uuid.uuid4().hex[:8]}",
                  "consumer": {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000}},
        "ingest": {"batch_max_events": batch_max_events, "status_interval": "1h"},
    })


def raw_rate(cfg: Any, n: int, watch: dict[str, Any] | None = None) -> float:
    """kafka-python poll + json.loads with the settings ingest uses (CPU used into `watch`)."""
    from kafka import ConsumerRebalanceListener, KafkaConsumer

    from modelmon.ingest.service import consumer_settings

    assigned: list[float] = []

    class Listener(ConsumerRebalanceListener):
        def on_partitions_revoked(self, revoked: Any) -> None:
            pass

        def on_partitions_assigned(self, parts: Any) -> None:
            if parts and not assigned:
                assigned.append(time.perf_counter())
                if watch is not None:
                    watch["cpu"] = CpuWatch(watch.get("broker"), None)

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
    if watch is not None:
        watch["used"] = watch["cpu"].used()
    consumer.close(autocommit=False)
    return n / elapsed


def confluent_raw_rate(cfg: Any, n: int, watch: dict[str, Any] | None = None) -> float:
    """confluent-kafka consume + json.loads, with the librdkafka settings ingest uses if it has them."""
    from confluent_kafka import Consumer

    try:
        from modelmon.ingest.consumer_confluent import confluent_settings

        settings = confluent_settings(cfg)
    except ImportError:  # a checkout without the confluent backend
        settings = {"bootstrap.servers": cfg.kafka.bootstrap_servers, "group.id": cfg.kafka.group_id,
                    "auto.offset.reset": "earliest", "enable.auto.commit": False}
    assigned: list[float] = []

    def on_assign(consumer: Any, parts: Any) -> None:
        if parts and not assigned:
            assigned.append(time.perf_counter())
            if watch is not None:
                watch["cpu"] = CpuWatch(watch.get("broker"), None)

    consumer = Consumer(settings)
    consumer.subscribe([cfg.kafka.predictions_topic], on_assign=on_assign)
    seen = 0
    loads = json.loads
    while seen < n:
        for m in consumer.consume(num_messages=10_000, timeout=0.5):
            if m.error() is None:
                loads(m.value())
                seen += 1
    elapsed = time.perf_counter() - assigned[0]
    if watch is not None:
        watch["used"] = watch["cpu"].used()
    consumer.close()
    return n / elapsed


_TICK = os.sysconf("SC_CLK_TCK")


def tree_cpu(root: int | None, skip: Iterable[int | None] = ()) -> float:
    """CPU seconds (user + system) of process `root` and its live descendants, plus the
    children it reaped (a PostgreSQL backend that exited counts in its postmaster);
    the subtrees of `skip` left out (servers this process started, counted apart)."""
    if not root:
        return 0.0
    stats: dict[int, tuple[int, float, float]] = {}  # pid -> (ppid, own, reaped)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        stats[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / _TICK,
                                  (int(fields[13]) + int(fields[14])) / _TICK)
    if root not in stats:
        return 0.0
    skipped = set(skip)
    total, todo = stats[root][2], [root]
    while todo:
        pid = todo.pop()
        total += stats[pid][1]
        todo += [child for child, (ppid, _, _) in stats.items() if ppid == pid and child not in skipped]
    return total


class CpuWatch:
    """CPU seconds this process, the broker and the store server spend between two points."""

    def __init__(self, broker_pid: int | None, store_pid: int | None) -> None:
        self.pids = {"broker": broker_pid, "store": store_pid}
        self.start = self._sample()

    def _sample(self) -> dict[str, float]:  # "self" takes in the store child process
        return {"self": tree_cpu(os.getpid(), self.pids.values()),
                **{k: tree_cpu(pid) for k, pid in self.pids.items()}}

    def used(self) -> dict[str, float]:
        end = self._sample()
        return {k: end[k] - self.start[k] for k in end}


def cpu_note(cpu: dict[str, float] | None, n: int) -> str:
    """CPU microseconds per event: the consuming process, the broker, a separate store server."""
    if not cpu:
        return ""
    parts = [f"{cpu['self'] / n * 1e6:.0f} self", f"{cpu['broker'] / n * 1e6:.0f} broker"]
    if cpu.get("store"):
        parts.append(f"{cpu['store'] / n * 1e6:.0f} postgres")
    return "CPU us/event " + " + ".join(parts)


def stored_rows(engine: Any) -> int:
    with engine.connect() as conn:
        return int(conn.exec_driver_sql("SELECT count(*) FROM predictions").scalar())


def ingest_rate(cfg: Any, n: int, migrate: bool = True, shared: bool = False,
                pids: tuple[int | None, int | None] = (None, None)) -> dict[str, Any]:
    """One IngestService until `n` rows are committed (by it, or with `shared` by the whole group).

    Returns events/s (the rows it stored over its time from assignment to done), the
    share of wall time the writer thread was busy and the share spent decoding and
    validating, and wall-clock times (`time.time()`) of assignment and done, so the
    parent can time a group of processes as a whole.
    """
    from modelmon.ingest.service import IngestService
    from modelmon.store.engine import make_engine
    from modelmon.store.migrate import upgrade

    engine = make_engine(cfg.database.url)
    if migrate:
        upgrade(engine)
    service = IngestService(cfg, engine)
    stop = threading.Event()
    thread = threading.Thread(target=service.run, args=(stop,), daemon=True)
    thread.start()
    if not service.ready.wait(120):
        raise RuntimeError("the ingest consumer never got its partitions")
    ready_at, started = time.time(), time.perf_counter()
    cpu = CpuWatch(*pids)
    next_count = 0.0
    while True:
        if not thread.is_alive():
            raise RuntimeError("ingest stopped early")
        if not shared and service.stored >= n:
            break
        if shared and time.perf_counter() >= next_count:  # the group's total, in the store
            if stored_rows(engine) >= n:
                break
            next_count = time.perf_counter() + 0.1
        time.sleep(0.002)
    elapsed = time.perf_counter() - started
    done_at = time.time()
    used = cpu.used()
    writer = service.writer
    busy = writer.busy_seconds / elapsed
    parse = (getattr(service, "parse_seconds", 0.0) + getattr(writer, "parse_seconds", 0.0)) / elapsed
    mine = service.stored
    stop.set()
    thread.join(60)
    stored = stored_rows(engine)
    engine.dispose()
    if stored != n:
        raise RuntimeError(f"expected {n} rows, found {stored}")
    return {"rate": mine / elapsed, "busy": busy, "parse": parse, "ready_at": ready_at, "done_at": done_at,
            "stored": mine, "cpu": used}


def child_ingest(bootstrap: str, topic: str, url: str, batch_max_events: int, n: int, with_rollups: bool,
                 client: str = "kafka-python", group: str | None = None,
                 pids: tuple[int | None, int | None] = (None, None)) -> None:
    """One ingest run in this (fresh) process; prints its figures as JSON.

    With `group`, this process is one member of that consumer group: the store is
    migrated by the parent, and it runs until the group has stored `n` rows.
    """
    if not with_rollups:
        from modelmon.ingest.store_process import StoreProcess

        without_rollups()  # for writes in this process (`ingest.write_process: false`)
        entry = f"import sys; sys.path.insert(0, {str(ROOT)!r}); from bench.ingest import store_child; store_child({{fd}})"
        spawn = StoreProcess._spawn

        def spawn_without_rollups(self: StoreProcess) -> None:
            self.entry = entry
            spawn(self)

        StoreProcess._spawn = spawn_without_rollups  # type: ignore[method-assign]
    cfg = config(bootstrap, topic, url, batch_max_events, client, group)
    print(json.dumps(ingest_rate(cfg, n, migrate=group is None, shared=group is not None, pids=pids)))


def without_rollups() -> None:
    """Writes in this process skip rollup maintenance and do everything else."""
    from modelmon.store import rollups

    # write_batch calls rollups.count(...) at call time: a no-op keeps everything else.
    rollups.count = lambda *args, **kwargs: rollups.Delta()  # type: ignore[assignment]


def store_child(fd: int) -> None:
    """The ingest store process, without rollup maintenance (the "rollups off" rows)."""
    from modelmon.ingest.store_process import main

    without_rollups()
    main(fd)


def start_ingest_child(*args: object) -> subprocess.Popen[bytes]:
    call = f"child_ingest({', '.join(repr(a) for a in args)})"
    code = f"import sys; sys.path.insert(0, {str(ROOT)!r}); from bench.ingest import child_ingest; {call}"
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)


def finish_child(proc: subprocess.Popen[bytes], timeout: float = 900) -> dict[str, float]:
    """The child's figures, or RuntimeError with the last line of its error output."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise RuntimeError(f"no result within {timeout:.0f} s") from None
    if proc.returncode != 0:
        last = (err.decode(errors="replace").strip().splitlines() or ["?"])[-1]
        raise RuntimeError(f"exit {proc.returncode}: {last[:200]}")
    return json.loads(out.decode().strip().splitlines()[-1])


def run_ingest_child(*args: object) -> dict[str, float]:
    return finish_child(start_ingest_child(*args))


def group_rate(bootstrap: str, topic: str, url: str, batch_max_events: int, n: int, members: int,
               pids: tuple[int | None, int | None] = (None, None)) -> tuple[float, dict[str, float]]:
    """events/s of `members` ingest processes in one consumer group, from the first assignment,
    and the CPU seconds they (together), the broker and the store server used."""
    from modelmon.store.engine import make_engine
    from modelmon.store.migrate import upgrade

    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    group = f"bench-group-{uuid.uuid4().hex[:8]}"
    procs = [start_ingest_child(bootstrap, topic, url, batch_max_events, n, True, "kafka-python", group, pids)
             for _ in range(members)]
    outs = [finish_child(p) for p in procs]
    cpu = {"self": sum(o["cpu"]["self"] for o in outs),  # the servers are shared: the larger window
           **{k: max(o["cpu"][k] for o in outs) for k in ("broker", "store")}}
    return n / (max(o["done_at"] for o in outs) - min(o["ready_at"] for o in outs)), cpu


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


class Stores:
    """A fresh SQLite file or PostgreSQL database per ingest run."""

    def __init__(self, servers: Any, tmp: str, pg_url: str | None) -> None:
        self.servers, self.tmp, self.pg_url, self.pg = servers, tmp, pg_url, None

    def fresh(self, backend: str) -> str:
        if backend == "sqlite":
            return f"sqlite:///{self.tmp}/bench-{uuid.uuid4().hex[:8]}.db"
        if self.pg_url:
            return create_database(self.pg_url)
        self.pg = self.pg or self.servers.start_postgres()
        name = f"bench_{uuid.uuid4().hex[:8]}"
        self.pg.create_database(name)
        return self.pg.url(name)

    def cleanup(self) -> None:
        if self.pg is not None:
            self.pg.cleanup()

    def server_pid(self) -> int | None:
        """The throwaway PostgreSQL's postmaster (None: SQLite only, or a --pg-url server)."""
        if self.pg is None:
            return None
        try:
            return int((Path(self.pg.datadir) / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None


Row = tuple[str, float | None, float | None, str]  # path, events/s, x raw of its client, note


def ingest_rows(args: argparse.Namespace, bootstrap: str, topic: str, stores: Stores, backend: str,
                client: str, raw: float | None, broker_pid: int | None = None) -> list[Row]:
    """The table rows of `modelmon ingest` into one store with one client (with and without rollups)."""
    best: dict[bool, dict[str, float]] = {}
    failure = ""
    for _ in range(max(1, args.repeat)):
        for with_rollups in (False, True):
            try:
                url = stores.fresh(backend)
                pids = (broker_pid, stores.server_pid() if backend == "postgresql" else None)
                got = run_ingest_child(bootstrap, topic, url, args.batch_max_events,
                                       args.events, with_rollups, client, None, pids)
            except RuntimeError as exc:
                failure = str(exc)
                print(f"  {backend} {client}: n/a ({failure})", flush=True)
                break
            label = "with" if with_rollups else "without"
            print(f"  {backend} {client} ({label} rollups): {got['rate']:,.0f} events/s", flush=True)
            if with_rollups not in best or got["rate"] > best[with_rollups]["rate"]:
                best[with_rollups] = got
        if failure:
            break
    rows: list[Row] = []
    for with_rollups in (True, False):
        name = f"ingest {client} -> {backend}" + ("" if with_rollups else " (rollups off)")
        got = best.get(with_rollups)
        if got is None:
            rows.append((name, None, None, f"n/a: {failure}"[:90]))
            continue
        note = f"{cpu_note(got.get('cpu'), args.events)}; writer busy {got['busy']:.0%}"
        if with_rollups and False in best:
            note += f"; {got['rate'] / best[False]['rate']:.2f}x the run without rollups"
        rows.append((name, got["rate"], None if raw is None else got["rate"] / raw, note))
    return rows


def rate_of(rows: list[Row], name: str) -> float | None:
    return next((r[1] for r in rows if r[0] == name), None)


def verdict(label: str, value: float | None, base: float | None, target: float) -> str:
    if value is None or base is None:
        return f"{label}: n/a"
    ratio = value / base
    return f"{label}: {ratio:.2f}x (target >= {target}x: {'met' if ratio >= target else 'NOT met'})"


def print_table(args: argparse.Namespace, rows: list[Row], raws: dict[str, float | None],
                backends: list[str]) -> None:
    print()
    print(f"ingest benchmark: {args.events:,} prediction logs, {args.partitions} partitions, "
          f"batch {args.batch_max_events}")
    print(f"{'path':<48} {'events/s':>10} {'x raw':>7}  note")
    print(f"{'-' * 48} {'-' * 10} {'-' * 7}  {'-' * 60}")
    for name, rate, ratio, note in rows:
        shown = "n/a" if rate is None else f"{rate:,.0f}"
        print(f"{name:<48} {shown:>10} {'' if ratio is None else f'{ratio:.2f}':>7}  {note}")
    print()
    for backend in backends:
        print(verdict(f"kafka-python backend -> {backend} vs raw kafka-python",
                      rate_of(rows, f"ingest kafka-python -> {backend}"), raws["kafka-python"], 0.8))
    if "postgresql" in backends:
        print(verdict("confluent backend -> postgresql vs raw confluent-kafka",
                      rate_of(rows, "ingest confluent -> postgresql"), raws.get("confluent"), 0.5))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench ingest", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--backends", default="sqlite,postgresql")
    ap.add_argument("--clients", default="kafka-python,confluent")
    ap.add_argument("--pg-url", help="a PostgreSQL server URL, databases are created in it (default: a throwaway server)")
    ap.add_argument("--batch-max-events", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=1, help="runs per ingest path (alternating); fastest kept")
    ap.add_argument("--no-group", action="store_true", help="skip the 2-processes-in-one-group run")
    args = ap.parse_args(argv)
    backends = [b for b in args.backends.split(",") if b]
    clients = [c for c in args.clients.split(",") if c]
    for backend in backends:
        if backend not in ("sqlite", "postgresql"):
            raise SystemExit(f"unknown backend {backend!r}")
    for client in clients:
        if client not in ("kafka-python", "confluent"):
            raise SystemExit(f"unknown client {client!r}")
    servers = _servers()
    broker = servers.start_tansu()
    stores: Stores | None = None
    rows: list[Row] = []
    raws: dict[str, float | None] = {}
    try:
        topic = f"bench-{uuid.uuid4().hex[:8]}"
        servers.create_topics(broker.bootstrap, [topic, f"{topic}-feedback"], args.partitions)
        print(f"producing {args.events:,} prediction logs to {args.partitions} partitions ...",
              flush=True)
        produced = produce(broker.bootstrap, topic, args.events)
        print(f"  produced at {produced:,.0f} msg/s", flush=True)
        cfg = config(broker.bootstrap, topic, "sqlite://", args.batch_max_events)
        broker_pid = broker.child.proc.pid if broker.child is not None else None
        watch: dict[str, Any] = {"broker": broker_pid}
        raws["kafka-python"] = raw_rate(cfg, args.events, watch)
        rows.append(("raw kafka-python poll + json.loads", raws["kafka-python"], 1.0,
                     cpu_note(watch.get("used"), args.events)))
        print(f"  raw kafka-python: {raws['kafka-python']:,.0f} msg/s", flush=True)
        if "confluent" in clients:
            try:
                watch = {"broker": broker_pid}
                raws["confluent"] = confluent_raw_rate(config(broker.bootstrap, topic, "sqlite://",
                                                              args.batch_max_events), args.events, watch)
                rows.append(("raw confluent-kafka consume + json.loads", raws["confluent"], 1.0,
                             f"{raws['confluent'] / raws['kafka-python']:.2f}x raw kafka-python; "
                             + cpu_note(watch.get("used"), args.events)))
                print(f"  raw confluent-kafka: {raws['confluent']:,.0f} msg/s", flush=True)
            except ImportError as exc:
                raws["confluent"] = None
                rows.append(("raw confluent-kafka consume + json.loads", None, None, f"n/a: {exc}"))
        with tempfile.TemporaryDirectory(prefix="modelmon-bench-") as tmp:
            stores = Stores(servers, tmp, args.pg_url)
            for backend in backends:
                for client in clients:
                    rows += ingest_rows(args, broker.bootstrap, topic, stores, backend, client, raws.get(client),
                                        broker_pid)
            if "postgresql" in backends and not args.no_group:
                one = rate_of(rows, "ingest kafka-python -> postgresql")
                try:
                    url = stores.fresh("postgresql")
                    two, cpu = group_rate(broker.bootstrap, topic, url, args.batch_max_events, args.events, 2,
                                     (broker_pid, stores.server_pid()))
                    note = cpu_note(cpu, args.events) + ("" if one is None else f"; {two / one:.2f}x 1 process")
                    rows.append(("2 ingest processes, one group -> postgresql", two,
                                 two / raws["kafka-python"], note))
                    print(f"  2 processes -> postgresql: {two:,.0f} events/s", flush=True)
                except RuntimeError as exc:
                    rows.append(("2 ingest processes, one group -> postgresql", None, None, f"n/a: {exc}"))
    finally:
        broker.stop()
        if stores is not None:
            stores.cleanup()
    print_table(args, rows, raws, backends)
    return 0


if __name__ == "__main__":
    sys.exit(main())
