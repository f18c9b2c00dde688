"""The Kafka client's connection chatter, summarised while the broker is unreachable.

With no broker, kafka-python logs four or five lines per connection attempt (several a
second) on `kafka.net.*` (`kafka.conn` / `kafka.client` in older versions): the one
thing to say drowns. `BrokerLogSummary` turns the first failure into modelmon's own
line naming the bootstrap servers and what to check, then one line per period with
the number of failed attempts, and lets everything through again once a connection
succeeds. It rewrites records instead of logging new ones, so it needs no handler of
its own and works under whatever logging the embedding process set up.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

SUMMARY_PERIOD = 30.0
# One per failed attempt: counted.
_ATTEMPT_FAILED = re.compile(
    r"Connection failed|Connect attempt to .* returned error|Unable to connect", re.I
)
# The rest of a failure's lines: suppressed while the broker is unreachable.
_TROUBLE = re.compile(
    r"Connection lost|not ready|Bootstrap (connection|attempt) .*failed|Bootstrap failed|"
    r"Unable to bootstrap|ECONNREFUSED|KafkaConnectionError|NoBrokersAvailable|"
    r"DNS lookup failed|Connection refused",
    re.I,
)
_ATTEMPT = re.compile(
    r"Attempting bootstrap|Initializing connection|Attempting to connect|connecting to", re.I
)
_RECOVERED = re.compile(r"Bootstrap complete|: Connected\b|Connection complete", re.I)


class BrokerLogSummary(logging.Filter):
    """A filter for the `kafka.*` loggers; see the module docstring."""

    def __init__(
        self,
        servers: str,
        period: float = SUMMARY_PERIOD,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.servers = servers
        self.period = period
        self.clock = clock
        self._lock = threading.Lock()
        self.unreachable = False
        self._line_at = 0.0
        self._attempts = 0

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        with self._lock:
            if _RECOVERED.search(message):
                self.unreachable = False
                return True
            failed = bool(_ATTEMPT_FAILED.search(message))
            if failed or (record.levelno >= logging.WARNING and _TROUBLE.search(message)):
                self._attempts += failed
                now = self.clock()
                if self.unreachable and now - self._line_at < self.period:
                    return False
                self._rewrite(record, message, now)
                return True
            if _ATTEMPT.search(message):
                return not self.unreachable
        return True

    def _rewrite(self, record: logging.LogRecord, message: str, now: float) -> None:
        reason = message.split(": ", 1)[-1] if ": " in message else message
        if not self.unreachable:
            text = (
                f"Kafka broker {self.servers} unreachable ({reason}); retrying. Check "
                "kafka.bootstrap_servers / MODELMON_KAFKA_BOOTSTRAP and that the broker is "
                f"running; the Kafka client's connection messages are summarised every {self.period:g} s"
            )
        else:
            text = (
                f"Kafka broker {self.servers} still unreachable ({self._attempts} attempts in "
                f"the last {now - self._line_at:.0f} s; last: {reason})"
            )
        self.unreachable = True
        self._line_at = now
        self._attempts = 0
        record.name = "modelmon.ingest"
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.msg, record.args = text, None
        record.exc_info = record.exc_text = None


def _kafka_loggers() -> list[logging.Logger]:
    import kafka  # noqa: F401 - its modules create their loggers on import

    from modelmon.ingest.consumer_confluent import LOGGER as LIBRDKAFKA

    names = [n for n in logging.Logger.manager.loggerDict if n == "kafka" or n.startswith("kafka.")]
    return [logging.getLogger(n) for n in [*sorted(names), LIBRDKAFKA]]


@contextmanager
def summarised_broker_logs(servers: str) -> Iterator[BrokerLogSummary]:
    """Install a `BrokerLogSummary` on every kafka-python logger and librdkafka's for the duration."""
    summary = BrokerLogSummary(servers)
    loggers = _kafka_loggers()
    for lg in loggers:
        lg.addFilter(summary)
    try:
        yield summary
    finally:
        for lg in loggers:
            lg.removeFilter(summary)
