"""A non-editable wheel works on its own: package data shipped, lean dependencies, every command.

Why: the test suite imports modelmon from the editable install, where a file left out of
the package data, or a module-level import of an optional dependency, goes unnoticed.

Design: the wheel is built from a copy of the sources (`pip wheel --no-deps
--no-build-isolation --no-index`, offline) and installed with `--no-deps` into a fresh
venv. Installing its dependencies from PyPI would take minutes and need the network, so
the venv instead reads the project venv's site-packages through a `.pth` line (a path
line in a `.pth` does not run that directory's own `.pth` files, so the editable
modelmon there stays inactive and `modelmon` is the wheel's). The optional libraries are
blocked in that venv (`sys.modules[name] = None`, the import fails), so every command
below also proves the service runs without the `evidently` extra and without pandas.
"""

from __future__ import annotations

import email
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.integration]

ROOT = Path(__file__).resolve().parent.parent
# What only the `evidently` / `test` extras bring; the service must not need any of it.
BLOCKED = ("evidently", "pandas", "plotly", "pyarrow", "statsmodels", "sklearn", "fairlearn")
# Files read at run time (importlib.resources / __file__), relative to the wheel's root.
PACKAGE_DATA = (
    "modelmon/schemas/prediction.v1.schema.json",
    "modelmon/schemas/feedback.v1.schema.json",
    "modelmon/migrations/alembic.ini",
    "modelmon/migrations/script.py.mako",
    "modelmon/migrations/env.py",
    "modelmon/alerts/alertmanager.yml",
    "modelmon/api/openapi.yaml",
    "modelmon/dashboards/provisioning/dashboards/modelmon.yml",
    "modelmon/dashboards/provisioning/datasources/modelmon.yml",
)


def _run(*args: str | Path, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, f"{args}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".venv", ".git", "tests", "bench", "build", "*.egg-info", "__pycache__", "*.db*",
        ".pytest_cache", ".ruff_cache",
    ))
    _run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "--no-index", src, "-w", tmp / "dist", cwd=tmp, env=dict(os.environ))
    (built,) = (tmp / "dist").glob("modelmon-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """bin/ of a venv holding the wheel, and the environment to run its commands in."""
    root = tmp_path_factory.mktemp("venv") / "venv"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MODELMON_", "PYTHON", "VIRTUAL_ENV"))}
    _run(sys.executable, "-m", "venv", "--without-pip", root, cwd=root.parent, env=env)
    python = root / "bin" / "python"
    _run(sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps",
         "--no-index", wheel, cwd=root.parent, env=env)
    site = _run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])",
                cwd=root.parent, env=env).stdout.strip()
    blocked = ", ".join(repr(n) for n in BLOCKED)
    (Path(site) / "zz_project_deps.pth").write_text(
        sysconfig.get_paths()["purelib"] + "\n"
        f"import sys; sys.modules.update(dict.fromkeys(({blocked}), None))\n",
        encoding="utf-8",
    )
    return root / "bin", env


def test_wheel_ships_the_package_data(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = [n for n in PACKAGE_DATA if n not in names]
    expected = {
        "modelmon/alerts/rules": sorted((ROOT / "alerts" / "rules").glob("*.yml")),
        "modelmon/dashboards/json": sorted((ROOT / "dashboards" / "json").glob("*.json")),
        "modelmon/migrations/versions": sorted((ROOT / "migrations" / "versions").glob("*.py")),
    }
    for folder, files in expected.items():
        assert files, folder
        missing += [f"{folder}/{f.name}" for f in files if f"{folder}/{f.name}" not in names]
    assert not missing, missing


def test_evidently_and_pandas_are_extras_only(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as z:
        meta_name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        meta = email.message_from_bytes(z.read(meta_name))
    requires = meta.get_all("Requires-Dist") or []
    core = [r for r in requires if "extra ==" not in r]
    assert core and not [r for r in core if r.split()[0].lower().startswith(BLOCKED)], core
    assert any(r.startswith("evidently") and 'extra == "evidently"' in r for r in requires)


def test_every_command_runs_from_the_installed_wheel(
    wheel: Path, venv: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    bin_dir, env = venv
    modelmon = bin_dir / "modelmon"
    where = _run(bin_dir / "python", "-c", "import modelmon; print(modelmon.__file__)",
                 cwd=tmp_path, env=env).stdout
    assert where.startswith(str(bin_dir.parent)), where
    shutil.copy(ROOT / "modelmon.yaml", tmp_path / "modelmon.yaml")  # sqlite:///modelmon.db

    usage = _run(modelmon, "--help", cwd=tmp_path, env=env).stdout
    listed = usage.split("positional arguments:", 1)[1].split("options:", 1)[0]
    commands = re.findall(r"^    (\w[\w-]*)", listed, re.M)  # argparse: 4 spaces, the name
    assert {"db", "config", "rules", "dashboards", "run", "demo"} <= set(commands), commands
    for command in commands:
        _run(modelmon, command, "--help", cwd=tmp_path, env=env)

    _run(modelmon, "config", "check", cwd=tmp_path, env=env)
    _run(modelmon, "db", "upgrade", cwd=tmp_path, env=env)
    with sqlite3.connect(tmp_path / "modelmon.db") as db:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"alembic_version", "predictions", "feedback", "dead_letters"} <= tables, tables

    _run(modelmon, "rules", "generate", "--out", tmp_path / "rules", cwd=tmp_path, env=env)
    assert sorted(p.name for p in (tmp_path / "rules").glob("*.yml")) == sorted(
        p.name for p in (ROOT / "alerts" / "rules").glob("*.yml")
    )
    _run(modelmon, "rules", "generate", "--check", "--out", tmp_path / "rules", cwd=tmp_path,
         env=env)
    _run(modelmon, "dashboards", "generate", "--out", tmp_path / "dash", cwd=tmp_path, env=env)
    generated = sorted(p.name for p in (tmp_path / "dash").glob("*.json"))
    shipped = sorted(Path(n).name for n in zipfile.ZipFile(wheel).namelist()
                     if n.startswith("modelmon/dashboards/json/"))
    assert len(generated) >= 3 and generated == shipped
    _run(bin_dir / "python", "-c",
         "from modelmon.api.routes import openapi_document; from modelmon.config import Config; "
         "assert openapi_document(Config())['paths']", cwd=tmp_path, env=env)


def test_every_module_imports_without_the_extras(
    venv: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    bin_dir, env = venv
    script = (
        "import importlib, pkgutil, modelmon\n"
        "names = [m.name for m in pkgutil.walk_packages(modelmon.__path__, 'modelmon.')\n"
        "         if not m.name.startswith('modelmon.migrations.')\n"
        "         and not m.name.endswith('__main__')]\n"
        "for name in names: importlib.import_module(name)\n"
        f"for name in {BLOCKED!r}:\n"
        "    try: importlib.import_module(name)\n"
        "    except ImportError: pass\n"
        "    else: raise SystemExit(name + ' is importable: the block does not work')\n"
        "print(len(names))\n"
    )
    count = int(_run(bin_dir / "python", "-c", script, cwd=tmp_path, env=env).stdout)
    assert count > 40, count
