"""Store transactions in a child process, so ingest's consumer and its writes each get a core.

Why: in one process the Kafka polling and decoding (consumer loop) and the store
transaction (writer thread) share one GIL, so the ingest rate is one over their
summed Python CPU per event, however many cores are idle. With
`ingest.write_process` the writer thread hands each part of a batch to a child
process, which runs `write_batch` in one transaction (and the partition
statistics that follow a commit) and replies with the outcome: the writer
thread only waits on a pipe, and the child has a GIL of its own.

What crosses the pipe: the part as msgspec MessagePack (typed decode; pickle for
the rare part MessagePack cannot carry, an integer beyond 64 bits in features),
and back the outcome's counts plus *indices* of the stored events, from which
the parent rebuilds `stored_predictions` / `stored_feedback` out of its own
objects. A failed transaction is classified in the child (`classify`, where the
driver's exception is) and raised in the parent as `StoreProcessError`, which
`classify` maps back, so retries, splits and rejects work as in-thread.

Lifetime: the child is a fresh interpreter (never a fork: the parent has
threads), started with subprocess rather than multiprocessing's "spawn", which
would run the parent's `__main__` again in the child (a script that embeds
IngestService without a main guard could never start its writer). Its end of a
socket pair is its only link: it ignores SIGINT (Ctrl-C reaches the whole
process group, and the parent then flushes through it) and exits when the pipe
closes, which also happens when the parent is killed. A child that dies is a
CONNECTION failure: the writer retries the part after its backoff and the next
write starts a new child.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Any

import msgspec
import sqlalchemy as sa

from modelmon.config import Config
from modelmon.contract import Feedback, Prediction
from modelmon.ingest.errors import Failure, StoreProcessError, classify, short_text
from modelmon.store.engine import shareable
from modelmon.store.writes import BatchOutcome, DeadLetter, Position

log = logging.getLogger(__name__)

# Seconds `stop()` waits for the child to finish its write and exit before terminating it.
STOP_TIMEOUT = 10.0


class Part(msgspec.Struct, array_like=True, gc=False):
    """What one transaction writes (the arguments of `write_batch`)."""

    predictions: list[tuple[Prediction, Position | None]]
    feedback: list[tuple[Feedback, Position | None]]
    dead_letters: list[DeadLetter]


class Reply(msgspec.Struct, array_like=True, gc=False):
    """The outcome of one part: counts, and which of the sent events were stored (indices)."""

    failure: str | None = None  # a Failure value when the transaction failed
    error: str = ""
    labels_joined: int = 0
    duplicates_by_kind: dict[str, int] = {}
    conflicts_by_kind: dict[str, int] = {}
    dead_letter_reasons: dict[str, int] = {}
    predictions: list[int] = []
    feedback: list[int] = []


# First byte of a request: how the rest is encoded.
_MSGPACK, _PICKLE = b"m", b"p"
_encode = msgspec.msgpack.Encoder().encode
_decode_part = msgspec.msgpack.Decoder(Part).decode
_decode_reply = msgspec.msgpack.Decoder(Reply).decode


def encode_part(part: Part) -> bytes:
    """MessagePack (measured cheaper to encode than pickle: 0.4 against 2.8 us per event);
    pickle when MessagePack cannot carry a value (an integer beyond 64 bits)."""
    try:
        return _MSGPACK + _encode(part)
    except (OverflowError, msgspec.EncodeError, TypeError):
        return _PICKLE + pickle.dumps(part, protocol=5)


def decode_part(data: bytes) -> Part:
    body = memoryview(data)[1:]
    if data[:1] == _PICKLE:
        return pickle.loads(body)  # noqa: S301 - from our own parent, over a private pipe
    return _decode_part(body)


def engine_url(engine: sa.Engine) -> str:
    """The URL of the engine, password included (the child opens the same store)."""
    return engine.url.render_as_string(hide_password=False)


class StoreProcess:
    """Parent side: one child process and its pipe, used by the writer thread only."""

    def __init__(self, cfg: Config, url: str) -> None:
        self.cfg = cfg
        self.url = url
        self._proc: subprocess.Popen[bytes] | None = None
        self._conn: Connection | None = None
        self._lock = threading.Lock()  # start/stop against a write in flight
        self._stopped = False
        self.started = 0  # children started so far (the first one included)
        # What the child runs, `{fd}` its end of the pipe (bench swaps in a variant).
        self.entry = f"from {__name__} import main; main({{fd}})"

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def start(self) -> None:
        """Start the child now (it imports and connects while the first batch is read)."""
        with self._lock:
            if self._proc is None and not self._stopped:
                self._spawn()

    def _spawn(self) -> None:
        parent, child = socket.socketpair()
        with child:
            fd = child.fileno()
            proc = subprocess.Popen(
                [sys.executable, "-c", self.entry.format(fd=fd)],
                pass_fds=(fd,), stdin=subprocess.DEVNULL,
            )
        # Only the child holds its end now: its exit reads as EOF here.
        self._proc, self._conn = proc, Connection(parent.detach())
        self.started += 1
        level = logging.getLogger().getEffectiveLevel()
        # Should it die at once, the write that follows reads EOF and says so.
        with contextlib.suppress(OSError):
            self._conn.send_bytes(pickle.dumps((self.url, self.cfg, level), protocol=5))

    def write(self, predictions: Sequence[tuple[Prediction, Position | None]],
              feedback: Sequence[tuple[Feedback, Position | None]],
              dead_letters: Sequence[DeadLetter]) -> BatchOutcome:
        """One transaction in the child; raises StoreProcessError as the write failed."""
        data = encode_part(Part(list(predictions), list(feedback), list(dead_letters)))
        with self._lock:
            if self._stopped:
                raise StoreProcessError(Failure.CONNECTION, "ingest is stopping")
            if self._proc is None:
                self._spawn()
            conn = self._conn
        assert conn is not None
        try:
            conn.send_bytes(data)
            reply = _decode_reply(conn.recv_bytes())
        except (EOFError, OSError):
            raise StoreProcessError(Failure.CONNECTION, self._lost()) from None
        if reply.failure is not None:
            raise StoreProcessError(Failure(reply.failure), reply.error)
        return BatchOutcome(
            labels_joined=reply.labels_joined,
            duplicates_by_kind=reply.duplicates_by_kind,
            conflicts_by_kind=reply.conflicts_by_kind,
            stored_predictions=[predictions[i][0] for i in reply.predictions],
            stored_feedback=[feedback[i][0] for i in reply.feedback],
            dead_letter_reasons=reply.dead_letter_reasons,
        )

    def _lost(self) -> str:
        """Reap a child that died; what to say about it (the next write starts another)."""
        with self._lock:
            proc, conn = self._proc, self._conn
            self._proc = self._conn = None
        if conn is not None:
            conn.close()
        code = None
        if proc is not None:
            try:
                code = proc.wait(5.0)
            except subprocess.TimeoutExpired:  # closed its end but lives on: end it
                proc.kill()
                code = proc.wait(5.0)
        if self._stopped:
            return "ingest is stopping"
        return f"the store process exited (code {code}); a new one takes the part"

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Close the pipe (the child exits after its write), join, terminate if it hangs."""
        with self._lock:
            self._stopped = True
            proc, conn = self._proc, self._conn
            self._proc = self._conn = None
        if proc is None:
            return
        if conn is not None:
            _hang_up(conn)  # EOF for the child, and for a writer thread still waiting on it
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("the store process did not exit within %.0f s; terminating it", timeout)
            proc.terminate()
            try:
                proc.wait(5.0)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5.0)
        if conn is not None:
            conn.close()


def _hang_up(conn: Connection) -> None:
    """Shut the socket down both ways: unlike close(), this also wakes a thread blocked
    reading it, and the child reads EOF once it has replied to the part it is writing."""
    with contextlib.suppress(OSError), socket.socket(fileno=os.dup(conn.fileno())) as sock:
        sock.shutdown(socket.SHUT_RDWR)


# -- the child -------------------------------------------------------------------


def main(fd: int) -> None:
    """The child's entry point: its end of the socket pair, then the store settings on it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    conn = Connection(fd)
    try:
        url, cfg, level = pickle.loads(conn.recv_bytes())  # noqa: S301 - from our parent
    except (EOFError, OSError):
        return
    serve(conn, url, cfg, level)


def serve(conn: Connection, url: str, cfg: Config, log_level: int) -> None:
    """The child's loop: receive a part, write it in one transaction, reply; until EOF."""
    logging.basicConfig(level=log_level,
                        format="%(asctime)s %(levelname)s %(name)s [store process]: %(message)s")
    from modelmon.store.engine import make_engine
    from modelmon.store.rollups import Specs
    from modelmon.store.statistics import PartitionAnalyzer

    engine = make_engine(url, echo=cfg.database.echo, pool_size=1)
    specs = Specs(cfg)
    analyzer = PartitionAnalyzer()
    try:
        while True:
            try:
                data = conn.recv_bytes()
            except (EOFError, OSError):
                return  # the parent closed the pipe, or is gone
            reply = write_part(engine, specs, analyzer, decode_part(data))
            try:
                conn.send_bytes(_encode(reply))
            except OSError:
                return
    finally:
        engine.dispose()


def write_part(engine: sa.Engine, specs: Any, analyzer: Any, part: Part) -> Reply:
    """`write_batch` in one transaction, then the statistics of what it stored."""
    from modelmon.store.writes import write_batch

    try:
        with engine.begin() as conn:
            out = write_batch(conn, part.predictions, part.feedback, part.dead_letters,
                              specs=specs)
    except Exception as exc:
        if not isinstance(exc, sa.exc.SQLAlchemyError):  # a bug, not the store: keep its trace
            log.exception("write failed")
        return Reply(failure=classify(exc).value, error=short_text(exc))
    # Committed: keep the planner's picture of the partitions it filled current.
    analyzer.stored(engine, (p.ts for p in out.stored_predictions))
    return Reply(
        labels_joined=out.labels_joined,
        duplicates_by_kind=out.duplicates_by_kind,
        conflicts_by_kind=out.conflicts_by_kind,
        dead_letter_reasons=out.dead_letter_reasons,
        predictions=_indices(part.predictions, out.stored_predictions),
        feedback=_indices(part.feedback, out.stored_feedback),
    )


def _indices(sent: Sequence[tuple[Any, Any]], stored: Sequence[Any]) -> list[int]:
    """Where each stored event is in the sent list (write_batch returns the objects it got)."""
    if not stored:
        return []
    at = {id(ev): n for n, (ev, _) in enumerate(sent)}
    return [at[id(ev)] for ev in stored]


def store_process_for(cfg: Config, engine: sa.Engine) -> StoreProcess | None:
    """The service's store process: None with `ingest.write_process: false` or an
    in-memory SQLite store (another process would open a database of its own)."""
    url = engine_url(engine)
    if not cfg.ingest.write_process or not shareable(url):
        return None
    return StoreProcess(cfg, url)
