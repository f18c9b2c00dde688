"""The model dashboard's input-feature row, and its link to the HTML report.

The `feature_drift` and `data_quality` families run on their own windows
(`features.windows`, default 1h and 1d) rather than the model's, so these
panels do not filter on the dashboard's `$window`: they show every feature
window, labelled with it. The families compute all versions together
(`model_version="*"`), so the version picker does not apply to this row. A
model without features or without a stored reference shows no data here.
"""

from __future__ import annotations

from typing import Any

from modelmon.config import Thresholds
from modelmon.dashboards.grafana import Panel, Row, dashed, line_at, target

_T = Thresholds()
# The families compute all versions together: the version picker does not apply here.
FV = 'model="$model"'
REPORT_WINDOW = "1d"
_DROP = {"Time": True, "__name__": True, "instance": True, "job": True, "model": True,
         "model_version": True}


def report_link(api_base_url: str) -> dict[str, Any]:
    """Dashboard link to the Evidently report of the picked model's last day (api /v1/report)."""
    return {
        "asDropdown": False, "icon": "doc", "includeVars": False, "keepTime": False, "tags": [],
        "targetBlank": True, "title": f"Feature report ({REPORT_WINDOW}, Evidently)",
        "tooltip": "The model's input features over the last day against its stored reference",
        "type": "link", "url": f"{api_base_url.rstrip('/')}/v1/report?model=${{model}}&window={REPORT_WINDOW}",
    }


def _instant(expr: str) -> dict[str, Any]:
    """A table query of the latest values."""
    return target(expr, "", format="table", instant=True, range=False)


def _merged_table(columns: dict[str, int], renames: dict[str, str]) -> dict[str, Any]:
    """Transformations joining instant queries on their labels into one row per label set."""
    return {"transformations": [
        {"id": "merge", "options": {}},
        {"id": "organize", "options": {"excludeByName": _DROP, "indexByName": columns,
                                       "renameByName": renames}},
    ]}


def _drifted_cells() -> list[dict[str, Any]]:
    mapping = {"type": "value", "options": {"0": {"text": "no", "color": "green", "index": 0},
                                            "1": {"text": "yes", "color": "red", "index": 1}}}
    return [{"matcher": {"id": "byName", "options": "drifted"}, "properties": [
        {"id": "mappings", "value": [mapping]},
        {"id": "custom.cellOptions", "value": {"type": "color-background"}},
    ]}]


def features_row() -> Row:
    share = _T.feature_drift_share
    counts = ("drift_compared", "drift_detected", "reference_only", "current_only")
    return Row("Input features (every feature window, all versions)", [
        Panel("Share of features drifted",
              [target(f"modelmon_feature_drift_share_ratio{{{FV}}}", "{{window}}")],
              unit="percentunit", width=12, min=0, max=1, threshold=line_at(share),
              description=f"Share of the features compared with the stored reference whose drift test "
                          f"detects drift (evidently's dataset drift). ModelmonFeatureDrift opens a ticket "
                          f"at {share:g} (the default feature_drift_share). No value below min_samples "
                          "sampled predictions."),
        Panel("Features compared, drifted and on one side only",
              [_instant(f"modelmon_feature_{c}_features{{{FV}}}") for c in counts] + [_instant(f"modelmon_features_omitted{{{FV}}}")],
              kind="table", width=12,
              options={"cellHeight": "sm", "showHeader": True, "footer": {"show": False}},
              extra=_merged_table(
                  {"window": 0, "Value #A": 1, "Value #B": 2, "Value #C": 3, "Value #D": 4,
                   "Value #E": 5},
                  {"Value #A": "compared", "Value #B": "drifted", "Value #C": "reference only",
                   "Value #D": "window only", "Value #E": "omitted (over max_per_model)"}),
              description="Per feature window: features tested, drifted, present in the reference only "
                          "(a feature that stopped arriving) or in the window only (a new or renamed "
                          "feature), and features beyond features.max_per_model."),
        Panel("Drift per feature (latest)",
              [_instant(f"modelmon_feature_drift_score{{{FV}}}"),
               _instant(f"modelmon_feature_drift_threshold{{{FV}}}"),
               _instant(f"modelmon_feature_drift_detected{{{FV}}}")],
              kind="table", width=24, height=9, overrides=_drifted_cells(),
              options={"cellHeight": "sm", "showHeader": True, "footer": {"show": False},
                       "sortBy": [{"desc": True, "displayName": "drifted"}]},
              extra=_merged_table(
                  {"window": 0, "feature": 1, "stattest": 2, "Value #A": 3, "Value #B": 4,
                   "Value #C": 5},
                  {"Value #A": "score", "Value #B": "threshold", "Value #C": "drifted"}),
              description="Each feature's drift test (chosen by type and sample size, as evidently does): "
                          "ks, chisquare and z give a p-value (drift below the threshold), wasserstein "
                          "and jensenshannon a distance (drift above it)."),
        Panel("Missing ratio per feature",
              [target(f"modelmon_feature_missing_ratio{{{FV}}}", "{{window}} {{feature}}"),
               target(f"modelmon_feature_reference_missing_ratio{{{FV}}}",
                      "{{window}} {{feature}} (reference)")],
              unit="percentunit", width=12, min=0, max=1, overrides=[dashed("/reference/")],
              description=f"Share of sampled predictions without the feature or with null (solid) against "
                          f"the reference (dashed). ModelmonDataQuality fires when it exceeds the "
                          f"reference's by more than {_T.feature_missing_increase:g}."),
        Panel("Unseen categories and out-of-range numbers",
              [target(f"modelmon_feature_unseen_category_ratio{{{FV}}}",
                      "{{window}} {{feature}} unseen"),
               target(f"modelmon_feature_out_of_range_ratio{{{FV}}}",
                      "{{window}} {{feature}} out of range")],
              unit="percentunit", width=12, min=0, threshold=line_at(_T.feature_unseen_share),
              description=f"Categorical features: share of values the reference never saw; numeric "
                          f"features: share outside the reference's range. The default thresholds are "
                          f"{_T.feature_unseen_share:g} and {_T.feature_out_of_range_share:g}."),
        Panel("Type changes per feature",
              [target(f"modelmon_feature_type_change_ratio{{{FV}}}", "{{window}} {{feature}}")],
              unit="percentunit", width=12, min=0, threshold=line_at(_T.feature_type_change_share),
              description=f"Share of a feature's values whose JSON type differs from the reference's "
                          f"(a number sent as a string); the default threshold is "
                          f"{_T.feature_type_change_share:g}."),
        Panel("Predictions carrying features",
              [target(f"modelmon_features_present_ratio{{{FV}}}", "{{window}}")],
              unit="percentunit", width=12, min=0, max=1,
              description="Share of the window's predictions whose log carries features at all: a drop "
                          "points at the model service's logging, not at one feature. "
                          "ModelmonFeaturesAbsent fires when it is 0 on at least min_samples predictions."),
    ])
