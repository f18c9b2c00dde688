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
        "ingest_partition_halted",
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
    "fairness_demographic_parity_difference": "Largest minus smallest selection rate over all the attribute's slices with a prediction.",
    "fairness_disparate_impact_ratio": "Smallest over largest selection rate over all the attribute's slices with a prediction.",
    "fairness_equal_opportunity_difference": "Largest minus smallest true-positive rate over all the attribute's slices with a labelled positive.",
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
    # accuracy family
    "accuracy_upper_ratio": "Upper bound of the 95% Wilson interval of accuracy_ratio.",
    "macro_f1_ratio": "Unweighted mean of the per-class F1 scores over labelled predictions.",
    "precision_ratio": "Share of the predictions of the class that were right (labelled predictions).",
    "recall_ratio": "Share of the labelled predictions whose label is the class that were predicted as it.",
    "f1_ratio": "Harmonic mean of the class's precision and recall (labelled predictions).",
    "label_delay_seconds": "Quantile of feedback time minus prediction time over labelled predictions.",
    # proxies family
    "mean_entropy_nats": "Mean entropy of the predicted score distribution (natural log).",
    "low_confidence_ratio": "Share of predictions whose top-class probability is below confidence_threshold.",
    "estimated_accuracy_gap_ratio": "Estimated minus realised accuracy over the window's labelled predictions.",
    "expected_calibration_error_ratio": "Expected calibration error of the scores against correctness (labelled predictions).",
    # shift family
    "class_baseline_share_ratio": "Baseline share per predicted class (research: validation data; rolling: an earlier window).",
    "class_shift_chi2_statistic": "Chi-squared statistic of the predicted-class counts against the baseline shares.",
    "class_shift_max_ratio": "Largest current over baseline share ratio of a predicted class, with that class.",
    "class_shift_unseen_share_ratio": "Share of predictions in classes the baseline never saw.",
    "label_baseline_share_ratio": "Baseline share per label (research: validation data; rolling: an earlier window).",
    "label_shift_chi2_statistic": "Chi-squared statistic of the label counts against the baseline shares.",
    "label_shift_max_ratio": "Largest current over baseline share ratio of a label, with that label.",
    "label_shift_unseen_share_ratio": "Share of labels in classes the baseline never saw.",
    # latency family
    "error_ratio": "Share of requests in the window with status error.",
    "requests_per_second": "Requests in the window divided by its length.",
    "slo_sli_ratio": "Share of good SLO events over the SLO period (window label = the period).",
    "slo_objective_ratio": "The SLO's objective: the share of good events it promises.",
    "seconds_since_last_prediction": "Seconds from the newest stored prediction of the model to now.",
    # fairness family (gap intervals: METRIC_HELP gets _lower / _upper below)
    "slice_predictions": "Predictions in the slice of the attribute over the window.",
    "slice_accuracy_ratio": "Accuracy of the slice's labelled predictions.",
    "slice_true_positive_rate_ratio": "True-positive rate of the slice (labelled positives predicted positive).",
    "slice_false_positive_rate_ratio": "False-positive rate of the slice (labelled negatives predicted positive).",
    "fairness_equalized_odds_difference": "Larger of the true-positive and false-positive rate gaps over all slices with both a labelled positive and a labelled negative.",
    # feature_drift family (per feature: at most features.max_per_model values of `feature`)
    "feature_drift_score": "Drift test result of the feature against the reference: p-value for ks, chisquare and z; distance for wasserstein and jensenshannon.",
    "feature_drift_threshold": "Threshold of the feature's drift test: drift below it for a p-value, above it for a distance.",
    "feature_drift_detected": "1 if the feature's drift test detects drift against the reference, else 0.",
    "feature_drift_share_ratio": "Share of the compared features whose drift test detects drift (dataset drift).",
    "feature_drift_detected_features": "Compared features whose drift test detects drift.",
    "feature_drift_compared_features": "Features present in both the reference and the window's sample, and tested.",
    "feature_reference_only_features": "Features of the reference that no sampled prediction of the window carries.",
    "feature_current_only_features": "Features of the window's sample that the reference does not have.",
    "features_omitted": "Features beyond features.max_per_model: counted here, not exported per feature.",
    # data_quality family
    "feature_missing_ratio": "Share of the window's sampled predictions in which the feature is missing or null.",
    "feature_reference_missing_ratio": "Share of the reference rows in which the feature is missing or null.",
    "feature_type_change_ratio": "Share of the feature's present values whose JSON type differs from the reference's.",
    "feature_unseen_category_ratio": "Share of the categorical feature's present values that the reference never saw.",
    "feature_out_of_range_ratio": "Share of the numeric feature's present values outside the reference's minimum and maximum.",
    "features_present_ratio": "Share of the window's predictions that carry features at all.",
}

# Interval bounds share their metric's meaning: derive their help instead of repeating it.
for _base in ("slice_selection_rate", "slice_accuracy", "slice_true_positive_rate", "slice_false_positive_rate"):
    for _end in ("lower", "upper"):
        METRIC_HELP[f"{_base}_{_end}_ratio"] = (
            f"{_end.capitalize()} bound of the 95% Wilson interval of {_base}_ratio."
        )
for _base in (
    "fairness_demographic_parity_difference", "fairness_disparate_impact_ratio",
    "fairness_equal_opportunity_difference", "fairness_equalized_odds_difference",
):
    for _end in ("lower", "upper"):
        METRIC_HELP[f"{_base}_{_end}"] = (
            f"{_end.capitalize()} bound of the simultaneous 95% interval of {_base}."
        )
