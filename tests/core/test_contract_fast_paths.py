"""The contract's fast paths give what its general functions give, bit for bit.

`decode_prediction` / `decode_feedback` take shortcuts for the common case: one
or two class scores, labels and class names handled inline (`_scored`,
`_label`), and msgspec's text told canonical from the values of the numbers
instead of a scan of the text (`_checked_digest`). Each test crafts events for
the shortcut and for the general path, and compares with the general functions
(`scores_of`, `score_summary`, `label_of`, `latency_of`, `parse_timestamp`)
and with `digest` of the json module's decoding: floats by their bits.
"""

from __future__ import annotations

import gc
import json
import math
import pickle
import random
import struct
from typing import Any

import msgspec
import pytest

from modelmon import contract
from modelmon.contract import (
    ContractError,
    decode_feedback,
    decode_prediction,
    digest,
    label_of,
    latency_of,
    parse_feedback,
    parse_prediction,
    parse_timestamp,
    score_summary,
    scores_of,
)
from modelmon.store.writes import Position

MAX = 1 << 20
NAMES = ["0", "1", " 1", "1 ", "true", "TRUE", " False", "false\t", "cat", "Cat", "dog", " ", "", "x" * 256]
PREDICTED = ["0", "1", "cat", "dog", "other"]


def bits(x: float | None) -> bytes | None:
    """A float as its 8 bytes: 0.0 and -0.0, or two floats one ulp apart, differ."""
    return None if x is None else struct.pack("<d", x)


def refusal(fn: Any, *args: Any) -> tuple[Any, ...]:
    try:
        return ("ok", fn(*args))
    except ContractError as exc:
        return ("refused", exc.reason, exc.detail)


def general_scores(value: dict[str, Any], predicted: str) -> tuple[Any, ...]:
    """scores_of + score_summary (the general functions), floats as bits."""
    out = refusal(scores_of, value)
    if out[0] != "ok":
        return out
    scores = out[1]
    return ("ok", [(k, bits(p)) for k, p in scores.items()], *map(bits, score_summary(scores, predicted)))


def fast_scores(value: dict[str, Any], predicted: str) -> tuple[Any, ...]:
    out = refusal(contract._scored, value, predicted)
    if out[0] != "ok":
        return out
    scores, score_pred, top, entropy = out[1]
    return ("ok", [(k, bits(p)) for k, p in scores.items()], bits(score_pred), bits(top), bits(entropy))


def probability(rng: random.Random) -> float | int:
    return rng.choice([
        0, 1, 0.0, -0.0, 1.0, 0.5, 5e-324, 1e-4, math.nextafter(1e-4, 0), 1e-300, 1 - 1e-16,
        rng.random(), round(rng.random(), 3), rng.random() ** 8,
    ])


def random_scores(rng: random.Random) -> dict[str, float | int]:
    n = rng.choice([1, 2, 2, 2, 3])
    if n == 2 and rng.random() < 0.6:  # a proper binary model: p and 1 - p, perhaps a hair above 1
        p = rng.random()
        q = 1 - p + rng.choice([0.0, 0.0, 1e-6, 1.0000001e-6, 2e-6, -1e-9])
        return {rng.choice(NAMES): p, rng.choice(NAMES): min(max(q, 0.0), 1.0)}
    if n == 3 and rng.random() < 0.6:  # a proper multi-class model
        weights = [rng.random() for _ in range(3)]
        names = rng.sample(["0", "1", "cat", " dog", "e"], 3)
        return {name: w / sum(weights) for name, w in zip(names, weights, strict=True)}
    return {rng.choice(NAMES): probability(rng) for _ in range(n)}


def test_scores_match_the_general_functions_bit_for_bit() -> None:
    rng = random.Random(11)
    taken = {"fast": 0, "general": 0, "refused": 0}
    for _ in range(20_000):
        value, predicted = random_scores(rng), rng.choice(PREDICTED)
        expected = general_scores(value, predicted)
        assert fast_scores(value, predicted) == expected, (value, predicted)
        if expected[0] == "refused":
            taken["refused"] += 1
        else:
            taken["fast" if len(value) <= 2 else "general"] += 1
    assert min(taken.values()) >= 1000, taken


@pytest.mark.parametrize("value", [
    {"1": 0.5, " 1": 0.5},  # twins after normalisation
    {"true": 0.2, "1": 0.3},
    {"0": 0.6, "1": 0.4000011},  # sums above 1 + 1e-6
    {" ": 0.5, "1": 0.5},  # a blank class name
    {" ": 0.5},
    {"0": 0.0, "1": 0.0},  # no mass: no entropy
    {"0": -0.0},
    {"0": 1, "1": 0},
    {"a": 0.2, "b": 0.3, "c": 0.5},
])
@pytest.mark.parametrize("predicted", ["0", "1", "a"])
def test_unusual_scores_take_the_general_path(value: dict[str, Any], predicted: str) -> None:
    assert fast_scores(value, predicted) == general_scores(value, predicted)


def test_class_names_stay_right_once_the_memo_is_full() -> None:
    for i in range(contract._MAX_CLASS_NAMES + 500):
        value = {f"c{i}": 0.25, f" TRUE{i} ": 0.75}
        assert fast_scores(value, f"c{i}") == general_scores(value, f"c{i}")
    assert len(contract._CLASS_NAMES) <= contract._MAX_CLASS_NAMES


@pytest.mark.parametrize("value", [
    0, 1, -3, 10**30, 10**300, True, False, "1", " cat ", "TRUE", " false ", "yes", "", "  ", "x" * 256,
])
def test_labels_match_label_of(value: Any) -> None:
    assert refusal(contract._label, value, "label") == refusal(label_of, value, "label")


# -- whole events against the general functions -----------------------------------

def reference_prediction(obj: dict[str, Any]) -> tuple[Any, ...]:
    """What the general functions make of a decoded prediction, floats as bits."""
    predicted = label_of(obj["prediction"], "prediction")
    scores = scores_of(obj.get("scores"))
    summary = score_summary(scores, predicted)
    return (
        obj["request_id"], obj["model"], obj.get("model_version") or "unknown",
        bits(parse_timestamp(obj["timestamp"])), predicted,
        None if scores is None else [(k, bits(p)) for k, p in scores.items()],
        *map(bits, summary), bits(latency_of(obj.get("latency_ms"))), obj.get("status") or "ok",
        obj.get("slices") or None, obj.get("features") or None, obj.get("schema_version") or 1, digest(obj),
    )


def as_tuple(p: contract.Prediction) -> tuple[Any, ...]:
    return (
        p.request_id, p.model, p.model_version, bits(p.ts), p.prediction,
        None if p.scores is None else [(k, bits(v)) for k, v in p.scores.items()],
        bits(p.score_pred), bits(p.score_max), bits(p.entropy), bits(p.latency_seconds), p.status,
        p.slices, p.features, p.schema_version, p.digest,
    )


def random_prediction(i: int, rng: random.Random) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "request_id": rng.choice([f"req-{i}", f"v1e5-{i}", f"10.00005-{i}", f"caf\u00e9-{i}", f"del\x7f{i}"]),
        "model": "m", "prediction": rng.choice([0, 1, True, "cat", " 1 ", "FALSE"]),
        "timestamp": rng.choice([1_790_000_000 + rng.random(), 1_790_000_000, 0.0, 5e-5, 1e-4,
                                 "2026-11-23T10:00:00.250Z"]),
    }
    optional: dict[str, Any] = {
        "model_version": rng.choice(["v7", None]),
        "scores": rng.choice([random_scores(rng), None]),
        "latency_ms": rng.choice([round(rng.expovariate(1 / 20), 3), 0, 0.0, 2e-5, 1e16, 3e15, 10**20, None]),
        "status": rng.choice(["ok", "error", None]),
        "slices": rng.choice([{"region": "eu"}, {}, None]),
        "features": rng.choice([{"x": 1e-7}, {"x": 1.5}, {}, None]),
        "schema_version": rng.choice([1, None]),
    }
    obj.update({k: v for k, v in optional.items() if rng.random() < 0.7})
    return obj


@pytest.fixture
def scans(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The texts the digest scanned (`_canonical`); none when it decided by the values alone."""
    seen: list[bytes] = []
    canonical = contract._canonical
    monkeypatch.setattr(contract, "_canonical", lambda data: seen.append(data) or canonical(data))
    return seen


def test_predictions_match_the_general_functions(scans: list[bytes]) -> None:
    """Valid events: every field and the digest; refused ones: the two-step outcome."""
    rng = random.Random(5)
    valid = by_value = 0
    for i in range(4000):
        obj = random_prediction(i, rng)
        raw = json.dumps(obj, ensure_ascii=False).encode()
        before = len(scans)
        got = refusal(decode_prediction, raw, MAX)
        scanned = len(scans) > before
        two_step = refusal(parse_prediction, json.loads(raw))
        if two_step[0] == "refused":
            assert got == two_step, raw
            continue
        assert as_tuple(got[1]) == reference_prediction(json.loads(raw)), raw
        valid += 1
        by_value += not scanned  # the digest's text was never scanned
    assert 500 <= by_value <= valid - 500, (by_value, valid)  # both ways to the digest were taken


@pytest.mark.parametrize(("changes", "scanned"), [
    ({}, False),
    ({"request_id": "v1e5-10.00005"}, False),  # looks like exotic floats to the text scan
    ({"features": {"f": 1}}, True),
    ({"scores": {"0": 0, "1": 1}}, True),  # a probability of 0
    ({"timestamp": 5e-5}, True),
    ({"latency_ms": 1e16}, True),
    ({"latency_ms": 2e-5}, True),
    ({"model_version": "v\x7f"}, True),
    ({"model_version": "caf\u00e9"}, True),
])
def test_each_way_to_the_digest(scans: list[bytes], changes: dict[str, Any], scanned: bool) -> None:
    obj = {"request_id": "r", "model": "m", "timestamp": 1_790_000_000.25, "prediction": 1,
           "scores": {"0": 0.25, "1": 0.75}, "latency_ms": 12.5, **changes}
    raw = json.dumps(obj, ensure_ascii=False).encode()
    assert decode_prediction(raw, MAX).digest == digest(json.loads(raw))
    assert bool(scans) == scanned


def test_the_float_rule_of_the_digest() -> None:
    """Floats that are 0 or in [1e-4, 1e16) are written by msgspec exactly as by the json module."""
    rng = random.Random(3)
    edges = [0.0, -0.0, 1e-4, math.nextafter(1e-4, 1), math.nextafter(1e16, 0), 9999999999999998.0, 1.0, 0.1]
    checked = 0
    for x in edges + [10 ** rng.uniform(-4, 16) for _ in range(100_000)]:
        for v in (x, -x):
            if v == 0 or 1e-4 <= abs(v) < 1e16:
                assert msgspec.json.encode(v) == json.dumps(v).encode(), v
                checked += 1
    assert checked > 190_000
    outside = [math.nextafter(1e-4, 0), 1e16, 5e-5]
    assert all(msgspec.json.encode(v) != json.dumps(v).encode() for v in outside)


def test_feedback_matches_the_general_functions(scans: list[bytes]) -> None:
    rng = random.Random(9)
    by_value = valid = 0
    for i in range(2000):
        obj = {"request_id": rng.choice([f"r{i}", f"v1e5-{i}", f"caf\u00e9{i}"]), "model": "m",
               "label": rng.choice([0, 1, True, " cat ", "TRUE", "", 10**300]),
               "timestamp": rng.choice([1_790_000_000 + rng.random(), 5e-5, 0.0, "2026-11-23T10:00:00Z"])}
        raw = json.dumps(obj, ensure_ascii=False).encode()
        before = len(scans)
        got = refusal(decode_feedback, raw, MAX)
        scanned = len(scans) > before
        two_step = refusal(parse_feedback, json.loads(raw))
        if two_step[0] == "refused":
            assert got == two_step, raw
            continue
        f = got[1]
        assert (f.request_id, f.model, f.label, bits(f.ts), f.schema_version, f.digest) == (
            obj["request_id"], "m", label_of(obj["label"], "label"), bits(parse_timestamp(obj["timestamp"])), 1,
            digest(obj)), raw
        valid += 1
        by_value += not scanned
    assert 300 <= by_value <= valid - 300, (by_value, valid)


# -- what a batch keeps per event ---------------------------------------------------

def test_positions_and_events_are_plain_untracked_values() -> None:
    """Kept by the thousand per batch: not traversed by the garbage collector, yet values as before."""
    position = Position("t", 3, 42)
    assert (position.topic, position.partition, position.offset, position.source) == ("t", 3, 42, None)
    assert position == Position("t", 3, 42, None) != Position("t", 3, 42, "http")
    assert hash(position) == hash(Position("t", 3, 42))
    assert pickle.loads(pickle.dumps(position)) == position
    with pytest.raises(AttributeError):
        position.offset = 1  # type: ignore[misc]
    pred = decode_prediction(b'{"request_id":"r","model":"m","timestamp":1,"prediction":1}', MAX)
    fb = decode_feedback(b'{"request_id":"r","model":"m","timestamp":1,"label":1}', MAX)
    assert not any(gc.is_tracked(x) for x in (position, pred, fb))
    assert pickle.loads(pickle.dumps(pred)) == pred
