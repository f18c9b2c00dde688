"""The Evidently deep-dive report: `modelmon report` and `GET /v1/report`.

One SQLite store holds a window of predictions of model `fraud` whose feature `amount`
is shifted by half a standard deviation against the stored reference (`tenure` and
`country` are not), with labels for part of them. The report's numbers are checked
against evidently run directly on DataFrames the test builds from the same generated
rows, and the page is opened in Debian's headless chromium.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from api_helpers import TOKEN, Reply, serve, store_predictions
from cli_run import modelmon

from modelmon.api.report import ReportError, ReportWindow
from modelmon.api.report_http import ReportPages
from modelmon.config import Config
from modelmon.contract import parse_feedback
from modelmon.store.engine import make_engine
from modelmon.store.features import new_reference, set_reference
from modelmon.store.migrate import upgrade
from modelmon.store.writes import write_batch

MODEL = "fraud"
T0 = datetime(2026, 11, 23, tzinfo=UTC).timestamp()
T1 = T0 + 3600.0
N_CURRENT, N_REFERENCE, N_LABELLED = 600, 1000, 400
NUMERIC, CATEGORICAL = ["amount", "tenure"], ["country", "plan"]
ODD_ROW = 7  # its `tenure` is a string: a type change, left out of the drift test


def _generate() -> dict[str, Any]:
    """The window's rows and the reference's, as plain Python values."""
    rng = np.random.default_rng(20261123)
    countries = ["FR", "DE", "ES"]
    ref = {
        "amount": rng.normal(0.0, 1.0, N_REFERENCE).tolist(),
        "tenure": rng.integers(0, 60, N_REFERENCE).tolist(),  # ints: still numeric
        "country": rng.choice(countries, N_REFERENCE).tolist(),
        "plan": rng.integers(1, 4, N_REFERENCE).tolist(),  # 3 distinct ints: categorical
        "prediction": rng.choice(["0", "1"], N_REFERENCE).tolist(),
        "label": rng.choice(["0", "1"], N_REFERENCE).tolist(),
    }
    cur = {
        "amount": rng.normal(0.5, 1.0, N_CURRENT).tolist(),  # the incident: +0.5 sd
        "tenure": rng.integers(0, 60, N_CURRENT).tolist(),
        "country": rng.choice(countries, N_CURRENT).tolist(),
        "plan": rng.integers(1, 4, N_CURRENT).tolist(),
        "prediction": rng.choice(["0", "1"], N_CURRENT).tolist(),
        "label": rng.choice(["0", "1"], N_CURRENT).tolist(),
        "ts": np.sort(rng.uniform(T0, T1, N_CURRENT)).tolist(),
    }
    cur["tenure"][ODD_ROW] = "unknown"
    return {"reference": ref, "current": cur}


@pytest.fixture(scope="module")
def data() -> dict[str, Any]:
    return _generate()


def _config(db: Path, tokens: list[str]) -> dict[str, Any]:
    return {
        "database": {"url": f"sqlite:///{db}"},
        "server": {"api_tokens": tokens},
        "models": {MODEL: {"task": "binary", "positive_class": "1", "min_labels": 100}},
    }


@pytest.fixture(scope="module")
def store(tmp_path_factory, data) -> dict[str, Any]:
    """The SQLite store, its config file and config object."""
    tmp = tmp_path_factory.mktemp("report")
    raw = _config(tmp / "report.db", [TOKEN])
    cfg_file = tmp / "modelmon.yaml"
    cfg_file.write_text(yaml.safe_dump(raw))
    engine = make_engine(raw["database"]["url"])
    upgrade(engine)
    cur, ref = data["current"], data["reference"]
    events = [
        {"request_id": f"r-{i}", "model": MODEL, "model_version": "v1", "timestamp": cur["ts"][i],
         "prediction": cur["prediction"][i],
         "features": {k: cur[k][i] for k in NUMERIC + CATEGORICAL}}
        for i in range(N_CURRENT)
    ]
    events.append({"request_id": "no-features", "model": MODEL, "timestamp": T1 + 10,
                   "prediction": "0"})
    store_predictions(engine, events)
    labels = [
        (parse_feedback({"request_id": f"r-{i}", "model": MODEL, "label": cur["label"][i],
                         "timestamp": T1}), None)
        for i in range(N_LABELLED)
    ]
    with engine.begin() as conn:
        write_batch(conn, [], labels, [], source="http")
        set_reference(conn, MODEL, new_reference(
            MODEL, {k: ref[k] for k in NUMERIC + CATEGORICAL}, "validation.csv", N_REFERENCE,
            predictions=ref["prediction"], labels=ref["label"],
        ))
    engine.dispose()
    return {"dir": tmp, "file": cfg_file, "cfg": Config.model_validate(raw), "raw": raw}


def _run_report(store: dict[str, Any], *args: str) -> Any:
    return modelmon("-c", str(store["file"]), "report", "--model", MODEL, *args, timeout=300)


@pytest.fixture(scope="module")
def cli_report(store) -> dict[str, Any]:
    """`modelmon report` over the incident window: the page and evidently's JSON."""
    out, js = store["dir"] / "report.html", store["dir"] / "report.json"
    done = _run_report(store, "--from", str(T0), "--to", "2026-11-23T01:00:00Z",
                       "--out", str(out), "--json", str(js))
    assert done.returncode == 0, done.stderr
    return {"html": out, "results": json.loads(js.read_text()), "stdout": done.stdout}


def _frames(data: dict[str, Any]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The reference and window as pandas builds them from the generated rows, the
    string `tenure` of ODD_ROW dropped to missing (the type change the families leave out)."""
    cols = NUMERIC + CATEGORICAL
    ref = pd.DataFrame({k: data["reference"][k] for k in cols})
    cur = pd.DataFrame({k: data["current"][k] for k in cols})
    cur["tenure"] = pd.to_numeric(cur["tenure"], errors="coerce")
    assert cur["tenure"].isna().sum() == 1
    return ref, cur


def _direct_drift(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """evidently's ValueDrift per column, run here on the test's own DataFrames, the column
    kinds left to evidently's own inference (ints with few values are categorical)."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    ref, cur = _frames(data)
    snap = Report([DataDriftPreset()]).run(
        Dataset.from_pandas(cur, data_definition=DataDefinition()),
        Dataset.from_pandas(ref, data_definition=DataDefinition()),
    )
    return _value_drifts(json.loads(snap.json()))


def _value_drifts(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out = {}
    for m in results["metrics"]:
        if m["config"]["type"].endswith("ValueDrift"):
            out[m["config"]["column"]] = {"value": m["value"], **m["config"]}
    return out


def _detected(d: dict[str, Any]) -> bool:
    """evidently's rule: a p-value below the threshold, or a distance at or above it."""
    p_value_tests = ("K-S p_value", "chi-square p_value", "Z-test p_value")
    if d["method"] in p_value_tests:
        return d["value"] < d["threshold"]
    return d["value"] >= d["threshold"]


def test_cli_report_matches_evidently_run_directly(cli_report, data):
    """Every feature's drift score, method and threshold equal evidently's on the same rows."""
    ours = _value_drifts(cli_report["results"]["drift"])
    direct = _direct_drift(data)
    assert sorted(ours) == sorted(direct) == sorted(NUMERIC + CATEGORICAL)
    for column, d in direct.items():
        assert ours[column]["method"] == d["method"]
        assert ours[column]["threshold"] == d["threshold"]
        assert ours[column]["value"] == pytest.approx(d["value"], abs=1e-9, rel=1e-9)
    assert _detected(ours["amount"])  # the shifted feature
    drifted = [c for c in direct if _detected(direct[c])]
    assert f"{len(drifted)} drifted" in cli_report["stdout"]


def test_cli_report_classification_is_on_labelled_rows(cli_report, data):
    """Accuracy on the window's labelled rows, against numpy on the same rows."""
    cur = data["current"]
    pred = np.array(cur["prediction"][:N_LABELLED])
    label = np.array(cur["label"][:N_LABELLED])
    metrics = cli_report["results"]["classification"]["metrics"]
    accuracy = next(m["value"] for m in metrics if m["config"]["type"].endswith(":Accuracy"))
    assert accuracy == pytest.approx(float(np.mean(pred == label)), abs=1e-12)
    assert f"on the {N_LABELLED} labelled predictions" in cli_report["stdout"]


def test_cli_report_page_is_self_contained(cli_report):
    page = cli_report["html"].read_text()
    assert "drawDashboard" in page and "modelmon report: fraud" in page
    assert not re.search(r"<script[^>]*\bsrc=", page), "the page loads a script from elsewhere"
    assert not re.search(r"<link[^>]*\bhref=[\"']?https?:", page)
    assert not re.search(r"url\([\"']?https?:", page)
    assert f"sample of {N_CURRENT} predictions ({N_CURRENT} of {N_CURRENT} in the window" in page
    assert "tenure: 1 window values not of the reference&#x27;s type (number) left out" in page
    assert "Features compared: 2 numeric, 2 categorical" in page


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--model", "nobody"), "no such model: 'nobody' is neither configured nor seen"),
        (("--window", "1h", "--to", str(T0)), "no predictions with features for model 'fraud'"),
        (("--from", str(T1), "--to", str(T0)), "the window is empty"),
    ],
)
def test_cli_errors_are_one_line(store, tmp_path, args, message):
    out = tmp_path / "r.html"
    cmd = ["-c", str(store["file"]), "report", "--out", str(out)]
    if "--model" not in args:
        cmd += ["--model", MODEL]
    done = modelmon(*cmd, *args)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("modelmon: ") and message in lines[0], done.stderr
    assert not out.exists()


def test_cli_model_without_reference_says_how_to_set_one(store, tmp_path):
    engine = make_engine(store["raw"]["database"]["url"])
    store_predictions(engine, [{"request_id": "o-1", "model": "other", "timestamp": T0 + 1,
                                "prediction": "a", "features": {"x": 1}}])
    engine.dispose()
    done = modelmon("-c", str(store["file"]), "report", "--model", "other",
                    "--from", str(T0), "--to", str(T1), "--out", str(tmp_path / "r.html"))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "modelmon: model 'other' has no reference data: set one with `modelmon baseline set "
        "--model other --features FILE` (or --from-window)"
    ]


def test_cli_without_evidently_says_which_extra(store, tmp_path):
    """A shadowing `evidently` package that fails to import stands in for a missing one."""
    fake = tmp_path / "site" / "evidently"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('No module named evidently')\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELMON_")}
    env["PYTHONPATH"] = str(fake.parent)
    done = subprocess.run(
        [sys.executable, "-m", "modelmon", "-c", str(store["file"]), "report", "--model", MODEL,
         "--from", str(T0), "--to", str(T1), "--out", str(tmp_path / "r.html")],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "modelmon: the report needs evidently: pip install 'modelmon[evidently]'"
    ]


@pytest.mark.parametrize(
    ("window", "start", "end"),
    [(None, None, None), (1800.0, None, None), (None, T0, None), (1800.0, T0, T1),
     (7200.0, T0, T1), (None, None, T1), (3600.0, None, T1)],
)
def test_every_bound_given_applies(store, window, start, end):
    """The window ends at `to` (else the last multiple of features.interval) and holds
    what is after `from` and within `window` of the end (1d without `from`)."""
    from modelmon.api.report import resolve_window

    now = T1 + 12345.6
    step = store["cfg"].features.interval
    stop = end if end is not None else now - (now % step)
    lows = [b for b in (start, None if window is None else stop - window) if b is not None]
    low = max(lows) if lows else stop - 86400.0
    w = resolve_window(store["cfg"], MODEL, "v1", window, start, end, now)
    assert (w.start, w.end, w.version) == (pytest.approx(low), pytest.approx(stop), "v1")


def test_busy_builder_answers_429(store):
    """One build at a time: while one runs, another window is refused, not queued forever."""
    engine = make_engine(store["raw"]["database"]["url"])
    pages = ReportPages(store["cfg"], engine)
    pages._build.acquire()
    try:
        started = time.monotonic()
        with pytest.raises(ReportError) as err:
            pages.page(ReportWindow(MODEL, T0, T1))
        assert err.value.status == 429
        assert time.monotonic() - started < 30
    finally:
        pages._build.release()
        engine.dispose()


@pytest.mark.parametrize(
    ("reference_labels", "labelled", "expect"),
    [(True, 150, "against"), (False, 150, "without reference"), (True, 50, "not shown")],
)
def test_classification_part_of_a_multiclass_model(reference_labels, labelled, expect):
    """Multiclass: shown on the labelled rows (with or without reference labels), or left out
    below min_labels; accuracy against numpy on the same rows."""
    from modelmon.api.report import ReportInputs, build
    from modelmon.store.features import FeatureReference, WindowSample

    rng = np.random.default_rng(labelled + reference_labels)
    classes = ["cat", "dog", "fox"]
    n_ref, n_cur = 300, 200
    ref_pred = rng.choice(classes, n_ref).tolist()
    reference = FeatureReference(
        "zoo", {"size": rng.normal(0, 1, n_ref).tolist()},
        ref_pred if reference_labels else None,
        rng.choice(classes, n_ref).tolist() if reference_labels else None,
        "zoo.parquet", n_ref, T0,
    )
    pred = rng.choice(classes, n_cur).tolist()
    label = [str(x) if i < labelled else None for i, x in enumerate(rng.choice(classes, n_cur))]
    sample = WindowSample({"size": rng.normal(0, 1, n_cur).tolist()},
                          [f"z-{i}" for i in range(n_cur)], pred, label, n_cur, n_cur)
    cfg = Config.model_validate({"models": {"zoo": {"task": "multiclass", "min_labels": 100}}})
    report = build(cfg, ReportInputs(ReportWindow("zoo", T0, T1), reference, sample))
    assert expect in report.classification
    assert report.labelled_rows == labelled
    if expect == "not shown":
        assert "classification" not in report.results
        return
    metrics = report.results["classification"]["metrics"]
    accuracy = next(m["value"] for m in metrics if m["config"]["type"].endswith(":Accuracy"))
    truth = np.array(label[:labelled])
    assert accuracy == pytest.approx(float(np.mean(np.array(pred[:labelled]) == truth)), abs=1e-12)


def test_slow_build_is_stopped_with_503(store):
    """A child over its time limit is killed, and the request gets a one-line 503."""
    engine = make_engine(store["raw"]["database"]["url"])
    try:
        with pytest.raises(ReportError) as err:
            ReportPages(store["cfg"], engine, timeout=0.2).page(ReportWindow(MODEL, T0, T1))
    finally:
        engine.dispose()
    assert err.value.status == 503
    assert err.value.message == "the report took longer than 0.2 s and was stopped"


def test_report_scores_equal_the_feature_drift_family(cli_report, store):
    """The report and the `feature_drift` family test the same values of the same sample."""
    from modelmon.monitors.features import prepare
    from modelmon.monitors.stats_features import column, drift
    from modelmon.store.features import load_reference, sample_window

    engine = make_engine(store["raw"]["database"]["url"])
    with engine.connect() as conn:
        ref = prepare(load_reference(conn, MODEL))
        sample = sample_window(conn, MODEL, T0, T1, store["cfg"].features.sample_rows)
    engine.dispose()
    ours = _value_drifts(cli_report["results"]["drift"])
    assert sorted(ours) == sorted(ref.columns)
    for name, col in ref.columns.items():
        family = drift(col, column(sample.columns[name], col.type), ref.kinds[name], 1)
        assert ours[name]["value"] == pytest.approx(family.score, abs=1e-9, rel=1e-9), name
        assert ours[name]["threshold"] == pytest.approx(family.threshold, abs=1e-12), name
        assert _detected(ours[name]) == family.detected, name


# -- HTTP -----------------------------------------------------------------------------------


def _get(served: Any, path: str, token: str | None = TOKEN) -> Any:
    """GET with a timeout long enough for a first build on a loaded machine."""
    conn = http.client.HTTPConnection(served.host, served.port, timeout=600)
    try:
        conn.request("GET", path, headers={"Authorization": f"Bearer {token}"} if token else {})
        resp = conn.getresponse()
        return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
    finally:
        conn.close()


@pytest.fixture(scope="module")
def served(store):
    engine = make_engine(store["raw"]["database"]["url"])
    with serve(store["cfg"], engine) as s:
        yield s
    engine.dispose()


REPORT_PATH = f"/v1/report?model={MODEL}&from={T0}&to=2026-11-23T01:00:00Z"


@pytest.mark.integration
def test_http_report_needs_a_token(store, served):
    assert served.request("GET", REPORT_PATH, token=None).status == 401
    assert served.request("GET", REPORT_PATH, token="wrong-token").status == 401
    engine = make_engine(store["raw"]["database"]["url"])
    closed = Config.model_validate(_config(store["dir"] / "report.db", []))
    with serve(closed, engine) as s:
        assert s.request("GET", REPORT_PATH).status == 403
    engine.dispose()


@pytest.mark.integration
def test_http_report_is_the_same_page_and_cached(served):
    first = _get(served, REPORT_PATH)
    assert first.status == 200, first.body[:500]
    assert first.headers["content-type"].startswith("text/html")
    page = first.body.decode()
    assert "drawDashboard" in page and "modelmon report: fraud" in page
    assert '"amount"' in page or "amount" in page
    assert f"sample of {N_CURRENT} predictions" in page
    # evidently names every page with a fresh random id: equal bytes mean the cache answered
    again = _get(served, REPORT_PATH.replace(f"from={T0}", "from=2026-11-23T00:00:00Z"))
    assert again.status == 200 and again.body == first.body


@pytest.mark.integration
def test_a_browser_following_the_alert_link_is_asked_for_the_token(served):
    """Browsers cannot send bearer tokens: the 401 challenges for basic auth, and basic auth
    with an API token as the password opens the page (served from the cache filled above)."""
    import base64

    refused = served.request("GET", REPORT_PATH, token=None)
    assert refused.status == 401
    conn = http.client.HTTPConnection(served.host, served.port, timeout=600)
    try:
        conn.request("GET", REPORT_PATH)
        challenges = [v for k, v in conn.getresponse().getheaders() if k.lower() == "www-authenticate"]
    finally:
        conn.close()
    assert any(c.startswith("Basic") for c in challenges), challenges
    for password, status in ((TOKEN, 200), ("wrong-token", 401)):
        basic = base64.b64encode(f"on-call:{password}".encode()).decode()
        conn = http.client.HTTPConnection(served.host, served.port, timeout=600)
        try:
            conn.request("GET", REPORT_PATH, headers={"Authorization": f"Basic {basic}"})
            resp = conn.getresponse()
            body = resp.read()
        finally:
            conn.close()
        assert resp.status == status, body[:300]
        assert (b"modelmon report: fraud" in body) == (status == 200)


@pytest.mark.integration
@pytest.mark.parametrize(
    ("query", "status", "message"),
    [
        ("", 422, "parameter 'model' is required"),
        (f"model={MODEL}&window=soon", 422, "window: expected a duration"),
        (f"model={MODEL}&window=1h&from={T1}&to={T1}", 404, "the window is empty"),
        (f"model={MODEL}&from={T1}&to={T0}", 404, "the window is empty"),
        (f"model={MODEL}&version=" + "v" * 129, 422, "version: 1 to 128 characters"),
        (f"model={MODEL}&from=yesterday&to={T1}", 422, "from: expected epoch seconds"),
        (f"model={MODEL}&colour=red", 422, "unknown parameter 'colour'"),
        (f"model={MODEL}&model=x", 422, "given 2 times"),
        ("model=nobody", 404, "no such model"),
        ("model=bad%20name", 404, "no such model"),
        (f"model={MODEL}&window=1h", 404, "no predictions with features"),
    ],
)
def test_http_report_errors(served, query, status, message):
    r = served.request("GET", f"/v1/report?{query}")
    assert r.status == status, r.body
    assert message in r.json()["error"]


# -- a real browser -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--window-size=1400,1000",
                # nothing but loopback resolves: a page that needs the internet shows errors
                "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    driver.set_page_load_timeout(600)  # a first build from the API, on a loaded machine
    try:
        yield driver
    finally:
        driver.quit()


def _rendered_drift_row(driver: Any, feature: str) -> str:
    """Wait until evidently's drift table shows `feature`'s row; return that row's text."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def row(d: Any) -> str | None:
        for tr in d.find_elements(By.CSS_SELECTOR, "tr"):
            cells = [c.text.strip() for c in tr.find_elements(By.CSS_SELECTOR, "td")]
            if feature in cells and any("Detected" in c for c in cells):
                return " | ".join(cells)
        return None

    return WebDriverWait(driver, 60, poll_frequency=0.5).until(row)


def _severe(driver: Any) -> list[dict[str, Any]]:
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


@pytest.mark.integration
def test_report_file_renders_in_chromium(browser, cli_report, data):
    browser.get_log("browser")  # start from an empty console
    browser.get(cli_report["html"].as_uri())
    row = _rendered_drift_row(browser, "amount")
    assert "Not Detected" not in row and "Detected" in row, row
    tenure = _rendered_drift_row(browser, "tenure")
    direct = _direct_drift(data)
    assert ("Not Detected" in tenure) == (not _detected(direct["tenure"])), tenure
    assert _severe(browser) == []


@pytest.mark.integration
def test_report_from_the_api_renders_in_chromium(browser, served):
    browser.get_log("browser")
    browser.execute_cdp_cmd("Network.enable", {})
    browser.execute_cdp_cmd(
        "Network.setExtraHTTPHeaders", {"headers": {"Authorization": f"Bearer {TOKEN}"}}
    )
    try:
        browser.get(served.url + REPORT_PATH)
        row = _rendered_drift_row(browser, "amount")
    finally:
        browser.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {}})
    assert "Not Detected" not in row and "Detected" in row, row
    assert "modelmon report: fraud" in browser.page_source
    assert _severe(browser) == []
