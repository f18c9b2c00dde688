"""`rebuild` and `modelmon rollups rebuild`: recount from the raw rows after a config change.

A rebuild under a new configuration must give what ingest would have written
under it from the start; it replaces only the buckets from `since` on, is
idempotent and resumable, and never starts before the raw rows retention kept.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml
from store.rollup_check import (
    ROLLUP_CONFIG,
    T0,
    Rows,
    assert_rollups_match_raw,
    diff_rollups,
    expected_rollups,
    feedback_obj,
    prediction_obj,
    raw_predictions,
    rollup_config,
    stored_rollups,
)

from modelmon.cli import main
from modelmon.config import Config
from modelmon.contract import parse_feedback, parse_prediction
from modelmon.store.engine import make_engine
from modelmon.store.migrate import upgrade
from modelmon.store.rebuild import RebuildReport, rebuild
from modelmon.store.rollups import Specs
from modelmon.store.tables import retention_marks
from modelmon.store.writes import write_batch

N = 240
COARSE = 600  # ROLLUP_CONFIG's rollups.coarse
OLD = rollup_config(models={"m": {**ROLLUP_CONFIG["models"]["m"], "slices": ["region"]}})
NEW = rollup_config()  # slices region and sex


def _engine(url: str) -> sa.Engine:
    eng = make_engine(url)
    upgrade(eng)
    return eng


@pytest.fixture
def engine(db_url: str) -> Iterator[sa.Engine]:
    eng = _engine(db_url)
    yield eng
    eng.dispose()


@pytest.fixture
def fresh_engine(db_url: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sa.Engine]:
    """A second, empty store of the same kind as `engine`."""
    if db_url.startswith("sqlite"):
        eng = _engine(f"sqlite:///{tmp_path}/fresh.db")
        yield eng
        eng.dispose()
        return
    server = request.getfixturevalue("pg_server")
    name = f"modelmon_{uuid.uuid4().hex[:12]}"
    server.create_database(name)
    eng = _engine(server.url(name))
    try:
        yield eng
    finally:
        eng.dispose()
        server.drop_database(name)


def feed(engine: sa.Engine, cfg: Config, n: int = N) -> None:
    """Predictions of models m and n with feedback for most, some before, some after."""
    specs = Specs(cfg)
    p = [parse_prediction(prediction_obj(i, m)) for m in ("m", "n") for i in range(n)]
    f = [parse_feedback(feedback_obj(i, m)) for m in ("m", "n") for i in range(n) if i % 4 != 3]
    early, late = f[::2], f[1::2]
    for batch in (([], early), (p[: len(p) // 2], late[:10]), (p[len(p) // 2 :], []), ([], late)):
        with engine.begin() as conn:
            write_batch(conn, [(x, None) for x in batch[0]], [(x, None) for x in batch[1]], [],
                        now=T0 + 9000, specs=specs)


def by_bucket(stored: dict[str, Rows], before: float | None = None, since: float | None = None,
              model: str | None = None) -> dict[str, Rows]:
    """The rows with bucket < before / >= since (and of one model)."""
    return {
        name: {k: v for k, v in rows.items()
               if (before is None or k[2] < before) and (since is None or k[2] >= since)
               and (model is None or k[0] == model)}
        for name, rows in stored.items()
    }


def test_rebuild_after_adding_a_slice_attribute_equals_a_fresh_store(
    engine: sa.Engine, fresh_engine: sa.Engine
) -> None:
    feed(engine, OLD)
    assert not any(k[4] == "sex" for k in stored_rollups(engine)["rollup_slices"])
    reports = [rebuild(engine, Specs(NEW), model, chunk_seconds=COARSE) for model in ("m", "n")]
    assert all(r.chunks >= 5 for r in reports) and sum(r.rows for r in reports) == 2 * N
    feed(fresh_engine, NEW)
    rebuilt, fresh = stored_rollups(engine), stored_rollups(fresh_engine)
    assert any(k[4] == "sex" for k in rebuilt["rollup_slices"])
    assert diff_rollups(fresh, rebuilt) == [] and diff_rollups(rebuilt, fresh) == []
    assert_rollups_match_raw(engine, NEW)


def test_rebuild_since_leaves_earlier_buckets_and_is_idempotent(engine: sa.Engine) -> None:
    feed(engine, OLD)
    old = stored_rollups(engine)
    since = T0 + N * 13.7 / 2
    start = math.floor(since / COARSE) * COARSE
    seen: list[RebuildReport] = []
    r = rebuild(engine, Specs(NEW), "m", since=since, chunk_seconds=COARSE,
                progress=lambda rep: seen.append(RebuildReport(**{
                    f: getattr(rep, f) for f in ("model", "start", "end", "chunks", "rows")})))
    assert r.start == start and len(seen) == r.chunks >= 2
    assert [s.end for s in seen] == [start + COARSE * (k + 1) for k in range(r.chunks)]
    assert seen[-1].rows == r.rows == int((raw_predictions(engine, "m")["ts"] >= start).sum())
    once = stored_rollups(engine)
    # Earlier buckets, and the other model, exactly as they were.
    assert by_bucket(once, before=start) == by_bucket(old, before=start)
    assert by_bucket(once, model="n") == by_bucket(old, model="n")
    # From `since` on: what the new configuration counts.
    want = by_bucket(expected_rollups(raw_predictions(engine, "m"), NEW), since=start)
    assert diff_rollups(want, by_bucket(once, since=start, model="m")) == []
    assert any(k[4] == "sex" for k in by_bucket(once, since=start)["rollup_slices"])
    assert not any(k[4] == "sex" for k in by_bucket(once, before=start)["rollup_slices"])
    rebuild(engine, Specs(NEW), "m", since=since, chunk_seconds=COARSE)
    twice = stored_rollups(engine)
    assert diff_rollups(once, twice) == [] and diff_rollups(twice, once) == []
    assert by_bucket(twice, before=start) == by_bucket(old, before=start)


def test_an_interrupted_rebuild_resumes_from_the_last_chunk_reported(engine: sa.Engine) -> None:
    feed(engine, OLD)
    done: list[float] = []

    def stop_after_two(rep: RebuildReport) -> None:
        done.append(rep.end or 0.0)
        if rep.chunks == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        rebuild(engine, Specs(NEW), "m", chunk_seconds=COARSE, progress=stop_after_two)
    rebuild(engine, Specs(NEW), "m", since=done[-1], chunk_seconds=COARSE)
    assert_rollups_match_raw(engine, NEW, model="m")


def test_rebuild_starts_at_the_first_whole_coarse_bucket_after_the_retention_mark(
    engine: sa.Engine,
) -> None:
    feed(engine, OLD)
    old = stored_rollups(engine)
    mark = T0 + 1000.5  # inside a coarse bucket
    first_whole = math.ceil(mark / COARSE) * COARSE
    assert first_whole > mark
    with engine.begin() as conn:  # what retention does: delete raw rows, record the mark
        conn.execute(sa.text("DELETE FROM predictions WHERE ts < :t"), {"t": mark})
        conn.execute(retention_marks.insert().values(table_name="predictions", before=mark,
                                                     updated_at=T0 + 9000))
    for since in (None, T0 - 5000, mark):
        r = rebuild(engine, Specs(NEW), "m", since=since, chunk_seconds=COARSE)
        assert r.start == first_whole
        now = stored_rollups(engine)
        # The bucket holding the mark (partly deleted raw rows) and earlier ones stay.
        assert by_bucket(now, before=first_whole) == by_bucket(old, before=first_whole)
        want = by_bucket(expected_rollups(raw_predictions(engine, "m"), NEW), since=first_whole)
        assert diff_rollups(want, by_bucket(now, since=first_whole, model="m")) == []
    r = rebuild(engine, Specs(NEW), "m", since=first_whole + 2 * COARSE + 1)
    assert r.start == first_whole + 2 * COARSE  # a later --since still counts


def test_rebuild_of_a_model_without_predictions_does_nothing(engine: sa.Engine) -> None:
    r = rebuild(engine, Specs(NEW), "nobody")
    assert (r.start, r.chunks, r.rows) == (None, 0, 0)


def _config_file(tmp_path: Path, url: str, cfg: dict) -> Path:
    path = tmp_path / "modelmon.yaml"
    path.write_text(yaml.safe_dump({**cfg, "database": {"url": url}}))
    return path


def test_cli_rollups_rebuild(
    engine: sa.Engine, db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    feed(engine, OLD)
    old = stored_rollups(engine)
    path = _config_file(tmp_path, db_url, ROLLUP_CONFIG)
    since = "2026-09-21T14:30:00Z"  # T0 + 1200 = 2026-09-21T14:33:20Z, in bucket 14:30
    assert main(["-c", str(path), "rollups", "rebuild", "--model", "m", "--since", since]) == 0
    out = capsys.readouterr().out.splitlines()
    start = T0 + 1200 - (T0 + 1200) % COARSE
    assert out[0].startswith("m: rebuilt up to 2026-09-21T") and out[0].endswith(" rows")
    assert out[-2].startswith("m: done, 2026-09-21T14:30:00Z to 2026-09-21T")
    assert out[-1].startswith("rollups rebuilt for 1 model(s): ")
    rows = int((raw_predictions(engine, "m")["ts"] >= start).sum())
    assert f"{rows} rows" in out[-1]
    now = stored_rollups(engine)
    assert by_bucket(now, before=start) == by_bucket(old, before=start)
    want = by_bucket(expected_rollups(raw_predictions(engine, "m"), NEW), since=start)
    assert diff_rollups(want, by_bucket(now, since=start, model="m")) == []

    assert main(["-c", str(path), "rollups", "rebuild", "--all"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert any(line.startswith("m: done, ") for line in out)
    assert any(line.startswith("n: done, ") for line in out)
    assert out[-1] == f"rollups rebuilt for 2 model(s): {2 * N} rows in " + out[-1].split(" in ")[-1]
    assert_rollups_match_raw(engine, NEW)

    assert main(["-c", str(path), "rollups", "rebuild", "--model", "nobody"]) == 0
    assert "nobody: no predictions stored" in capsys.readouterr().out


def test_cli_rollups_rebuild_refuses_bad_arguments(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _config_file(tmp_path, f"sqlite:///{tmp_path}/x.db", ROLLUP_CONFIG)
    for argv in (["rollups", "rebuild"], ["rollups", "rebuild", "--model", "m", "--all"],
                 ["rollups", "rebuild", "--model", "m", "--since", "yesterday"]):
        with pytest.raises(SystemExit) as exc:
            main(["-c", str(path), *argv])
        assert exc.value.code == 2
    assert "RFC 3339" in capsys.readouterr().err
