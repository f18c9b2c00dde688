"""Runbook links: every alert's `runbook_url` lands on its section of docs/alerts.md, and the
base URL comes from the configuration (issue 13), not from a placeholder repository address."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import yaml

from modelmon.alerts.rules import ALERTS, DEFAULT_RUNBOOK_BASE, RuleOptions, generate, runbook_url
from modelmon.config import load_config

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

import readme  # noqa: E402


def _anchors(page: Path) -> set[str]:
    return {h.anchor for h in readme.headings(page.read_text(encoding="utf-8"))}


def _repo_config_with(tmp_path: Path, base: str) -> Path:
    """The repository's modelmon.yaml (every alert is generated from it) with another base."""
    raw = yaml.safe_load((ROOT / "modelmon.yaml").read_text(encoding="utf-8"))
    raw.setdefault("alerts", {})["runbook_base_url"] = base
    path = tmp_path / "modelmon.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def _runbook_urls(files: dict[str, str]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for text in files.values():
        for group in yaml.safe_load(text)["groups"]:
            for rule in group["rules"]:
                if "alert" in rule:
                    out.setdefault(rule["alert"], set()).add(rule["annotations"]["runbook_url"])
    return out


def test_every_alert_links_to_a_heading_of_docs_alerts() -> None:
    anchors = _anchors(ROOT / "docs" / "alerts.md")
    for alert in ALERTS:
        fragment = runbook_url(alert).split("#", 1)[1]
        assert fragment in anchors, f"{alert}: no heading with anchor #{fragment} in docs/alerts.md"


def test_default_base_is_the_generated_runbook_page_of_this_repository() -> None:
    assert load_config(None, environ={}).alerts.runbook_base_url == DEFAULT_RUNBOOK_BASE
    path = DEFAULT_RUNBOOK_BASE.split("/blob/main/", 1)[1]
    assert path == "docs/alerts.md" and (ROOT / path).is_file()


def test_rules_take_the_base_from_the_configuration(tmp_path: Path) -> None:
    cfg_file = _repo_config_with(tmp_path, "https://wiki.example.com/runbooks")
    urls = _runbook_urls(generate(load_config(cfg_file, environ={})))
    assert set(urls) == set(ALERTS)
    for alert, found in urls.items():
        assert found == {f"https://wiki.example.com/runbooks#runbook-{alert.lower()}"}


def test_environment_and_options_override_the_file(tmp_path: Path) -> None:
    cfg_file = _repo_config_with(tmp_path, "https://file.example.com/rb")
    env = {"MODELMON_RUNBOOK_BASE_URL": "https://env.example.com/rb"}
    cfg = load_config(cfg_file, environ=env)
    from_env = _runbook_urls(generate(cfg))
    assert from_env and all(u.startswith("https://env.example.com/rb#") for s in from_env.values() for u in s)
    flag = _runbook_urls(generate(cfg, RuleOptions(runbook_base="https://flag.example.com/rb")))
    assert flag and all(u.startswith("https://flag.example.com/rb#") for s in flag.values() for u in s)


def test_repository_rules_point_at_existing_runbook_sections() -> None:
    anchors = _anchors(ROOT / "docs" / "alerts.md")
    cfg = load_config(ROOT / "modelmon.yaml", environ={})
    for alert, urls in _runbook_urls(generate(cfg)).items():
        for url in urls:
            base, fragment = url.split("#", 1)
            assert base == cfg.alerts.runbook_base_url
            assert fragment in anchors, f"{alert}: {url}"
            assert re.fullmatch(r"runbook-[a-z]+", fragment)
