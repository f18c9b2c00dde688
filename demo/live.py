"""The demo's terminal view: the key numbers per model and the alerts as they happen.

`collect` reads the store (latest monitor results, recent traffic) and, when
the demo runs Prometheus, its alerts; without Prometheus the alerts column
shows the thresholds the monitor results cross (and a `worse` verdict of the
version comparison). `render` turns a snapshot into rich tables.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from rich.console import Group
from rich.table import Table
from rich.text import Text

from modelmon.config import Config
from modelmon.store.tables import dead_letters, predictions

THROUGHPUT_SECONDS = 10.0


@dataclass
class ModelView:
    name: str
    rate: float | None = None
    freshness: float | None = None
    values: dict[str, tuple[float | None, str]] = field(default_factory=dict)  # key -> (value, status)
    verdict: str = ""  # the compare family's verdict, e.g. "worse: v4 vs v3 (accuracy_lower)"


@dataclass
class Snapshot:
    at: float
    elapsed: float
    models: list[ModelView]
    alerts: list[dict[str, str]]  # alertname, model, severity, state, detail
    incidents: list[str]
    dead_letters: int
    alert_source: str  # "prometheus" | "thresholds"
    history: list[str]


def _pick(rows: list[dict[str, Any]], metric: str, window: str | None, pick: str = "max",
          **labels: str) -> tuple[float | None, str]:
    """One value from the latest results: worst of matching series; status if none is ok."""
    match = [r for r in rows if r["metric"] == metric and (window is None or r["window"] == window)
             and r["model_version"] == "*" and all(r["labels"].get(k) == v for k, v in labels.items())]
    ok = [float(r["value"]) for r in match if r["status"] == "ok" and r["value"] is not None]
    if ok:
        return (max(ok) if pick == "max" else min(ok)), "ok"
    if match:
        r = match[0]
        return None, f"{r['status']} (n={r['sample_count']})"
    return None, "waiting"


def _verdict(rows: list[dict[str, Any]], window: str) -> str:
    """The latest version-comparison verdict of `window`: "verdict: candidate vs baseline (reason)"."""
    for r in rows:
        if r["metric"] == "version_verdict" and r["window"] == window and r["status"] == "ok":
            lab = r["labels"]
            return (f"{lab.get('verdict', '?')}: {lab.get('candidate', '?')} vs {lab.get('baseline', '?')} "
                    f"({lab.get('reason', '?')})")
    return ""


def collect(engine: sa.Engine, cfg: Config, started: float, prometheus_url: str | None = None,
            incidents: list[str] | None = None, history: list[str] | None = None) -> Snapshot:
    from modelmon.monitors.results import latest_results

    now = time.time()
    views = []
    with engine.connect() as conn:
        rows = latest_results(conn)
        n_dead = conn.execute(sa.select(sa.func.count()).select_from(dead_letters)).scalar() or 0
        for name in sorted(cfg.models):
            m = cfg.model(name)
            short = m.window_names[0]
            mine = [r for r in rows if r["model"] == name]
            view = ModelView(name)
            recent = conn.execute(sa.select(sa.func.count()).where(
                predictions.c.model == name, predictions.c.ts >= now - THROUGHPUT_SECONDS)).scalar() or 0
            view.rate = recent / THROUGHPUT_SECONDS
            last = conn.execute(sa.select(sa.func.max(predictions.c.ts)).where(predictions.c.model == name)).scalar()
            view.freshness = None if last is None else max(0.0, now - float(last))
            view.values = {
                "accuracy": _pick(mine, "accuracy_ratio", short),
                "estimated": _pick(mine, "estimated_accuracy_ratio", short),
                "psi": _pick(mine, "class_shift_psi", short, baseline="research"),
                "p95": _pick(mine, "latency_seconds", short, quantile="0.95"),
                "burn": _pick(mine, "slo_burn_rate", "5m"),
                "di": _pick(mine, "fairness_disparate_impact_ratio", short, pick="min"),
                # The alert's test: the interval's upper bound, not the noisy point estimate.
                "di_upper": _pick(mine, "fairness_disparate_impact_ratio_upper", short, pick="min"),
                "version_diff": _pick(mine, "version_accuracy_difference", short, pick="min"),
                "worse": _pick(mine, "version_worse", short),
            }
            view.verdict = _verdict(mine, short)
            views.append(view)
    if prometheus_url:
        alerts = _prometheus_alerts(prometheus_url)
        source = "prometheus"
    else:
        alerts = _threshold_alerts(views, cfg)
        source = "thresholds"
    history = history if history is not None else []
    return Snapshot(now, now - started, views, alerts, incidents or [], int(n_dead), source, history)


def _prometheus_alerts(url: str) -> list[dict[str, str]]:
    from modelmon.demo.promstack import firing_alerts

    try:
        raw = firing_alerts(url)
    except OSError:
        return [{"alertname": "(Prometheus unreachable)", "model": "", "severity": "", "state": "", "detail": ""}]
    out = []
    for a in raw:
        labels = a.get("labels", {})
        out.append({"alertname": labels.get("alertname", "?"), "model": labels.get("model", ""),
                    "severity": labels.get("severity", ""), "state": a.get("state", ""),
                    "detail": a.get("annotations", {}).get("summary", "")})
    return sorted(out, key=lambda a: (a["state"] != "firing", a["model"], a["alertname"]))


def _threshold_alerts(views: list[ModelView], cfg: Config) -> list[dict[str, str]]:
    """Without Prometheus: the configured thresholds the latest results cross."""
    out = []
    for v in views:
        t = cfg.model(v.name).thresholds
        checks = [
            ("ClassShift", "psi", lambda x, t=t: x > t.psi, f"PSI > {t.psi}"),
            ("FairnessGap", "di_upper", lambda x, t=t: x < t.disparate_impact_min,
             f"DI's 95% upper bound < {t.disparate_impact_min}"),
            ("SLOFastBurn", "burn", lambda x: x > 14.4, "5m burn rate > 14.4"),
        ]
        for name, key, crossed, text in checks:
            value, status = v.values.get(key, (None, ""))
            if value is not None and crossed(value):
                out.append({"alertname": name, "model": v.name, "severity": "", "state": "crossed",
                            "detail": f"{text} ({value:.3g})"})
        worse, _ = v.values.get("worse", (None, ""))
        if worse == 1.0:
            diff, _ = v.values.get("version_diff", (None, ""))
            detail = v.verdict + ("" if diff is None else f", accuracy {diff * 100:+.1f} pts")
            out.append({"alertname": "CandidateWorse", "model": v.name, "severity": "", "state": "crossed",
                        "detail": detail})
        if v.freshness is not None and v.freshness > t.freshness:
            out.append({"alertname": "NoRecentPredictions", "model": v.name, "severity": "", "state": "crossed",
                        "detail": f"no prediction for {v.freshness:.0f} s"})
    return out


def _fmt(value: float | None, status: str, kind: str) -> Text:
    if value is None:
        return Text(status.replace("insufficient_data", "few samples"), style="dim")
    if kind == "pct":
        return Text(f"{value:.1%}")
    if kind == "ms":
        return Text(f"{value * 1000:.0f} ms")
    if kind == "pts":
        return Text(f"{value * 100:+.1f} pts")
    return Text(f"{value:.3f}")


def _versions_cell(v: ModelView) -> Text:
    """Candidate minus baseline accuracy, red on a `worse` verdict; "-" for a model with one version."""
    if not v.verdict:
        return Text("-", style="dim")
    diff, status = v.values.get("version_diff", (None, "waiting"))
    text = _fmt(diff, status, "pts")
    if v.verdict.startswith("worse"):
        text.stylize("bold red")
    return text


def render(s: Snapshot) -> Group:
    models = Table(title=f"modelmon demo · {s.elapsed:.0f} s · dead letters {s.dead_letters}", expand=True)
    for col in ("model", "pred/s", "freshness", "accuracy", "est. accuracy", "class shift PSI",
                "latency p95", "SLO burn (5m)", "fairness DI", "version Δ acc."):
        models.add_column(col, justify="left" if col == "model" else "right")
    for v in s.models:
        vals = v.values
        models.add_row(
            v.name,
            "-" if v.rate is None else f"{v.rate:.1f}",
            "-" if v.freshness is None else f"{v.freshness:.0f} s",
            _fmt(*vals["accuracy"], "pct"), _fmt(*vals["estimated"], "pct"), _fmt(*vals["psi"], "num"),
            _fmt(*vals["p95"], "ms"), _fmt(*vals["burn"], "num"), _fmt(*vals["di"], "num"),
            _versions_cell(v),
        )
    title = "alerts (Prometheus)" if s.alert_source == "prometheus" else "thresholds crossed (no Prometheus)"
    alerts = Table(title=title, expand=True)
    for col in ("alert", "model", "severity", "state", "detail"):
        alerts.add_column(col)
    for a in s.alerts:
        style = "bold red" if a["state"] in ("firing", "crossed") else "yellow"
        alerts.add_row(a["alertname"], a["model"], a["severity"], Text(a["state"], style=style), a["detail"])
    if not s.alerts:
        alerts.add_row("(none)", "", "", "", "")
    parts: list[Any] = [models, alerts]
    verdicts = [f"{v.name} {v.verdict}" for v in s.models if v.verdict]
    if verdicts:
        parts.append(Text("versions (candidate vs baseline): " + "; ".join(verdicts), style="cyan"))
    parts.append(Text("incidents now: " + (", ".join(s.incidents) or "none"), style="cyan"))
    if s.history:
        parts.append(Text("\n".join(s.history[-8:]), style="dim"))
    return Group(*parts)


def status_line(s: Snapshot) -> str:
    """One plain line for a non-terminal output (logs, CI)."""
    bits = []
    for v in s.models:
        psi = v.values["psi"][0]
        di = v.values["di"][0]
        bits.append(f"{v.name}: {0 if v.rate is None else v.rate:.0f}/s"
                    + (f" psi={psi:.3f}" if psi is not None else "") + (f" di={di:.2f}" if di is not None else "")
                    + (f" versions={v.verdict}" if v.verdict else ""))
    firing = sorted({f"{a['alertname']}({a['model']})" for a in s.alerts if a["state"] in ("firing", "crossed")})
    return f"[{s.elapsed:5.0f}s] " + "; ".join(bits) + f"; alerts: {', '.join(firing) or 'none'}"
