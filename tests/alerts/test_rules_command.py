"""`modelmon rules generate` as a user runs it: a documented output folder outside the installed
package, and no file it did not generate overwritten or deleted."""

from __future__ import annotations

from pathlib import Path

from cli_run import modelmon

from modelmon.alerts.rules import HEADER

ROOT = Path(__file__).resolve().parents[2]
PACKAGE_RULES = ROOT / "alerts" / "rules"
CONFIG = str(ROOT / "modelmon.yaml")




def test_generate_writes_to_modelmon_rules_in_the_working_directory(tmp_path: Path) -> None:
    shipped = {p.name: p.stat().st_mtime_ns for p in PACKAGE_RULES.glob("*.yml")}
    r = modelmon("-c", CONFIG, "rules", "generate", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    written = sorted(p.name for p in (tmp_path / "modelmon-rules").glob("*.yml"))
    assert written == ["discovered-models.yml", "model-fraud.yml", "service.yml"]
    assert not (tmp_path / "alerts").exists()
    assert {p.name: p.stat().st_mtime_ns for p in PACKAGE_RULES.glob("*.yml")} == shipped
    assert modelmon("-c", CONFIG, "rules", "generate", "--check", cwd=tmp_path).returncode == 0


def test_generate_refuses_to_overwrite_a_file_it_did_not_write(tmp_path: Path) -> None:
    out = tmp_path / "prometheus"
    out.mkdir()
    (out / "service.yml").write_text("groups: []  # the operator's own\n")
    (out / "mine.yml").write_text("groups: []\n")
    r = modelmon("-c", CONFIG, "rules", "generate", "-o", str(out), cwd=tmp_path)
    assert r.returncode == 2, r.stdout
    assert "service.yml" in r.stderr and "Traceback" not in r.stderr
    assert (out / "service.yml").read_text() == "groups: []  # the operator's own\n"
    assert sorted(p.name for p in out.glob("*.yml")) == ["mine.yml", "service.yml"]

    # Its own files, earlier output, it replaces (and removes those no longer produced).
    (out / "service.yml").write_text(HEADER + "groups: []\n")
    (out / "model-gone.yml").write_text(HEADER + "groups: []\n")
    r = modelmon("-c", CONFIG, "rules", "generate", "-o", str(out), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    names = sorted(p.name for p in out.glob("*.yml"))
    assert names == ["discovered-models.yml", "mine.yml", "model-fraud.yml", "service.yml"]
