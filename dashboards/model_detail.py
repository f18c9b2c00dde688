"""Model detail: everything modelmon knows about one model, for the person who got paged."""

from __future__ import annotations

from typing import Any

from modelmon.config import AlertsConfig, Thresholds
from modelmon.dashboards.features import features_row, report_link
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

# Selectors shared by the panels. Monitor results carry model_version "*" for
# all versions together and each busy version's own value; the version picker
# lists exactly those (from modelmon_requests_per_second), "*" selected by
# default. It is a multi-value variable, so Grafana regex-escapes its values
# ("*" becomes \\*): use it only with =~.
M = 'model="$model"'
MW = 'model="$model", model_version=~"$model_version", window="$window"'
# The Versions row compares versions, so it shows each version's own rows
# whatever the picker says.
VW = 'model="$model", model_version!="*", window="$window"'
ALL = 'model="$model", model_version="*", window="$window"'
CMP = 'model="$model", window="$window"'


def _picked_rate(counter: str) -> str:
    """Rate of an ingest counter per model_version and status, plus a "*" series
    (all versions together; the counters have none), kept to the picked versions."""
    rate = f"rate({counter}{{{M}}}[$__rate_interval])"
    together = f'label_replace(sum by (status) ({rate}), "model_version", "*", "", "")'
    picked = f'group by (model_version) (modelmon_requests_per_second{{{M}, model_version=~"$model_version"}})'
    return f"(sum by (model_version, status) ({rate}) or {together}) and on (model_version) {picked}"


def _verdict_colours() -> list[dict[str, Any]]:
    colours = (("^worse", "red"), ("^not_worse", "green"), ("^inconclusive", "yellow"))
    return [{"matcher": {"id": "byRegexp", "options": f"/{regex}/"},
             "properties": [{"id": "color", "value": {"fixedColor": colour, "mode": "fixed"}}]}
            for regex, colour in colours]


def versions_row() -> Row:
    """Canary / A-B view: traffic, quality and latency per version, and the compare verdict."""
    rps = "modelmon_requests_per_second"
    margin = _T.version_accuracy_margin
    return Row("Versions ($window window)", [
        Panel("Traffic share per version",
              [target(f"{rps}{{{VW}}} / ignoring (model_version) group_left {rps}{{{ALL}}}", "{{model_version}}")],
              unit="percentunit", width=8, min=0, max=1,
              custom={"stacking": {"group": "A", "mode": "normal"}, "fillOpacity": 40},
              description="Each version's share of the model's requests in the window (the busiest "
                          "versions, `version_top_k` in modelmon.yaml)."),
        Panel("Verdict: candidate vs baseline",
              [target(f"modelmon_version_verdict{{{CMP}}}",
                      "{{verdict}}: {{candidate}} vs {{baseline}} ({{reason}})")],
              kind="stat", width=6, no_value="one version", overrides=_verdict_colours(),
              options={"colorMode": "background", "graphMode": "none", "justifyMode": "center",
                       "orientation": "auto", "textMode": "name", "wideLayout": True,
                       "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}},
              description="The compare family's verdict for the window: worse, not_worse or "
                          "inconclusive (with the reason, e.g. too_few_labels). ModelmonCandidateWorse "
                          "pages when `worse` holds."),
        Panel("Verdict per window",
              [target(f"modelmon_version_verdict{{{M}}}", "", format="table", instant=True, range=False)],
              kind="table", width=10, no_value="one version",
              options={"cellHeight": "sm", "showHeader": True, "footer": {"show": False}},
              extra={"transformations": [{"id": "organize", "options": {
                  "excludeByName": {"Time": True, "Value": True, "__name__": True, "instance": True,
                                    "job": True, "model": True, "model_version": True},
                  "indexByName": {"window": 0, "verdict": 1, "reason": 2, "candidate": 3, "baseline": 4},
                  "renameByName": {}}}]},
              description="Latest verdict of every window, with which versions were compared."),
        Panel("Accuracy and estimated accuracy per version",
              [target(f"modelmon_accuracy_ratio{{{VW}}}", "{{model_version}} accuracy"),
               target(f"modelmon_estimated_accuracy_ratio{{{VW}}}", "{{model_version}} estimated")],
              unit="percentunit", width=12, min=0, max=1, overrides=[dashed("/estimated/")],
              description="Realised accuracy (labelled predictions) solid, estimated from the scores dashed."),
        Panel("Accuracy difference, candidate - baseline (95% interval)",
              [target(f"modelmon_version_accuracy_difference{{{CMP}}}", "{{candidate}} - {{baseline}}"),
               target(f"modelmon_version_accuracy_difference_lower{{{CMP}}}", "lower bound (Newcombe 95%)"),
               target(f"modelmon_version_accuracy_difference_upper{{{CMP}}}", "upper bound (Newcombe 95%)"),
               target(f"modelmon_version_estimated_accuracy_difference{{{CMP}}}", "estimated (no labels)")],
              unit="percentunit", width=12, threshold=line_at(-margin, below_bad=True),
              overrides=[dashed("/bound|estimated/")],
              description=f"Worse when the whole interval lies below -{margin:g} (the default "
                          f"version_accuracy_margin), not worse when it lies above it."),
        Panel("Latency p95 per version",
              [target(f'modelmon_latency_seconds{{{VW}, quantile="0.95"}}', "{{model_version}} p95")],
              unit="s", width=12, min=0),
        Panel("Error ratio per version",
              [target(f"modelmon_error_ratio{{{VW}}}", "{{model_version}}")],
              unit="percentunit", width=12, min=0,
              description="Share of requests logged with status=error."),
    ])


def build(api_base_url: str = AlertsConfig().api_base_url) -> dict[str, Any]:
    """The dashboard; `api_base_url` is where its feature-report link points (alerts.api_base_url)."""
    traffic = Row("Traffic and freshness", [
        Panel("Predictions / s by version and status",
              [target(_picked_rate("modelmon_predictions_total"),
                      "{{model_version}} {{status}}")],
              unit="reqps", width=10, description="The picked versions (\"*\": all versions together)."),
        Panel("Feedback (labels) / s",
              [target(f"sum (rate(modelmon_feedback_total{{{M}}}[$__rate_interval]))", "labels")],
              unit="reqps", width=8),
        stat("Seconds since last prediction", f"time() - max(modelmon_last_prediction_timestamp_seconds{{{M}}})",
             legend="freshness", unit="s", width=6, threshold=thresholds((None, "green"), (_T.freshness, "red"))),
    ])
    shift = Row("Class distribution ($window window)", [
        Panel("Class shares vs baseline",
              [target(f"modelmon_class_share_ratio{{{MW}}}", "{{model_version}} {{class}}"),
               target(f"modelmon_class_baseline_share_ratio{{{MW}}}",
                      "{{model_version}} {{class}} ({{baseline}} baseline)")],
              unit="percentunit", width=16, min=0, max=1, overrides=[dashed("/baseline/")],
              description="Share of predictions per class in the window (solid) against the research "
                          "baseline and the previous window (dashed)."),
        Panel("Largest share ratio vs baseline",
              [target(f"modelmon_class_shift_max_ratio{{{MW}}}", "{{model_version}} {{class}} vs {{baseline}}")],
              width=8, min=0, threshold=line_at(_T.class_ratio),
              description=f"The class whose share grew most, as current / baseline share; "
                          f"the default alert threshold is {_T.class_ratio}x."),
        Panel("Population stability index",
              [target(f"modelmon_class_shift_psi{{{MW}}}", "{{model_version}} PSI vs {{baseline}}")],
              width=8, min=0, threshold=line_at(_T.psi),
              description=f"PSI of the predicted-class distribution; the default alert threshold is {_T.psi}."),
        Panel("Jensen-Shannon distance",
              [target(f"modelmon_class_shift_js_distance{{{MW}}}", "{{model_version}} JS vs {{baseline}}")],
              width=8, min=0, max=1, threshold=line_at(_T.js_distance)),
        Panel("Chi-square p-value",
              [target(f"modelmon_class_shift_chi2_pvalue{{{MW}}}", "{{model_version}} p vs {{baseline}}")],
              width=8, min=0, max=1, threshold=line_at(_T.chi2_pvalue, below_bad=True),
              custom={"scaleDistribution": {"log": 10, "type": "log"}},
              description="Small p-values mean the class counts are unlikely under the baseline."),
    ])
    accuracy = Row("Accuracy ($window window)", [
        Panel("Accuracy with 95% interval",
              [target(f"modelmon_accuracy_ratio{{{MW}}}", "{{model_version}} accuracy"),
               target(f"modelmon_accuracy_lower_ratio{{{MW}}}", "{{model_version}} lower bound (Wilson 95%)"),
               target(f"modelmon_accuracy_upper_ratio{{{MW}}}", "{{model_version}} upper bound (Wilson 95%)")],
              unit="percentunit", width=12, min=0, max=1, overrides=[dashed("/bound/")],
              description="Realised accuracy on the labelled predictions of the window."),
        Panel("Label coverage",
              [target(f"modelmon_label_coverage_ratio{{{MW}}}", "{{model_version}} coverage")],
              unit="percentunit", width=6, min=0, max=1,
              description="Share of the window's predictions that have a label yet."),
        Panel("Labelled predictions",
              [target(f"modelmon_labeled_predictions{{{MW}}}", "{{model_version}} labelled")],
              width=6, min=0),
        Panel("Estimated vs realised accuracy",
              [target(f"modelmon_estimated_accuracy_ratio{{{MW}}}", "{{model_version}} estimated (from confidence)"),
               target(f"modelmon_accuracy_ratio{{{MW}}}", "{{model_version}} realised (labelled)"),
               target(f"modelmon_mean_confidence_ratio{{{MW}}}", "{{model_version}} mean confidence")],
              unit="percentunit", width=24, min=0, max=1,
              description="The estimate is available at once; the realised accuracy as labels mature."),
    ])
    latency = Row("Latency and SLOs", [
        Panel("Latency quantiles (monitor, $window window)",
              [target(f"modelmon_latency_seconds{{{MW}}}", "{{model_version}} p{{quantile}}")], unit="s", width=12, min=0,
              description="From the rollups' sketches, per picked version."),
        Panel("Latency quantiles (histogram)",
              [target("histogram_quantile(0.5, sum by (le) (rate(modelmon_prediction_latency_seconds_bucket"
                      f"{{{M}}}[$__rate_interval])))", "p50"),
               target("histogram_quantile(0.95, sum by (le) (rate(modelmon_prediction_latency_seconds_bucket"
                      f"{{{M}}}[$__rate_interval])))", "p95"),
               target("histogram_quantile(0.99, sum by (le) (rate(modelmon_prediction_latency_seconds_bucket"
                      f"{{{M}}}[$__rate_interval])))", "p99")],
              unit="s", width=12, min=0,
              description="From the ingest histogram (all versions); bucket edges include every SLO threshold."),
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
        # "*" (all versions together) and each busy version: what the monitor results carry.
        query_variable("model_version", 'label_values(modelmon_requests_per_second{model="$model"}, model_version)',
                       "Version", multi=True, default="*"),
        query_variable("window", 'label_values(modelmon_class_share_ratio{model="$model"}, window)', "Window"),
    ]
    return dashboard(UID, "modelmon / Model detail",
                     "One model: versions, class shift, input features, accuracy, latency and SLOs, "
                     "ingest health.",
                     [traffic, versions_row(), shift, features_row(), accuracy, latency, ingest], variables,
                     links=[*dashboard_links(), report_link(api_base_url)])
