"""Version comparison: is the candidate version worse than the baseline?

For a canary or an A/B test, per window, candidate against baseline (both
read from the rollups, each version's own buckets):
  version_accuracy_difference (+ _lower / _upper: Newcombe 95% interval), once
      both versions have min_labels labels and mature coverage;
  version_estimated_accuracy_difference, version_mean_confidence_difference
      (no labels needed);
  version_class_psi / _js_distance (candidate's predicted classes against the
      baseline's shares) and version_class_chi2_statistic / _pvalue (Pearson's
      test of homogeneity of the two count vectors);
  version_latency_p95_ratio (candidate / baseline, each within the sketch's
      relative error);
  version_error_ratio_difference (+ _lower / _upper, Newcombe);
  version_fairness_gap{role} (largest demographic-parity difference over the
      slice attributes, for each version);
  version_worse (1 worse, 0 not worse, no value while inconclusive) and
      version_verdict{verdict, reason} = 1, the decision of `stats_versions`.
Every row carries labels baseline=<version>, candidate=<version>. Which
versions: `compare: {baseline, candidate}` from the configuration, or `auto`:
the two busiest versions in the window, the one first seen earlier as the
baseline. With fewer than two versions in the window there is one
version_verdict row with status no_data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import sqlalchemy as sa

from modelmon.config import ResolvedModel
from modelmon.monitors.base import MetricRow, Status, WindowedRow, gated
from modelmon.monitors.buckets import all_versions, class_cells, top_versions, window_sums
from modelmon.monitors.fairness import pool_slices, split_slices
from modelmon.monitors.queries_quality import SliceCounts
from modelmon.monitors.stats_classification import ratio
from modelmon.monitors.stats_fairness import Rate, difference
from modelmon.monitors.stats_shift import js_distance, psi
from modelmon.monitors.stats_versions import (
    Verdict,
    chi2_homogeneity,
    judge_accuracy,
    judge_errors,
    newcombe_interval,
    verdict,
)
from modelmon.monitors.windows import current_windows, pass_windows
from modelmon.store import sketch
from modelmon.store.tables import rollup_requests, rollup_sketches, rollup_slices


@dataclass(slots=True)
class VersionSummary:
    """One version's numbers in one window."""

    total: int = 0  # every prediction
    errors: int = 0
    ok: int = 0
    labelled: int = 0
    correct: int = 0
    n_conf: int = 0
    sum_conf: float = 0.0
    n_max: int = 0
    sum_max: float = 0.0
    classes: dict[str, int] = field(default_factory=dict)  # status-ok predicted classes
    latency: dict[int, int] = field(default_factory=dict)  # sketch bins
    fairness_gap: float | None = None


def first_seen(conn: sa.Connection, model: ResolvedModel, versions: list[str]) -> dict[str, int]:
    """Start of each version's first coarse bucket still stored."""
    r = rollup_requests
    stmt = (
        sa.select(r.c.model_version, sa.func.min(r.c.bucket))
        .where(r.c.model == model.name, r.c.res == int(model.coarse_seconds), r.c.model_version.in_(versions))
        .group_by(r.c.model_version)
    )
    return {v: int(b) for v, b in conn.execute(stmt)}


def pick_pair(
    conn: sa.Connection, model: ResolvedModel, requests: dict[tuple[Any, ...], list[Any]]
) -> tuple[str, str] | None:
    """(baseline, candidate) for one window, or None with fewer than two versions."""
    if model.compare.baseline is not None and model.compare.candidate is not None:
        return model.compare.baseline, model.compare.candidate
    busiest = top_versions(requests, 2)
    if len(busiest) < 2:
        return None
    seen = first_seen(conn, model, busiest)
    busiest.sort(key=lambda v: (seen.get(v, 2**62), v))
    return busiest[0], busiest[1]


def _largest_gap(slices: dict[tuple[Any, ...], list[Any]], model: ResolvedModel) -> float | None:
    gaps = []
    for attribute in model.slices:
        values = {v: SliceCounts(*(int(x) for x in c)) for (a, v), c in slices.items() if a == attribute}
        top, missing, total = split_slices(values, model.slice_top_k)
        rates = [Rate(c.selected, c.n) for _, c in pool_slices(top, missing, total)]
        gap = difference(rates, model.min_slice_samples)
        if gap.value is not None:
            gaps.append(gap.value)
    return max(gaps) if gaps else None


def summaries(
    conn: sa.Connection, model: ResolvedModel, now: float
) -> list[dict[str, VersionSummary]]:
    """Per current window: {version: VersionSummary} for every version in it."""
    windows = current_windows(model, now)
    requests = window_sums(conn, rollup_requests, model, windows, (), now)
    cells = class_cells(conn, model, pass_windows(model, now), now)  # shared with shift, accuracy
    sketches = window_sums(conn, rollup_sketches, model, windows, ("kind", "key"), now)
    fair = model.positive_class is not None and bool(model.slices)
    slices = window_sums(conn, rollup_slices, model, windows, ("attribute", "value"), now) if fair else None
    out = []
    for i in range(len(windows)):
        per: dict[str, VersionSummary] = {}
        for (version,), vals in requests[i].items():
            n, errors, _, n_max, sum_max, _, _, _, n_conf, sum_conf, _ = vals
            per[version] = VersionSummary(
                total=int(n), errors=int(errors), ok=int(n - errors), n_conf=int(n_conf),
                sum_conf=float(sum_conf), n_max=int(n_max), sum_max=float(sum_max),
            )
        for version, version_cells in cells[i].items():
            s = per.get(version)
            if s is None:
                continue
            for (p, label), n in version_cells.items():
                s.classes[p] = s.classes.get(p, 0) + n
                if label is not None:
                    s.labelled += n
                    s.correct += n if label == p else 0
        for version, bins in all_versions(sketches[i], 2).items():
            if version in per:
                per[version].latency = {k: int(x[0]) for (kind, k), x in bins.items() if kind == "latency"}
        if slices is not None:
            for version, sl in all_versions(slices[i], 2).items():
                if version in per:
                    per[version].fairness_gap = _largest_gap(sl, model)
        out.append(per)
    return out


def _labelled_status(b: VersionSummary, c: VersionSummary, model: ResolvedModel) -> tuple[Status, str]:
    n = min(b.labelled, c.labelled)
    if n < model.min_labels:
        return ("no_data" if n == 0 else "insufficient_data"), "too_few_labels"
    coverage = min(ratio(b.labelled, b.ok) or 0.0, ratio(c.labelled, c.ok) or 0.0)
    if coverage < model.mature_coverage:
        return "maturing", "labels_maturing"
    return "ok", ""


def compare(
    b: VersionSummary, c: VersionSummary, model: ResolvedModel
) -> tuple[list[MetricRow], Verdict, str]:
    """Pure: the two versions' summaries -> metric rows, the verdict and its reason."""
    th = model.thresholds
    rows: list[MetricRow] = []
    n_ok = min(b.ok, c.ok)

    def row(metric: str, value: float | None, n: int, status: Status, **labels: str) -> None:
        rows.append(MetricRow(metric, value if status in ("ok", "maturing") else None, n, status, labels))

    # Accuracy, with labels.
    lab_status, lab_reason = _labelled_status(b, c, model)
    interval = newcombe_interval(c.correct, c.labelled, b.correct, b.labelled)
    diff = None if interval is None else c.correct / c.labelled - b.correct / b.labelled
    n_lab = min(b.labelled, c.labelled)
    row("version_accuracy_difference", diff, n_lab, lab_status)
    row("version_accuracy_difference_lower", interval and interval[0], n_lab, lab_status)
    row("version_accuracy_difference_upper", interval and interval[1], n_lab, lab_status)
    accuracy: Verdict = judge_accuracy(interval, th.version_accuracy_margin) if lab_status == "ok" else "inconclusive"

    # Proxies, without labels.
    for metric, (nb, sb), (nc, sc) in (
        ("version_estimated_accuracy_difference", (b.n_conf, b.sum_conf), (c.n_conf, c.sum_conf)),
        ("version_mean_confidence_difference", (b.n_max, b.sum_max), (c.n_max, c.sum_max)),
    ):
        n = min(nb, nc)
        value, status = gated(None if n == 0 else sc / nc - sb / nb, n, model.min_samples)
        row(metric, value, n, status)

    # Predicted classes: candidate against the baseline version.
    _, cls_status = gated(0.0, n_ok, model.min_samples)
    homog = chi2_homogeneity(b.classes, c.classes) if cls_status == "ok" else None
    shares = sorted(set(b.classes) | set(c.classes))
    if cls_status == "ok":
        pb = np.array([b.classes.get(k, 0) for k in shares], float) / b.ok
        pc = np.array([c.classes.get(k, 0) for k in shares], float) / c.ok
        row("version_class_psi", psi(pb, pc), n_ok, "ok")
        row("version_class_js_distance", js_distance(pb, pc), n_ok, "ok")
    else:
        row("version_class_psi", None, n_ok, cls_status)
        row("version_class_js_distance", None, n_ok, cls_status)
    homog_status: Status = cls_status if cls_status != "ok" or homog is not None else "insufficient_data"
    row("version_class_chi2_statistic", homog and homog[0], n_ok, homog_status)
    row("version_class_chi2_pvalue", homog and homog[1], n_ok, homog_status)

    # Latency and errors.
    acc = model.sketch_relative_accuracy
    nb_lat, qb = sketch.quantiles(b.latency, (0.95,), acc)
    nc_lat, qc = sketch.quantiles(c.latency, (0.95,), acc)
    n_lat = min(nb_lat, nc_lat)
    p95 = None if not qb[0.95] or qc[0.95] is None else qc[0.95] / qb[0.95]
    value, status = gated(p95, n_lat, model.min_samples)
    row("version_latency_p95_ratio", value, n_lat, status)
    n_req = min(b.total, c.total)
    err_interval = newcombe_interval(c.errors, c.total, b.errors, b.total)
    err_diff = None if err_interval is None else c.errors / c.total - b.errors / b.total
    _, err_status = gated(0.0, n_req, model.min_samples)
    row("version_error_ratio_difference", err_diff, n_req, err_status)
    row("version_error_ratio_difference_lower", err_interval and err_interval[0], n_req, err_status)
    row("version_error_ratio_difference_upper", err_interval and err_interval[1], n_req, err_status)
    errors: Verdict = judge_errors(err_interval, th.version_error_margin) if err_status == "ok" else "inconclusive"

    if model.positive_class is not None and model.slices:
        for role, s in (("baseline", b), ("candidate", c)):
            st: Status = "ok" if s.fairness_gap is not None else "insufficient_data"
            row("version_fairness_gap", s.fairness_gap, s.ok, st, role=role)

    judged = verdict(accuracy, lab_reason or "accuracy_undecided", errors)
    return rows, judged.verdict, judged.reason


def collect(conn: sa.Connection, model: ResolvedModel, now: float) -> list[WindowedRow]:
    windows = current_windows(model, now)
    requests = window_sums(conn, rollup_requests, model, windows, (), now)
    per_window = summaries(conn, model, now)
    out: list[WindowedRow] = []
    for i, w in enumerate(windows):
        pair = pick_pair(conn, model, requests[i])
        if pair is None or pair[0] not in per_window[i] or pair[1] not in per_window[i]:
            n = sum(s.total for s in per_window[i].values())
            out.append(WindowedRow(w, MetricRow(
                "version_verdict", None, n, "no_data", {"verdict": "none", "reason": "one_version"}
            )))
            continue
        base, cand = pair
        rows, decided, reason = compare(per_window[i][base], per_window[i][cand], model)
        labels = {"baseline": base, "candidate": cand}
        n = min(per_window[i][base].total, per_window[i][cand].total)
        worse = {"worse": 1.0, "not_worse": 0.0}.get(decided)
        rows.append(MetricRow("version_worse", worse, n, "ok" if worse is not None else "insufficient_data"))
        rows.append(MetricRow("version_verdict", 1.0, n, "ok", {"verdict": decided, "reason": reason}))
        out += [WindowedRow(w, MetricRow(r.metric, r.value, r.sample_count, r.status, {**labels, **r.labels}))
                for r in rows]
    return out
