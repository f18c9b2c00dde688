"""What /metrics serves: monitor results rendered once per refresh, plus the live registry.

Reading and rendering the monitor results of a fleet takes a while; a scrape
must not (Prometheus' default scrape timeout is 10 s, and HA pairs scrape
twice). So a background thread reads the store and renders the results every
`refresh_seconds` (the service uses min(shortest monitor interval, 15 s):
results change once per monitor pass anyway), and a scrape only concatenates
those bytes with the small live registry (ingest counters, `modelmon_store_up`),
which prometheus_client renders per scrape.

Content negotiation is prometheus_client's (`choose_encoder`, `gzip_accepted`):
OpenMetrics when the scraper accepts it (Prometheus does), else text 0.0.4.
The results are gauges and summaries rendered so that one text is valid in
both formats; the live part is rendered in the negotiated one (counters differ)
and ends the OpenMetrics body with its "# EOF". With `Accept-Encoding: gzip`
the results are compressed once per refresh too: the live part is compressed
per scrape and appended to the same deflate stream (the results end on a
byte-aligned, non-final block), so one valid gzip member is served without
recompressing megabytes per scrape.

`modelmon_store_up` is 0 when the last refresh failed (the results are then
empty, as before) or when no refresh completed for max(3 periods, 60 s).
`refresh_seconds=0` reads and renders on every scrape (tests that want every
scrape fresh).
"""

from __future__ import annotations

import logging
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import (
    CONTENT_TYPE_PLAIN_0_0_4,
    choose_encoder,
    generate_latest,
    gzip_accepted,
)

from modelmon.alerts.exporter import MonitorResultsCollector, store_up_family
from modelmon.alerts.names import PREFIX

log = logging.getLogger(__name__)

_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # deflate, no name, no mtime, OS unknown
_LEVEL = 1  # a fleet's text compresses ~30x even so, several times faster than level 6

__all__ = ["MetricsExposition"]


class _Families:
    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterable[Metric]:
        return self._families


@dataclass
class _Deflated:
    data: bytes  # raw deflate, ending on a byte-aligned non-final block
    crc: int
    size: int


def _deflate_open(chunks: list[bytes]) -> _Deflated:
    c = zlib.compressobj(_LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS)
    data, crc, size = [], 0, 0
    for chunk in chunks:
        data.append(c.compress(chunk))
        crc, size = zlib.crc32(chunk, crc), size + len(chunk)
    data.append(c.flush(zlib.Z_SYNC_FLUSH))
    return _Deflated(b"".join(data), crc, size)


def _gzip(head: _Deflated, tail: bytes) -> bytes:
    """One gzip member: the precompressed head, then `tail` compressed now."""
    c = zlib.compressobj(_LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS)
    end = c.compress(tail) + c.flush()
    trailer = struct.pack("<II", zlib.crc32(tail, head.crc), (head.size + len(tail)) & 0xFFFFFFFF)
    return b"".join((_GZIP_HEADER, head.data, end, trailer))


@dataclass
class _Snapshot:
    """One refresh, rendered: the results' text and its compressed form."""

    ok: bool
    started: float  # time.monotonic() when the store read began
    seconds: float  # read and rendering
    chunks: list[bytes]
    deflated: _Deflated


class MetricsExposition:
    """Serves /metrics from the collector's last rendered read plus a live registry.

    `refresh()` is one store read and rendering (what the thread started by
    `start()` runs every `refresh_seconds`); `serve(accept, accept_encoding)`
    returns (body, content type, extra headers) without touching the store.
    """

    def __init__(
        self,
        collector: MonitorResultsCollector,
        live: CollectorRegistry,
        refresh_seconds: float = 15.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.collector = collector
        self.live = live
        self.refresh_seconds = refresh_seconds
        self._clock = clock
        self._stale_after = max(3 * refresh_seconds, 60.0)
        self._snapshot: _Snapshot | None = None
        self._refreshing = threading.Lock()  # one store read at a time
        self._rendered = threading.Condition()
        self.rendered_count = 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- refreshing -------------------------------------------------------------

    def refresh(self) -> None:
        """Read the store, render and compress the results, and swap them in."""
        with self._refreshing:
            started = time.monotonic()
            reading = self.collector.read()
            chunks = reading.text()
            del reading.models  # only the bytes are kept
            snap = _Snapshot(reading.ok, reading.started, 0.0, chunks, _deflate_open(chunks))
            snap.seconds = time.monotonic() - started
            self._snapshot = snap
            with self._rendered:
                self.rendered_count += 1
                self._rendered.notify_all()

    def start(self) -> None:
        """Refresh in a background thread, first right away."""
        if self.refresh_seconds <= 0 or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._loop, name="metrics-refresh", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def wake(self) -> None:
        """Refresh now rather than at the end of the period (e.g. after the first monitor pass)."""
        self._wake.set()

    def wait_rendered(self, timeout: float, after: int = 1) -> bool:
        """Wait until `after` refreshes have completed in all."""
        with self._rendered:
            return self._rendered.wait_for(lambda: self.rendered_count >= after, timeout)

    def refreshed_since(self, monotonic: float) -> bool:
        """Whether the results served were read at or after `monotonic` (time.monotonic())."""
        if self.refresh_seconds <= 0:
            return True
        snap = self._snapshot
        return snap is not None and snap.started >= monotonic

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.refresh()
            except Exception:  # the thread must outlive a rendering bug; store_up goes stale
                log.exception("metrics: refreshing the exposition failed")
            self._wake.wait(self.refresh_seconds)
            self._wake.clear()

    # -- serving ----------------------------------------------------------------

    def serve(self, accept: str = "", accept_encoding: str = "") -> tuple[bytes, str, list[tuple[str, str]]]:
        """(body, content type, extra headers) for a scrape with these request headers."""
        encoder, content_type = choose_encoder(accept)
        if not content_type.startswith("application/openmetrics-text"):
            encoder, content_type = generate_latest, CONTENT_TYPE_PLAIN_0_0_4
        snap = self._snapshot
        if snap is None or self.refresh_seconds <= 0:
            self.refresh()  # on the scrape path only before the first refresh (or when asked to)
            snap = self._snapshot
        assert snap is not None
        live = encoder(_Families(self._live_families(snap)))  # type: ignore[arg-type]
        if gzip_accepted(accept_encoding):
            return _gzip(snap.deflated, live), content_type, [("Content-Encoding", "gzip")]
        return b"".join([*snap.chunks, live]), content_type, []

    def _live_families(self, snap: _Snapshot) -> list[Metric]:
        fresh = self.refresh_seconds <= 0 or self._clock() - snap.started <= self._stale_after
        duration = GaugeMetricFamily(
            PREFIX + "metrics_refresh_duration_seconds",
            "How long the last read and rendering of the monitor results for /metrics took.",
        )
        duration.add_metric([], snap.seconds)
        return [*self.live.collect(), store_up_family(snap.ok and fresh), duration]
