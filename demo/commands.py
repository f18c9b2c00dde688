"""`modelmon demo` and `modelmon simulate`."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import Any

from modelmon.config import Config, parse_duration


def _seconds(text: str) -> float:
    try:
        return parse_duration(float(text)) if text.replace(".", "", 1).isdigit() else parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _demo(args: argparse.Namespace, cfg: Config) -> int:
    from modelmon.demo.app import DemoOptions, run_demo

    opts = DemoOptions(duration=args.duration, rate=args.rate, period=args.period, db=args.db, port=args.port,
                       prometheus=not args.no_prometheus, seed=args.seed)
    return run_demo(opts)


def _simulate(args: argparse.Namespace, cfg: Config) -> int:
    from modelmon.demo.simulator import KafkaSender, Simulator, run

    bootstrap = args.bootstrap or cfg.kafka.bootstrap_servers
    sim = Simulator(rate=args.rate, seed=args.seed, period=args.period, label_delay=args.label_delay)
    stop = threading.Event()

    def on_signal(_sig: int, _frame: Any) -> None:
        stop.set()

    for s in (signal.SIGTERM, signal.SIGINT):
        signal.signal(s, on_signal)
    sender = KafkaSender(bootstrap, cfg.kafka.predictions_topic, cfg.kafka.feedback_topic, **cfg.kafka.security)
    print(f"simulating {args.rate:g} predictions/s per model to {bootstrap} "
          f"({'until stopped' if args.duration is None else f'for {args.duration:g} s'}); incidents every "
          f"{args.period:g} s: " + ", ".join(f"{i.kind} {i.model} {i.start:.0f}-{i.end:.0f}s" for i in sim.incidents),
          flush=True)
    try:
        counts = run(sim, sender, args.duration, stop)
    finally:
        sender.close()
    dropped = sum(sender.client.dropped.values())
    print(f"sent {counts['predictions']} predictions, {counts['feedback']} labels, {counts['malformed']} "
          f"malformed events; {counts['never_labelled']} predictions will never get a label"
          + (f"; {dropped} dropped by the client" if dropped else ""), flush=True)
    return 0 if not dropped else 1


def register(subparsers: Any) -> None:
    demo = subparsers.add_parser(
        "demo", help="run the whole pipeline locally with simulated traffic and a live view",
        description="Starts a local Kafka-protocol broker, modelmon (ingest + monitors + /metrics) on SQLite, "
                    "Prometheus and Alertmanager if installed, and a traffic simulator with scheduled incidents.")
    demo.add_argument("--duration", type=_seconds, help="stop after this long (e.g. 300, 5m); default: until Ctrl-C")
    demo.add_argument("--rate", type=float, default=50.0, help="predictions per second per model (default 50)")
    demo.add_argument("--period", type=_seconds,
                      help="the incident schedule repeats every PERIOD (default: the duration; 10m until Ctrl-C)")
    demo.add_argument("--db", help="SQLite file to keep the results in (default: a temporary file)")
    demo.add_argument("--port", type=int, default=9464, help="HTTP port of /metrics (default 9464, any if busy)")
    demo.add_argument("--no-prometheus", action="store_true", help="do not start Prometheus / Alertmanager")
    demo.add_argument("--seed", type=int, default=0, help="random seed of the simulated traffic (default 0: the same run every time)")
    demo.set_defaults(handler=_demo)

    sim = subparsers.add_parser(
        "simulate", help="send simulated prediction and feedback traffic to Kafka",
        description="Two models (fraud: binary with slices sex/region; species: multiclass), delayed labels, "
                    "some never labelled, a few malformed events, and repeating incidents.")
    sim.add_argument("--bootstrap", help="Kafka bootstrap servers (default: kafka.bootstrap_servers)")
    sim.add_argument("--rate", type=float, default=20.0, help="predictions per second per model (default 20)")
    sim.add_argument("--duration", type=_seconds, help="stop after this long; default: until stopped")
    sim.add_argument("--period", type=_seconds, default=1800.0,
                     help="the incident schedule repeats every PERIOD (default 30m)")
    sim.add_argument("--label-delay", type=_seconds, default=120.0,
                     help="mean delay of a label after its prediction (default 2m)")
    sim.add_argument("--seed", type=int, default=0, help="random seed of the simulated traffic (default 0)")
    sim.set_defaults(handler=_simulate)


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use `modelmon demo` or `modelmon simulate`")
