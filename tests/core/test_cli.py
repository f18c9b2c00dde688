"""The `modelmon` command line as a user meets it: --version, -c anywhere, help on every option."""

from __future__ import annotations

import argparse
from importlib.metadata import version
from pathlib import Path

from cli_run import modelmon

from modelmon.cli import build_parser


def write_config(
    tmp_path: Path, url: str, models: str = "  fraud: {task: binary, positive_class: 1}\n"
) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(f"database:\n  url: {url!r}\nmodels:\n{models}", encoding="utf-8")
    return path


def test_version_prints_the_installed_version() -> None:
    r = modelmon("--version")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"modelmon {version('modelmon')}"


def test_config_option_is_accepted_after_the_subcommand(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, f"sqlite:///{tmp_path / 's.db'}")
    before = modelmon("-c", str(cfg), "config", "check")
    after = modelmon("config", "check", "-c", str(cfg), "--log-level", "WARNING")
    long_after = modelmon("config", "check", f"--config={cfg}")
    for r in (before, after, long_after):
        assert r.returncode == 0, r.stderr
        assert "fraud" in r.stdout  # the file was read, not the default configuration


def test_config_option_after_a_nested_subcommand_wins_over_before(tmp_path: Path) -> None:
    good = write_config(tmp_path, f"sqlite:///{tmp_path / 's.db'}")
    args = build_parser().parse_args(["-c", "elsewhere.yaml", "db", "upgrade", "-c", str(good)])
    assert args.config == str(good)
    assert build_parser().parse_args(["-c", str(good), "db", "upgrade"]).config == str(good)
    assert build_parser().parse_args(["db", "upgrade"]).config is None


def _parsers(parser: argparse.ArgumentParser, path: str = "modelmon"):  # type: ignore[no-untyped-def]
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                yield f"{path} {name} (the command itself)", helps.get(name)
                yield from _parsers(sub, f"{path} {name}")


def test_every_command_and_option_has_help() -> None:
    missing = []
    for where, item in _parsers(build_parser()):
        if not isinstance(item, argparse.ArgumentParser):
            if not item:
                missing.append(where)
            continue
        for action in item._actions:
            if isinstance(action, argparse._SubParsersAction | argparse._HelpAction):
                continue
            if not action.help or action.help == argparse.SUPPRESS:
                missing.append(f"{where} {'/'.join(action.option_strings) or action.dest}")
    assert not missing, "no help text: " + ", ".join(sorted(missing))


def test_config_check_rejects_a_database_url_sqlalchemy_cannot_parse(tmp_path: Path) -> None:
    for url in ("not a url", "postgresq://modelmon:s3cret@db.example/modelmon"):
        r = modelmon("-c", str(write_config(tmp_path, url)), "config", "check")
        assert r.returncode == 2, (url, r.stdout, r.stderr)
        assert "database.url" in r.stderr
        assert "s3cret" not in r.stderr + r.stdout
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
