"""`modelmon demo`: the whole pipeline on one machine, with simulated traffic.

Starts, in order: a Tansu broker, the modelmon runtime (ingest + monitors +
/metrics) on SQLite, Prometheus and Alertmanager when their binaries exist,
the traffic simulator, and the live view. Everything it started is stopped in
reverse order when `--duration` ends, on Ctrl-C, or on an error.
"""

from __future__ import annotations

import logging
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live

log = logging.getLogger(__name__)


@dataclass
class DemoOptions:
    duration: float | None = None
    rate: float = 50.0
    period: float | None = None
    db: str | None = None
    port: int = 9464
    prometheus: bool = True
    seed: int = 0
    refresh: float = 1.0


def _period(opts: DemoOptions) -> float:
    """The incident schedule's period: the whole `--duration` (so every incident
    fits once, at any length), 10 minutes when the demo runs until stopped."""
    if opts.period:
        return opts.period
    return opts.duration if opts.duration else 600.0


def _port(preferred: int) -> int:
    from modelmon.demo.processes import port_open

    return 0 if preferred == 0 or port_open(preferred) else preferred


def _models_seen(engine: Any) -> set[str]:
    import sqlalchemy as sa

    from modelmon.store.tables import predictions

    with engine.connect() as conn:
        return set(conn.execute(sa.select(predictions.c.model).distinct()).scalars())


def run_demo(opts: DemoOptions, console: Console | None = None) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="modelmon-demo-"))
    # The service logs go to a file: the terminal belongs to the live view.
    root = logging.getLogger()
    saved_handlers = root.handlers[:]
    log_file = logging.FileHandler(workdir / "modelmon.log")
    log_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.handlers = [log_file]
    from modelmon.alerts.rules import RuleOptions, write_rules
    from modelmon.config import format_duration
    from modelmon.demo import promstack
    from modelmon.demo.broker import start_broker
    from modelmon.demo.config import demo_settings, write_demo_config
    from modelmon.demo.expectations import for_scale, label_delay, windows
    from modelmon.demo.live import collect, render, status_line
    from modelmon.demo.processes import wait_until
    from modelmon.demo.simulator import FRAUD, SPECIES, KafkaSender, Simulator, run
    from modelmon.monitors.baselines import store_baseline
    from modelmon.runtime import Runtime
    from modelmon.store.engine import make_engine
    from modelmon.store.migrate import upgrade

    if console is None:
        console = Console()
        if not console.is_terminal:
            console = Console(width=120)
    db_path = Path(opts.db).resolve() if opts.db else workdir / "modelmon-demo.db"
    period = _period(opts)
    stoppers: list[tuple[str, Callable[[], None]]] = []
    stop = threading.Event()
    interrupted = False
    previous = signal.getsignal(signal.SIGTERM)

    def on_term(_sig: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_term)
    failed = False
    try:
        console.print(f"[bold]modelmon demo[/] · logs {workdir / 'modelmon.log'} · store sqlite:///{db_path}")
        predictions_topic, feedback_topic = "modelmon.predictions", "modelmon.feedback"
        broker = start_broker(workdir, [predictions_topic, feedback_topic])
        stoppers.append(("broker", broker.stop))
        console.print(f"Kafka-protocol broker (Tansu) on {broker.bootstrap}")

        settings = demo_settings(f"sqlite:///{db_path}", broker.bootstrap, _port(opts.port), opts.rate,
                                 [format_duration(w) for w in windows(period)])
        cfg = write_demo_config(workdir / "modelmon.yaml", settings)
        engine = make_engine(cfg.database.url)
        stoppers.append(("store", engine.dispose))
        upgrade(engine, cfg=cfg)
        sim = Simulator(rate=opts.rate, seed=opts.seed, period=period,
                        label_delay=label_delay(period), label_delay_min=1.0)
        with engine.begin() as conn:  # the research baselines: class shares on validation data
            for model in (FRAUD, SPECIES):
                store_baseline(conn, model, "predictions", sim.baseline_shares(model), 20000, "modelmon demo")

        runtime = Runtime(cfg, with_ingest=True)
        runtime.start()
        stoppers.append(("modelmon", runtime.stop))
        console.print(f"modelmon (ingest + monitors) serving {runtime.url}/metrics")

        for inc in sim.incidents:
            console.print(f"incident {inc.kind:<17} {inc.model:<8} {inc.start:6.0f}-{inc.end:.0f} s"
                          + (f" (every {period:.0f} s)" if not opts.duration or period < opts.duration else ""))

        sender = KafkaSender(broker.bootstrap, predictions_topic, feedback_topic)
        stoppers.append(("simulator producer", sender.close))
        started = time.time()
        sim.start = started
        sim_thread = threading.Thread(target=run, args=(sim, sender, opts.duration, stop), name="simulator",
                                      daemon=True)
        sim_thread.start()
        stoppers.append(("simulator", lambda: (stop.set(), sim_thread.join(30))))

        # Prometheus starts once both models have data, so the demo does not open
        # with "no recent predictions" alerts for the seconds before the first batch.
        wait_until(lambda: _models_seen(engine) >= {FRAUD, SPECIES}, 30, 0.5)
        prometheus_url = None
        bins = promstack.binaries() if opts.prometheus else None
        if bins:
            rules = workdir / "rules"
            write_rules(cfg, rules, RuleOptions(for_scale=for_scale(period)))
            am = promstack.start_alertmanager(bins[1], workdir)
            stoppers.append(("alertmanager", am.stop))
            prom = promstack.start_prometheus(bins[0], workdir, f"127.0.0.1:{runtime.http_port}", rules, am.url)
            stoppers.append(("prometheus", prom.stop))
            prometheus_url = prom.url
            console.print(f"Prometheus {prom.url}  ·  Alertmanager {am.url}  (rules: {rules})")
        elif opts.prometheus:
            console.print("[dim]prometheus / prometheus-alertmanager not on PATH: showing the thresholds the "
                          "monitor results cross instead of Prometheus alerts[/]")
        history: list[str] = []
        seen: set[tuple[str, str]] = set()

        def snapshot() -> Any:
            active = sorted(f"{k} ({m})" for k, m in sim.active(time.time()))
            snap = collect(engine, cfg, started, prometheus_url, active, history)
            now_firing = {(a["alertname"], a["model"]) for a in snap.alerts if a["state"] in ("firing", "crossed")}
            for name, model in sorted(now_firing - seen):
                history.append(f"{snap.elapsed:6.0f}s  {name} {model} started firing")
            for name, model in sorted(seen - now_firing):
                history.append(f"{snap.elapsed:6.0f}s  {name} {model} resolved")
            seen.clear()
            seen.update(now_firing)
            return snap

        def finished() -> bool:
            return stop.is_set() or (opts.duration is not None and time.time() - started >= opts.duration) \
                or runtime.error is not None

        if console.is_terminal:
            with Live(render(snapshot()), console=console, refresh_per_second=4, screen=False) as live:
                while not finished():
                    stop.wait(opts.refresh)
                    live.update(render(snapshot()))
        else:
            last_line = 0.0
            while not finished():
                stop.wait(opts.refresh)
                snap = snapshot()
                if time.time() - last_line >= 10:
                    console.print(status_line(snap), soft_wrap=True)
                    last_line = time.time()
            console.print(render(snapshot()))
            # The whole alert log (the view keeps the last lines only), for whoever reads the output.
            console.print("alert log:\n" + "\n".join(history or ["(no alert)"]), soft_wrap=True)
        if runtime.error is not None:
            console.print(f"[red]modelmon stopped with an error: {runtime.error}[/]")
    except KeyboardInterrupt:
        interrupted = True
    except BaseException:
        failed = True
        raise
    finally:
        stop.set()
        previous_int = signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut cleanup
        for name, fn in reversed(stoppers):
            try:
                fn()
            except Exception:
                log.exception("stopping %s failed", name)
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)
        root.handlers = saved_handlers
        log_file.close()
        if failed or ("runtime" in locals() and runtime.error is not None):
            console.print(f"[red]logs kept in {workdir}[/]")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    console.print(("stopped (Ctrl-C); " if interrupted else "") + "everything the demo started has stopped"
                  + (f"; results kept in {db_path}" if opts.db else ""))
    return 1 if "runtime" in locals() and runtime.error is not None else 0
