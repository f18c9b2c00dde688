"""Simulated traffic for two models, with delayed labels and scheduled incidents.

`fraud` is a binary model (positive class "1") with slices sex/region; `species`
is a multiclass model with string classes. Scores are calibrated by construction
(the true label is drawn from the model's own score), so the estimated accuracy
tracks the realised one until an incident breaks something. Labels arrive after
a random delay, and some never do. A small share of events is malformed, so the
dead-letter path is exercised too.

Incidents, placed on a repeating period (the demo's is its duration):
  canary_regression  fraud:   the v4 canary scores half its requests with another
                              request's features: ~13 accuracy points below v3,
                              labels unchanged (compare verdict `worse`)
  class_shift        species: the class mix moves away from the baseline (PSI, JS, chi2)
  latency            fraud:   latency x6 (SLO burn rate)
  fairness           fraud:   scores for sex=F scaled down (disparate impact < 0.8)
  pause              species: no events at all (freshness)

Each period opens with a quiet lead-in (no incident: the monitors fill their
windows and nothing should alert), then the incidents start together: at the
shortest demo (120 s) they need all the remaining time to alert and to settle,
see `modelmon.demo.expectations`, which the tests check the schedule against.

The generator is pure (`Simulator.tick(now, dt)` returns events); `run` sends
them to Kafka in real time.
"""

from __future__ import annotations

import heapq
import json
import logging
import math
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

log = logging.getLogger(__name__)

FRAUD = "fraud"
SPECIES = "species"
SPECIES_CLASSES = ("setosa", "versicolor", "virginica")
SPECIES_SHARES = (0.40, 0.35, 0.25)
SHIFTED_SHARES = (0.05, 0.20, 0.75)
SEXES = ("F", "M")
REGIONS = ("eu", "us", "apac")
REGION_SHARES = (0.45, 0.35, 0.20)
FRAUD_VERSIONS = ("v3", "v4")  # v4 is a 20% canary
CANARY = "v4"
LATENCY_FACTOR = 6.0
# Strong enough that the 1m window shows it within ~40 s (at 0.7 it took ~70 s).
FAIRNESS_SCORE_FACTOR = 0.6
# In a canary_regression, this share of the canary's requests is scored with the
# features of another request (a feature-join bug): the scores keep their usual
# distribution (class mix and confidence look normal) but no longer match the
# label, so accuracy drops from ~88% to ~75%; only the labels show it.
CANARY_SWAPPED_SHARE = 0.5


@dataclass(frozen=True)
class Incident:
    kind: str  # canary_regression | class_shift | latency | fairness | pause
    model: str
    start: float  # seconds after the simulation starts, within each period
    end: float

    def active(self, elapsed: float, period: float | None) -> bool:
        t = elapsed % period if period else elapsed
        return self.start <= t < self.end


# The quiet share that opens every period, and the shortest period the schedule holds at.
LEAD_IN = 0.10
MIN_PERIOD = 120.0

# (kind, model, start, end) as fractions of the period. They overlap where their
# signals do not mix. Species pauses before its class shift: a pause freezes the
# window's content, so one right after the shift would hold its alert on.
SCHEDULE = (
    ("canary_regression", FRAUD, LEAD_IN, 0.49),
    ("pause", SPECIES, LEAD_IN, 0.35),
    ("latency", FRAUD, LEAD_IN, 0.25),
    ("fairness", FRAUD, LEAD_IN, 0.60),
    ("class_shift", SPECIES, 0.38, 0.52),
)


def default_incidents(period: float) -> list[Incident]:
    """The five incidents spread over one period (seconds)."""
    return [Incident(k, m, round(a * period, 3), round(b * period, 3)) for k, m, a, b in SCHEDULE]


@dataclass
class Events:
    predictions: list[dict[str, Any]] = field(default_factory=list)
    feedback: list[dict[str, Any]] = field(default_factory=list)
    malformed: list[tuple[str, bytes]] = field(default_factory=list)  # (kind, raw value)


class Simulator:
    """Pure event generator: deterministic for a seed and a sequence of ticks."""

    def __init__(
        self,
        rate: float = 20.0,
        *,
        seed: int = 0,
        incidents: list[Incident] | None = None,
        period: float | None = 600.0,
        label_delay: float = 120.0,
        label_delay_min: float = 2.0,
        unlabelled_share: float = 0.1,
        malformed_share: float = 0.003,
        error_share: float = 0.002,
        start: float | None = None,
    ) -> None:
        self.rate = rate  # predictions per second per model
        self.rng = np.random.default_rng(seed)
        self.period = period
        self.incidents = default_incidents(period or 600.0) if incidents is None else incidents
        self.label_delay = label_delay
        self.label_delay_min = label_delay_min
        self.unlabelled_share = unlabelled_share
        self.malformed_share = malformed_share
        self.error_share = error_share
        self.start = start
        self._pending: list[tuple[float, int, dict[str, Any]]] = []  # (due, seq, feedback)
        self._seq = 0
        self.counts = {"predictions": 0, "feedback": 0, "malformed": 0, "never_labelled": 0}

    # -- schedule ---------------------------------------------------------------

    def active(self, now: float) -> set[tuple[str, str]]:
        """(kind, model) of the incidents active at `now`."""
        if self.start is None:
            self.start = now
        elapsed = now - self.start
        return {(i.kind, i.model) for i in self.incidents if i.active(elapsed, self.period)}

    # -- models -----------------------------------------------------------------

    def _fraud(self, n: int, now: float, active: set[tuple[str, str]]) -> list[tuple[dict[str, Any], str]]:
        rng = self.rng
        p = _fraud_scores(rng, n)
        label = (rng.random(n) < p).astype(int)  # calibrated: the label follows the score
        sex = rng.choice(SEXES, n)
        region = rng.choice(REGIONS, n, p=REGION_SHARES)
        if ("fairness", FRAUD) in active:  # the model under-scores one group; labels unchanged
            p = np.where(sex == "F", p * FAIRNESS_SCORE_FACTOR, p)
        latency = rng.lognormal(math.log(0.040), 0.45, n)
        if ("latency", FRAUD) in active:
            latency = latency * LATENCY_FACTOR
        version = rng.choice(FRAUD_VERSIONS, n, p=(0.8, 0.2))
        status = rng.random(n) < self.error_share
        if ("canary_regression", FRAUD) in active:  # the canary reads the wrong feature row; labels unchanged
            swapped = (version == CANARY) & (rng.random(n) < CANARY_SWAPPED_SHARE)
            other = _fraud_scores(rng, n)
            if ("fairness", FRAUD) in active:
                other = np.where(sex == "F", other * FAIRNESS_SCORE_FACTOR, other)
            p = np.where(swapped, other, p)
        out = []
        for i in range(n):
            score = round(float(p[i]), 6)
            event = {
                "request_id": uuid.UUID(bytes=rng.bytes(16), version=4).hex,
                "model": FRAUD,
                "model_version": str(version[i]),
                "timestamp": round(now, 3),
                "prediction": 1 if score >= 0.5 else 0,
                "scores": {"1": score, "0": round(1.0 - score, 6)},
                "latency_ms": round(float(latency[i]) * 1000.0, 3),
                "slices": {"sex": str(sex[i]), "region": str(region[i])},
            }
            if status[i]:
                event["status"] = "error"
            out.append((event, str(int(label[i]))))
        return out

    def _species(self, n: int, now: float, active: set[tuple[str, str]]) -> list[tuple[dict[str, Any], str]]:
        rng = self.rng
        shares = SHIFTED_SHARES if ("class_shift", SPECIES) in active else SPECIES_SHARES
        scores = _species_scores(rng, n, shares)
        cum = scores.cumsum(axis=1)
        label = (rng.random((n, 1)) > cum).sum(axis=1).clip(0, len(SPECIES_CLASSES) - 1)
        latency = rng.lognormal(math.log(0.025), 0.35, n)
        out = []
        for i in range(n):
            s = {c: round(float(scores[i, j]), 6) for j, c in enumerate(SPECIES_CLASSES)}
            excess = sum(s.values()) - 1.0
            if excess > 0:  # rounding must not push the sum over 1
                top = max(s, key=s.__getitem__)
                s[top] = round(s[top] - excess, 6)
            event = {
                "request_id": uuid.UUID(bytes=rng.bytes(16), version=4).hex,
                "model": SPECIES,
                "model_version": "2024-06",
                "timestamp": round(now, 3),
                "prediction": SPECIES_CLASSES[int(np.argmax(scores[i]))],
                "scores": s,
                "latency_ms": round(float(latency[i]) * 1000.0, 3),
            }
            out.append((event, SPECIES_CLASSES[int(label[i])]))
        return out

    # -- ticks ------------------------------------------------------------------

    def tick(self, now: float, dt: float) -> Events:
        """Events for the `dt` seconds ending at `now`; feedback that has come due."""
        active = self.active(now)
        events = Events()
        for model, make in ((FRAUD, self._fraud), (SPECIES, self._species)):
            if ("pause", model) in active:
                continue
            n = int(self.rng.poisson(self.rate * dt))
            if n == 0:
                continue
            for event, label in make(n, now, active):
                events.predictions.append(event)
                if self.rng.random() < self.unlabelled_share:
                    self.counts["never_labelled"] += 1
                    continue
                delay = self.label_delay_min + float(self.rng.exponential(self.label_delay))
                fb = {"request_id": event["request_id"], "model": model, "label": label}
                self._seq += 1
                heapq.heappush(self._pending, (now + delay, self._seq, fb))
        while self._pending and self._pending[0][0] <= now:
            due, _, fb = heapq.heappop(self._pending)
            events.feedback.append({**fb, "timestamp": round(due, 3)})
        n_bad = int(self.rng.binomial(len(events.predictions), self.malformed_share)) if events.predictions else 0
        for _ in range(n_bad):
            events.malformed.append(self._malformed(now))
        self.counts["predictions"] += len(events.predictions)
        self.counts["feedback"] += len(events.feedback)
        self.counts["malformed"] += len(events.malformed)
        return events

    def _malformed(self, now: float) -> tuple[str, bytes]:
        """A broken event of the kinds real services send."""
        kind = str(self.rng.choice(["invalid_json", "missing_field", "invalid_value", "not_utf8"]))
        if kind == "invalid_json":
            return kind, b'{"request_id": "r-' + str(self._seq).encode() + b'", "model": "fraud"'
        if kind == "missing_field":
            return kind, json.dumps({"request_id": f"bad-{self._seq}-{now}", "model": FRAUD,
                                     "timestamp": now}).encode()
        if kind == "invalid_value":
            return kind, json.dumps({"request_id": f"bad-{self._seq}-{now}", "model": FRAUD, "timestamp": now,
                                     "prediction": 1, "scores": {"1": 1.7}}).encode()
        return kind, b"\xff\xfe not utf-8"

    def baseline_shares(self, model: str, n: int = 200_000, seed: int = 12345) -> dict[str, float]:
        """Predicted-class shares under normal conditions (the research baseline)."""
        rng = np.random.default_rng(seed)
        if model == FRAUD:
            p = _fraud_scores(rng, n)
            positive = float(np.mean(p >= 0.5))
            return {"0": 1.0 - positive, "1": positive}
        scores = _species_scores(rng, n, SPECIES_SHARES)
        counts = np.bincount(scores.argmax(axis=1), minlength=len(SPECIES_CLASSES))
        return {c: float(counts[j] / n) for j, c in enumerate(SPECIES_CLASSES)}


def _fraud_scores(rng: np.random.Generator, n: int) -> np.ndarray:
    # About a quarter of transactions get flagged for review (positive class "1").
    risky = rng.random(n) < 0.28
    return np.where(risky, rng.beta(6.0, 2.0, n), rng.beta(1.0, 12.0, n))


def _species_scores(rng: np.random.Generator, n: int, shares: tuple[float, ...]) -> np.ndarray:
    """Dirichlet scores peaked on a latent class drawn from `shares`."""
    latent = rng.choice(len(SPECIES_CLASSES), n, p=shares)
    alpha = np.ones((n, len(SPECIES_CLASSES)))
    alpha[np.arange(n), latent] += 7.0
    scores = rng.gamma(alpha)
    return scores / scores.sum(axis=1, keepdims=True)


class Sender(Protocol):
    def prediction(self, event: dict[str, Any]) -> None: ...
    def feedback(self, event: dict[str, Any]) -> None: ...
    def malformed(self, raw: bytes) -> None: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...


class KafkaSender:
    """Sends through ModelmonClient (as a model service would) plus a raw producer for broken events."""

    def __init__(self, bootstrap: str, predictions_topic: str = "modelmon.predictions",
                 feedback_topic: str = "modelmon.feedback", **producer_config: Any) -> None:
        from kafka import KafkaProducer

        from modelmon.client import ModelmonClient

        self.predictions_topic = predictions_topic
        self.client = ModelmonClient(bootstrap, predictions_topic=predictions_topic,
                                     feedback_topic=feedback_topic, client_id="modelmon-simulator",
                                     **producer_config)
        self.raw = KafkaProducer(bootstrap_servers=bootstrap, client_id="modelmon-simulator-raw",
                                 linger_ms=20, **producer_config)

    def prediction(self, event: dict[str, Any]) -> None:
        self.client.log_prediction(**event)

    def feedback(self, event: dict[str, Any]) -> None:
        self.client.log_feedback(**event)

    def malformed(self, raw: bytes) -> None:
        self.raw.send(self.predictions_topic, value=raw)

    def flush(self) -> None:
        self.client.flush(timeout=30.0)
        self.raw.flush(timeout=30.0)

    def close(self) -> None:
        self.client.close(timeout=10.0)
        self.raw.close(timeout=10.0)


def run(
    sim: Simulator,
    sender: Sender,
    duration: float | None = None,
    stop: threading.Event | None = None,
    tick: float = 0.2,
    clock: Callable[[], float] = time.time,
    on_tick: Callable[[Simulator, Events], None] | None = None,
) -> dict[str, int]:
    """Send `sim`'s events in real time until `duration` passes or `stop` is set."""
    stop = stop or threading.Event()
    began = clock()
    last = began
    if sim.start is None:
        sim.start = began
    while not stop.is_set():
        now = clock()
        if duration is not None and now - began >= duration:
            break
        events = sim.tick(now, max(now - last, 0.0))
        last = now
        for event in events.predictions:
            sender.prediction(event)
        for event in events.feedback:
            sender.feedback(event)
        for _, raw in events.malformed:
            sender.malformed(raw)
        if on_tick is not None:
            on_tick(sim, events)
        stop.wait(tick)
    sender.flush()
    return dict(sim.counts)


def iter_ticks(sim: Simulator, start: float, seconds: float, dt: float = 1.0) -> Iterator[tuple[float, Events]]:
    """Simulated (not real) time: the events of each `dt` step over `seconds`."""
    t = start
    while t < start + seconds:
        t += dt
        yield t, sim.tick(t, dt)
