"""The batch-wise ingest metrics equal prometheus_client's own calls, event by event.

`IngestMetrics.observe_predictions` / `observe_feedback` count a batch with one
Counter per label set and observe latencies in bulk (`_observe_all`). The
reference here is the straightforward use of prometheus_client: for every event,
in order, fold its labels and call `inc(1)` / `observe(latency)` on a second
registry. Every sample (bucket counts, sums to the last bit, counts, the folded
__other__ series) must be equal, including past the series cap and for awkward
latencies (exact bucket bounds, 0, negatives, huge values, ints, NaN).
"""

from __future__ import annotations

import math
import random
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Histogram

from modelmon.contract import Feedback, Prediction
from modelmon.ingest.metrics import IngestMetrics, _observe_all

BOUNDS = [0.001, 0.005, 0.01, 0.05, 0.1, 0.3, 1.0]


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for metric in registry.collect() for s in metric.samples
        if not s.name.endswith("_created")
    }


def same(a: CollectorRegistry, b: CollectorRegistry) -> None:
    got, want = samples(a), samples(b)
    assert got.keys() == want.keys()
    for key, value in want.items():  # NaN sums compare equal as NaN
        assert got[key] == value or (math.isnan(got[key]) and math.isnan(value)), key


def reference(m: IngestMetrics, preds: list[Prediction], fbs: list[Feedback], topic: str) -> None:
    """Event by event through prometheus_client's public calls, as ingest used to count."""
    for p in preds:
        model, version = m._labels(p.model, p.model_version)
        m.predictions.labels(model, version, p.status).inc(1)
        if p.latency_seconds is not None and p.status == "ok":
            m.latency.labels(model).observe(p.latency_seconds)
        m.events.labels(topic).inc(1)
    for f in fbs:
        m.feedback.labels(m._model_label(f.model)).inc(1)
        m.events.labels(topic).inc(1)


def awkward_latency(rng: random.Random) -> Any:
    return rng.choice([
        None, 0.0, 0, -0.5, 1e308, float("nan"), 0.3, 1.0, 0.001, 2, rng.random(),
        rng.expovariate(30), math.nextafter(0.05, 1), math.nextafter(0.05, 0),
    ])


def prediction(rng: random.Random, i: int, models: int, versions: int) -> Prediction:
    return Prediction(
        request_id=f"r{i}", model=f"m{rng.randrange(models)}", model_version=f"v{rng.randrange(versions)}",
        ts=1.0, prediction="1", scores=None, score_pred=None, score_max=None, entropy=None,
        latency_seconds=awkward_latency(rng), status=rng.choice(["ok", "ok", "error"]),
        slices=None, features=None, schema_version=1, digest="d",
    )


@pytest.mark.parametrize("seed", range(6))
def test_bulk_histogram_observation_equals_observe_one_by_one(seed: int) -> None:
    rng = random.Random(seed)
    values = [awkward_latency(rng) for _ in range(500)]
    values = [v for v in values if v is not None]
    bulk, one = CollectorRegistry(), CollectorRegistry()
    for registry, observe_all in ((bulk, True), (one, False)):
        h = Histogram("h", "h", ["m"], buckets=BOUNDS, registry=registry).labels("a")
        for part in (values[:200], values[200:]):
            if observe_all:
                _observe_all(h, part)
            else:
                for v in part:
                    h.observe(v)
    same(bulk, one)


@pytest.mark.parametrize(("seed", "cap"), [(0, 200), (1, 5), (2, 3), (3, 1)])
def test_batches_count_as_event_by_event_calls(seed: int, cap: int) -> None:
    """Several batches, series cap reached mid-batch: the same series, folded the same way."""
    rng = random.Random(seed)
    bulk_registry, one_registry = CollectorRegistry(), CollectorRegistry()
    bulk = IngestMetrics(bulk_registry, BOUNDS, max_model_series=cap)
    one = IngestMetrics(one_registry, BOUNDS, max_model_series=cap)
    n = 0
    for _ in range(5):
        preds = [prediction(rng, n + i, models=4, versions=3) for i in range(rng.randrange(0, 300))]
        fbs = [Feedback(request_id=f"f{n + i}", model=f"k{rng.randrange(6)}", label="1", ts=1.0,
                        schema_version=1, digest="d") for i in range(rng.randrange(0, 100))]
        n += 1000
        bulk.observe_predictions(preds, "T")
        bulk.observe_feedback(fbs, "T")
        reference(one, preds, fbs, "T")
        same(bulk_registry, one_registry)
