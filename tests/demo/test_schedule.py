"""The demo's incident schedule holds at any `--duration` from 120 s: a quiet lead-in,
each incident long enough for its alert (`for:` of the rules the demo writes plus
the pipeline's lag), and every alert's condition gone before the demo ends or the
incident comes round again. Checked on the schedule, not in real time: the
monitors' response is modelled in modelmon.demo.expectations."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from modelmon.alerts.rules import RuleOptions, write_rules
from modelmon.config import Config, format_duration, parse_duration
from modelmon.demo.app import DemoOptions, _period
from modelmon.demo.config import demo_settings
from modelmon.demo.expectations import ALERTS, LAG, condition_spans, for_scale, windows
from modelmon.demo.simulator import FRAUD, LEAD_IN, SPECIES, Simulator

DURATIONS = (120.0, 180.0, 300.0, 600.0, 900.0, 3600.0)


def rule_for(period: float, tmp: Path) -> dict[str, float]:
    """`for:` (seconds) of each alert in the rules the demo writes for this period."""
    settings = demo_settings("sqlite:///x.db", "127.0.0.1:9092", 0, 50.0,
                             [format_duration(w) for w in windows(period)])
    write_rules(Config.model_validate(settings), tmp, RuleOptions(for_scale=for_scale(period)))
    out: dict[str, float] = {}
    for path in tmp.glob("model-*.yml"):
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                if "alert" in rule:
                    out[rule["alert"]] = max(out.get(rule["alert"], 0.0), parse_duration(rule.get("for", "0s")))
    return out


@pytest.mark.parametrize("duration", DURATIONS)
def test_incidents_scale_with_the_duration(duration: float) -> None:
    period = _period(DemoOptions(duration=duration))
    assert period == duration
    sim = Simulator(period=period)
    assert {i.kind for i in sim.incidents} == set(ALERTS)
    for inc in sim.incidents:  # every incident ends within the run, none repeats
        assert 0 < inc.start < inc.end <= duration


def test_until_stopped_the_schedule_repeats_every_ten_minutes() -> None:
    assert _period(DemoOptions()) == 600.0
    assert _period(DemoOptions(duration=900.0, period=300.0)) == 300.0


@pytest.mark.parametrize("duration", DURATIONS)
def test_the_lead_in_is_quiet(duration: float) -> None:
    sim = Simulator(period=duration, start=0.0)
    lead_in = LEAD_IN * duration
    assert lead_in >= 12.0  # the monitors' first passes and Prometheus' first scrapes
    steps = [k * 0.5 for k in range(int(lead_in / 0.5))]
    assert all(not sim.active(t) for t in steps)
    assert sim.active(lead_in)


@pytest.mark.parametrize("duration", DURATIONS)
def test_every_incident_alerts_and_its_alert_resolves_in_time(duration: float, tmp_path: Path) -> None:
    period = _period(DemoOptions(duration=duration))
    holds_for = rule_for(period, tmp_path)
    incidents = Simulator(period=period).incidents
    for inc in incidents:
        alert = ALERTS[inc.kind]
        needed = holds_for[alert] + LAG
        spans = condition_spans(inc, period, until=duration, incidents=incidents)
        # One span: the alert fires once, while its condition holds for `for:` plus the lag ...
        assert len(spans) == 1, (inc, spans)
        (on, off) = spans[0]
        assert inc.start <= on and off - on >= needed, (inc, alert, spans, needed)
        # ... and the condition is gone (the alert resolves) before the demo ends.
        assert off != math.inf and off + LAG <= duration, (inc, alert, spans)


@pytest.mark.parametrize("duration", DURATIONS)
def test_species_shifts_only_after_its_pause(duration: float) -> None:
    """A pause right after the class shift would freeze the shifted window (and its alert)."""
    incidents = {(i.kind, i.model): i for i in Simulator(period=duration).incidents}
    assert incidents["class_shift", SPECIES].start >= incidents["pause", SPECIES].end
    assert incidents["canary_regression", FRAUD].start == LEAD_IN * duration
