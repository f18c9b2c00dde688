"""The deep-dive report: an Evidently HTML page of a window's sample against the reference.

Why here and not in the monitors: an alert says *that* inputs drifted; the engineer who got
paged needs to see *how*, per feature, with the distributions side by side. Evidently draws
that page. This module gathers the inputs (the stored reference and the same deterministic
window sample the feature families read, `modelmon.store.features`), turns them into
DataFrames with explicit column kinds, and renders one self-contained HTML document
(evidently inlines its JavaScript and font: no CDN, it opens offline).

Two Evidently runs feed the page: data drift of the features on the whole sample, and
classification quality on the sample's labelled rows only (against the reference's labels
when it has them). They are rendered into one page.

evidently and pandas are imported inside the functions that need them: the API process
imports this module (for `ReportError` and the window arithmetic) but builds reports only
in a child process (see `modelmon.api.report_http`).
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine

from modelmon.config import Config, format_duration

if TYPE_CHECKING:
    import pandas as pd

    from modelmon.store.features import FeatureReference, WindowSample

# Names of the classification columns in the classification run's DataFrames; features
# are not in those frames, so they cannot collide.
PREDICTION = "prediction"
TARGET = "label"


class ReportError(Exception):
    """A report that cannot be built, with the HTTP status that says why.

    404: unknown model, no reference, no features in the window; 422: bad parameters;
    503: evidently is not installed (the `[evidently]` extra).
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class ReportWindow:
    """Which predictions the report reads: [start, end) of one model, optionally one version."""

    model: str
    start: float
    end: float
    version: str | None = None

    def describe(self) -> str:
        span = format_duration(self.end - self.start)
        version = f", version {self.version}" if self.version else ""
        return f"{_utc_or(self.start)} to {_utc_or(self.end)} ({span}{version})"


def _utc(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def aligned_end(now: float, step: float) -> float:
    """The last multiple of `step` at or before `now`: the same window for a few minutes,
    so a report can be cached, and the same cut the feature families make every `step`."""
    return math.floor(now / step) * step


def resolve_window(
    cfg: Config, model: str, version: str | None, window: float | None,
    start: float | None, end: float | None, now: float,
) -> ReportWindow:
    """The report's window: every bound given applies. It ends at `end` (default: the last
    multiple of `features.interval`) and holds what is both after `start` and within
    `window` of the end (`window` defaults to 1d when there is no `start`). An empty
    window raises ReportError(404): it holds no predictions."""
    stop = aligned_end(now, cfg.features.interval) if end is None else end
    bounds = [b for b in (start, None if window is None else stop - window) if b is not None]
    begin = max(bounds) if bounds else stop - 86400.0
    if not (math.isfinite(begin) and math.isfinite(stop)) or stop <= begin:
        raise ReportError(
            404, f"the window is empty: it starts at {_utc_or(begin)}, not before its end "
            f"{_utc_or(stop)}, so it holds no predictions",
        )
    return ReportWindow(model, begin, stop, version)


def _utc_or(epoch: float) -> str:
    """RFC 3339 for a time Python can show, else the number."""
    try:
        return _utc(epoch)
    except (OverflowError, OSError, ValueError):
        return repr(epoch)


@dataclass(frozen=True)
class ReportInputs:
    """What one report is computed from: the reference and the window's sample."""

    window: ReportWindow
    reference: FeatureReference
    sample: WindowSample


def check_inputs(cfg: Config, conn: Connection, window: ReportWindow) -> None:
    """Cheap checks before any report is built (the API runs them in its own process):
    the model has a reference, and the window has predictions with features."""
    import sqlalchemy as sa

    from modelmon.api.queries import model_exists
    from modelmon.store.tables import feature_references, predictions

    model, p = window.model, predictions
    ref = sa.select(feature_references.c.model).where(feature_references.c.model == model)
    if conn.execute(ref.limit(1)).first() is None:
        if model not in cfg.models and not model_exists(conn, model):
            raise ReportError(404, f"no such model: {model!r} is neither configured nor seen")
        raise ReportError(
            404,
            f"model {model!r} has no reference data: set one with `modelmon baseline set "
            f"--model {model} --features FILE` (or --from-window)",
        )
    where = [p.c.model == model, p.c.ts >= window.start, p.c.ts < window.end,
             p.c.features.isnot(None)]
    if window.version is not None:
        where.append(p.c.model_version == window.version)
    if conn.execute(sa.select(p.c.ts).where(*where).limit(1)).first() is None:
        raise ReportError(
            404, f"no predictions with features for model {model!r} from {window.describe()}"
        )


def load_inputs(cfg: Config, engine: Engine, window: ReportWindow) -> ReportInputs:
    """Read the reference and the window sample, or raise ReportError(404) saying what
    is missing."""
    from modelmon.store.features import load_reference, sample_window

    with engine.connect() as conn:
        check_inputs(cfg, conn, window)
        reference = load_reference(conn, window.model)
        sample = sample_window(
            conn, window.model, window.start, window.end, cfg.features.sample_rows,
            window.version,
        )
    if reference is None or sample.with_features == 0:  # deleted since the check
        raise ReportError(
            404, f"the reference or the window of {window.model!r} just changed; retry"
        )
    return ReportInputs(window, reference, sample)


@dataclass(frozen=True)
class ColumnPlan:
    """Which features the drift run compares, each declared numerical or categorical,
    with its values as the drift test takes them, and which it leaves out and why."""

    numeric: list[str]
    categorical: list[str]
    reference: dict[str, list[Any]]  # planned feature -> reference values (None = left out)
    current: dict[str, list[Any]]  # planned feature -> window values (None = left out)
    skipped: dict[str, str] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)

    @property
    def columns(self) -> list[str]:
        return [c for c in self.reference if c in self.numeric or c in self.categorical]


def _typed(values: Sequence[Any], json_type: str | None) -> list[Any]:
    """The values of the reference's JSON type, the rest as missing (None), objects as
    their canonical text: exactly the values the feature-drift family tests."""
    from modelmon.monitors.stats_features import _as_text
    from modelmon.monitors.stats_features import json_type as type_of

    out: list[Any] = []
    for v in values:
        t = type_of(v)
        out.append(None if t is None or t != json_type else _as_text(v) if t == "object" else v)
    return out


def plan_columns(
    reference: dict[str, list[Any]], current: dict[str, list[Any]], limit: int
) -> ColumnPlan:
    """Plan the drift run the way the feature-drift family computes it (monitors/features.py
    and stats_features.py): the same features (the reference's first, at most `limit`), each
    read as its reference's JSON type, with the kind evidently infers from the reference
    column. A value of another type is left out (counted as a type change by the
    data-quality family); a feature with no value on one side is not compared."""
    from modelmon.monitors.features import select
    from modelmon.monitors.stats_features import column, column_kind

    present = {k: n for k, v in current.items() if (n := sum(x is not None for x in v))}
    kept, _ = select(list(reference), present, limit)
    plan = ColumnPlan([], [], {}, {})
    for name in sorted(set(reference) | set(present)):
        if name not in kept:
            plan.skipped[name] = f"beyond features.max_per_model ({limit})"
    for name in kept:
        if name not in reference:
            plan.skipped[name] = "not in the reference"
            continue
        ref_col = column(reference[name])
        if ref_col.present == 0:
            plan.skipped[name] = "no value in the reference"
            continue
        if name not in present:
            plan.skipped[name] = "no value in the window"
            continue
        cur_col = column(current[name], ref_col.type)
        if cur_col.other_type:
            plan.notes[name] = (
                f"{cur_col.other_type} window values not of the reference's type "
                f"({ref_col.type}) left out"
            )
        if cur_col.present - cur_col.other_type == 0:
            plan.skipped[name] = f"no value of the reference's type ({ref_col.type}) in the window"
            continue
        (plan.numeric if column_kind(ref_col) == "numerical" else plan.categorical).append(name)
        plan.reference[name] = _typed(reference[name], ref_col.type)
        plan.current[name] = _typed(current[name], ref_col.type)
    return plan


def feature_frame(values: dict[str, list[Any]], plan: ColumnPlan) -> pd.DataFrame:
    """One side's planned features as a DataFrame: numerical ones as float (missing = NaN),
    categorical ones as objects (missing = None), so evidently sees the declared kinds."""
    import pandas as pd

    data: dict[str, Any] = {}
    for name in plan.columns:
        if name in plan.numeric:
            data[name] = pd.array(
                [math.nan if v is None else float(v) for v in values[name]], dtype="float64"
            )
        else:
            data[name] = pd.array(values[name], dtype=object)
    return pd.DataFrame(data, columns=plan.columns)


def labelled_frame(
    predictions: Sequence[str | None] | None, labels: Sequence[str | None] | None
) -> pd.DataFrame | None:
    """Prediction and label of the rows that have both, or None when there are none."""
    import pandas as pd

    if predictions is None or labels is None:
        return None
    pairs = zip(predictions, labels, strict=True)
    rows = [(p, t) for p, t in pairs if p is not None and t is not None]
    if not rows:
        return None
    return pd.DataFrame(rows, columns=[PREDICTION, TARGET], dtype=object)


def _evidently() -> Any:
    try:
        import evidently
    except ImportError:
        raise ReportError(
            503, "the report needs evidently: pip install 'modelmon[evidently]'"
        ) from None
    return evidently


def drift_snapshot(
    reference: pd.DataFrame, current: pd.DataFrame, plan: ColumnPlan, drift_share: float
) -> Any:
    """Evidently's DataDriftPreset over the planned features, kinds declared explicitly."""
    ev = _evidently()
    from evidently.presets import DataDriftPreset

    definition = ev.DataDefinition(
        numerical_columns=plan.numeric, categorical_columns=plan.categorical
    )
    report = ev.Report([DataDriftPreset(columns=plan.columns, drift_share=drift_share)])
    return report.run(
        ev.Dataset.from_pandas(current, data_definition=definition),
        ev.Dataset.from_pandas(reference, data_definition=definition),
    )


def classification_snapshot(
    current: pd.DataFrame, reference: pd.DataFrame | None, positive_class: str | None
) -> Any:
    """Evidently's ClassificationPreset on labelled rows; binary when a positive class is set."""
    ev = _evidently()
    from evidently.presets import ClassificationPreset

    task = (
        ev.BinaryClassification(
            target=TARGET, prediction_labels=PREDICTION, pos_label=positive_class
        )
        if positive_class is not None
        else ev.MulticlassClassification(target=TARGET, prediction_labels=PREDICTION)
    )
    definition = ev.DataDefinition(categorical_columns=[PREDICTION, TARGET], classification=[task])
    ref = (None if reference is None
           else ev.Dataset.from_pandas(reference, data_definition=definition))
    return ev.Report([ClassificationPreset()]).run(
        ev.Dataset.from_pandas(current, data_definition=definition), ref
    )


def render(snapshots: Sequence[Any], title: str, header: str) -> str:
    """One standalone HTML page of every snapshot's widgets, with `header` (HTML) on top.

    The page gets a title, and an empty inline icon so that a browser asks the server
    for no /favicon.ico (a 404 in the console of every report opened from the API).

    evidently renders one snapshot per page; the widgets of several are joined the way
    `Snapshot.get_html_str` joins one snapshot's (evidently pinned <0.8 in pyproject).
    """
    from evidently.core.metric_types import render_widgets
    from evidently.legacy.renderers.html_widgets import group_widget

    widgets = [group_widget(title="", widgets=[w for s in snapshots for w in s._widgets])]
    tests = [w for s in snapshots for w in s._tests_widgets]
    page = render_widgets(widgets + tests, as_iframe=False)
    head = f'<title>{html.escape(title)}</title>\n<link rel="icon" href="data:,">'
    return page.replace("<head>", "<head>\n" + head, 1).replace("<body>", "<body>\n" + header, 1)


@dataclass(frozen=True)
class Report:
    """A rendered report and what it was computed from."""

    html: str
    plan: ColumnPlan
    current_rows: int
    labelled_rows: int
    classification: str  # what the classification part shows, or why it is absent
    results: dict[str, Any]  # evidently's own summary of the runs (`Snapshot.dict()`)

    @property
    def drifted(self) -> tuple[int, float]:
        """(drifted features, their share), as evidently's DriftedColumnsCount counts them."""
        for metric in self.results["drift"]["metrics"]:
            if metric["config"]["type"].endswith("DriftedColumnsCount"):
                return int(metric["value"]["count"]), float(metric["value"]["share"])
        raise KeyError("DriftedColumnsCount")


def build(cfg: Config, inputs: ReportInputs) -> Report:
    """Render the report of `inputs`: drift of the features, then classification quality."""
    settings = cfg.model(inputs.window.model)
    ref, sample = inputs.reference, inputs.sample
    plan = plan_columns(ref.columns, sample.columns, cfg.features.max_per_model)
    if not plan.columns:
        raise ReportError(
            404, f"no feature of model {inputs.window.model!r} has values in both the window "
            f"and the reference ({', '.join(sorted(plan.skipped)) or 'none stored'})",
        )
    snapshots = [
        drift_snapshot(
            feature_frame(plan.reference, plan), feature_frame(plan.current, plan), plan,
            settings.thresholds.feature_drift_share,
        )
    ]
    current = labelled_frame(sample.predictions, sample.labels)
    labelled = 0 if current is None else len(current)
    if current is None or labelled < settings.min_labels:
        note = (f"not shown: {labelled} labelled predictions in the sample, fewer than "
                f"min_labels ({settings.min_labels})")
    else:
        reference = labelled_frame(ref.predictions, ref.labels)
        positive = settings.positive_class if settings.task == "binary" else None
        snapshots.append(classification_snapshot(current, reference, positive))
        note = f"on the {labelled} labelled predictions of the sample, " + (
            f"against {len(reference)} labelled reference rows" if reference is not None
            else "without reference (the reference has no predictions with labels)"
        )
    header = _header(inputs, plan, note)
    # Snapshot.json() turns numpy values into plain JSON ones.
    results = {"drift": json.loads(snapshots[0].json())}
    if len(snapshots) > 1:
        results["classification"] = json.loads(snapshots[1].json())
    page = render(snapshots, f"modelmon report: {inputs.window.model}", header)
    return Report(page, plan, len(sample.request_ids), labelled, note, results)


def _header(inputs: ReportInputs, plan: ColumnPlan, classification: str) -> str:
    """A plain-HTML summary above evidently's widgets: what was compared with what."""
    w, ref, sample = inputs.window, inputs.reference, inputs.sample
    items = [
        f"Window: {w.describe()}; sample of {len(sample.request_ids)} predictions "
        f"({sample.with_features} of {sample.total} in the window carry features)",
        f"Reference: {ref.rows} rows from {ref.source} (set {_utc(ref.created_at)})",
        f"Features compared: {len(plan.numeric)} numeric, {len(plan.categorical)} categorical",
        f"Classification quality: {classification}",
    ]
    items += [f"Not compared: {name} ({why})" for name, why in sorted(plan.skipped.items())]
    items += [f"{name}: {note}" for name, note in sorted(plan.notes.items())]
    lis = "".join(f"<li>{html.escape(i)}</li>" for i in items)
    title = html.escape(f"modelmon report: {w.model}")
    return (
        '<div id="modelmon-report-header" style="font-family: sans-serif; margin: 16px;">'
        f"<h2>{title}</h2><ul>{lis}</ul></div>"
    )
