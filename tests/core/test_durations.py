"""Window labels: a period written in days keeps its days (issue 13: `28d` was exported as `4w`)."""

from __future__ import annotations

import pytest

from modelmon.config import Config, format_duration, parse_duration
from modelmon.monitors.windows import current_windows


@pytest.mark.parametrize(
    ("seconds", "label"),
    [(28 * 86400, "28d"), (7 * 86400, "7d"), (14 * 86400, "14d")],
)
def test_labels_never_use_weeks(seconds: float, label: str) -> None:
    assert format_duration(seconds) == label
    assert parse_duration(label) == seconds


def test_week_input_still_parses_and_is_named_in_days() -> None:
    cfg = Config.model_validate({"defaults": {"windows": ["1h", "1w"]}})
    assert cfg.model("m").window_names == ["1h", "7d"]
    assert [w.name for w in current_windows(cfg.model("m"), 1_700_000_000.0)] == ["1h", "7d"]


def test_slo_period_label_is_what_the_user_wrote_in_days() -> None:
    cfg = Config.model_validate({"models": {"m": {"slos": [
        {"name": "e", "kind": "error_rate", "objective": 0.99, "period": "28d"}]}}})
    assert format_duration(cfg.model("m").slos[0].period) == "28d"
