"""The `projectionist` command line, run in-process against a real PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from pipelines.cli import cli


def run(*args: str, home: Path, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner(env=env).invoke(cli, ["--home", str(home), *args], catch_exceptions=False)
    return result.exit_code, result.output


def test_help_lists_the_commands(tmp_path: Path) -> None:
    code, output = run("--help", home=tmp_path)
    assert code == 0
    for command in ("init", "demo", "status"):
        assert command in output


def test_python_dash_m_has_every_command() -> None:
    """`python -m pipelines.cli` is the same CLI as `projectionist`, projection commands included."""
    out = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "--help"], check=True, capture_output=True, text=True
    ).stdout
    for command in ("ingest", "rebuild", "promote", "rollback", "versions", "diff", "follow"):
        assert f"  {command} " in out, (command, out)


def test_init_demo_status(fresh_database: str, tmp_path: Path, lake_env: dict[str, str]) -> None:
    code, output = run("--dsn", fresh_database, "init", home=tmp_path)
    assert code == 0 and "event store ready: public.events" in output
    code, output = run(
        "--dsn", fresh_database, "demo", "--events", "500", "--writers", "3", home=tmp_path, env=lake_env
    )
    assert code == 0, output
    appended = int(output.split("appended ")[1].split(" events")[0].replace(",", ""))
    carts = int(output.split(" events in ")[1].split(" cart streams")[0].replace(",", ""))
    assert f"read back {appended:,} settled events" in output
    code, output = run("--dsn", fresh_database, "demo", "--events", "500", home=tmp_path, env=lake_env)
    assert "already in the store; not appending it again" in output
    assert f"read back {appended:,} settled events" in output
    code, output = run("--dsn", fresh_database, "status", home=tmp_path, env=lake_env)
    assert code == 0 and f"events:    {appended:,} in {carts:,} streams" in output, output


def test_unreachable_store_exits_with_a_clear_transient_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["--home", str(tmp_path), "--dsn", "postgresql://u:topsecret@127.0.0.1:1/shop", "status"]
    )
    assert result.exit_code == 75
    assert "cannot connect to PostgreSQL database 'shop' on 127.0.0.1:1" in result.output
    assert "topsecret" not in result.output
