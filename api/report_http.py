"""`GET /v1/report`: the deep-dive report over HTTP, built in a child process.

Why a child process: importing evidently takes seconds and hundreds of MB, and a report
holds its sample in memory; none of that may land in the API process, which also serves
/metrics and feedback. The child (`python -m modelmon.api.report_command --worker`)
builds the page and exits, taking its memory with it.

One build runs at a time (a second request waits briefly, then gets 429 with
Retry-After), and finished pages are kept for `features.interval` seconds, keyed by
(model, version, window start, window end); a window given by length ends at the last
multiple of `features.interval`, so repeated requests within that period hit the cache.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import subprocess
import sys
import tempfile
import threading
import time
from argparse import ArgumentTypeError
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs

from sqlalchemy import Engine

from modelmon.api.auth import ScrapeAuth, TokenAuth
from modelmon.api.report import ReportError, ReportWindow, check_inputs, resolve_window
from modelmon.config import Config, parse_duration
from modelmon.contract import MAX_VERSION, MODEL_RE
from modelmon.http import Handler, HttpError, Request, Response

log = logging.getLogger(__name__)

BUILD_TIMEOUT = 300.0  # seconds a child may take before it is killed
BUSY_WAIT = 2.0  # seconds a request waits for a running build before 429
CACHE_BYTES = 64 * 1_048_576  # pages kept (evidently's inlined JavaScript: ~4 MB each)
PARAMS = frozenset({"model", "version", "window", "from", "to"})


def _one(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    if not values:
        return None
    if len(values) > 1:
        raise ReportError(422, f"parameter {name!r} given {len(values)} times")
    return values[0]


def _time(name: str, text: str | None) -> float | None:
    if text is None:
        return None
    from modelmon.cli import parse_time

    try:
        value = parse_time(text)
    except (ArgumentTypeError, ValueError, OverflowError, OSError):
        raise ReportError(
            422, f"{name}: expected epoch seconds or an RFC 3339 time, got {text!r}"
        ) from None
    if not math.isfinite(value):
        raise ReportError(422, f"{name}: expected a finite time, got {text!r}")
    return value


def parse_request(cfg: Config, query: str, now: float) -> ReportWindow:
    """The window a query string asks for; raises ReportError (404 bad model, 422 bad params)."""
    try:
        parsed = parse_qs(query, keep_blank_values=True, strict_parsing=False,
                          errors="strict", max_num_fields=20)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ReportError(422, f"invalid query string: {exc}") from None
    unknown = sorted(set(parsed) - PARAMS)
    if unknown:
        known = ", ".join(sorted(PARAMS))
        raise ReportError(422, f"unknown parameter {unknown[0]!r} (known: {known})")
    model = _one(parsed, "model")
    if not model:
        raise ReportError(422, "parameter 'model' is required")
    if not MODEL_RE.match(model):
        raise ReportError(404, "no such model: model names match [A-Za-z0-9_.-]{1,64}")
    version = _one(parsed, "version") or None
    if version is not None and (len(version) > MAX_VERSION or "\x00" in version):
        raise ReportError(422, f"version: 1 to {MAX_VERSION} characters, no NUL")
    length_text = _one(parsed, "window")
    length = None
    if length_text is not None:
        try:
            length = parse_duration(length_text)
        except ValueError as exc:
            raise ReportError(422, f"window: {exc}") from None
    start, end = _time("from", _one(parsed, "from")), _time("to", _one(parsed, "to"))
    return resolve_window(cfg, model, version, length, start, end, now)


@dataclass
class _Entry:
    page: bytes
    expires: float


class ReportPages:
    """Builds report pages in child processes, one at a time, and keeps recent ones."""

    def __init__(self, cfg: Config, engine: Engine, timeout: float = BUILD_TIMEOUT) -> None:
        self.cfg = cfg
        self.engine = engine
        self.timeout = timeout
        self.ttl = cfg.features.interval
        self._build = threading.Lock()
        self._cache_lock = threading.Lock()
        self._cache: OrderedDict[ReportWindow, _Entry] = OrderedDict()

    def page(self, window: ReportWindow) -> bytes:
        """The page of `window`, from the cache or a fresh build (raises ReportError)."""
        cached = self._cached(window)
        if cached is not None:
            return cached
        if importlib.util.find_spec("evidently") is None:
            raise ReportError(503, "the report needs evidently: pip install 'modelmon[evidently]'")
        with self.engine.connect() as conn:  # the usual 404s without starting a child
            check_inputs(self.cfg, conn, window)
        if not self._build.acquire(timeout=BUSY_WAIT):
            raise ReportError(429, "another report is being built; retry in a few seconds")
        try:
            cached = self._cached(window)  # built by the request we waited for
            if cached is not None:
                return cached
            page = self._run_child(window)
        finally:
            self._build.release()
        self._keep(window, page)
        return page

    def _cached(self, window: ReportWindow) -> bytes | None:
        now = time.monotonic()
        with self._cache_lock:
            for key in [k for k, e in self._cache.items() if e.expires <= now]:
                del self._cache[key]
            entry = self._cache.get(window)
            return None if entry is None else entry.page

    def _keep(self, window: ReportWindow, page: bytes) -> None:
        with self._cache_lock:
            self._cache[window] = _Entry(page, time.monotonic() + self.ttl)
            while sum(len(e.page) for e in self._cache.values()) > CACHE_BYTES and self._cache:
                self._cache.popitem(last=False)

    def _run_child(self, window: ReportWindow) -> bytes:
        with tempfile.TemporaryDirectory(prefix="modelmon-report-") as tmp:
            out = Path(tmp) / "report.html"
            request = {
                "config": self.cfg.model_dump(mode="json"),
                "model": window.model, "version": window.version,
                "start": window.start, "end": window.end, "out": str(out),
            }
            started = time.monotonic()
            try:
                done = subprocess.run(
                    [sys.executable, "-m", "modelmon.api.report_command", "--worker"],
                    input=json.dumps(request), capture_output=True, text=True,
                    timeout=self.timeout, check=False,
                )
            except subprocess.TimeoutExpired:
                raise ReportError(
                    503, f"the report took longer than {self.timeout:g} s and was stopped"
                ) from None
            reply = _reply(done.stdout)
            if done.returncode == 0 and reply.get("status") == 200:
                log.info("report for %s built in %.1f s", window.model, time.monotonic() - started)
                return out.read_bytes()
            if "error" in reply:
                raise ReportError(int(reply["status"]), str(reply["error"]))
            # The child's traceback goes to the log only: it may quote SQL and values.
            log.error("report child for %s failed (exit %s): %s", window.model,
                      done.returncode, done.stderr.strip()[-4000:])
            raise ReportError(
                503, f"the report could not be built (exit {done.returncode}; see the server log)"
            )


def _reply(stdout: str) -> dict[str, object]:
    for line in reversed(stdout.strip().splitlines()):
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return {}


def handler(cfg: Config, pages: ReportPages, auth: TokenAuth) -> Handler:
    """The route handler for GET /v1/report: auth first, then parameters, then the page."""

    # A person follows the alert's or the dashboard's link in a browser, which cannot send a
    # bearer token: basic auth with an API token as the password is accepted too, and a
    # refusal carries the challenges that make the browser ask for it.
    browser = ScrapeAuth(cfg.server.api_tokens)

    def get_report(req: Request) -> Response:
        if not (browser.enabled and browser.allows(req)):
            try:
                auth.check(req)
            except HttpError as exc:
                headers = list(ScrapeAuth.CHALLENGES) if exc.status == 401 else []
                return Response.json({"error": exc.message}, exc.status, headers)
        try:
            page = pages.page(parse_request(cfg, req.query, time.time()))
        except ReportError as exc:
            if exc.status == 429:
                return Response.json({"error": exc.message}, 429, [("Retry-After", "5")])
            raise HttpError(exc.status, exc.message) from None
        return Response(200, page, "text/html; charset=utf-8")

    return get_report
