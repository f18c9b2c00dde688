"""Per-slice fairness for each configured slice attribute.

Per slice value: count, selection rate, accuracy, TPR and FPR, each with a 95%
Wilson interval (reported once the slice has min_slice_samples); across slices:
demographic-parity difference and ratio, equal-opportunity difference and
equalized-odds difference, each with `_lower` / `_upper` bounds of a
simultaneous 95% interval. The gaps run over every slice whose rate is defined
(not only slices with min_slice_samples: leaving small slices out hid real
gaps); the interval is what keeps a small slice's chance extreme from alerting.
Needs a positive class, so it yields nothing for a multiclass model without
`positive_class`.

Cardinality stays bounded: the `slice_top_k` most frequent values of an
attribute are kept, all other values pooled as `__other__`, and predictions
without the attribute form `__missing__` (so at most top_k + 2 slices).
"""

from __future__ import annotations

from sqlalchemy import Connection

from modelmon.config import ResolvedModel
from modelmon.monitors.base import MetricRow, Status, WindowedRow, gated
from modelmon.monitors.buckets import all_versions, versioned, versions_per_window, window_sums
from modelmon.monitors.queries_quality import MISSING_SLICE, OTHER_SLICE, SliceCounts
from modelmon.monitors.stats_classification import ratio, wilson_interval
from modelmon.monitors.stats_fairness import (
    GapInterval,
    Rate,
    difference_interval,
    equalized_odds_interval,
    ratio_interval,
)
from modelmon.monitors.windows import current_windows
from modelmon.store.tables import rollup_slices


def pool_slices(
    top: list[tuple[str, SliceCounts]], missing: SliceCounts | None, total: SliceCounts
) -> list[tuple[str, SliceCounts]]:
    """Top-K slices, then `__other__` (the rest of the window), then `__missing__`."""
    out = list(top)
    rest = total
    for _, counts in top:
        rest = rest - counts
    if missing is not None:
        rest = rest - missing
    if rest.n > 0:
        out.append((OTHER_SLICE, rest))
    if missing is not None and missing.n > 0:
        out.append((MISSING_SLICE, missing))
    return out


def _labelled_gate(rate: Rate, coverage: float | None, model: ResolvedModel) -> Status:
    _, status = gated(0.0, rate.n, model.min_slice_samples)
    if status == "ok" and (coverage is None or coverage < model.mature_coverage):
        return "maturing"
    return status


def _rate_rows(metric: str, rate: Rate, status: Status, labels: dict[str, str]) -> list[MetricRow]:
    keep = status in ("ok", "maturing")
    interval = wilson_interval(rate.successes, rate.n) if keep else None
    values = (rate.value if keep else None, interval and interval[0], interval and interval[1])
    suffixes = ("_ratio", "_lower_ratio", "_upper_ratio")
    return [
        MetricRow(f"{metric}{sfx}", v, rate.n, status, dict(labels))
        for sfx, v in zip(suffixes, values, strict=True)
    ]


def _gap_rows(
    metric: str, gap: GapInterval, status_if_ok: Status, attribute: str, any_data: bool
) -> list[MetricRow]:
    """The gap and its interval bounds (`_lower`, `_upper`), under one status."""
    if not any_data:
        status: Status = "no_data"
    elif gap.slices < 2:
        status = "insufficient_data"  # fewer than two slices where the rate is defined
    elif gap.value is None:
        status = "no_data"  # 0 / 0: no slice selected anyone, the ratio is undefined
    else:
        status = status_if_ok
    keep = status in ("ok", "maturing")
    return [
        MetricRow(f"{metric}{sfx}", v if keep else None, gap.n, status, {"attribute": attribute})
        for sfx, v in (("", gap.value), ("_lower", gap.lower), ("_upper", gap.upper))
    ]


def compute_attribute(
    attribute: str, slices: list[tuple[str, SliceCounts]], total: SliceCounts, model: ResolvedModel
) -> list[MetricRow]:
    """Pure: pooled slice counts of one attribute -> metric rows."""
    rows: list[MetricRow] = []
    selection, tpr, fpr = [], [], []
    for name, c in slices:
        labels = {"attribute": attribute, "slice": name}
        rows.append(MetricRow("slice_predictions", float(c.n), c.n, "ok", dict(labels)))
        coverage = ratio(c.labelled, c.n)
        sel = Rate(c.selected, c.n)
        _, sel_status = gated(0.0, c.n, model.min_slice_samples)
        rows += _rate_rows("slice_selection_rate", sel, sel_status, labels)
        for metric, rate in (
            ("slice_accuracy", Rate(c.correct, c.labelled)),
            ("slice_true_positive_rate", Rate(c.tp, c.positives)),
            ("slice_false_positive_rate", Rate(c.fp, c.negatives)),
        ):
            rows += _rate_rows(metric, rate, _labelled_gate(rate, coverage, model), labels)
        selection.append(sel)
        tpr.append(Rate(c.tp, c.positives))
        fpr.append(Rate(c.fp, c.negatives))

    window_coverage = ratio(total.labelled, total.n)
    labelled_ok: Status = (
        "ok"
        if window_coverage is not None and window_coverage >= model.mature_coverage
        else "maturing"
    )
    has_preds, has_labels = total.n > 0, total.labelled > 0
    for metric, gap, ok, any_data in (
        ("fairness_demographic_parity_difference", difference_interval(selection), "ok", has_preds),
        ("fairness_disparate_impact_ratio", ratio_interval(selection), "ok", has_preds),
        (
            "fairness_equal_opportunity_difference",
            difference_interval(tpr),
            labelled_ok,
            has_labels,
        ),
        (
            "fairness_equalized_odds_difference",
            equalized_odds_interval(tpr, fpr),
            labelled_ok,
            has_labels,
        ),
    ):
        rows += _gap_rows(metric, gap, ok, attribute, any_data)
    return rows


def split_slices(
    values: dict[str, SliceCounts], k: int
) -> tuple[list[tuple[str, SliceCounts]], SliceCounts | None, SliceCounts]:
    """(k most frequent values, the missing-value group, window total) of one
    attribute; values pooled at write time (`__other__`) never make the top."""
    total = SliceCounts()
    for c in values.values():
        total = total + c
    candidates = [
        (v, c) for v, c in values.items() if v not in (MISSING_SLICE, OTHER_SLICE) and c.n > 0
    ]
    candidates.sort(key=lambda vc: (-vc[1].n, vc[0]))
    return candidates[:k], values.get(MISSING_SLICE), total


def collect(conn: Connection, model: ResolvedModel, now: float) -> list[WindowedRow]:
    positive = model.positive_class
    if positive is None or not model.slices:
        return []
    windows = current_windows(model, now)
    versions = versions_per_window(conn, model, windows, now)
    sums = window_sums(conn, rollup_slices, model, windows, ("attribute", "value"), now)
    out: list[WindowedRow] = []
    for i, w in enumerate(windows):
        per = all_versions(sums[i], 2)
        for v in versions[i]:
            by_attr: dict[str, dict[str, SliceCounts]] = {a: {} for a in model.slices}
            for (attribute, value), c in per.get(v, {}).items():
                if attribute in by_attr:
                    by_attr[attribute][value] = SliceCounts(*(int(x) for x in c))
            for attribute in model.slices:
                top, missing, total = split_slices(by_attr[attribute], model.slice_top_k)
                rows = compute_attribute(attribute, pool_slices(top, missing, total), total, model)
                out += [WindowedRow(w, row) for row in versioned(rows, v)]
    return out
