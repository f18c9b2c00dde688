"""Alert rules on the input features: ModelmonFeatureDrift, ModelmonDataQuality and
ModelmonFeaturesAbsent.

The `feature_drift` and `data_quality` families (monitors/features.py) export,
per model and feature window, the share of compared features whose drift test
detects drift, and per feature the missing, unseen-category, out-of-range and
type-change shares against the stored reference. These rules compare them with
the model's thresholds, sample-size aware like the class-shift alert: a row
computed on fewer than `min_samples` sampled predictions has no value at all
(status `insufficient_data`), and each rule also joins
`modelmon_monitor_samples` against `min_samples`, so neither alert can fire on
a handful of events. Like every result rule, they read each result once however
many `modelmon monitor` processes export it (`rules.across_processes`).

Predictions that stop carrying features altogether (a producer deploy that
drops the `features` object) would leave both alerts without a sample, and so
silent: ModelmonFeaturesAbsent fires instead, when a model with a stored
reference (without one the families export nothing) logged at least
`min_samples` predictions in a window and none of them carries features.

All three alerts are tickets, as for the class shift: an input distribution that
moved, or a column that degraded, is worth a look within the working day, but
it is not yet harm to users (`ModelmonAccuracyDrop` pages when it is). All
hold for max(10m, 2 x `features.interval`): the families run every
`features.interval`, so the condition must survive at least two of their runs.
"""

from __future__ import annotations

from typing import Any

from modelmon.alerts.rules import (
    PROCESS_LABELS,
    Target,
    _Builder,
    _guarded,
    _num,
    _result,
    prom_duration,
)
from modelmon.config import Config

FEATURE_ALERTS = ("ModelmonFeatureDrift", "ModelmonDataQuality", "ModelmonFeaturesAbsent")
HOLD_AT_LEAST = 600.0  # seconds; at least two feature-family runs when their interval is longer
FEATURE_KEY = "model, model_version, window, feature"
# The data-quality checks: (check label, metric, threshold field of Thresholds).
SHARE_CHECKS = (
    ("unseen_category", "feature_unseen_category_ratio", "feature_unseen_share"),
    ("out_of_range", "feature_out_of_range_ratio", "feature_out_of_range_share"),
    ("type_change", "feature_type_change_ratio", "feature_type_change_share"),
)


def hold_seconds(cfg: Config) -> float:
    """The `for:` of both alerts: at least two runs of the feature families."""
    return max(HOLD_AT_LEAST, 2 * cfg.features.interval)


def report_url(api_base_url: str) -> str:
    """Alert-template text of the link to the HTML report of the alert's model and window
    (the API's `GET /v1/report`, api/report_http.py)."""
    return (f"{api_base_url.rstrip('/')}/v1/report?model={{{{ $labels.model | urlquery }}}}"
            "&window={{ $labels.window | urlquery }}")


def _lookup(metric: str, show: str, feature: bool = False) -> str:
    """Alert-template text of `metric` at the alert's (model, version, window[, feature]),
    `show` (a template function) applied to its value."""
    keys, args = "model=%q,model_version=%q,window=%q", "$labels.model $labels.model_version $labels.window"
    if feature:
        keys, args = keys + ",feature=%q", args + " $labels.feature"
    return (
        f'{{{{ with printf "{metric}{{{keys}}}" {args} | query }}}}'
        f"{{{{ . | first | value | {show} }}}}{{{{ else }}}}unknown{{{{ end }}}}"
    )


def _drifted_features() -> str:
    """Alert-template text: the drifted features of the alert's window, by name, with their test."""
    return (
        f'{{{{ range $i, $s := printf "max without ({", ".join(PROCESS_LABELS)}) '
        '(modelmon_feature_drift_detected{model=%q,model_version=%q,window=%q}) == 1" '
        "$labels.model $labels.model_version $labels.window | query | sortByLabel \"feature\" }}"
        "{{ if $i }}, {{ end }}{{ $s.Labels.feature }} ({{ $s.Labels.stattest }})"
        "{{ else }}none listed{{ end }}"
    )


def _check(expr: str, name: str) -> str:
    """`expr` with the label check="<name>": one alert per (model, version, window, feature, check)."""
    inner = "\n".join("    " + line for line in expr.splitlines())
    return f'label_replace(\n{inner},\n  "check", "{name}", "", "")'


def drift_alert(cfg: Config, t: Target, b: _Builder) -> dict[str, Any]:
    """The share of compared features whose drift test detects drift >= `feature_drift_share`."""
    s = t.settings
    mv = f'{t.matcher}, model_version="*"'
    share = s.thresholds.feature_drift_share
    expr = _guarded(
        f"{_result('modelmon_feature_drift_share_ratio', mv)} >= {_num(share)}", mv,
        "feature_drift_share_ratio", s.min_samples,
    )
    hold = hold_seconds(cfg)
    detected = _lookup("modelmon_feature_drift_detected_features", 'printf "%.0f"')
    compared = _lookup("modelmon_feature_drift_compared_features", 'printf "%.0f"')
    rule = b.alert(
        "ModelmonFeatureDrift", expr, hold, "ticket",
        "Input features of {{ $labels.model }} drifted ({{ $labels.window }} window)",
        f"The drift tests against the stored reference detect drift in {{{{ $value | humanizePercentage }}}} "
        f"of the compared features of {{{{ $labels.model }}}} over the {{{{ $labels.window }}}} window "
        f"({detected} of {compared}; threshold share {_num(share)}, at least {s.min_samples} sampled "
        f"predictions, held for {prom_duration(hold * b.options.for_scale)}). Drifted: {_drifted_features()}.",
    )
    rule["annotations"]["report_url"] = report_url(cfg.alerts.api_base_url)
    return rule


def quality_alert(cfg: Config, t: Target, b: _Builder) -> dict[str, Any]:
    """Per feature: missing more often than in the reference, or too many unseen categories,
    out-of-range numbers or values of another type; the `check` label says which."""
    s, th, m = t.settings, t.settings.thresholds, t.matcher
    mv = f'{m}, model_version="*"'
    missing = _guarded(
        f"(\n  {_result('modelmon_feature_missing_ratio', mv)}\n  - on({FEATURE_KEY})\n"
        f"  {_result('modelmon_feature_reference_missing_ratio', mv)}\n) > {_num(th.feature_missing_increase)}",
        mv, "feature_missing_ratio", s.min_samples,
    )
    parts = [_check(missing, "missing_increase")]
    for check, metric, threshold in SHARE_CHECKS:
        cond = f"{_result('modelmon_' + metric, mv)} > {_num(getattr(th, threshold))}"
        parts.append(_check(_guarded(cond, mv, metric, s.min_samples), check))
    hold = hold_seconds(cfg)
    value = '{{ $value | humanizePercentage }}'
    current = _lookup("modelmon_feature_missing_ratio", "humanizePercentage", feature=True)
    reference = _lookup("modelmon_feature_reference_missing_ratio", "humanizePercentage", feature=True)
    what = (
        f'{{{{ if eq $labels.check "missing_increase" }}}}is missing in {current} of the sampled '
        f"predictions against {reference} in the reference, an increase of {value} (allowed "
        f"{_num(th.feature_missing_increase)})"
        f'{{{{ else if eq $labels.check "unseen_category" }}}}has {value} of its values in categories '
        f"the reference never saw (threshold {_num(th.feature_unseen_share)})"
        f'{{{{ else if eq $labels.check "out_of_range" }}}}has {value} of its numbers outside the '
        f"reference's range (threshold {_num(th.feature_out_of_range_share)})"
        f"{{{{ else }}}}has {value} of its values of another type than in the reference (threshold "
        f"{_num(th.feature_type_change_share)}){{{{ end }}}}"
    )
    return b.alert(
        "ModelmonDataQuality", "\nor\n".join(parts), hold, "ticket",
        "Feature {{ $labels.feature }} of {{ $labels.model }} fails the {{ $labels.check }} check "
        "({{ $labels.window }} window)",
        f"Over the {{{{ $labels.window }}}} window, feature {{{{ $labels.feature }}}} of "
        f"{{{{ $labels.model }}}} {what}; at least {s.min_samples} samples, held for "
        f"{prom_duration(hold * b.options.for_scale)}. Check the upstream data pipeline of this feature.",
    )


def absent_alert(cfg: Config, t: Target, b: _Builder) -> dict[str, Any]:
    """No prediction of the window carries features, on at least `min_samples` predictions.

    A model that logs features on a share f of its predictions sees a window without
    any with probability about exp(-f x n): `min_samples` >= 5 / f keeps that below 1%.
    """
    s = t.settings
    mv = f'{t.matcher}, model_version="*"'
    expr = _guarded(f"{_result('modelmon_features_present_ratio', mv)} == 0", mv,
                    "features_present_ratio", s.min_samples)
    hold = hold_seconds(cfg)
    return b.alert(
        "ModelmonFeaturesAbsent", expr, hold, "ticket",
        "Predictions of {{ $labels.model }} carry no features ({{ $labels.window }} window)",
        f"None of the predictions of {{{{ $labels.model }}}} over the {{{{ $labels.window }}}} window "
        f"carries features (at least {s.min_samples} predictions, held for "
        f"{prom_duration(hold * b.options.for_scale)}), though the model has a feature reference: "
        "ModelmonFeatureDrift and ModelmonDataQuality cannot see its inputs. Check that the "
        "service still sends `features`.",
    )


def feature_groups(cfg: Config, t: Target, b: _Builder) -> list[dict[str, Any]]:
    """The target's feature rule group; none when the feature families are disabled."""
    if not cfg.features.enabled:
        return []
    label = t.model or "discovered"
    rules = [drift_alert(cfg, t, b), quality_alert(cfg, t, b), absent_alert(cfg, t, b)]
    return [{"name": f"modelmon-{label}-features", "rules": rules}]

