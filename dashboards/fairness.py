"""Fairness: per sensitive attribute, how the model treats each slice."""

from __future__ import annotations

from typing import Any

from modelmon.config import Thresholds
from modelmon.dashboards.grafana import (
    Panel,
    Row,
    dashboard,
    dashboard_links,
    line_at,
    query_variable,
    target,
)

UID = "modelmon-fairness"
_T = Thresholds()
# Fairness rows come per model version too; this dashboard shows all versions together.
MA = 'model="$model", model_version="*", attribute="$attribute", window="$window"'


def build() -> dict[str, Any]:
    per_attribute = Row("Attribute: $attribute ($window window)", [
        Panel("Selection rate per slice",
              [target(f"modelmon_slice_selection_rate_ratio{{{MA}}}", "{{slice}}")],
              unit="percentunit", width=12, min=0, max=1,
              description="Share of the slice's predictions that are the positive class."),
        Panel("True positive rate per slice",
              [target(f"modelmon_slice_true_positive_rate_ratio{{{MA}}}", "{{slice}}")],
              unit="percentunit", width=12, min=0, max=1,
              description="Recall per slice on labelled predictions (equal opportunity compares these)."),
        Panel("Disparate-impact ratio",
              [target(f"modelmon_fairness_disparate_impact_ratio{{{MA}}}", "lowest / highest selection rate")],
              unit="percentunit", width=8, min=0, max=1,
              threshold=line_at(_T.disparate_impact_min, below_bad=True),
              description=f"Four-fifths rule: below {_T.disparate_impact_min} one slice is selected at under "
                          "80% of the rate of the most-selected slice."),
        Panel("Demographic-parity difference",
              [target(f"modelmon_fairness_demographic_parity_difference{{{MA}}}", "max - min selection rate")],
              unit="percentunit", width=8, min=0, max=1, threshold=line_at(_T.demographic_parity_max)),
        Panel("Equal-opportunity difference",
              [target(f"modelmon_fairness_equal_opportunity_difference{{{MA}}}", "max - min TPR")],
              unit="percentunit", width=8, min=0, max=1, threshold=line_at(_T.equal_opportunity_max)),
    ], repeat="attribute")
    variables = [
        query_variable("model", "label_values(modelmon_fairness_disparate_impact_ratio, model)", "Model"),
        query_variable("attribute",
                       'label_values(modelmon_fairness_disparate_impact_ratio{model="$model"}, attribute)',
                       "Attribute", include_all=True, multi=True),
        query_variable("window",
                       'label_values(modelmon_fairness_disparate_impact_ratio{model="$model"}, window)', "Window"),
    ]
    return dashboard(UID, "modelmon / Fairness",
                     "Per sensitive attribute: selection rate and TPR per slice, parity gaps, disparate impact.",
                     [per_attribute], variables, links=dashboard_links())
