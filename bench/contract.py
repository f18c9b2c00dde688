"""Benchmark: decoding + validating one event, the hand-written contract against the compiled one.

    python -m bench contract [--events 20000] [--baseline d4955a3] [--repeat 5]

The baseline is modelmon/contract.py as of git revision `--baseline` (the
hand-written validator before the msgspec contract), loaded from git into a
module of its own; it needs only the standard library. Each row times the same
messages three ways, per event (best of `--repeat` passes, the three taking turns):
  old           decode + parse_* of the baseline;
  new 2-step    decode + parse_* now (what a caller holding a dict pays);
  new 1-pass    decode_prediction / decode_feedback (raw bytes, one msgspec pass).
Every event's outcome (digest, or refusal reason) is compared between old and new
before timing: a benchmark of code that disagrees would be meaningless.

A last row times what ingest's decode step runs per batch: `parse_records` over
`bench ingest`'s prediction logs as kafka-python ConsumerRecords, in batches of
`--batch` (ingest.batch_max_events), µs per event, best of `--repeat` (target of
issue 10: <= 12 µs). Its digests are checked against the baseline's first.
`--records-only` prints that row alone.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import subprocess
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MAX = 1 << 20


def baseline(rev: str) -> types.ModuleType:
    """modelmon/contract.py at `rev`, as a standalone module."""
    source = subprocess.run(["git", "show", f"{rev}:modelmon/contract.py"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout
    module = types.ModuleType("contract_baseline")
    sys.modules[module.__name__] = module  # dataclasses look their module up
    exec(compile(source, f"{rev}:modelmon/contract.py", "exec"), module.__dict__)  # noqa: S102
    return module


def prediction(i: int, rng: random.Random, features: bool) -> dict[str, Any]:
    """The prediction log `bench ingest` produces, optionally with a feature vector."""
    p1 = rng.random()
    event: dict[str, Any] = {
        "request_id": f"req-{i:09d}", "model": f"model-{i % 3}", "model_version": "v7",
        "timestamp": 1_790_000_000 + i * 0.01, "prediction": int(p1 > 0.5),
        "scores": {"0": round(1 - p1, 6), "1": round(p1, 6)},
        "latency_ms": round(rng.expovariate(1 / 20), 3), "status": "ok",
        "slices": {"region": rng.choice(["eu", "us", "apac"]), "device": rng.choice(["ios", "web"])},
    }
    if features:
        event["features"] = {f"f{j}": round(rng.gauss(0, 1), 4) for j in range(8)} | {"country": "FR"}
    return event


def corpora(n: int) -> dict[str, tuple[str, list[bytes]]]:
    """name -> (kind, raw messages)."""
    rng = random.Random(1)
    dump = json.dumps

    def raw(obj: Any) -> bytes:
        return dump(obj, separators=(",", ":")).encode()

    return {
        "prediction (bench ingest's)": ("prediction", [raw(prediction(i, rng, False)) for i in range(n)]),
        "prediction + 9 features": ("prediction", [raw(prediction(i, rng, True)) for i in range(n)]),
        "prediction, RFC 3339 time": ("prediction", [
            raw({**prediction(i, rng, False), "timestamp": "2026-11-23T10:00:00.250Z"}) for i in range(n)]),
        "feedback": ("feedback", [raw({"request_id": f"req-{i:09d}", "model": "fraud", "label": i % 2,
                                       "timestamp": 1_790_000_000 + i}) for i in range(n)]),
        "refused: wrong type": ("prediction", [
            raw({**prediction(i, rng, False), "latency_ms": "fast"}) for i in range(n)]),
    }


def outcome(fn: Callable[[bytes], Any], raw: bytes, error: type[Exception]) -> str:
    try:
        return fn(raw).digest
    except error as exc:
        return f"refused:{exc.reason}"  # type: ignore[attr-defined]


def one_pass(fn: Callable[[bytes], Any], messages: list[bytes], error: type[Exception]) -> float:
    """µs per message of one pass over `messages`."""
    started = time.perf_counter()
    for m in messages:
        with contextlib.suppress(error):
            fn(m)
    return (time.perf_counter() - started) / len(messages) * 1e6


def per_event(paths: dict[str, Callable[[bytes], Any]], messages: list[bytes], repeat: int,
              errors: dict[str, type[Exception]]) -> dict[str, float]:
    """Best µs per message of each path; the paths take turns, so a busy spell hits them alike."""
    best = dict.fromkeys(paths, float("inf"))
    for _ in range(repeat):
        for name, fn in paths.items():
            best[name] = min(best[name], one_pass(fn, messages, errors[name]))
    return best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench contract", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--baseline", default="d4955a3", help="git revision of the hand-written contract")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--batch", type=int, default=2000, help="records per parse_records call")
    ap.add_argument("--records-only", action="store_true", help="only the parse_records row")
    args = ap.parse_args(argv)
    from modelmon import contract as new

    old = baseline(args.baseline)
    if args.records_only:
        print_records_row(old, args)
        return 0
    rows = []
    for name, (kind, messages) in corpora(args.events).items():
        paths = {
            "old": lambda r, k=kind: getattr(old, f"parse_{k}")(old.decode(r, MAX)),
            "2-step": lambda r, k=kind: getattr(new, f"parse_{k}")(new.decode(r, MAX)),
            "1-pass": lambda r, k=kind: getattr(new, f"decode_{k}")(r, MAX),
        }
        errors = {"old": old.ContractError, "2-step": new.ContractError, "1-pass": new.ContractError}
        for m in messages[:2000]:
            seen = {outcome(fn, m, errors[p]) for p, fn in paths.items()}
            if len(seen) != 1:
                raise SystemExit(f"old and new disagree on {m[:200]!r}: {seen}")
        times = per_event(paths, messages, args.repeat, errors)
        rows.append((name, times))
        print(f"  {name}: " + ", ".join(f"{p} {t:.1f} µs" for p, t in times.items()), flush=True)
    print()
    print(f"contract benchmark: {args.events:,} messages per row, best of {args.repeat}, "
          f"baseline {args.baseline}")
    print(f"{'event':<30} {'old µs':>8} {'2-step µs':>10} {'1-pass µs':>10} {'speed-up':>9}")
    print(f"{'-' * 30} {'-' * 8} {'-' * 10} {'-' * 10} {'-' * 9}")
    for name, t in rows:
        print(f"{name:<30} {t['old']:>8.1f} {t['2-step']:>10.1f} {t['1-pass']:>10.1f} "
              f"{t['old'] / t['1-pass']:>8.1f}x")
    print()
    print_records_row(old, args)
    return 0


def kafka_records(n: int) -> list[Any]:
    """`bench ingest`'s prediction logs as kafka-python delivers them (ConsumerRecord, no headers)."""
    from kafka.consumer.fetcher import ConsumerRecord

    from bench.ingest import event

    rng = random.Random(1)
    blank = dict.fromkeys(ConsumerRecord._fields)
    return [ConsumerRecord(**{**blank, "topic": "modelmon.predictions", "partition": i % 4, "offset": i // 4,
                              "value": event(i, rng), "headers": []}) for i in range(n)]


def records_per_event(records: list[Any], batch: int, repeat: int) -> float:
    """Best µs per event of `parse_records` over `records`, `batch` at a time."""
    from modelmon.ingest.batch import parse_records

    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        for i in range(0, len(records), batch):
            parse_records(records[i:i + batch], "modelmon.predictions", "modelmon.feedback", MAX, MAX)
        best = min(best, (time.perf_counter() - started) / len(records) * 1e6)
    return best


def print_records_row(old: types.ModuleType, args: argparse.Namespace) -> None:
    from modelmon.ingest.batch import parse_records

    records = kafka_records(args.events)
    sample = records[:args.batch]
    parsed = parse_records(sample, "modelmon.predictions", "modelmon.feedback", MAX, MAX)
    expected = [old.parse_prediction(old.decode(r.value, MAX)).digest for r in sample]
    if parsed.dead_letters or [p.digest for p, _ in parsed.predictions] != expected:
        raise SystemExit("parse_records and the baseline disagree on bench ingest's events")
    us = records_per_event(records, args.batch, args.repeat)
    print(f"parse_records: {args.events:,} bench ingest prediction logs (kafka-python records), "
          f"batches of {args.batch:,}, best of {args.repeat}")
    print(f"{'step':<30} {'µs/event':>8} {'target':>8}")
    print(f"{'-' * 30} {'-' * 8} {'-' * 8}")
    print(f"{'parse_records':<30} {us:>8.1f} {'<= 12':>8}")


if __name__ == "__main__":
    sys.exit(main())
