"""`modelmon baseline set --features FILE | --from-window` and the feature part of `baseline show`.

What gets stored is compared with an independent pandas read of the same file
(missing cells None, numbers kept as numbers, integer columns as integers), and
a frozen window with `sample_window` on the same store; errors are one line.
"""

from __future__ import annotations

import json
import math
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from modelmon.cli import main
from modelmon.contract import parse_feedback, parse_prediction
from modelmon.store.engine import make_engine
from modelmon.store.features import load_reference, sample_window
from modelmon.store.migrate import upgrade
from modelmon.store.writes import write_batch

REFERENCE_ROWS = 100  # the smallest features.reference_rows allowed
MAX_FEATURES = 6


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> sa.Engine:
    url = f"sqlite:///{tmp_path}/store.db"
    upgrade(make_engine(url))
    (tmp_path / "modelmon.yaml").write_text(
        f"database:\n  url: {url}\nfeatures:\n  reference_rows: {REFERENCE_ROWS}\n"
        f"  max_per_model: {MAX_FEATURES}\n"
    )
    for var in ("MODELMON_DATABASE_URL", "MODELMON_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    return make_engine(url)


def _reference(engine: sa.Engine, model: str = "fraud") -> Any:
    with engine.connect() as conn:
        return load_reference(conn, model)


def _frame(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({
        "amount": rng.lognormal(3, 1, n).round(4),
        "age": rng.integers(18, 90, n),
        "visits": pd.array([None if rng.random() < 0.2 else int(v) for v in rng.integers(0, 9, n)],
                           dtype="Int64"),
        "country": [None if rng.random() < 0.1 else str(c) for c in rng.choice(["de", "fr", "us"], n)],
        "score": [None if rng.random() < 0.1 else float(v) for v in rng.normal(size=n).round(6)],
        "prediction": rng.integers(0, 2, n),
        "label": [None if rng.random() < 0.3 else bool(v) for v in rng.integers(0, 2, n)],
    })
    df["label"] = df["label"].astype("boolean")
    return df


def _cells(series: pd.Series) -> list[Any]:
    """pandas' values as plain Python, NaN/NA as None (the independent side)."""
    out = []
    for v in series.astype(object).tolist():
        if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
            out.append(None)
        else:
            out.append(v.item() if hasattr(v, "item") else v)
    return out


def _class(v: Any) -> str | None:
    if v is None:
        return None
    if isinstance(v, bool):
        return "1" if v else "0"
    return str(int(v)) if isinstance(v, float) else str(v)


def _set(*args: str) -> int:
    return main(["baseline", "set", "--model", "fraud", *args])


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_a_file_is_stored_as_pandas_reads_it(db: sa.Engine, tmp_path: Path, fmt: str, capsys) -> None:
    df = _frame(80)
    path = tmp_path / f"validation.{fmt}"
    df.to_csv(path, index=False) if fmt == "csv" else df.to_parquet(path, index=False)
    assert _set("--features", str(path)) == 0
    out = capsys.readouterr().out
    assert "80 rows, 5 features" in out and "'prediction'" in out and "'label'" in out
    ref = _reference(db)
    read = pd.read_csv(path) if fmt == "csv" else pd.read_parquet(path)
    features = [c for c in read.columns if c not in ("prediction", "label")]
    assert list(ref.columns) == features
    for c in features:
        assert ref.columns[c] == _cells(read[c]), c
    assert {type(v) for v in ref.columns["age"]} == {int}
    assert {type(v) for v in ref.columns["visits"]} == {int, type(None)}  # not floats, despite the gaps
    assert {type(v) for v in ref.columns["country"]} == {str, type(None)}
    assert ref.predictions == [_class(v) for v in _cells(read["prediction"])]
    assert ref.labels == [_class(v) for v in _cells(read["label"])]
    assert (ref.rows, ref.source_rows, ref.source) == (80, 80, path.name)


def test_named_prediction_and_label_columns_and_none(db: sa.Engine, tmp_path: Path) -> None:
    df = _frame(30).rename(columns={"prediction": "y_hat", "label": "y"})
    path = tmp_path / "v.csv"
    df.to_csv(path, index=False)
    assert _set("--features", str(path), "--prediction-column", "y_hat", "--label-column", "y") == 0
    ref = _reference(db)
    assert "y_hat" not in ref.columns and "y" not in ref.columns
    assert ref.predictions == [_class(v) for v in _cells(pd.read_csv(path)["y_hat"])]
    df.drop(columns=["y_hat", "y"]).to_csv(path, index=False)
    assert _set("--features", str(path)) == 0
    ref = _reference(db)
    assert ref.predictions is None and ref.labels is None and len(ref.columns) == 5


def test_a_large_file_is_sampled_down_the_same_way_every_time(db: sa.Engine, tmp_path: Path, capsys) -> None:
    df = _frame(REFERENCE_ROWS * 3 + 7, seed=2)
    df.insert(0, "row", range(len(df)))
    path = tmp_path / "big.parquet"
    df.to_parquet(path, index=False)
    assert _set("--features", str(path)) == 0
    assert f"sampled down from {len(df):,}" in capsys.readouterr().out
    first = _reference(db)
    assert (first.rows, first.source_rows) == (REFERENCE_ROWS, len(df))
    rows = first.columns["row"]
    assert rows == sorted(set(rows))  # distinct rows, in file order
    expected = df.set_index("row").loc[rows]
    for c in ("amount", "age", "country"):
        assert first.columns[c] == _cells(expected[c])
    assert first.predictions == [_class(v) for v in _cells(expected["prediction"])]
    assert _set("--features", str(path)) == 0
    assert _reference(db).columns == first.columns


def _one_line_error(capsys) -> str:
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("modelmon: "), captured.err
    return lines[0]


@pytest.mark.parametrize(
    ("name", "content", "extra", "message"),
    [
        ("missing.csv", None, (), "cannot read"),
        ("empty.csv", b"", (), "no columns"),
        ("binary.csv", b"\xff\xfe\x00\x81garbage\x00\x9f", (), "UTF-8"),
        ("broken.parquet", b"PAR1 this is not parquet", (), "as Parquet"),
        ("ragged.csv", b"a,b\n1,2\n3,4,5,6\n", (), "as CSV"),
        ("only.csv", b"prediction,label\n1,0\n", (), "no feature columns"),
        ("header.csv", b"a,b\n", (), "no rows"),
        ("wide.csv", b"a,b,c,d,e,f,g\n1,2,3,4,5,6,7\n", (), f"features.max_per_model ({MAX_FEATURES})"),
        ("col.csv", b"a,b\n1,2\n", ("--prediction-column", "pred"), "no prediction column 'pred'"),
        ("lab.csv", b"a,prediction\n1,1\n2,0.5\n", (), "row 2, column 'prediction'"),
        ("dir", "dir", (), "directory"),
    ],
)
def test_bad_files_fail_in_one_line_and_store_nothing(
    db: sa.Engine, tmp_path: Path, capsys, name: str, content: bytes | str | None, extra: tuple[str, ...],
    message: str,
) -> None:
    path = tmp_path / name
    if content == "dir":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    assert _set("--features", str(path), *extra) == 2
    assert message in _one_line_error(capsys)
    assert _reference(db) is None


def test_without_pandas_the_error_says_what_to_install(db: sa.Engine, tmp_path: Path, capsys, monkeypatch) -> None:
    path = tmp_path / "v.csv"
    _frame(5).to_csv(path, index=False)
    monkeypatch.setitem(__import__("sys").modules, "pandas", None)  # `import pandas` raises ImportError
    assert _set("--features", str(path)) == 2
    assert "needs pandas" in _one_line_error(capsys)


def test_options_of_another_input_are_refused(db: sa.Engine, tmp_path: Path, capsys) -> None:
    path = tmp_path / "v.csv"
    _frame(5).to_csv(path, index=False)
    assert _set("--features", str(path), "--window", "1d") == 2
    assert "--window goes with --from-window" in _one_line_error(capsys)
    assert _set("--from-window", "--window", "1d", "--kind", "labels") == 2
    assert "--kind goes with --from" in _one_line_error(capsys)
    assert _set("--from-window", "--start", "2026-01-02T00:00:00Z", "--end", "2026-01-01T00:00:00Z") == 2
    assert "is not before" in _one_line_error(capsys)
    assert _set("--from-window") == 2
    assert "--window LEN" in _one_line_error(capsys)


# -- a production window ---------------------------------------------------------------


def _store_window(engine: sa.Engine, t0: float, n: int) -> None:
    rng = np.random.default_rng(3)
    preds, feedback = [], []
    for i in range(n):
        obj = {"request_id": f"r{i}", "model": "fraud", "model_version": "v1",
               "timestamp": t0 + i * 7.0, "prediction": str(i % 2)}
        if i % 4:
            obj["features"] = {"amount": float(rng.normal()), "country": str(rng.choice(["de", "us"]))}
            if i % 9 == 0:
                obj["features"]["amount"] = str(obj["features"]["amount"])  # type change kept
        preds.append(obj)
        if i % 3 == 0:
            feedback.append({"request_id": f"r{i}", "model": "fraud", "label": "1", "timestamp": t0 + i * 7.0})
    with engine.begin() as conn:
        write_batch(conn, [(parse_prediction(o), None) for o in preds],
                    [(parse_feedback(o), None) for o in feedback], [], now=t0 + n * 7.0)


def test_from_window_freezes_the_window_sample(db: sa.Engine, capsys) -> None:
    t0 = 1_790_000_000.0
    _store_window(db, t0, 300)
    start, end = t0 + 70.0, t0 + 800.0  # 105 predictions, 78 with features
    assert _set("--from-window", "--start", str(start), "--end", str(end)) == 0
    assert "sampled down" not in capsys.readouterr().out
    ref = _reference(db)
    with db.connect() as conn:
        s = sample_window(conn, "fraud", start, end, REFERENCE_ROWS)
    assert (ref.columns, ref.predictions, ref.labels) == (s.columns, s.predictions, s.labels)
    assert ref.source_rows == s.with_features and ref.rows == min(REFERENCE_ROWS, s.with_features)
    utc = [datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z") for t in (start, end)]
    assert ref.source == f"window:fraud {utc[0]}..{utc[1]}"
    assert {type(v) for v in ref.columns["amount"]} == {float, str}


def test_from_window_by_length_ending_now_samples_down(db: sa.Engine, capsys) -> None:
    now = time.time()
    _store_window(db, now - 3000.0, 400)  # 300 with features, all within the last hour
    assert _set("--from-window", "--window", "1h") == 0
    out = capsys.readouterr().out
    assert "sampled down from 300" in out
    ref = _reference(db)
    assert (ref.rows, ref.source_rows) == (REFERENCE_ROWS, 300)
    assert _set("--from-window", "--window", "1h", "--version", "v9") == 1
    assert "no predictions with features" in _one_line_error(capsys)
    assert _reference(db).rows == REFERENCE_ROWS  # the earlier reference stays


# -- show ------------------------------------------------------------------------------


def test_show_lists_the_reference_with_kinds_and_missing_shares(db: sa.Engine, tmp_path: Path, capsys) -> None:
    df = _frame(60, seed=5)
    path = tmp_path / "v.parquet"
    df.to_parquet(path, index=False)
    assert _set("--features", str(path)) == 0
    capsys.readouterr()
    assert main(["baseline", "show", "--model", "fraud"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("fraud feature reference (set ") and "v.parquet, 60 rows of 60" in lines[0]
    read = pd.read_parquet(path).drop(columns=["prediction", "label"])
    shown = {ln.split()[0]: ln.split()[1:] for ln in lines[2:]}
    for c in read.columns:
        numeric = pd.api.types.is_numeric_dtype(read[c]) and not pd.api.types.is_bool_dtype(read[c])
        assert shown[c] == ["numeric" if numeric else "categorical", f"{read[c].isna().mean():.4f}"]
    assert main(["baseline", "show", "--model", "fraud", "--json"]) == 0
    (entry,) = json.loads(capsys.readouterr().out)
    assert entry["kind"] == "features" and entry["rows"] == 60
    assert {f["name"]: f["missing_share"] for f in entry["features"]} == pytest.approx(
        dict(read.isna().mean()), abs=1e-12)


def test_show_with_class_baseline_and_features_and_with_neither(db: sa.Engine, tmp_path: Path, capsys) -> None:
    assert main(["baseline", "show", "--model", "fraud"]) == 1
    (tmp_path / "s.csv").write_text("class,share\na,0.25\nb,0.75\n")
    assert _set("--from", str(tmp_path / "s.csv")) == 0
    _frame(10).to_csv(tmp_path / "v.csv", index=False)
    assert _set("--features", str(tmp_path / "v.csv")) == 0
    capsys.readouterr()
    assert main(["baseline", "show", "--model", "fraud"]) == 0
    out = capsys.readouterr().out
    assert "fraud predictions baseline" in out and "fraud feature reference" in out
