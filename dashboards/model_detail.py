"""Model detail: everything modelmon knows about one model, for the person who got paged."""

from __future__ import annotations

from typing import Any

from modelmon.config import Thresholds
from modelmon.dashboards.grafana import (
    Panel,
    Row,
    dashboard,
    dashboard_links,
    dashed,
    line_at,
    query_variable,
    stat,
    target,
    thresholds,
)

UID = "modelmon-model"
_T = Thresholds()

# Selectors shared by the panels.
M = 'model="$model"'
MV = 'model="$model", model_version=~"$model_version"'
# Monitor results carry model_version "*" for all versions together (and a
# version's own value where a monitor splits by version).
MW = 'model="$model", model_version=~"$model_version|[*]", window="$window"'


def build() -> dict[str, Any]:
    traffic = Row("Traffic and freshness", [
        Panel("Predictions / s by version and status",
              [target(f"sum by (model_version, status) (rate(modelmon_predictions_total{{{MV}}}[$__rate_interval]))",
                      "{{model_version}} {{status}}")],
              unit="reqps", width=10),
        Panel("Feedback (labels) / s",
              [target(f"sum (rate(modelmon_feedback_total{{{M}}}[$__rate_interval]))", "labels")],
              unit="reqps", width=8),
        stat("Seconds since last prediction", f"time() - max(modelmon_last_prediction_timestamp_seconds{{{M}}})",
             legend="freshness", unit="s", width=6, threshold=thresholds((None, "green"), (_T.freshness, "red"))),
    ])
    shift = Row("Class distribution ($window window)", [
        Panel("Class shares vs baseline",
              [target(f"modelmon_class_share_ratio{{{MW}}}", "{{class}}"),
               target(f"modelmon_class_baseline_share_ratio{{{MW}}}", "{{class}} ({{baseline}} baseline)")],
              unit="percentunit", width=16, min=0, max=1, overrides=[dashed("/baseline/")],
              description="Share of predictions per class in the window (solid) against the research "
                          "baseline and the previous window (dashed)."),
        Panel("Largest share ratio vs baseline",
              [target(f"modelmon_class_shift_max_ratio{{{MW}}}", "{{class}} vs {{baseline}}")],
              width=8, min=0, threshold=line_at(_T.class_ratio),
              description=f"The class whose share grew most, as current / baseline share; "
                          f"the default alert threshold is {_T.class_ratio}x."),
        Panel("Population stability index",
              [target(f"modelmon_class_shift_psi{{{MW}}}", "PSI vs {{baseline}}")],
              width=8, min=0, threshold=line_at(_T.psi),
              description=f"PSI of the predicted-class distribution; the default alert threshold is {_T.psi}."),
        Panel("Jensen-Shannon distance",
              [target(f"modelmon_class_shift_js_distance{{{MW}}}", "JS vs {{baseline}}")],
              width=8, min=0, max=1, threshold=line_at(_T.js_distance)),
        Panel("Chi-square p-value",
              [target(f"modelmon_class_shift_chi2_pvalue{{{MW}}}", "p vs {{baseline}}")],
              width=8, min=0, max=1, threshold=line_at(_T.chi2_pvalue, below_bad=True),
              custom={"scaleDistribution": {"log": 10, "type": "log"}},
              description="Small p-values mean the class counts are unlikely under the baseline."),
    ])
    accuracy = Row("Accuracy ($window window)", [
        Panel("Accuracy with 95% interval",
              [target(f"modelmon_accuracy_ratio{{{MW}}}", "accuracy"),
               target(f"modelmon_accuracy_lower_ratio{{{MW}}}", "lower bound (Wilson 95%)"),
               target(f"modelmon_accuracy_upper_ratio{{{MW}}}", "upper bound (Wilson 95%)")],
              unit="percentunit", width=12, min=0, max=1, overrides=[dashed("/bound/")],
              description="Realised accuracy on the labelled predictions of the window."),
        Panel("Label coverage",
              [target(f"modelmon_label_coverage_ratio{{{MW}}}", "coverage")],
              unit="percentunit", width=6, min=0, max=1,
              description="Share of the window's predictions that have a label yet."),
        Panel("Labelled predictions",
              [target(f"modelmon_labeled_predictions{{{MW}}}", "labelled")],
              width=6, min=0),
        Panel("Estimated vs realised accuracy",
              [target(f"modelmon_estimated_accuracy_ratio{{{MW}}}", "estimated (from confidence)"),
               target(f"modelmon_accuracy_ratio{{{MW}}}", "realised (labelled)"),
               target(f"modelmon_mean_confidence_ratio{{{MW}}}", "mean confidence")],
              unit="percentunit", width=24, min=0, max=1,
              description="The estimate is available at once; the realised accuracy as labels mature."),
    ])
    latency = Row("Latency and SLOs", [
        Panel("Latency quantiles (monitor, $window window)",
              [target(f"modelmon_latency_seconds{{{MW}}}", "p{{quantile}}")], unit="s", width=12, min=0),
        Panel("Latency quantiles (histogram)",
              [target("histogram_quantile(0.5, sum by (le) (rate(modelmon_prediction_latency_seconds_bucket"
                      f"{{{M}}}[$__rate_interval])))", "p50"),
               target("histogram_quantile(0.95, sum by (le) (rate(modelmon_prediction_latency_seconds_bucket"
                      f"{{{M}}}[$__rate_interval])))", "p95"),
               target("histogram_quantile(0.99, sum by (le) (rate(modelmon_prediction_latency_seconds_bucket"
                      f"{{{M}}}[$__rate_interval])))", "p99")],
              unit="s", width=12, min=0,
              description="From the ingest histogram; bucket edges include every SLO threshold."),
        Panel("Latency heatmap",
              [target(f"sum by (le) (increase(modelmon_prediction_latency_seconds_bucket{{{M}}}[$__rate_interval]))",
                      "{{le}}", format="heatmap")],
              kind="heatmap", unit="s", width=24, height=9,
              options={"calculate": False, "cellGap": 1, "color": {"mode": "scheme", "scheme": "Oranges",
                                                                    "steps": 64},
                       "legend": {"show": True}, "tooltip": {"show": True, "yHistogram": True},
                       "yAxis": {"axisPlacement": "left", "unit": "s"}, "rowsFrame": {"layout": "auto"}}),
        stat("SLO error budget remaining", f"modelmon_slo_error_budget_remaining_ratio{{{M}}}", legend="{{slo}}",
             unit="percentunit", width=8, decimals=1,
             threshold=thresholds((None, "red"), (0.25, "orange"), (0.5, "green"))),
        Panel("SLO burn rate",
              [target(f"modelmon_slo_burn_rate{{{M}}}", "{{slo}} {{window}}")], width=16, min=0,
              threshold=thresholds((None, "transparent"), (1, "orange"), (14.4, "red")),
              description="1 = spending the budget exactly over the SLO period; 14.4 over 1h pages."),
    ])
    ingest = Row("Ingest health", [
        Panel("Dead letters / s by reason",
              [target("sum by (reason) (rate(modelmon_ingest_dead_letters_total[$__rate_interval]))", "{{reason}}")],
              unit="reqps", width=8, min=0,
              description="Messages that broke the event contract (all models: a broken message may name none)."),
        Panel("Consumer lag",
              [target("sum by (topic) (modelmon_consumer_lag_messages)", "{{topic}}")], width=8, min=0),
        Panel("Seconds since each monitor's last success",
              [target(f"time() - modelmon_monitor_last_success_timestamp_seconds{{{M}}}", "{{monitor}}")],
              unit="s", width=8, min=0),
    ])
    variables = [
        query_variable("model", "label_values(modelmon_predictions_total, model)", "Model"),
        query_variable("model_version", 'label_values(modelmon_predictions_total{model="$model"}, model_version)',
                       "Version", include_all=True, multi=True, all_value=".*"),
        query_variable("window", 'label_values(modelmon_class_share_ratio{model="$model"}, window)', "Window"),
    ]
    return dashboard(UID, "modelmon / Model detail",
                     "One model: class shift, accuracy, latency and SLOs, ingest health.",
                     [traffic, shift, accuracy, latency, ingest], variables, links=dashboard_links())
