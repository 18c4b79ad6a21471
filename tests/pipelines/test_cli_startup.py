"""Start-up of the command line: ``--help``, argument errors and a lake query load only what they need.

Each check runs in a child process of its own and reads its ``sys.modules``: what a command imports
is what it pays for at every start (issue 19). Behaviour, not timings: the times are in
``benchmarks/whole_commands.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import eventstore
import projections
import warehouse
from benchmarks._lake_data import bulk_append
from pipelines.cli import cli
from warehouse.lake import ANALYST_ROLE

#: What no start-up path may load: the dataframe and Arrow libraries, Dagster, and the two database drivers.
HEAVY = ("polars", "pyarrow", "dagster", "duckdb", "psycopg", "numpy")

#: Runs the command lines given as JSON in argv[1], one after another in this process, and prints
#: for each the heavy modules loaded so far and its exit code.
_CHILD = """
import json, sys
from pipelines.cli import cli
heavy = json.loads(sys.argv[2])
report = [{"args": [], "loaded": sorted(m for m in heavy if m in sys.modules)}]
for args in json.loads(sys.argv[1]):
    try:
        cli(args, prog_name="projectionist", standalone_mode=False)
        code = 0
    except SystemExit as exc:
        code = exc.code
    except Exception as exc:  # click's usage errors, with standalone_mode off
        code = type(exc).__name__
    report.append({"args": args, "code": code, "loaded": sorted(m for m in heavy if m in sys.modules)})
print("REPORT " + json.dumps(report))
"""


def child_report(
    command_lines: list[list[str]], env: dict[str, str] | None = None, heavy: tuple[str, ...] = HEAVY
) -> list[dict[str, object]]:
    """Run ``command_lines`` in one fresh interpreter; per line, its exit code and the heavy modules then loaded."""
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, json.dumps(command_lines), json.dumps(heavy)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **(env or {})},
    )
    line = next(line for line in done.stdout.splitlines() if line.startswith("REPORT "))
    report: list[dict[str, object]] = json.loads(line.removeprefix("REPORT "))
    return report


def test_importing_the_cli_and_its_help_load_nothing_heavy(tmp_path: Path) -> None:
    report = child_report([["--home", str(tmp_path), "--help"], ["--version"]])
    assert [entry["loaded"] for entry in report] == [[], [], []]
    assert [entry["code"] for entry in report[1:]] == [0, 0]


def test_every_commands_help_loads_nothing_heavy(tmp_path: Path) -> None:
    """``demo --help`` lists the store kinds from the registry, so it alone loads the database drivers."""
    names = sorted(cli.commands)
    assert len(names) > 20 and "demo" in names
    ordered = [name for name in names if name != "demo"] + ["demo"]
    report = child_report([["--home", str(tmp_path), name, "--help"] for name in ordered])
    loaded = {entry["args"][2]: entry["loaded"] for entry in report[1:]}  # type: ignore[index]
    assert {entry["code"] for entry in report[1:]} == {0}
    assert {name: found for name, found in loaded.items() if found and name != "demo"} == {}
    assert not {"polars", "dagster"} & set(loaded["demo"])  # type: ignore[arg-type]


def test_argument_errors_load_nothing_heavy(tmp_path: Path) -> None:
    report = child_report(
        [
            ["--home", str(tmp_path), "ingest", "--no-such-option"],
            ["--home", str(tmp_path), "rebuild"],  # NAME missing
            ["--home", str(tmp_path), "no-such-command"],
        ]
    )
    assert [entry["code"] for entry in report[1:]] == ["NoSuchOption", "MissingParameter", "NoSuchCommand"]
    assert [entry["loaded"] for entry in report] == [[]] * 4


@pytest.mark.parametrize("name", sorted(cli.commands))
def test_every_command_has_working_help(name: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["--home", str(tmp_path), name, "--help"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert f"Usage: cli {name}" in result.output
    first_line = (cli.commands[name].help or "").strip().splitlines()[0]
    assert first_line and "".join(first_line.split()) in "".join(result.output.split())  # as click wraps it


def test_help_texts_that_name_lazy_things_name_the_real_ones(tmp_path: Path) -> None:
    """The store kinds of ``demo --store`` and the analyst role of ``rotate-password`` come from their modules."""
    from eventstore.adapters import store_kinds

    demo = CliRunner().invoke(cli, ["--home", str(tmp_path), "demo", "--help"]).output
    assert f"[{'|'.join(store_kinds())}]" in " ".join(demo.split())
    rotate = CliRunner().invoke(cli, ["--home", str(tmp_path), "rotate-password", "--help"]).output
    assert ANALYST_ROLE in rotate
    bad = CliRunner().invoke(cli, ["--home", str(tmp_path), "demo", "--store", "kafka"])
    assert bad.exit_code == 2 and "'kafka' is not one of 'native'" in bad.output


def test_an_unknown_store_kind_still_stops_a_command_but_not_its_help(tmp_path: Path) -> None:
    env = {"PROJECTIONIST_EVENT_STORE_KIND": "kafka"}
    result = CliRunner(env=env).invoke(cli, ["--home", str(tmp_path), "status"])
    assert result.exit_code == 2
    assert "PROJECTIONIST_EVENT_STORE_KIND 'kafka' is unknown: use one of native," in result.output
    assert CliRunner(env=env).invoke(cli, ["--home", str(tmp_path), "status", "--help"]).exit_code == 0


@pytest.mark.parametrize("package", [eventstore, projections, warehouse])
def test_packages_re_export_every_name_lazily(package: object) -> None:
    names = package.__all__  # type: ignore[attr-defined]
    assert names and all(getattr(package, name) is not None for name in names)
    with pytest.raises(AttributeError, match="no_such_name"):
        package.no_such_name  # type: ignore[attr-defined]  # noqa: B018


def test_a_query_status_and_versions_load_no_dataframe_library_nor_dagster(
    store_dsn: str, tmp_path: Path, lake_env: dict[str, str]
) -> None:
    env = {**lake_env, "PROJECTIONIST_EVENT_STORE_DSN": store_dsn}
    bulk_append(store_dsn, 300, transactions=1)
    for args in (["ingest"], ["rebuild", "cart_summary", "--version", "1"]):  # a version: versions asks its lag
        result = CliRunner(env=env).invoke(cli, ["--home", str(tmp_path), *args], catch_exceptions=False)
        assert result.exit_code == 0, result.output
    report = child_report(
        [
            ["--home", str(tmp_path), "sql", "SELECT count(*) AS events FROM raw.events"],
            ["--home", str(tmp_path), "versions"],
            ["--home", str(tmp_path), "status"],
        ],
        env=env,
        heavy=("polars", "dagster"),
    )
    assert [entry["code"] for entry in report[1:]] == [0, 0, 0]
    assert [entry["loaded"] for entry in report] == [[]] * 4


@pytest.mark.slow
def test_the_whole_commands_benchmark_runs_at_a_tiny_size(full_size: bool) -> None:
    """``benchmarks/whole_commands.py`` end to end (its own embedded server): about a minute, so only with --full."""
    if not full_size:
        pytest.skip("a minute of embedded PostgreSQL and demo data: run with --full")
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, str(root / "benchmarks" / "whole_commands.py"), "--events", "2000", "--repeat", "1"],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "store -> Parquet" in done.stdout and "status" in done.stdout
