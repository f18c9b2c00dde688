"""An unreachable broker: modelmon's own line naming it, and kafka-python's per-attempt log lines
summarised (one line per 30 s) instead of several a second."""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from modelmon.ingest.kafka_logs import BrokerLogSummary


def _record(name: str, level: int, msg: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, args, None)


def test_per_attempt_lines_become_one_line_per_period() -> None:
    clock = [1000.0]
    summary = BrokerLogSummary("127.0.0.1:9092", period=30.0, clock=lambda: clock[0])
    passed = []
    for _ in range(20):  # 20 attempts in 19 s, 4 kafka-python lines each
        for rec in (
            _record(
                "kafka.net.manager",
                logging.INFO,
                "Attempting bootstrap to %s at %s:%s",
                "b-0",
                "h",
                1,
            ),
            _record(
                "kafka.net.connection", logging.ERROR, "<conn>: Connection lost: %s", "ECONNREFUSED"
            ),
            _record(
                "kafka.net.manager",
                logging.ERROR,
                "Connection failed: %s",
                "KafkaConnectionError: 111",
            ),
            _record(
                "kafka.net.manager",
                logging.WARNING,
                "Bootstrap %s not ready; waiting %.2f secs",
                "b-0",
                1.0,
            ),
        ):
            if summary.filter(rec):
                passed.append(rec)
        clock[0] += 1.0
    # The first INFO line of the very first attempt passes (a healthy start shows it too);
    # the first failure becomes modelmon's own line.
    assert len(passed) == 2, [r.getMessage() for r in passed]
    first = passed[1]
    assert first.name == "modelmon.ingest" and first.levelno == logging.WARNING
    assert "127.0.0.1:9092 unreachable" in first.getMessage()
    assert "kafka.bootstrap_servers" in first.getMessage()
    clock[0] = 1031.0
    later = _record(
        "kafka.net.manager", logging.ERROR, "Connection failed: %s", "KafkaConnectionError: 111"
    )
    assert summary.filter(later)
    assert "(21 attempts in the last 31 s" in later.getMessage(), later.getMessage()


def test_other_kafka_lines_and_a_recovery_pass() -> None:
    summary = BrokerLogSummary("b:9092", period=30.0, clock=lambda: 0.0)
    assert summary.filter(_record("kafka.consumer.group", logging.INFO, "joined group %s", "g"))
    assert summary.filter(_record("kafka.net.manager", logging.ERROR, "Connection failed: %s", "x"))
    assert not summary.filter(_record("kafka.net.manager", logging.INFO, "Attempting bootstrap"))
    assert summary.filter(_record("kafka.net.manager", logging.INFO, "Bootstrap complete: %s", "c"))
    assert summary.filter(_record("kafka.net.manager", logging.INFO, "Attempting bootstrap"))


@pytest.mark.slow
def test_ingest_with_no_broker_logs_modelmons_line_not_kafka_pythons(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        f"database:\n  url: sqlite:///{tmp_path / 's.db'}\n"
        f"kafka:\n  bootstrap_servers: 127.0.0.1:{port}\n"
        "ingest:\n  http_port: 0\n",  # /metrics on a free port: concurrent runs must not clash
        encoding="utf-8",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELMON_")}
    env["PYTHONUNBUFFERED"] = "1"
    assert (
        subprocess.run(
            [sys.executable, "-m", "modelmon", "-c", str(cfg), "db", "upgrade"],
            env=env,
            capture_output=True,
        ).returncode
        == 0
    )
    log = tmp_path / "log.txt"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "modelmon", "-c", str(cfg), "ingest"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        time.sleep(6)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    lines = log.read_text().splitlines()
    kafka = [line for line in lines if re.search(r" [A-Z]+ kafka\.", line)]
    # At most the INFO lines of a healthy start (IO loop starting, attempting bootstrap).
    assert len(kafka) <= 3 and not [line for line in kafka if " INFO " not in line], "\n".join(
        lines
    )
    assert any(f"Kafka broker 127.0.0.1:{port} unreachable" in line for line in lines), "\n".join(
        lines
    )
