"""Feature drift and data-quality maths against evidently's report and pandas on the same rows.

Every case builds the reference and current rows once, hands their columns to our functions
and the same rows as DataFrames to evidently's legacy Report (ColumnDriftMetric per column,
and DataDriftPreset for the dataset share), or to plain pandas for the data-quality shares.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import numpy as np
import pandas as pd
import pytest

from modelmon.monitors.base import Window
from modelmon.monitors.features import DRIFT, QUALITY, prepare, window_rows
from modelmon.monitors.stats_features import column, column_kind, drift, drift_share, quality
from modelmon.store.features import WindowSample, new_reference

TOL = 1e-9


@cache
def _evidently() -> tuple[Any, Any, Any]:
    """Imported once per module: it costs seconds and hundreds of MB."""
    from evidently.legacy.metric_preset import DataDriftPreset
    from evidently.legacy.metrics import ColumnDriftMetric
    from evidently.legacy.report import Report

    return Report, ColumnDriftMetric, DataDriftPreset


def evidently_drift(ref: pd.DataFrame, cur: pd.DataFrame) -> tuple[dict[str, dict], dict]:
    """Per column: ColumnDriftMetric's result; and DataDriftPreset's DataDriftTable result."""
    Report, ColumnDriftMetric, DataDriftPreset = _evidently()
    report = Report(metrics=[*(ColumnDriftMetric(column_name=c) for c in ref.columns), DataDriftPreset()])
    report.run(reference_data=ref, current_data=cur)
    metrics = report.as_dict()["metrics"]
    per_column = {m["result"]["column_name"]: m["result"] for m in metrics if m["metric"] == "ColumnDriftMetric"}
    table = next(m["result"] for m in metrics if m["metric"] == "DataDriftTable")
    return per_column, table


def _display_name(name: str) -> str:
    from evidently.legacy.calculations.stattests.registry import _registered_stat_tests

    return next(iter(_registered_stat_tests[name].values())).display_name


rng = np.random.default_rng(20261126)

# name -> (reference values, current values, evidently's expected stattest name)
CASES: dict[str, tuple[list[Any], list[Any], str]] = {
    "numeric small, shifted (K-S)": (
        rng.normal(0, 1, 600).tolist(), rng.normal(0.5, 1, 400).tolist(), "ks"),
    "numeric small, stable (K-S)": (
        rng.normal(0, 1, 800).tolist(), rng.normal(0, 1, 700).tolist(), "ks"),
    "numeric large, shifted (Wasserstein)": (
        rng.normal(10, 2, 3000).tolist(), rng.normal(11, 2, 2500).tolist(), "wasserstein"),
    "numeric large, stable (Wasserstein)": (
        rng.lognormal(0, 1, 2000).tolist(), rng.lognormal(0, 1, 1500).tolist(), "wasserstein"),
    "categorical small, shifted (chi-square)": (
        rng.choice(list("abcd"), 500, p=[0.4, 0.3, 0.2, 0.1]).tolist(),
        rng.choice(list("abcd"), 300, p=[0.1, 0.2, 0.3, 0.4]).tolist(), "chisquare"),
    "categorical small, stable (chi-square)": (
        rng.choice(list("abc"), 900).tolist(), rng.choice(list("abc"), 600).tolist(), "chisquare"),
    "binary small, shifted (Z)": (
        rng.choice(["yes", "no"], 700, p=[0.3, 0.7]).tolist(),
        rng.choice(["yes", "no"], 500, p=[0.5, 0.5]).tolist(), "z"),
    "boolean small, stable (Z)": (
        rng.choice([True, False], 400).tolist(), rng.choice([True, False], 300).tolist(), "z"),
    "categorical large, shifted (Jensen-Shannon)": (
        rng.choice(list("abcde"), 5000).tolist(),
        rng.choice(list("abcdef"), 3000, p=[0.1, 0.1, 0.1, 0.1, 0.1, 0.5]).tolist(), "jensenshannon"),
    "categorical large, stable (Jensen-Shannon)": (
        rng.choice(list("xyz"), 1500).tolist(), rng.choice(list("xyz"), 1200).tolist(), "jensenshannon"),
    "integer, 3 values (categorical by evidently)": (
        rng.integers(0, 3, 500).tolist(), rng.integers(0, 3, 450).tolist(), "chisquare"),
    "numeric with missing values and infinities": (
        [*rng.normal(0, 1, 500).tolist(), None, None, float("inf")],
        [*rng.normal(0.2, 1, 400).tolist(), None, float("-inf"), float("nan")], "ks"),
}


@pytest.fixture(scope="module")
def evidently_results() -> tuple[dict[str, dict], dict, pd.DataFrame, pd.DataFrame]:
    """One report over every case: each case is a column of the same two DataFrames."""
    n_ref = max(len(r) for r, _, _ in CASES.values())
    n_cur = max(len(c) for _, c, _ in CASES.values())
    # Pad every column to the frame's length with missing values; the size rule counts
    # non-missing values, so the padding changes nothing evidently decides.
    ref = pd.DataFrame({k: r + [None] * (n_ref - len(r)) for k, (r, _, _) in CASES.items()})
    cur = pd.DataFrame({k: c + [None] * (n_cur - len(c)) for k, (_, c, _) in CASES.items()})
    per_column, table = evidently_drift(ref, cur)
    return per_column, table, ref, cur


def _padded(values: list[Any], n: int) -> list[Any]:
    return values + [None] * (n - len(values))


@pytest.mark.parametrize("case", list(CASES))
def test_drift_equals_evidently(case: str, evidently_results) -> None:  # type: ignore[no-untyped-def]
    per_column, table, ref_df, cur_df = evidently_results
    ref_values, cur_values, expected_test = CASES[case]
    # Our input: the same (padded) columns as the frames evidently read.
    ref, cur = column(_padded(ref_values, len(ref_df))), None
    cur = column(_padded(cur_values, len(cur_df)), ref.type)
    kind = column_kind(ref)
    got = drift(ref, cur, kind, minimum=1)
    theirs = per_column[case]
    assert got.status == "ok"
    assert got.stattest == expected_test
    assert _display_name(got.stattest) == theirs["stattest_name"]
    assert {"numerical": "num", "categorical": "cat"}[kind] == theirs["column_type"]
    assert got.score == pytest.approx(float(theirs["drift_score"]), abs=TOL, rel=TOL)
    assert got.threshold == pytest.approx(float(theirs["stattest_threshold"]), abs=TOL)
    assert got.detected is bool(theirs["drift_detected"])
    # DataDriftPreset's table (its own column-type inference) agrees on the same frames.
    row = table["drift_by_columns"][case]
    assert got.score == pytest.approx(float(row["drift_score"]), abs=TOL, rel=TOL)
    assert got.detected is bool(row["drift_detected"])


def test_shifted_cases_drift_and_stable_ones_do_not(evidently_results) -> None:  # type: ignore[no-untyped-def]
    per_column, _, _, _ = evidently_results
    for case in CASES:
        if "shifted" in case or "stable" in case:
            assert bool(per_column[case]["drift_detected"]) is ("shifted" in case), case


def test_dataset_drift_share_equals_evidently(evidently_results) -> None:  # type: ignore[no-untyped-def]
    _, table, ref_df, cur_df = evidently_results
    results = []
    for ref_values, cur_values, _ in CASES.values():
        ref = column(_padded(ref_values, len(ref_df)))
        results.append(drift(ref, column(_padded(cur_values, len(cur_df)), ref.type), column_kind(ref), 1))
    share, detected, tested = drift_share(results)
    assert tested == table["number_of_columns"]
    assert detected == table["number_of_drifted_columns"]
    assert share == pytest.approx(table["share_of_drifted_columns"], abs=TOL)


def test_kind_follows_evidently_data_definition() -> None:
    """evidently's data definition: integers with <= 5 distinct values are categorical."""
    Report, ColumnDriftMetric, _ = _evidently()
    cols = {
        "int5": [i % 5 for i in range(200)],
        "int6": [i % 6 for i in range(200)],
        "float3": [float(i % 3) for i in range(200)],
        "text": [str(i % 7) for i in range(200)],
        "flag": [i % 2 == 0 for i in range(200)],
    }
    df = pd.DataFrame(cols)
    report = Report(metrics=[ColumnDriftMetric(column_name=c) for c in cols])
    report.run(reference_data=df, current_data=df)
    theirs = {m["result"]["column_name"]: m["result"]["column_type"] for m in report.as_dict()["metrics"]}
    ours = {k: {"numerical": "num", "categorical": "cat"}[column_kind(column(v))] for k, v in cols.items()}
    assert ours == theirs


def test_wrong_types_are_left_out_of_the_test_and_counted() -> None:
    ref_values = rng.normal(0, 1, 300).tolist()
    cur_values = [*rng.normal(0, 1, 250).tolist(), "n/a", "12", True, [1, 2]]
    ref = column(ref_values)
    cur = column(cur_values, ref.type)
    clean = column([v for v in cur_values if isinstance(v, float)], ref.type)
    assert cur.other_type == sum(not isinstance(v, float) for v in cur_values)
    assert drift(ref, cur, "numerical", 1).score == drift(ref, clean, "numerical", 1).score


def test_gating_below_min_samples() -> None:
    ref = column(rng.normal(0, 1, 300).tolist())
    few = column([*rng.normal(0, 1, 49).tolist(), None, None], ref.type)
    got = drift(ref, few, "numerical", minimum=50)
    assert (got.status, got.score, got.detected, got.n) == ("insufficient_data", None, None, 49)
    assert drift(ref, column([None] * 5, ref.type), "numerical", 50).status == "no_data"
    enough = drift(ref, few, "numerical", minimum=49)
    assert enough.status == "ok" and enough.score is not None


# -- data quality ---------------------------------------------------------------------


def _quality_rows() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    r = np.random.default_rng(7)
    ref_rows = [
        {"amount": float(r.normal(50, 10)) if r.random() > 0.05 else None,
         "country": str(r.choice(["FR", "DE", "ES"])),
         "tier": int(r.integers(0, 3)),
         "gone": float(r.random())}
        for _ in range(1500)
    ]
    cur_rows = []
    for _ in range(800):
        row: dict[str, Any] = {
            "amount": float(r.normal(60, 15)) if r.random() > 0.2 else None,
            "country": str(r.choice(["FR", "DE", "ES", "IT", "PT"])),
            "tier": int(r.integers(0, 4)),
            "new": "x",
        }
        if r.random() < 0.03:
            row["amount"] = "oops"  # a number became a string
        if r.random() < 0.02:
            row["country"] = 7  # a string became a number
        cur_rows.append(row)
    return ref_rows, cur_rows


def test_data_quality_equals_pandas() -> None:
    ref_rows, cur_rows = _quality_rows()
    ref_df, cur_df = pd.DataFrame(ref_rows), pd.DataFrame(cur_rows)
    names = sorted({k for row in cur_rows for k in row})
    sample = WindowSample(
        columns={k: [row.get(k) for row in cur_rows] for k in names},
        request_ids=[str(i) for i in range(len(cur_rows))],
        predictions=["0"] * len(cur_rows), labels=[None] * len(cur_rows),
        with_features=len(cur_rows), total=len(cur_rows) + 200,
    )
    reference = new_reference("m", {k: ref_df[k].tolist() for k in ref_df.columns}, "test", len(ref_df))
    window = Window("1h", 0.0, 3600.0)
    rows = window_rows(window, prepare(reference), sample, cap=100, minimum=10)[QUALITY]
    got = {(w.row.metric, w.row.labels.get("feature")): w.row for w in rows}

    def value(metric: str, feature: str | None) -> float | None:
        return got[(metric, feature)].value

    assert value("features_present_ratio", None) == pytest.approx(len(cur_rows) / (len(cur_rows) + 200))
    for name in ("amount", "country", "tier", "new"):
        assert value("feature_missing_ratio", name) == pytest.approx(cur_df[name].isna().mean(), abs=TOL)
    assert value("feature_missing_ratio", "gone") == 1.0  # reference-only
    for name in ("amount", "country", "tier", "gone"):
        assert value("feature_reference_missing_ratio", name) == pytest.approx(
            ref_df[name].isna().mean(), abs=TOL)

    amount = cur_df["amount"].dropna()
    is_text = amount.map(lambda v: isinstance(v, str))
    assert value("feature_type_change_ratio", "amount") == pytest.approx(is_text.mean(), abs=TOL)
    numbers = amount[~is_text].astype(float)
    lo, hi = ref_df["amount"].min(), ref_df["amount"].max()
    assert value("feature_out_of_range_ratio", "amount") == pytest.approx(
        ((numbers < lo) | (numbers > hi)).mean(), abs=TOL)

    country = cur_df["country"].dropna()
    is_str = country.map(lambda v: isinstance(v, str))
    assert value("feature_type_change_ratio", "country") == pytest.approx((~is_str).mean(), abs=TOL)
    assert value("feature_unseen_category_ratio", "country") == pytest.approx(
        (~country[is_str].isin(ref_df["country"].unique())).mean(), abs=TOL)
    # tier: integers with 3 distinct values in the reference, so categorical: unseen, not range
    assert value("feature_unseen_category_ratio", "tier") == pytest.approx(
        (~cur_df["tier"].isin(ref_df["tier"].unique())).mean(), abs=TOL)
    assert ("feature_out_of_range_ratio", "tier") not in got
    assert ("feature_type_change_ratio", "new") not in got  # current-only: no reference to compare


def test_quality_counts_match_their_definitions() -> None:
    ref = column([1.0, 2.0, None, 3.0])
    cur = column([0.5, 2.5, 4.0, "x", None, None], ref.type)
    q = quality(ref, cur, column_kind(ref))
    assert (q.rows, q.missing, q.present, q.type_changed, q.typed, q.out_of_range) == (6, 2, 4, 1, 3, 2)


def test_one_sided_features_are_reported_not_compared() -> None:
    reference = new_reference("m", {"a": rng.normal(0, 1, 300).tolist(), "only_ref": [1.0] * 300}, "t", 300)
    cur = {"a": rng.normal(0, 1, 200).tolist(), "only_cur": ["v"] * 200}
    sample = WindowSample(cur, [str(i) for i in range(200)], ["0"] * 200, [None] * 200, 200, 200)
    rows = window_rows(Window("1h", 0.0, 3600.0), prepare(reference), sample, cap=100, minimum=10)[DRIFT]
    got = {(w.row.metric, w.row.labels.get("feature")): w.row.value for w in rows}
    assert got[("feature_reference_only_features", None)] == 1
    assert got[("feature_current_only_features", None)] == 1
    assert got[("feature_drift_compared_features", None)] == 1
    assert {f for (m, f) in got if m == "feature_drift_score"} == {"a"}


def test_features_over_the_cap_are_counted() -> None:
    reference = new_reference("m", {f"r{i}": [float(i)] * 50 for i in range(3)}, "t", 50)
    cur = {f"c{i}": ["v"] * (50 - i) + [None] * i for i in range(4)}
    sample = WindowSample(cur, [str(i) for i in range(50)], ["0"] * 50, [None] * 50, 50, 50)
    out = window_rows(Window("1h", 0.0, 3600.0), prepare(reference), sample, cap=4, minimum=10)
    got = {(w.row.metric, w.row.labels.get("feature")): w.row.value for w in out[QUALITY]}
    kept = {f for (m, f) in got if m == "feature_missing_ratio"}
    assert kept == {"r0", "r1", "r2", "c0"}  # the reference's first, then the most frequent
    omitted = [w.row.value for w in out[DRIFT] if w.row.metric == "features_omitted"]
    assert omitted == [3]


@pytest.mark.parametrize("values", [
    [1.5, None, 2.0, float("nan"), float("inf"), 3.0],
    [1, 2, 3, 2, 1],
    [1, None, 3],
    ["a", None, "b", "a"],
    [True, None, False, True],
])
def test_plain_columns_read_like_the_general_path(values: list[Any]) -> None:
    """Columns of one plain JSON type take a vectorised path; numpy scalars (from Parquet)
    take the general one: both must read the same values the same way."""
    fast = column(values)
    as_numpy = [v if v is None else np.array(v)[()] for v in values]  # numpy scalars
    slow = column(as_numpy)
    assert (fast.rows, fast.missing, fast.other_type, fast.type) == (
        slow.rows, slow.missing, slow.other_type, slow.type)
    assert fast.series.tolist() == slow.series.tolist()
    assert column_kind(fast) == column_kind(slow)
    assert pd.Series(values, dtype=object).map(lambda v: v is None or v != v).sum() == fast.missing
