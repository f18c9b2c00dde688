"""README.md and docs/*.md: generated from docs/readme, short README whose quickstart test
command is what CI runs, examples that follow the real contract and client, links that resolve."""

from __future__ import annotations

import ast
import inspect
import json
import re
import subprocess
import sys
from pathlib import Path

import yaml

from modelmon.alerts.rules import ALERTS, generate
from modelmon.client import ModelmonClient
from modelmon.config import load_config
from modelmon.contract import parse_feedback, parse_prediction

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import readme  # noqa: E402

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _readme() -> str:
    return (ROOT / "README.md").read_text(encoding="utf-8")


def _section(title: str) -> str:
    return _readme().split(f"\n## {title}", 1)[1].split("\n## ", 1)[0]


def _blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", text, re.S | re.M)


def _anchors(page: Path) -> set[str]:
    """GitHub's anchors of a page, duplicates numbered `-1`, `-2`, ... as GitHub does."""
    seen: dict[str, int] = {}
    out = set()
    for h in readme.headings(page.read_text(encoding="utf-8")):
        n = seen.get(h.anchor, 0)
        seen[h.anchor] = n + 1
        out.add(h.anchor if n == 0 else f"{h.anchor}-{n}")
    return out


def test_readme_and_docs_are_generated_from_the_parts() -> None:
    rc = subprocess.run([sys.executable, str(ROOT / "scripts" / "readme.py"), "--check"])
    assert rc.returncode == 0, "stale: run `python scripts/readme.py`"


def test_every_part_is_published() -> None:
    """A new part in docs/readme/ must be routed to a page, not silently left out."""
    used = {s.split("#")[0] for page in readme.PAGES for s in page.sources}
    assert used == {p.name for p in readme.PARTS_DIR.glob("*.md")}


def test_readme_is_a_short_first_read() -> None:
    lines = _readme().splitlines()
    assert len(lines) <= 300, f"README.md has {len(lines)} lines; reference belongs in docs/"
    for heading in ("Quickstart", "Instrumenting a service", "What the alerts mean",
                    "Where to go next"):
        assert f"\n## {heading}" in _readme(), heading
    # Every reference page is linked from "Where to go next".
    linked = set(re.findall(r"\]\((docs/[\w.-]+\.md)\)", _section("Where to go next")))
    assert linked == {p.relative_to(ROOT).as_posix() for p in PAGES[1:]}


def test_quickstart_test_command_is_what_ci_runs() -> None:
    ci = [
        line.strip()
        for line in (ROOT / ".ci" / "run").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    block = _blocks(_section("Quickstart"), "sh")
    assert block, "the quickstart has no sh block"
    commands = [line.split("#", 1)[0].strip() for line in block[0].splitlines()]
    assert commands == ["./scripts/demo.sh", ci[-1]], commands


def test_json_examples_follow_the_event_contract() -> None:
    blocks = _blocks(_section("Instrumenting a service"), "json")
    kinds = []
    for block in blocks:
        event = json.loads(block)
        if "label" in event:
            parse_feedback(event)  # raises ContractError when the example is wrong
            kinds.append("feedback")
        else:
            parse_prediction(event)
            kinds.append("prediction")
    assert "prediction" in kinds and "feedback" in kinds, kinds


def test_python_example_calls_the_client_as_it_is() -> None:
    (block,) = _blocks(_section("Instrumenting a service"), "python")
    tree = ast.parse(block)
    called = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            method = getattr(ModelmonClient, node.func.attr)
            params = inspect.signature(method).parameters
            assert {k.arg for k in node.keywords} <= set(params), node.func.attr
            called.add(node.func.attr)
    assert {"log_prediction", "log_feedback", "close"} <= called


def test_alert_table_matches_the_generated_rules() -> None:
    rows = re.findall(r"^\| `(\w+)` \| [^|]+ \| (\w+) \| \[runbook\]\(([^)]+)\) \|$",
                      _section("What the alerts mean"), re.M)
    assert [r[0] for r in rows] == list(ALERTS)
    severities = {}
    for text in generate(load_config(ROOT / "modelmon.yaml", environ={})).values():
        for group in yaml.safe_load(text)["groups"]:
            for rule in group["rules"]:
                if "alert" in rule:
                    severities.setdefault(rule["alert"], set()).add(rule["labels"]["severity"])
    for alert, severity, link in rows:
        assert severities[alert] == {severity}, alert
        assert link == f"docs/alerts.md#runbook-{alert.lower()}"


def test_relative_links_and_anchors_resolve() -> None:
    broken, checked = [], 0
    for page in PAGES:
        for fenced, line in readme.fenced_lines(page.read_text(encoding="utf-8")):
            if fenced:
                continue
            for href in re.findall(r"\]\(([^)\s]+)\)", re.sub(r"`[^`]*`", "", line)):
                if re.match(r"^[a-z][a-z0-9+.-]*:", href):
                    continue
                checked += 1
                path, _, frag = href.partition("#")
                target = (page.parent / path).resolve() if path else page
                if not target.exists():
                    broken.append(f"{page.name}: {href} (no such file)")
                elif frag and target.suffix == ".md" and frag not in _anchors(target):
                    broken.append(f"{page.name}: {href} (no such heading)")
    assert checked > 50
    assert not broken, broken
