"""The live view's stand-in for alerts when Prometheus is not installed."""

from __future__ import annotations

from modelmon.config import Config
from modelmon.demo.config import demo_settings
from modelmon.demo.live import ModelView, _threshold_alerts
from modelmon.demo.simulator import FRAUD


def _alerts(**values: float) -> set[str]:
    cfg = Config.model_validate(demo_settings("sqlite:///x.db", "127.0.0.1:9092", 0, 50.0))
    view = ModelView(FRAUD, values={k: (v, "ok") for k, v in values.items()})
    return {a["alertname"] for a in _threshold_alerts([view], cfg)}


def test_a_noisy_disparate_impact_estimate_is_no_fairness_gap() -> None:
    """Early in the run a small slice's point estimate is often under 0.8; the rule
    asks the whole interval to be, and so does the view."""
    assert "FairnessGap" not in _alerts(di=0.6, di_upper=0.95)


def test_a_disparate_impact_interval_under_the_threshold_is_a_fairness_gap() -> None:
    assert "FairnessGap" in _alerts(di=0.55, di_upper=0.7)
