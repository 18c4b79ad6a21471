"""The registry: one file per projection, clear errors naming the file, fingerprints that follow the body."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from eventstore.errors import ConfigurationError, TerminalError
from projections import Column, ExpectedChange, Fold, Polars, Projection, Sql, discover
from projections.errors import ProjectionDefinitionError

GOOD = """
from projections import Column, Projection, Sql

PROJECTION = Projection(
    name="{name}",
    version={version},
    description="Events per stream.",
    key=("stream",),
    consumes=("CartOpened",),
    columns=(Column("stream", "VARCHAR", "The stream."), Column("events", "BIGINT", "How many events.")),
    body=Sql("SELECT stream_id AS stream, count(*) AS events, max(global_position) AS last_global_position "
             "FROM events GROUP BY ALL"),
)
"""


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text)
    return path


def test_user_folder_from_env_adds_projections(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write(tmp_path, "stream_sizes.py", GOOD.format(name="stream_sizes", version=3))
    _write(tmp_path, "_helpers.py", "raise RuntimeError('helpers are not imported by the registry')")
    monkeypatch.setenv("PROJECTIONIST_PROJECTIONS", str(tmp_path))
    registry = discover()
    assert registry.versions("stream_sizes") == [3]
    assert registry.get("stream_sizes").source == str(tmp_path / "stream_sizes.py")
    assert registry.get("cart_summary").version == 2 and registry.get("cart_summary", 1).kind == "sql"
    with pytest.raises(ConfigurationError, match="unknown projection 'nope'"):
        registry.get("nope")
    with pytest.raises(ConfigurationError, match=r"no version 9: it has versions \[1, 2\]"):
        registry.get("cart_summary", 9)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("PROJECTION = (\n", r"syntax error at line \d+"),
        (GOOD.format(name="cart_summary", version=1), r"cart_summary v1 is already defined in .*cart_summary_v1\.py"),
        (GOOD.format(name="CartSummary", version=1), r"name 'CartSummary' is invalid: use lower snake case"),
        (GOOD.format(name="ok", version=0), r"version 0 is invalid: use a positive integer"),
        (GOOD.format(name="ok", version="'2'"), r"version '2' is invalid"),
        ("X = 1\n", r"declares neither PROJECTION nor UPCASTERS"),
        ("import no_such_module_here\n", r"importing it failed with ModuleNotFoundError"),
        (GOOD.format(name="ok", version=1).replace('"BIGINT"', '"BIGNUMBER"'), r"type of events: 'BIGNUMBER'"),
    ],
    ids=["syntax", "duplicate", "name", "version", "version_type", "empty", "import", "type"],
)
def test_bad_module_is_refused_naming_the_file(tmp_path: Path, text: str, message: str) -> None:
    path = _write(tmp_path, "bad_one.py", text)
    with pytest.raises(ProjectionDefinitionError, match=message) as caught:
        discover(tmp_path)
    assert str(path) in str(caught.value)
    assert isinstance(caught.value, TerminalError) and not caught.value.retryable


def test_duplicate_inside_the_user_folder(tmp_path: Path) -> None:
    _write(tmp_path, "a.py", GOOD.format(name="twice", version=1))
    _write(tmp_path, "b.py", GOOD.format(name="twice", version=1))
    with pytest.raises(ProjectionDefinitionError, match=r"b\.py: projection twice v1 is already defined in .*a\.py"):
        discover(tmp_path, bundled=False)


def test_missing_folder_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="is not a folder"):
        discover(tmp_path / "missing")


def _projection(**changes: object) -> Projection:
    base = Projection(
        name="p",
        version=1,
        description="A projection.",
        key=("k",),
        consumes=("A",),
        columns=(Column("k", "VARCHAR", "Key."), Column("n", "BIGINT", "Count.")),
        body=Sql("SELECT stream_id AS k, count(*) AS n, max(global_position) AS last_global_position FROM events"),
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def helper(x: int) -> int:
    return x + 1


def other_helper(x: int) -> int:
    return x + 2


def evolve_with_helper(state: int, event: object) -> int:
    return helper(state)


def test_fingerprint_follows_body_and_schema_not_descriptions() -> None:
    base = _projection()
    same = _projection(
        description="Another text.",
        columns=(Column("k", "varchar", "Other."), Column("n", "BIGINT", "Other.")),
        body=Sql("SELECT stream_id AS k,\n   count(*) AS n, max(global_position) AS last_global_position FROM events"),
    )
    assert base.fingerprint == same.fingerprint and len(base.fingerprint) == 64
    assert _projection(body=Sql("SELECT 1")).fingerprint != base.fingerprint
    assert (
        _projection(columns=(Column("k", "VARCHAR", "Key."), Column("n", "INTEGER", "Count."))).fingerprint
        != base.fingerprint
    )
    assert _projection(consumes=("A", "B")).fingerprint != base.fingerprint
    assert _projection(requires={"A": {"x": "VARCHAR"}}).fingerprint != base.fingerprint

    fold = _projection(body=Fold(initial=int, evolve=evolve_with_helper))
    assert fold.kind == "fold"
    before = fold.fingerprint
    original = helper
    globals()["helper"] = other_helper  # a helper the body calls changes: so does the fingerprint
    try:
        assert fold.fingerprint != before
    finally:
        globals()["helper"] = original
    assert fold.fingerprint == before


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"key": ("missing",)}, r"key \['missing'\] must name declared columns"),
        ({"columns": (Column("k", "VARCHAR", "Key."), Column("k", "VARCHAR", "Again."))}, "duplicate column"),
        ({"columns": (Column("k", "VARCHAR", ""),)}, "needs a description"),
        ({"columns": (Column("k", "VARCHAR", "K."), Column("last_global_position", "BIGINT", "P."))}, "do not declare"),
        ({"requires": {"B": {"x": "VARCHAR"}}}, "which it does not consume"),
        ({"body": "SELECT 1"}, "body must be"),
        ({"body": Fold(initial=int, evolve=evolve_with_helper), "stream_keys": Sql("SELECT 1")}, "drop stream_keys"),
        ({"stream_keys": Polars(lambda frame: frame)}, "must be of the body's kind"),
        ({"expected_changes": (ExpectedChange("x", ("nope",)),)}, "must name declared columns"),
    ],
)
def test_invalid_declarations_are_refused(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ProjectionDefinitionError, match=message):
        _projection(**changes)
