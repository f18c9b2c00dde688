"""An unreachable or misspelled database URL: one line naming it (password masked), no traceback;
the long-running commands wait for the store with backoff instead of crashing."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_cli import modelmon, write_config


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def unreachable_url() -> str:
    return f"postgresql://modelmon:s3cret@127.0.0.1:{closed_port()}/modelmon"


def assert_one_clear_line(r: subprocess.CompletedProcess[str], *expected: str) -> None:
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    assert "s3cret" not in r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    for text in expected:
        assert text in lines[0], lines[0]


def test_db_upgrade_against_an_unreachable_server_prints_one_line(tmp_path: Path) -> None:
    url = unreachable_url()
    r = modelmon("-c", str(write_config(tmp_path, url)), "db", "upgrade")
    masked = url.replace("s3cret", "***").replace("postgresql:", "postgresql+psycopg:")
    assert_one_clear_line(
        r, "cannot reach the database", masked, "database.url", "MODELMON_DATABASE_URL"
    )


def test_db_upgrade_with_a_misspelled_driver_prints_one_line(tmp_path: Path) -> None:
    r = modelmon(
        "-c", str(write_config(tmp_path, "postgresq://modelmon:s3cret@h/db")), "db", "upgrade"
    )
    assert_one_clear_line(r, "postgresq://modelmon:***@h/db", "database.url")


def test_db_upgrade_with_an_unparsable_url_prints_one_line(tmp_path: Path) -> None:
    r = modelmon("-c", str(write_config(tmp_path, "modelmon.db")), "db", "upgrade")
    assert_one_clear_line(r, "modelmon.db", "database.url")


def test_monitor_once_against_an_unreachable_server_prints_one_line(tmp_path: Path) -> None:
    r = modelmon("-c", str(write_config(tmp_path, unreachable_url())), "monitor", "--once")
    assert_one_clear_line(r, "cannot reach the database")


@pytest.mark.slow
@pytest.mark.parametrize(
    "command", [["run", "--port", "0"], ["monitor", "--port", "0"], ["ingest"]]
)
def test_long_running_commands_retry_until_stopped(tmp_path: Path, command: list[str]) -> None:
    cfg = write_config(tmp_path, unreachable_url())
    with cfg.open("a", encoding="utf-8") as f:
        f.write(f"kafka:\n  bootstrap_servers: 127.0.0.1:{closed_port()}\n")
        f.write("ingest:\n  http_port: 0\n")  # `ingest` serves /metrics: any free port
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELMON_")}
    log = tmp_path / "log.txt"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "modelmon", "-c", str(cfg), *command],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**env, "PYTHONUNBUFFERED": "1"},
        )
    try:
        deadline = time.monotonic() + 30
        while log.read_text().count("retrying in") < 2 and proc.poll() is None:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        assert proc.poll() is None, f"exited with {proc.returncode}:\n{log.read_text()}"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    assert "Traceback" not in text and "s3cret" not in text, text
    waits = [line for line in text.splitlines() if "database unreachable" in line]
    assert len(waits) >= 2, text
    assert "postgresql+psycopg://modelmon:***@127.0.0.1" in waits[0], waits[0]
    assert "retrying in 1 s" in waits[0] and "retrying in 2 s" in waits[1], waits
