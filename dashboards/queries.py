"""The PromQL inside the dashboards, pulled out for checking against Prometheus.

Grafana fills variables before a query reaches Prometheus; `substitute` does
the same with given values so tests (and `modelmon dashboards check`) can run
each panel and variable query through a real Prometheus. Like Grafana's
Prometheus datasource, it regex-escapes the values of multi-value (or
include-All) variables, which dashboards use inside =~ matchers: the version
picker's "*" must reach Prometheus as \\* or the query does not parse.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

BUILTINS = {"__rate_interval": "1m", "__interval": "15s", "__range": "1h"}
_VAR = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")
_LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(.*?)\s*,\s*(\w+)\s*\)\s*$", re.S)
_REGEX_SPECIAL = re.compile(r"[$^*{}\[\]'+?.()|]")


def regex_escape(value: str) -> str:
    """Grafana's `prometheusSpecialRegexEscape`: backslash-escape regex
    metacharacters, doubled because the result sits in a PromQL string."""
    return _REGEX_SPECIAL.sub(lambda m: "\\\\" + m.group(0), value.replace("\\", "\\\\\\\\"))


def regex_variables(dashboard: Mapping[str, Any]) -> frozenset[str]:
    """Names of the variables Grafana regex-escapes (multi-value or include-All)."""
    return frozenset(v["name"] for v in dashboard.get("templating", {}).get("list", [])
                     if v.get("multi") or v.get("includeAll"))


def substitute(expr: str, values: Mapping[str, str], builtins: Mapping[str, str] = BUILTINS,
               regex: frozenset[str] = frozenset()) -> str:
    """Replace $var / ${var} with `values` (then Grafana's built-ins); unknown ones are an error.

    Values of the variables named in `regex` are regex-escaped as Grafana does.
    """

    def repl(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        if name in values:
            return regex_escape(values[name]) if name in regex else values[name]
        if name in builtins:
            return builtins[name]
        raise KeyError(f"no value for ${name} in {expr!r}")

    return _VAR.sub(repl, expr)


def panel_targets(dashboard: Mapping[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(panel, target) for every PromQL target, rows' nested panels included."""
    out = []
    stack = list(dashboard.get("panels", []))
    while stack:
        panel = stack.pop(0)
        stack[0:0] = panel.get("panels", [])
        out.extend((panel, t) for t in panel.get("targets", []) if t.get("expr"))
    return out


def variable_queries(dashboard: Mapping[str, Any]) -> dict[str, tuple[str, str]]:
    """Query variables as name -> (series selector, label) from label_values(selector, label)."""
    out = {}
    for var in dashboard.get("templating", {}).get("list", []):
        if var.get("type") != "query":
            continue
        query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        m = _LABEL_VALUES.match(query)
        if not m:
            raise ValueError(f"variable {var['name']}: only label_values(selector, label) is supported")
        out[var["name"]] = (m.group(1), m.group(2))
    return out


# Series each process counts for itself (summed by the panels that read them); every
# other modelmon_ series is a monitor result, exported alike by every monitor process.
_PER_PROCESS = re.compile(
    r"^modelmon_(predictions_total|feedback_total|prediction_latency_seconds_\w+|ingest_\w+|"
    r"consumer_lag_messages|monitor_schedule_delay_seconds|monitor_runs_late\w*)$"
)
_RESULT_SELECTOR = re.compile(r"\b(modelmon_[a-z0-9_]+)(\{[^{}]*\})(?!\s*\[)")
PROCESS_LABELS = ("instance", "job", "pod")


def once_per_result(expr: str) -> str:
    """Read every monitor-result selector in `expr` once, however many processes export it.

    Several `modelmon monitor` processes export the same results (they read one
    store); a panel plotting the raw selector would draw each line once per
    process, a table would list each row twice. Like the alert rules
    (alerts/rules.py `across_processes`), `max without (instance, job, pod)`
    keeps one. Range selectors (`x{...}[5m]`) and per-process series are left alone.
    """

    def wrap(m: re.Match[str]) -> str:
        name, matchers = m.group(1), m.group(2)
        if _PER_PROCESS.match(name):
            return m.group(0)
        return f"max without ({', '.join(PROCESS_LABELS)}) ({name}{matchers})"

    return _RESULT_SELECTOR.sub(wrap, expr)
