"""Names the exporter owns: the metric prefix, reserved families and help texts."""

from __future__ import annotations

PREFIX = "modelmon_"

# Families this exporter, the ingest registry or the scheduler own; a monitor metric
# of the same name would produce a duplicate family, so it is dropped (and logged).
RESERVED = frozenset(
    {
        "monitor_samples",
        "monitor_last_success_timestamp_seconds",
        "monitor_last_run_duration_seconds",
        "monitor_schedule_delay_seconds",
        "monitor_runs_late_total",
        "monitor_runs_late",
        "last_prediction_timestamp_seconds",
        "store_up",
        "predictions_total",
        "feedback_total",
        "prediction_latency_seconds",
        "ingest_dead_letters_total",
        "ingest_batch_pending_seconds",
        "consumer_lag_messages",
        "metrics_models_omitted",
        "metrics_results_omitted",
        "metrics_series_omitted",
        "metrics_refresh_duration_seconds",
    }
)

METRIC_HELP: dict[str, str] = {
    "accuracy_ratio": "Share of labelled predictions that were correct in the window.",
    "accuracy_lower_ratio": "Lower bound of the 95% Wilson interval of accuracy_ratio.",
    "labeled_predictions": "Predictions in the window that have a label.",
    "label_coverage_ratio": "Share of the window's predictions that have a label.",
    "estimated_accuracy_ratio": "Accuracy estimated from the model's own scores (no labels needed).",
    "mean_confidence_ratio": "Mean probability of the predicted class.",
    "class_share_ratio": "Share of predictions per predicted class.",
    "class_shift_psi": "Population stability index of the predicted-class distribution against the baseline.",
    "class_shift_js_distance": "Jensen-Shannon distance of the predicted-class distribution against the baseline.",
    "class_shift_chi2_pvalue": "Chi-squared test p-value of the predicted-class counts against the baseline.",
    "label_share_ratio": "Share of labelled predictions per label (ground-truth class).",
    "label_shift_psi": "Population stability index of the label distribution against the baseline.",
    "label_shift_js_distance": "Jensen-Shannon distance of the label distribution against the baseline.",
    "label_shift_chi2_pvalue": "Chi-squared test p-value of the label counts against the baseline.",
    "latency_seconds": "Prediction latency quantile reported by the model service.",
    "slo_error_budget_remaining_ratio": "Share of the SLO's error budget left over its period.",
    "slo_burn_rate": "Error-budget burn rate over the window (1 = spends the budget exactly over the period).",
    "slice_selection_rate_ratio": "Share of the slice's predictions that are the positive class.",
    "fairness_demographic_parity_difference": "Largest minus smallest selection rate across the attribute's slices.",
    "fairness_disparate_impact_ratio": "Smallest over largest selection rate across the attribute's slices.",
    "fairness_equal_opportunity_difference": "Largest minus smallest true-positive rate across the attribute's slices.",
    "version_accuracy_difference": "Candidate minus baseline version accuracy (labelled predictions in the window).",
    "version_accuracy_difference_lower": "Lower bound of the Newcombe 95% interval of version_accuracy_difference.",
    "version_accuracy_difference_upper": "Upper bound of the Newcombe 95% interval of version_accuracy_difference.",
    "version_estimated_accuracy_difference": "Candidate minus baseline estimated accuracy (from scores, no labels).",
    "version_mean_confidence_difference": "Candidate minus baseline mean top-class probability.",
    "version_class_psi": "PSI of the candidate's predicted classes against the baseline version's.",
    "version_class_js_distance": "Jensen-Shannon distance between the two versions' predicted classes.",
    "version_class_chi2_statistic": "Chi-squared statistic of the test that both versions predict classes alike.",
    "version_class_chi2_pvalue": "P-value of the chi-squared test that both versions predict classes alike.",
    "version_latency_p95_ratio": "Candidate over baseline 95th-percentile latency.",
    "version_error_ratio_difference": "Candidate minus baseline error ratio.",
    "version_error_ratio_difference_lower": "Lower bound of the Newcombe 95% interval of version_error_ratio_difference.",
    "version_error_ratio_difference_upper": "Upper bound of the Newcombe 95% interval of version_error_ratio_difference.",
    "version_fairness_gap": "Largest demographic-parity difference over the slice attributes, per version role.",
    "version_worse": "1 if the candidate version is worse than the baseline beyond the margins, 0 if not; absent while inconclusive.",
    "version_verdict": "1 for the current verdict (worse, not_worse, inconclusive) of candidate against baseline, with its reason.",
}
