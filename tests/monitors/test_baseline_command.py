"""`modelmon baseline set|show` on CSV and JSON inputs, and clear errors on bad ones."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from modelmon.cli import main
from modelmon.monitors.baselines import latest_baseline
from modelmon.monitors.commands import BaselineInputError, parse_baseline
from modelmon.store.engine import make_engine
from modelmon.store.migrate import upgrade


@pytest.fixture
def db(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path}/store.db"
    upgrade(make_engine(url))
    monkeypatch.setenv("MODELMON_DATABASE_URL", url)
    monkeypatch.delenv("MODELMON_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    return make_engine(url)


def _latest(engine, kind="predictions"):
    with engine.connect() as conn:
        return latest_baseline(conn, "fraud", kind)


def _set(tmp_path, name, text, *extra):
    path = tmp_path / name
    path.write_text(text)
    return main(["baseline", "set", "--model", "fraud", "--from", str(path), *extra])


def test_csv_shares(db, tmp_path, capsys):
    assert _set(tmp_path, "b.csv", "class,share\npositive,0.05\nnegative,0.95\n") == 0
    b = _latest(db)
    assert b.shares == {"negative": 0.95, "positive": 0.05} and b.sample_count is None
    assert main(["baseline", "show", "--model", "fraud"]) == 0
    assert "positive" in capsys.readouterr().out


def test_csv_counts_are_normalised(db, tmp_path):
    assert _set(tmp_path, "c.csv", "class,count\nTrue,30\nFalse,70\n") == 0
    b = _latest(db)
    assert b.shares == {"1": 0.3, "0": 0.7} and b.sample_count == 100


def test_json_shares_and_counts(db, tmp_path):
    assert _set(tmp_path, "s.json", json.dumps({"cat": 0.5, "dog": 0.25, "bird": 0.25})) == 0
    assert _latest(db).shares == {"bird": 0.25, "cat": 0.5, "dog": 0.25}
    assert _set(tmp_path, "n.json", json.dumps({"cat": 2, "dog": 6}), "--kind", "labels") == 0
    assert _latest(db, "labels").shares == {"cat": 0.25, "dog": 0.75}
    assert _latest(db).shares["cat"] == 0.5  # the predictions baseline is untouched


def test_raw_csv_sets_predictions_and_labels(db, tmp_path):
    preds = ["a", "b", "a", "c", "a", "b"]
    labels = ["a", "a", "", "c", "b", "b"]
    text = "request_id,prediction,label\n" + "".join(f"r{i},{p},{lab}\n" for i, (p, lab) in enumerate(zip(preds, labels, strict=True)))
    assert _set(tmp_path, "raw.csv", text) == 0
    p, lab = _latest(db), _latest(db, "labels")
    assert p.shares == {k: v / 6 for k, v in Counter(preds).items()} and p.sample_count == 6
    kept = [x for x in labels if x]
    assert lab.shares == {k: v / len(kept) for k, v in Counter(kept).items()} and lab.sample_count == 5


def test_raw_json_objects_and_values(db, tmp_path):
    assert _set(tmp_path, "o.json", json.dumps([{"prediction": 1}, {"prediction": 0}, {"prediction": 1, "label": 1}])) == 0
    assert _latest(db).shares == {"0": 1 / 3, "1": 2 / 3}
    assert _latest(db, "labels").shares == {"1": 1.0}
    assert _set(tmp_path, "v.json", json.dumps(["x", "y", "y", "y"])) == 0
    assert _latest(db).shares == {"x": 0.25, "y": 0.75}


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("a.csv", "class,share\na,0.5\nb,0.4\n", "sum to 1"),
        ("b.csv", "class,share\na,-0.1\nb,1.1\n", ">= 0"),
        ("c.csv", "klass,value\na,1\n", "class,share"),
        ("d.json", '{"a": 0.5, "b": 0.7}', "sum to 1"),
        ("e.json", '{"a": 0.5, "a ": 0.5}', "twice"),
        ("f.json", "{not json", "not valid JSON"),
        ("g.json", '[{"score": 1}]', "'prediction'"),
        ("h.csv", "", "empty"),
        ("i.json", '{"a": "many"}', "expected a number"),
        ("j.json", '{"a": 0, "b": 0}', "no class has a positive share"),
        ("k.json", '[{"prediction": [1, 2]}]', "class label"),
    ],
)
def test_bad_inputs_fail_clearly(db, tmp_path, capsys, name, text, message):
    assert _set(tmp_path, name, text) == 2
    assert message in capsys.readouterr().err
    assert _latest(db) is None


def test_missing_file_and_show_without_baseline(db, tmp_path, capsys):
    assert main(["baseline", "set", "--model", "fraud", "--from", str(tmp_path / "nope.csv")]) == 2
    assert "cannot read" in capsys.readouterr().err
    assert main(["baseline", "show", "--model", "fraud"]) == 1


def test_parse_is_usable_without_a_database():
    with pytest.raises(BaselineInputError):
        parse_baseline("prediction\n", "x.csv", "predictions")
    (b,) = parse_baseline("class,share\n1,0.5\n2,0.5\n", "x.csv")
    assert b.kind == "predictions" and b.form == "shares"
