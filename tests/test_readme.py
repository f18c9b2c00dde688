"""README.md: assembled from docs/readme, its quickstart test command is what CI runs, links resolve."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import readme  # noqa: E402


def _readme() -> str:
    return (ROOT / "README.md").read_text(encoding="utf-8")


def test_readme_is_assembled_from_docs() -> None:
    rc = subprocess.run([sys.executable, str(ROOT / "scripts" / "readme.py"), "--check"])
    assert rc.returncode == 0, "README.md is stale: run `python scripts/readme.py`"


def test_quickstart_test_command_is_what_ci_runs() -> None:
    ci = [
        line.strip()
        for line in (ROOT / ".ci" / "run").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    command = ci[-1]
    quickstart = _readme().split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", quickstart, re.S)
    assert block, "the quickstart has no sh block"
    commands = [line.split("#", 1)[0].strip() for line in block.group(1).splitlines()]
    assert commands == ["./scripts/demo.sh", command], commands


def test_internal_links_resolve() -> None:
    text = _readme()
    anchors = set()
    fenced = False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced and (m := re.match(r"^#{1,6} (.*)$", line)):
            anchors.add(readme.anchor(m.group(1)))
    links = set(re.findall(r"\]\(#([^)]+)\)", text))
    assert links, "no internal links found"
    assert not links - anchors, sorted(links - anchors)


def test_every_alert_has_a_runbook_section() -> None:
    rules = "\n".join(p.read_text() for p in (ROOT / "alerts" / "rules").glob("*.yml"))
    alerts = set(re.findall(r"- alert: (\w+)", rules))
    assert alerts
    sections = {readme.anchor(t) for t in re.findall(r"^#### (Runbook: \w+)$", _readme(), re.M)}
    assert {f"runbook-{a.lower()}" for a in alerts} <= sections
