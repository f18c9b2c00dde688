"""Run every dashboard query through a Prometheus and report the ones that return nothing.

No Grafana can run in the tests; this is how we know each panel would show
data. Variables are resolved the way Grafana does it: each label_values()
query in order, with the variables before it filled in; a preferred value is
used when present (e.g. the model that has SLOs and slices), else the first.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from modelmon.dashboards.queries import panel_targets, regex_variables, substitute, variable_queries


@dataclass
class CheckReport:
    dashboard: str
    variables: dict[str, list[str]] = field(default_factory=dict)  # name -> values found
    chosen: dict[str, str] = field(default_factory=dict)
    empty: list[str] = field(default_factory=list)  # "panel title: expr" that returned nothing
    errors: list[str] = field(default_factory=list)
    checked: int = 0

    @property
    def ok(self) -> bool:
        return not self.empty and not self.errors and all(self.variables.values())


def _get(url: str, timeout: float = 10.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - a URL the user gave
        return json.loads(resp.read())


class PrometheusUnreachable(Exception):
    """No Prometheus answers at the URL: the check cannot say anything about the panels."""


def probe(prometheus_url: str, timeout: float = 10.0) -> None:
    """Raise PrometheusUnreachable unless a Prometheus answers at `prometheus_url`, so that
    an outage is reported as such rather than as every panel being without data."""
    url = f"{prometheus_url}/api/v1/status/buildinfo"
    try:
        data = _get(url, timeout)
    except urllib.error.HTTPError as exc:
        raise PrometheusUnreachable(
            f"{url} answered HTTP {exc.code}: is {prometheus_url} Prometheus's base URL?"
        ) from None
    except urllib.error.URLError as exc:
        raise PrometheusUnreachable(f"cannot reach Prometheus at {prometheus_url}: {exc.reason}") from None
    except (OSError, ValueError) as exc:  # timeouts, resets, a non-JSON answer, a bad URL
        raise PrometheusUnreachable(f"cannot reach Prometheus at {prometheus_url}: {exc}") from None
    if not isinstance(data, dict) or data.get("status") != "success":
        raise PrometheusUnreachable(f"{url} did not answer like Prometheus")


def label_values(prometheus_url: str, selector: str, label: str) -> list[str]:
    query = urllib.parse.urlencode({"match[]": selector})
    data = _get(f"{prometheus_url}/api/v1/label/{label}/values?{query}")
    return sorted(data.get("data") or [])


def instant_query(prometheus_url: str, expr: str) -> list[dict[str, Any]]:
    data = _get(f"{prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
    if data.get("status") != "success":
        raise RuntimeError(data.get("error", "query failed"))
    result = data["data"]["result"]
    return result if isinstance(result, list) else [result]


def check_dashboard(prometheus_url: str, name: str, dashboard: Mapping[str, Any],
                    preferred: Mapping[str, str] | None = None) -> CheckReport:
    report = CheckReport(name)
    preferred = preferred or {}
    values: dict[str, str] = {}
    regex = regex_variables(dashboard)
    for var, (selector, label) in variable_queries(dashboard).items():
        try:
            found = label_values(prometheus_url, substitute(selector, values, regex=regex), label)
        except (OSError, KeyError, ValueError) as exc:
            report.errors.append(f"variable {var}: {exc}")
            found = []
        report.variables[var] = found
        if found:
            values[var] = preferred[var] if preferred.get(var) in found else found[0]
    report.chosen = dict(values)
    for panel, target in panel_targets(dashboard):
        try:
            expr = substitute(target["expr"], values, regex=regex)
        except KeyError as exc:
            report.errors.append(f"{panel['title']}: {exc}")
            continue
        report.checked += 1
        try:
            if not instant_query(prometheus_url, expr):
                report.empty.append(f"{panel['title']}: {expr}")
        except (OSError, RuntimeError, ValueError) as exc:
            report.errors.append(f"{panel['title']}: {expr}: {exc}")
    return report
