"""Acceptance (issue 10): dead letters replayed after a fix are stored exactly once.

Events stamped two hours ahead are dead-lettered by ingest under the default
`ingest.max_future_skew` (1h); the "fix" relaxes it to a day. `modelmon
deadletters replay` must then store every whole payload once (checked against
the test's own record of what was sent: request ids and content digests), label
the predictions with the replayed feedback, keep the rollups equal to the raw
rows, report what stays invalid and what was truncated, and store nothing on a
second run, marked or not.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from cli_run import modelmon
from conftest import count, encode, make_config, producer, running, send_all, wait_for, write_config
from store.rollup_check import INGEST_MODELS, assert_rollups_match_raw

from modelmon.config import Config
from modelmon.ingest.replay import Selection, replay

PAYLOAD_LIMIT = 600  # ingest.dead_letter_payload_bytes in this test: one payload exceeds it


def sent_digest(obj: dict[str, Any]) -> str:
    """The documented content digest, computed here: SHA-256 of the JSON, keys sorted."""
    canonical = json.dumps(obj, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def stored(engine: sa.Engine, table: str, *columns: str) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(
            f"SELECT {', '.join(columns)} FROM {table} ORDER BY request_id"))]


def test_dead_letters_replayed_after_a_fix_are_stored_exactly_once(
    kafka_bootstrap: str, kafka_topics: Callable[..., str], store: sa.Engine, db_url: str,
    tmp_path: Path,
) -> None:
    now = time.time()
    ahead = now + 2 * 3600  # refused under the default skew of 1 h, fine under 1 day
    on_time = [{"request_id": f"g{i}", "model": "m", "timestamp": now - 100 + i,
                "prediction": i % 3, "latency_ms": 10 + i, "slices": {"region": "eu"}}
               for i in range(20)]
    future = [{"request_id": f"f{i}", "model": "m", "timestamp": ahead + i, "prediction": i % 3,
               "scores": {"0": 0.2, "1": 0.3, "2": 0.5}, "latency_ms": i,
               "slices": {"region": ("eu", "us")[i % 2]}} for i in range(30)]
    future[-1]["features"] = {"blob": "z" * 2 * PAYLOAD_LIMIT}  # kept truncated: not replayable
    labels = [{"request_id": f"f{i}", "model": "m", "timestamp": ahead + 60 + i,
               "label": str((i * 7 + 1) % 3)} for i in range(10)]
    broken = [b'{"request_id": "x", oops', b"[1, 2]", b'{"model": "m"}']

    preds_topic, fb_topic = kafka_topics("preds", 1), kafka_topics("fb", 1)
    prod = producer(kafka_bootstrap)
    send_all(prod, preds_topic, [encode(e) for e in on_time + future] + broken)
    send_all(prod, fb_topic, [encode(e) for e in labels])
    prod.close()
    raw = make_config(kafka_bootstrap, db_url, preds_topic, fb_topic, f"g-{preds_topic}",
                      dead_letter_payload_bytes=PAYLOAD_LIMIT)
    strict = Config.model_validate({**raw, "models": INGEST_MODELS})
    n_dead = len(future) + len(labels) + len(broken)
    with running(strict, store) as service:
        wait_for(lambda: service.stored >= len(on_time) and count(store, "dead_letters") >= n_dead,
                 60, "on-time events stored and the rest dead-lettered")
    assert count(store, "predictions") == len(on_time) and count(store, "feedback") == 0
    with store.connect() as conn:
        letters = conn.execute(sa.text(
            "SELECT reason, payload, payload_bytes, payload_truncated FROM dead_letters "
            "ORDER BY id")).all()
    assert Counter(r.reason for r in letters) == {
        "timestamp_in_future": len(future) + len(labels), "invalid_json": 1, "not_an_object": 1,
        "missing_field": 1}
    whole = [r for r in letters if not r.payload_truncated]
    (cut,) = [r for r in letters if r.payload_truncated]
    kept = sorted(bytes(r.payload) for r in whole if r.reason == "timestamp_in_future")
    assert kept == sorted(encode(e) for e in future[:-1] + labels)  # whole, byte for byte
    assert len(cut.payload) == PAYLOAD_LIMIT < cut.payload_bytes == len(encode(future[-1]))

    # Before the fix: replaying changes nothing and marks nothing.
    before = replay(store, strict, batch_size=16)
    assert (before.replayed, before.stored, before.truncated) == (0, 0, 1)
    assert before.still_invalid["timestamp_in_future"] == len(future) - 1 + len(labels)
    assert count(store, "predictions") == len(on_time)

    fixed = Config.model_validate({**raw, "ingest": {**raw["ingest"], "max_future_skew": "1d"},
                                   "models": INGEST_MODELS})
    dry = replay(store, fixed, dry_run=True)
    assert dry.replayed == len(future) - 1 + len(labels)
    assert count(store, "predictions") == len(on_time)  # a dry run writes nothing

    report = replay(store, fixed, batch_size=16)  # several bounded batches
    replayable = future[:-1]
    assert report.selected == n_dead and report.truncated == 1
    assert report.replayed == report.stored == len(replayable) + len(labels)
    assert (report.duplicates, report.conflicts) == (0, 0)
    assert report.still_invalid == {"invalid_json": 1, "not_an_object": 1, "missing_field": 1}

    expected = sorted((e["request_id"], sent_digest(e)) for e in on_time + replayable)
    assert stored(store, "predictions", "request_id", "digest") == expected
    assert stored(store, "feedback", "request_id", "label", "digest") == sorted(
        (e["request_id"], e["label"], sent_digest(e)) for e in labels)
    with store.connect() as conn:
        joined = dict(conn.execute(sa.text(
            "SELECT request_id, label FROM predictions WHERE label IS NOT NULL")).all())
        marked = conn.execute(sa.text(
            "SELECT count(*) FROM dead_letters WHERE replayed_at IS NOT NULL")).scalar()
    assert joined == {e["request_id"]: e["label"] for e in labels}
    assert marked == len(replayable) + len(labels)
    assert_rollups_match_raw(store, fixed)
    snapshot = stored(store, "predictions", "request_id", "digest", "label")

    # A rerun from the command line skips what was replayed: nothing stored again.
    config_file = write_config(tmp_path, {**raw, "ingest": {**raw["ingest"], "max_future_skew": "1d"},
                                          "models": INGEST_MODELS})
    rerun = modelmon("-c", str(config_file), "deadletters", "replay")
    assert rerun.returncode == 0, rerun.stderr
    unmarked = n_dead - marked
    assert f"replayed 0 of {unmarked} dead letters: 0 stored" in rerun.stdout
    listing = modelmon("-c", str(config_file), "deadletters", "list", "--reason",
                       "timestamp_in_future", "--limit", "100")
    assert listing.returncode == 0, listing.stderr
    assert listing.stdout.count(" replayed ") == marked and listing.stdout.count(" truncated ") == 1

    # Even with the marks cleared, replaying again only finds duplicates.
    with store.begin() as conn:
        conn.execute(sa.text("UPDATE dead_letters SET replayed_at = NULL"))
    again = replay(store, fixed, Selection(reason="timestamp_in_future"))
    assert (again.replayed, again.stored, again.conflicts) == (marked, 0, 0)
    assert again.duplicates == marked
    assert stored(store, "predictions", "request_id", "digest", "label") == snapshot
    assert_rollups_match_raw(store, fixed)
