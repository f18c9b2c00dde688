"""Fleet overview: one line per model, for the person who asks "is anything wrong?"."""

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
    stat,
    target,
    thresholds,
)

UID = "modelmon-fleet"
_T = Thresholds()


def build() -> dict[str, Any]:
    w = 'model_version="*", window="$window"'
    overview = Row("Fleet", [
        stat("Predictions / s", 'sum by (model) (rate(modelmon_predictions_total[$__rate_interval]))',
             unit="reqps", width=6, height=6, description="Ingested predictions per second, all versions."),
        stat("Seconds since last prediction",
             "time() - max by (model) (modelmon_last_prediction_timestamp_seconds)", unit="s", width=6,
             height=6, threshold=thresholds((None, "green"), (_T.freshness, "red")),
             description=f"Data freshness; the freshness alert fires above {_T.freshness:.0f} s by default."),
        stat("Firing alerts",
             'sum by (model) (ALERTS{alertstate="firing", model!=""})'
             " or (0 * max by (model) (modelmon_last_prediction_timestamp_seconds))",
             width=6, height=6, threshold=thresholds((None, "green"), (1, "red")),
             description="Prometheus alerts firing per model (0 when none)."),
        stat("Error ratio",
             'sum by (model) (rate(modelmon_predictions_total{status="error"}[$__rate_interval]))'
             " / sum by (model) (rate(modelmon_predictions_total[$__rate_interval]))",
             unit="percentunit", width=6, height=6, decimals=2,
             threshold=thresholds((None, "green"), (_T.dead_letter_rate, "red")),
             description="Share of predictions logged with status=error."),
    ])
    alerts = Row("Alerts", [
        Panel("Firing alerts", [], kind="alertlist", width=24, height=7,
              description="Alerts from the modelmon rules (Prometheus datasource-managed alerts).",
              options={"alertInstanceLabelFilter": "", "alertName": "", "dashboardAlerts": False,
                       "datasource": "${datasource}", "groupBy": [], "groupMode": "default",
                       "maxItems": 50, "sortOrder": 1, "stateFilter": {"firing": True, "pending": True},
                       "viewMode": "list"}),
    ])
    quality = Row("Quality ($window window)", [
        Panel("Accuracy (labelled)", [target(f"max by (model) (modelmon_accuracy_ratio{{{w}}})", "{{model}}")],
              unit="percentunit", width=8, min=0, max=1,
              description="Realised accuracy on predictions whose labels have arrived."),
        Panel("Estimated accuracy (no labels needed)",
              [target(f"max by (model) (modelmon_estimated_accuracy_ratio{{{w}}})", "{{model}}")],
              unit="percentunit", width=8, min=0, max=1,
              description="Accuracy estimated from the model's own confidence."),
        Panel("Class shift (PSI)", [target(f"max by (model) (modelmon_class_shift_psi{{{w}}})", "{{model}}")],
              width=8, min=0, threshold=line_at(_T.psi),
              description=f"Worst population stability index against any baseline; alert above {_T.psi}."),
    ])
    traffic = Row("Traffic", [
        Panel("Predictions / s by model",
              [target("sum by (model) (rate(modelmon_predictions_total[$__rate_interval]))", "{{model}}")],
              unit="reqps", width=12),
        Panel("Feedback (labels) / s by model",
              [target("sum by (model) (rate(modelmon_feedback_total[$__rate_interval]))", "{{model}}")],
              unit="reqps", width=12),
    ])
    variables = [query_variable("window", "label_values(modelmon_class_share_ratio, window)", "Window")]
    return dashboard(UID, "modelmon / Fleet overview",
                     "Every monitored model: traffic, freshness, alerts, accuracy and class shift.",
                     [overview, alerts, quality, traffic], variables, links=dashboard_links())
