"""alerts/alertmanager.yml: valid for amtool, routes by severity, commented receivers valid too."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "alerts" / "alertmanager.yml"
AMTOOL = shutil.which("amtool") or "/usr/bin/amtool"


def _amtool(*args: str) -> subprocess.CompletedProcess[str]:
    if not Path(AMTOOL).exists():
        pytest.fail("amtool not installed: run `make setup` (Debian package prometheus-alertmanager)")
    return subprocess.run([AMTOOL, *args], capture_output=True, text=True, timeout=60)


def test_amtool_check_config_passes() -> None:
    result = _amtool("check-config", str(CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.mark.parametrize(("labels", "receiver"), [
    (["alertname=ModelmonAccuracyDrop", "severity=page", "model=fraud"], "page"),
    (["alertname=ModelmonClassShift", "severity=ticket", "model=fraud"], "ticket"),
    (["alertname=SomethingElse"], "ticket"),
])
def test_routes_by_severity(labels: list[str], receiver: str) -> None:
    result = _amtool("config", "routes", "test", f"--config.file={CONFIG}", *labels)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == receiver


def test_commented_slack_and_pagerduty_receivers_are_valid_when_enabled(tmp_path: Path) -> None:
    text = CONFIG.read_text()
    # Uncomment the receiver blocks and the Slack URL.
    head, receivers = text.split("\nreceivers:\n")
    enabled = head + "\nreceivers:\n" + re.sub(r"^(\s+)# ", r"\1", receivers, flags=re.M)
    enabled = enabled.replace("# slack_api_url:", "slack_api_url:")
    enabled = enabled.replace("<PagerDuty Events API v2 integration key>", "0123456789abcdef0123456789abcdef")
    assert "slack_configs:" in enabled and "pagerduty_configs:" in enabled
    path = tmp_path / "alertmanager.yml"
    path.write_text(enabled)
    result = _amtool("check-config", str(path))
    assert result.returncode == 0, result.stdout + result.stderr + enabled
