"""Windows read from rollups equal counts over the raw events, for windows that
cut coarse buckets anywhere: a pass at a time that is not on an hour boundary
reads minute buckets at both edges of a 1-day window and hourly ones between."""

from __future__ import annotations

import numpy as np
import pytest
from synth_events import NOW, events, migrated_engine, store

from modelmon.config import Config
from modelmon.monitors.buckets import Plan, class_cells, decompose, versions_per_window
from modelmon.monitors.windows import current_windows, pass_windows, trailing
from modelmon.store.rebuild import rebuild_chunk
from modelmon.store.rollups import Specs

DAY = 86400.0


def test_decompose_covers_the_span_exactly() -> None:
    rng = np.random.default_rng(0)
    for _ in range(500):
        start = int(rng.integers(0, 10 * 86400)) // 60 * 60
        end = start + int(rng.integers(1, 4 * 86400)) // 60 * 60
        pieces = decompose(start, end, 60, 3600)
        assert pieces[0][1] == start and pieces[-1][2] == end
        for (_, _, e1), (_, s2, _) in zip(pieces, pieces[1:], strict=False):
            assert e1 == s2  # contiguous
        for res, lo, hi in pieces:
            assert lo % res == 0 and hi % res == 0 and lo < hi
        assert sum(1 for p in pieces if p[0] == 60) <= 2  # fine pieces only at the edges


@pytest.mark.parametrize("offset", [0.0, 37 * 60 + 30.0, 23 * 3600 + 59 * 60 + 59.0])
def test_class_counts_per_window_and_version_equal_the_raw_events(db_url: str, offset: float) -> None:
    engine = migrated_engine(db_url)
    rng = np.random.default_rng(int(offset))
    rows = events(rng, 6000, ["a", "b", "c"], start=NOW - 3 * DAY, end=NOW + DAY, label_share=0.5)
    for i, r in enumerate(rows):
        r["model_version"] = ("v1", "v2", "v3")[i % 3]
    store(engine, rows)
    cfg = Config.model_validate({"models": {"m": {"windows": ["5m", "1h", "1d"], "version_top_k": 2}}})
    model = cfg.model("m")
    now = NOW + offset
    with engine.begin() as conn:
        rebuild_chunk(conn, Specs(cfg), "m", 0.0, 4e9)
        windows = pass_windows(model, now)
        got = class_cells(conn, model, windows, now)
        versions = versions_per_window(conn, model, current_windows(model, now), now)
    engine.dispose()
    assert windows[0].end == NOW + offset // 60 * 60
    for w, cells in zip(windows, got, strict=True):
        inside = [r for r in rows if w.start <= r["ts"] < w.end and r["status"] == "ok"]
        for version in ("*", "v1", "v2", "v3"):
            want: dict = {}
            for r in inside:
                if version in ("*", r["model_version"]):
                    key = (r["prediction"], r["label"])
                    want[key] = want.get(key, 0) + 1
            assert cells.get(version, {}) == want, (w, version)
    for w, vs in zip(current_windows(model, now), versions, strict=True):
        n = {v: sum(1 for r in rows if w.start <= r["ts"] < w.end and r["model_version"] == v) for v in ("v1", "v2", "v3")}
        ranked = sorted((-c, v) for v, c in n.items() if c)
        assert vs == ["*", *[v for _, v in ranked[:2]]]


def test_plan_reads_each_bucket_row_once_per_segment() -> None:
    end = NOW + 1234 * 60
    windows = [trailing("5m", 300, end), trailing("1d", DAY, end), trailing("1d", DAY, end - DAY)]
    plan = Plan(windows, 60, 3600)
    for w, segs in zip(windows, plan.members, strict=True):
        covered = sum(plan.bounds[r][k + 1] - plan.bounds[r][k] for r, k in segs)
        assert covered == w.end - w.start
