"""Rollups kept by write_batch and reconcile_labels equal GROUP BYs over the raw rows.

Every path by which a prediction or a label reaches the store (late feedback,
early feedback, both in one batch, redelivery, conflicting duplicates, the
reconcile pass) is followed by the independent check of `rollup_check`, on
SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import pytest
import sqlalchemy as sa
from store.rollup_check import (
    T0,
    assert_rollups_match_raw,
    feedback_obj,
    prediction_obj,
    rollup_config,
    stored_rollups,
)

from modelmon.config import Config
from modelmon.contract import Feedback, Prediction, parse_feedback, parse_prediction
from modelmon.store.engine import make_engine
from modelmon.store.migrate import upgrade
from modelmon.store.rollups import Specs
from modelmon.store.tables import feedback as feedback_t
from modelmon.store.writes import BatchOutcome, Position, reconcile_labels, write_batch

N = 240
CFG = rollup_config()


@pytest.fixture
def engine(db_url: str) -> Iterator[sa.Engine]:
    eng = make_engine(db_url)
    upgrade(eng)
    yield eng
    eng.dispose()


def preds(ids: Sequence[int], model: str = "m", **extra: Any) -> list[Prediction]:
    return [parse_prediction(prediction_obj(i, model, **extra)) for i in ids]


def fbs(ids: Sequence[int], model: str = "m", **extra: Any) -> list[Feedback]:
    return [parse_feedback(feedback_obj(i, model, **extra)) for i in ids]


def write(
    engine: sa.Engine, p: Sequence[Prediction] = (), f: Sequence[Feedback] = (),
    cfg: Config = CFG, batch: int = 50,
) -> BatchOutcome:
    """Write in batches of `batch` events (predictions and feedback interleaved by index)."""
    specs = Specs(cfg)
    total = BatchOutcome()
    for start in range(0, max(len(p), len(f)), batch):
        with engine.begin() as conn:
            total.merge(write_batch(
                conn,
                [(x, Position("preds", 0, start + n)) for n, x in enumerate(p[start:start + batch])],
                [(x, Position("fb", 0, start + n)) for n, x in enumerate(f[start:start + batch])],
                [], now=T0 + 5000, specs=specs,
            ))
    return total


def labelled_ids() -> list[int]:
    return [i for i in range(N) if i % 4 != 3]


def test_predictions_then_late_feedback(engine: sa.Engine) -> None:
    write(engine, preds(range(N)) + preds(range(N // 2), "n"))
    stored = assert_rollups_match_raw(engine, CFG)
    assert stored["rollup_slices"] and stored["rollup_latency_good"] and stored["rollup_sketches"]
    assert not any(k[0] == "n" for k in stored["rollup_slices"])  # no positive class, no slices
    out = write(engine, f=fbs(labelled_ids()) + fbs(range(0, N // 2, 2), "n"))
    assert out.labels_joined == len(labelled_ids()) + N // 4
    stored = assert_rollups_match_raw(engine, CFG)
    assert stored["rollup_calibration"]
    assert any(k[-2] == "delay" for k in stored["rollup_sketches"])
    assert_rollups_match_raw(engine, CFG, model="m")


def test_feedback_before_its_prediction(engine: sa.Engine) -> None:
    write(engine, f=fbs(labelled_ids()))
    assert stored_rollups(engine)["rollup_requests"] == {}  # feedback alone counts nothing
    out = write(engine, preds(range(N)))
    assert out.labels_joined == len(labelled_ids())
    assert_rollups_match_raw(engine, CFG)


def test_prediction_and_feedback_in_one_batch(engine: sa.Engine) -> None:
    # Some feedback earlier, some in the same batch as its prediction, some later.
    early, same, late = labelled_ids()[::3], labelled_ids()[1::3], labelled_ids()[2::3]
    write(engine, f=fbs(early))
    out = write(engine, preds(range(N)), fbs(same), batch=N)
    assert out.labels_joined == len(early) + len(same)
    assert_rollups_match_raw(engine, CFG)
    write(engine, f=fbs(late))
    assert_rollups_match_raw(engine, CFG)


def test_a_redelivered_batch_counts_nothing_twice(engine: sa.Engine) -> None:
    p, f = preds(range(N)), fbs(labelled_ids())
    write(engine, p[: N // 2], f[: len(f) // 2])
    write(engine, p[N // 2 :], f[len(f) // 2 :])
    before = assert_rollups_match_raw(engine, CFG)
    again = write(engine, p, f)  # everything redelivered, in other batches
    assert (again.predictions_stored, again.feedback_stored, again.conflicts) == (0, 0, 0)
    assert again.labels_joined == 0
    assert stored_rollups(engine) == before
    write(engine, p[:10] + p[:10], f[:10] + f[:10], batch=40)  # repeated within one batch too
    assert stored_rollups(engine) == before


def test_a_conflicting_duplicate_is_not_counted(engine: sa.Engine) -> None:
    write(engine, preds(range(N)))
    before = assert_rollups_match_raw(engine, CFG)
    # Same keys, other content (another time bucket, class, latency, version, slices).
    other = [parse_prediction({**prediction_obj(i), "timestamp": T0 + 90_000, "prediction": "1",
                               "latency_ms": 5, "model_version": "v9",
                               "slices": {"region": "mars"}}) for i in range(0, N, 3)]
    out = write(engine, other)
    assert out.conflicts == len(other) and out.predictions_stored == 0
    assert stored_rollups(engine) == before
    # Feedback for the conflicting requests labels the first-stored prediction, once.
    ids = list(range(0, N, 3))
    out = write(engine, f=fbs(ids))
    assert out.labels_joined == len(ids)
    after = assert_rollups_match_raw(engine, CFG)
    # A conflicting feedback (another label) changes nothing either.
    out = write(engine, f=[parse_feedback({**feedback_obj(i), "label": "0" if feedback_obj(i)["label"] == "1" else "1"})
                           for i in ids])
    assert out.conflicts == len(ids) and out.labels_joined == 0
    assert stored_rollups(engine) == after
    write(engine, other)  # the conflict redelivered
    assert stored_rollups(engine) == after


def test_reconcile_labels_moves_the_rollups(engine: sa.Engine) -> None:
    """Feedback stored by a transaction that did not see its prediction (inserted here
    directly, as a concurrent writer would have) is joined by reconcile_labels."""
    write(engine, preds(range(N)) + preds(range(40), "n"))
    missed = labelled_ids()[: N // 2] + [1000]  # 1000: feedback with no prediction
    rows = [
        {"model": f.model, "request_id": f.request_id, "label": f.label, "ts": f.ts,
         "source": "kafka", "digest": f.digest, "ingested_at": T0 + 6000}
        for f in fbs(missed) + fbs(range(0, 40, 3), "n")
    ]
    with engine.begin() as conn:
        conn.execute(feedback_t.insert(), rows)
    before = assert_rollups_match_raw(engine, CFG)  # unlabelled in both
    with engine.begin() as conn:
        n = reconcile_labels(conn, T0 + 5999, Specs(CFG))
    assert n == len(missed) - 1 + len(range(0, 40, 3))
    after = assert_rollups_match_raw(engine, CFG)
    assert after["rollup_classes"] != before["rollup_classes"]
    assert len(after["rollup_calibration"]) > len(before["rollup_calibration"])
    with engine.begin() as conn:
        assert reconcile_labels(conn, T0, Specs(CFG)) == 0  # idempotent
    assert stored_rollups(engine) == after
    write(engine, f=fbs(labelled_ids()[N // 2 :]))  # the rest through write_batch
    assert_rollups_match_raw(engine, CFG)


def test_slice_values_over_the_cap_pool_as_other(engine: sa.Engine) -> None:
    cfg = rollup_config(
        rollups={"fine": "60s", "coarse": "10m", "slice_values_max": 2},
        models={"m": {"positive_class": "1", "slices": ["region"]}},
    )
    regions = ["eu", "us", "eu", "apac", "us", "apac"]  # apac comes third
    p = [parse_prediction({**prediction_obj(i), "slices": {"region": regions[i % 6]}})
         for i in range(N)]
    f = fbs(labelled_ids())
    late, early = f[: len(f) // 2], f[len(f) // 2 :]
    write(engine, f=[x for x in early if int(x.request_id[1:]) % 6 in (3, 5)], cfg=cfg)
    write(engine, p[:3], cfg=cfg)  # eu, us admitted
    write(engine, p[3:], f=late, cfg=cfg)
    write(engine, f=early, cfg=cfg)
    kept = {("m", "region"): {"eu", "us"}}
    stored = assert_rollups_match_raw(engine, cfg, admitted=kept)
    assert {k[5] for k in stored["rollup_slices"]} == {"eu", "us", "__other__"}
    other = [v for k, v in stored["rollup_slices"].items() if k[5] == "__other__"]
    assert sum(v["n"] for v in other) > 0 and sum(v["labelled"] for v in other) > 0
    with engine.connect() as conn:
        admitted = set(conn.execute(sa.text("SELECT value FROM slice_values")).scalars())
    assert admitted == {"eu", "us"}


@pytest.mark.parametrize("tamper", [
    "UPDATE rollup_requests SET n = n + 1 WHERE bucket = (SELECT min(bucket) FROM rollup_requests)",
    "UPDATE rollup_requests SET sum_max = sum_max * (1 + 1e-6)",
    "UPDATE rollup_classes SET n = n + 1 WHERE label <> ''",
    "DELETE FROM rollup_calibration WHERE bin = 1",
    "UPDATE rollup_slices SET tp = tp + 1 WHERE value = 'eu'",
    "UPDATE rollup_latency_good SET good = good - 1 WHERE good > 1",
    "UPDATE rollup_sketches SET \"key\" = \"key\" + 1 WHERE kind = 'delay'",
    "INSERT INTO rollup_classes VALUES ('m', 60, 0, 'v1', '0', '1', 1)",
])
def test_the_check_catches_a_wrong_rollup_row(engine: sa.Engine, tamper: str) -> None:
    write(engine, preds(range(N)), fbs(labelled_ids()))
    assert_rollups_match_raw(engine, CFG)
    with engine.begin() as conn:
        # A zero-count row is absent to the check, whatever its key.
        conn.execute(sa.text("INSERT INTO rollup_classes VALUES ('m', 60, 0, 'v1', 'x', '', 0)"))
    assert_rollups_match_raw(engine, CFG)
    with engine.begin() as conn:
        assert conn.execute(sa.text(tamper)).rowcount > 0
    with pytest.raises(AssertionError, match="rollups differ"):
        assert_rollups_match_raw(engine, CFG)
