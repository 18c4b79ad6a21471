"""The comparison engine on crafted tables whose every difference is known in advance."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import duckdb
import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventstore.duckdb_connections import new_connection
from eventstore.errors import TerminalError
from projections import ExpectedChange
from warehouse.diff import (
    Comparison,
    DuplicateKeyError,
    Expectation,
    TrailSpec,
    check_expectation,
    compare,
    record,
    render_html,
    render_markdown,
    render_text,
)
from warehouse.errors import ComparisonError

DOCS = Path(__file__).resolve().parents[2] / "docs" / "diff.md"

# A: carts c01..c08 and one row without a key. B: c08 gone, c09 and c10 new, `note` removed,
# `channel` added, `code` retyped INTEGER -> VARCHAR. Differences, by key:
#   c02 status open -> paid                     c03 total 10.00 -> 12.50, code 3 -> '03'
#   c04 total 5.00 -> 4.00, score NULL -> 1.0   c05 score within tolerance (identical)
#   c06 score 2.0 -> 2.1                        c07 code 7 -> '7' (same text: identical)
A_ROWS = """
    ('c01', 'u1', 'open', 1, 1.00, 0.5,  1, 'n', 101),
    ('c02', 'u2', 'open', 2, 2.00, 0.5,  2, 'n', 102),
    ('c03', 'u3', 'open', 3, 10.00, 0.5, 3, 'n', 103),
    ('c04', 'u4', 'paid', 4, 5.00, NULL, 4, 'n', 104),
    ('c05', 'u5', 'open', 5, 6.00, 1.0,  5, 'n', 105),
    ('c06', 'u6', 'open', 6, 7.00, 2.0,  6, 'n', 106),
    ('c07', 'u7', 'open', 7, 8.00, 3.0,  7, 'n', 107),
    ('c08', 'u8', 'open', 8, 9.00, 4.0,  8, 'n', 108),
    (NULL,  'u9', 'open', 9, 9.00, 4.0,  9, 'n', 109)
"""
B_ROWS = """
    ('c01', 'u1', 'open', 1, 1.00, 0.5,          '1',  101, 'web'),
    ('c02', 'u2', 'paid', 2, 2.00, 0.5,          '2',  102, 'web'),
    ('c03', 'u3', 'open', 3, 12.50, 0.5,         '03', 103, 'web'),
    ('c04', 'u4', 'paid', 4, 4.00, 1.0,          '4',  104, 'web'),
    ('c05', 'u5', 'open', 5, 6.00, 1.0000000001, '5',  105, 'app'),
    ('c06', 'u6', 'open', 6, 7.00, 2.1,          '6',  106, 'app'),
    ('c07', 'u7', 'open', 7, 8.00, 3.0,          '7',  107, 'app'),
    ('c09', 'u9', 'open', 9, 1.00, 0.0,          '9',  109, 'app'),
    ('c10', 'u0', 'open', 1, 1.00, 0.0,          '0',  110, 'app')
"""
EVENTS = """
    (10, 'c02', 'CartOpened'), (11, 'c02', 'ItemAdded'), (12, 'c02', 'CartCheckedOut'),
    (13, 'c03', 'CartOpened'), (14, 'c08', 'CartOpened'), (15, 'c08', 'ItemAdded'),
    (16, 'c04', 'CartOpened'), (17, 'c06', 'CartOpened'), (18, 'c01', 'CartOpened')
"""


def _load(con: duckdb.DuckDBPyConnection, prefix: str = "") -> None:
    con.execute(
        f"CREATE TABLE {prefix}a (cart_id VARCHAR, customer_id VARCHAR, status VARCHAR, item_quantity INTEGER, "
        "total_amount DECIMAL(18,2), score DOUBLE, code INTEGER, note VARCHAR, last_global_position BIGINT)"
    )
    con.execute(f"INSERT INTO {prefix}a VALUES {A_ROWS}")
    con.execute(
        f"CREATE TABLE {prefix}b (cart_id VARCHAR, customer_id VARCHAR, status VARCHAR, item_quantity INTEGER, "
        "total_amount DECIMAL(18,2), score DOUBLE, code VARCHAR, last_global_position BIGINT, channel VARCHAR)"
    )
    con.execute(f"INSERT INTO {prefix}b VALUES {B_ROWS}")
    con.execute(f"CREATE TABLE {prefix}events (global_position BIGINT, stream_id VARCHAR, event_type VARCHAR)")
    con.execute(f"INSERT INTO {prefix}events VALUES {EVENTS}")


@pytest.fixture()
def con() -> Iterator[duckdb.DuckDBPyConnection]:
    connection = duckdb.connect()
    _load(connection)
    yield connection
    connection.close()


@pytest.fixture()
def crafted(con: duckdb.DuckDBPyConnection) -> Comparison:
    return compare(con, "a", "b", ["cart_id"], tolerances={"score": 1e-6}, trail=TrailSpec(events="events"))


def _keys(comparison: Comparison, row_class: str) -> list[str]:
    return [s.key["cart_id"] for s in comparison.samples[row_class]]


def test_schema_diff(crafted: Comparison) -> None:
    s = crafted.schema
    assert [(c.name, c.type) for c in s.added] == [("channel", "VARCHAR")]
    assert [(c.name, c.type) for c in s.removed] == [("note", "VARCHAR")]
    assert [(c.name, c.a_type, c.b_type) for c in s.type_changed] == [("code", "INTEGER", "VARCHAR")]


def test_keys_are_checked_before_rows(crafted: Comparison) -> None:
    a, b = crafted.key_reports["a"], crafted.key_reports["b"]
    assert (a.rows, a.distinct_keys, a.null_key_rows, a.duplicate_keys) == (9, 8, 1, 0)
    assert a.null_key_sample[0]["customer_id"] == "u9" and a.null_key_sample[0]["cart_id"] is None
    assert (b.rows, b.distinct_keys, b.null_key_rows, b.duplicate_keys) == (9, 9, 0, 0)
    assert a.rows_set_aside == 1


def test_row_classes_counts_and_percentages(crafted: Comparison) -> None:
    assert crafted.counts() == {"only_in_a": 1, "only_in_b": 2, "changed": 4, "identical": 3}
    assert crafted.total_keys == 10
    assert {n: r.percent for n, r in crafted.rows.items()} == {
        "only_in_a": 10.0,
        "only_in_b": 20.0,
        "changed": 40.0,
        "identical": 30.0,
    }


def test_samples_of_each_class_in_key_order(crafted: Comparison) -> None:
    assert _keys(crafted, "only_in_a") == ["c08"]
    assert _keys(crafted, "only_in_b") == ["c09", "c10"]
    assert _keys(crafted, "changed") == ["c02", "c03", "c04", "c06"]
    assert _keys(crafted, "identical") == ["c01", "c05", "c07"]
    by_key = {s.key["cart_id"]: s for s in crafted.samples["changed"]}
    assert by_key["c03"].columns == ["total_amount", "code"]
    assert by_key["c03"].a == {"total_amount": "10.00", "code": "3"}
    assert by_key["c03"].b == {"total_amount": "12.50", "code": "03"}
    assert by_key["c04"].columns == ["total_amount", "score"]
    assert by_key["c04"].b == {"total_amount": "4.00", "score": "1.0"}
    only_a = crafted.samples["only_in_a"][0]
    assert only_a.b is None and only_a.a is not None and only_a.a["total_amount"] == "9.00"


def test_sample_size_limits_every_class(con: duckdb.DuckDBPyConnection) -> None:
    small = compare(con, "a", "b", ["cart_id"], tolerances={"score": 1e-6}, sample_size=2)
    assert _keys(small, "changed") == ["c02", "c03"]
    assert _keys(small, "identical") == ["c01", "c05"]
    assert _keys(small, "only_in_b") == ["c09", "c10"]
    assert small.counts() == {"only_in_a": 1, "only_in_b": 2, "changed": 4, "identical": 3}
    none = compare(con, "a", "b", ["cart_id"], sample_size=0)
    assert all(items == [] for items in none.samples.values())


def test_column_stats_and_deltas(crafted: Comparison) -> None:
    cols = {c.name: c for c in crafted.columns}
    assert list(cols) == [
        "customer_id",
        "status",
        "item_quantity",
        "total_amount",
        "score",
        "code",
        "last_global_position",
    ]
    assert all(c.compared_rows == 7 for c in cols.values())
    status = cols["status"]
    assert (status.matches, status.mismatches, status.null_on_one_side, status.delta) == (6, 1, 0, None)
    total = cols["total_amount"]
    assert (total.matches, total.mismatches, total.tolerated) == (5, 2, 0)
    assert total.delta is not None
    assert (total.delta.count, total.delta.min, total.delta.max, total.delta.sum) == (2, -1.0, 2.5, 1.5)
    assert (total.delta.p50, total.delta.p95) == (-1.0, 2.5)
    assert sum(total.delta.histogram_counts) == 2
    assert total.delta.histogram_edges[0] == -1.0 and total.delta.histogram_edges[-1] == 2.5
    score = cols["score"]
    assert (score.mismatches, score.null_on_one_side, score.tolerated, score.tolerance) == (2, 1, 1, 1e-6)
    assert score.delta is not None and score.delta.count == 1
    assert score.delta.min == pytest.approx(0.1)
    assert round(score.match_percent, 4) == round(500 / 7, 4)
    code = cols["code"]
    assert (code.a_type, code.b_type, code.mismatches) == ("INTEGER", "VARCHAR", 1)
    assert cols["item_quantity"].mismatches == 0 and cols["item_quantity"].match_percent == 100.0


def test_float_noise_outside_tolerance_is_a_change(con: duckdb.DuckDBPyConnection) -> None:
    strict = compare(con, "a", "b", ["cart_id"])
    assert strict.counts() == {"only_in_a": 1, "only_in_b": 2, "changed": 5, "identical": 2}
    score = {c.name: c for c in strict.columns}["score"]
    assert (score.mismatches, score.tolerated, score.tolerance) == (3, 0, None)
    assert "c05" in _keys(strict, "changed")
    loose = compare(con, "a", "b", ["cart_id"], tolerances={"score": 0.2, "total_amount": 1.0})
    cols = {c.name: c for c in loose.columns}
    assert (cols["score"].mismatches, cols["score"].tolerated) == (1, 2)  # only the NULL -> 1.0
    assert (cols["total_amount"].mismatches, cols["total_amount"].tolerated) == (1, 1)


def test_trail_explains_sampled_differences(crafted: Comparison) -> None:
    c02 = crafted.samples["changed"][0].trail
    assert c02 is not None
    assert (c02.streams, c02.events, c02.first_position, c02.last_position) == (["c02"], 3, 10, 12)
    assert c02.event_types == {"CartCheckedOut": 1, "CartOpened": 1, "ItemAdded": 1}
    c08 = crafted.samples["only_in_a"][0].trail
    assert c08 is not None and (c08.events, c08.first_position, c08.last_position) == (2, 14, 15)
    c09 = crafted.samples["only_in_b"][0].trail
    assert c09 is not None and (c09.events, c09.streams, c09.first_position, c09.event_types) == (0, [], None, {})
    assert all(s.trail is None for s in crafted.samples["identical"])


def test_trail_with_a_custom_predicate_for_composite_keys(con: duckdb.DuckDBPyConnection) -> None:
    a = "SELECT 't1' AS tenant, cart_id, status FROM a WHERE cart_id IS NOT NULL"
    b = "SELECT 't1' AS tenant, cart_id, status FROM b"
    with pytest.raises(ComparisonError, match="predicate"):
        compare(con, a, b, ["tenant", "cart_id"], trail=TrailSpec(events="events"))
    spec = TrailSpec(events="events", predicate="e.stream_id = k.cart_id AND k.tenant = 't1'")
    result = compare(con, a, b, ["tenant", "cart_id"], trail=spec)
    changed = result.samples["changed"]
    assert [s.key for s in changed] == [{"tenant": "t1", "cart_id": "c02"}]
    assert changed[0].trail is not None and changed[0].trail.events == 3


def test_duplicate_keys_are_refused_with_counts_and_samples(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("INSERT INTO b SELECT * FROM b WHERE cart_id IN ('c02', 'c03')")
    con.execute("INSERT INTO b SELECT * REPLACE ('closed' AS status) FROM b WHERE cart_id = 'c03' LIMIT 1")
    with pytest.raises(DuplicateKeyError) as raised:
        compare(con, "a", "b", ["cart_id"])
    error = raised.value
    assert isinstance(error, TerminalError) and not error.retryable
    assert "2 duplicated key(s) over 5 rows" in str(error) and "duplicate_keys='first'" in str(error)
    report = error.report["b"]
    assert (report.duplicate_keys, report.duplicate_rows) == (2, 5)
    assert [(d.key, d.rows) for d in report.duplicate_sample] == [({"cart_id": "c02"}, 2), ({"cart_id": "c03"}, 3)]


def test_duplicate_keys_first_row_policy(con: duckdb.DuckDBPyConnection) -> None:
    # c03's copies: 'closed' sorts before 'open', so the first row of c03 is the 'closed' one.
    con.execute("INSERT INTO b SELECT * REPLACE ('closed' AS status) FROM b WHERE cart_id = 'c03'")
    con.execute("INSERT INTO b SELECT * FROM b WHERE cart_id = 'c01'")
    result = compare(con, "a", "b", ["cart_id"], tolerances={"score": 1e-6}, duplicate_keys="first")
    assert result.key_reports["b"].duplicate_keys == 2
    assert result.key_reports["b"].rows_set_aside == 2
    assert result.counts() == {"only_in_a": 1, "only_in_b": 2, "changed": 4, "identical": 3}
    c03 = next(s for s in result.samples["changed"] if s.key["cart_id"] == "c03")
    assert c03.b is not None and c03.b["status"] == "closed"
    assert "duplicated key(s)" in render_text(result)


@pytest.mark.parametrize(
    ("a", "b", "keys", "message"),
    [
        ("missing_table", "b", ["cart_id"], "relation 'missing_table' \\(A\\) does not exist"),
        ("a", "lake.nope.b", ["cart_id"], "relation 'lake.nope.b' \\(B\\) does not exist"),
        ("a", "SELECT * FROM b WHERE", ["cart_id"], "cannot be read: Parser Error"),
        ("a", "b", ["note"], "key column\\(s\\) \\['note'\\] not in B"),
        ("a", "b", ["channel"], "key column\\(s\\) \\['channel'\\] not in A"),
        ("a", "b", [], "no key column given"),
        ("a", "SELECT 1 AS x", ["x"], "share no column"),
    ],
)
def test_bad_input_gets_a_clear_error(
    con: duckdb.DuckDBPyConnection, a: str, b: str, keys: list[str], message: str
) -> None:
    with pytest.raises(ComparisonError, match=message):
        compare(con, a, b, keys)


def test_bad_options_get_a_clear_error(con: duckdb.DuckDBPyConnection) -> None:
    with pytest.raises(ComparisonError, match="tolerance given for 'status'"):
        compare(con, "a", "b", ["cart_id"], tolerances={"status": 0.1})
    with pytest.raises(ComparisonError, match="sample_size"):
        compare(con, "a", "b", ["cart_id"], sample_size=-1)
    with pytest.raises(ComparisonError, match=r"events relation 'lake\.raw\.all_events' does not exist"):
        compare(con, "a", "b", ["cart_id"], trail=TrailSpec())
    with pytest.raises(ComparisonError, match=r"trail predicate 'e\.nope = k\.cart_id' failed: Binder Error"):
        compare(con, "a", "b", ["cart_id"], trail=TrailSpec(events="events", predicate="e.nope = k.cart_id"))


def test_python_variables_are_never_taken_for_tables(con: duckdb.DuckDBPyConnection) -> None:
    # DuckDB's replacement scans would otherwise find a local variable named like a missing table.
    con.execute("DROP TABLE events")
    with pytest.raises(ComparisonError, match="events relation 'events' does not exist"):
        compare(con, "a", "b", ["cart_id"], trail=TrailSpec(events="events"))
    assert con.execute("SELECT current_setting('python_enable_replacements')").fetchone() == (True,)


def test_subqueries_and_views_compare_like_tables(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("CREATE VIEW v_b AS SELECT * FROM b")
    result = compare(con, "(SELECT * FROM a)", "v_b", ["cart_id"], tolerances={"score": 1e-6})
    assert result.counts() == {"only_in_a": 1, "only_in_b": 2, "changed": 4, "identical": 3}
    same = compare(con, "a", "SELECT * FROM a", ["cart_id"])
    assert same.counts() == {"only_in_a": 0, "only_in_b": 0, "changed": 0, "identical": 8}
    assert not same.differs and same.samples["changed"] == []


def test_expectation_satisfied(con: duckdb.DuckDBPyConnection, crafted: Comparison) -> None:
    expectation = Expectation(
        changes=[
            ExpectedChange("declared", ("status",), "a.status = 'open' AND b.status = 'paid'"),
            ExpectedChange(
                "declared",
                (
                    "total_amount",
                    "code",
                ),
                "a.item_quantity IN (3, 4)",
            ),
            ExpectedChange("declared", ("score",)),
        ],
        added_columns=["channel"],
        removed_columns=["note"],
        retyped_columns=["code"],
        allow_removed_rows=True,
        allow_added_rows=True,
    )
    result = check_expectation(con, crafted, expectation)
    assert result.satisfied, str(result)
    assert (result.violating_rows, result.violations_by_column, result.violating_keys) == (0, {}, [])


def test_expectation_violated(con: duckdb.DuckDBPyConnection, crafted: Comparison) -> None:
    expectation = Expectation(
        changes=[
            ExpectedChange("declared", ("total_amount",), "b.total_amount > a.total_amount"),
            ExpectedChange(
                "declared",
                (
                    "status",
                    "score",
                ),
                "b.channel = 'web'",
            ),
        ],
        added_columns=["channel"],
    )
    result = check_expectation(con, crafted, expectation)
    assert not result.satisfied
    # c03: code (undeclared); c04: total went down; c06: score on an 'app' row.
    assert result.violating_rows == 3
    assert result.violations_by_column == {"total_amount": 1, "score": 1, "code": 1}
    assert [k["cart_id"] for k in result.violating_keys] == ["c08", "c09", "c10", "c03", "c04", "c06"]
    text = str(result)
    assert "['note'] removed" in text and "['code'] retyped" in text
    assert "1 row(s) removed" in text and "2 row(s) added" in text


def test_expectation_with_bad_rules_gets_a_clear_error(con: duckdb.DuckDBPyConnection, crafted: Comparison) -> None:
    with pytest.raises(ComparisonError, match="not compared columns"):
        check_expectation(con, crafted, Expectation([ExpectedChange("declared", ("nope",))]))
    with pytest.raises(ComparisonError, match="check the expectation"):
        check_expectation(con, crafted, Expectation([ExpectedChange("declared", ("status",), "a.nope = 1")]))


def _documented_schema() -> dict[str, object]:
    text = DOCS.read_text()
    match = re.search(r"<!-- json-schema -->\s*```json\n(.*?)```", text, re.DOTALL)
    assert match, "docs/diff.md lost its JSON schema block"
    schema: dict[str, object] = json.loads(match.group(1))
    return schema


def test_json_round_trips_and_matches_the_documented_schema(crafted: Comparison) -> None:
    text = crafted.to_json()
    document = json.loads(text)
    assert document["schema_version"] == 1
    jsonschema.Draft202012Validator(_documented_schema()).validate(document)
    assert Comparison.from_json(text) == crafted
    assert Comparison.from_json(text).to_json() == text
    assert document["rows"]["changed"] == {"count": 4, "percent": 40.0}


def test_documented_schema_rejects_a_wrong_report(crafted: Comparison) -> None:
    document = crafted.to_dict()
    del document["rows"]["changed"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(_documented_schema()).validate(document)
    with pytest.raises(ComparisonError, match="schema_version"):
        Comparison.from_json({**crafted.to_dict(), "schema_version": 99})


def test_markdown_html_and_text_carry_the_counts(crafted: Comparison) -> None:
    markdown = render_markdown(crafted)
    assert "| changed | 4 | 40.0000 |" in markdown and "| only in B | 2 | 20.0000 |" in markdown
    assert "| total_amount | 5 | 2 | 0 | 0 |" in markdown
    assert "added column channel VARCHAR" in markdown and "type of code changed: INTEGER -> VARCHAR" in markdown
    page = render_html(crafted)
    assert "<td class='changed'>4</td>" in page and "<td class='identical'>3</td>" in page
    assert page.count("<svg") == 2  # total_amount and score have deltas
    assert not re.search(r"(src|href)=['\"]?https?:", page) and "<script" not in page
    assert "Declared changes" not in page
    verdict = (
        "declared changes of t v2: expectation violated:\n  - 2 row(s) only in B, which the expectation does not allow"
    )
    page = render_html(crafted, verdict)
    assert (
        "<p class='verdict violated' style='color:#cf222e'>declared changes of t v2: expectation violated:</p>" in page
    )
    assert "<li>2 row(s) only in B, which the expectation does not allow</li>" in page
    text = render_text(crafted)
    assert "changed                4" in text and "c02" in text and "status: open -> paid" in text
    assert "trail: 3 event(s) in c02 at positions 10..12" in text


def test_record_in_a_duckdb_schema(con: duckdb.DuckDBPyConnection, crafted: Comparison) -> None:
    first = record(con, crafted, schema="meta")
    second = record(con, crafted, schema="meta")
    assert first != second
    rows = con.execute(
        "SELECT comparison_id::VARCHAR, a, b, keys, rows_only_in_a, rows_only_in_b, rows_changed, rows_identical, "
        "schema_changed, report FROM meta.comparisons ORDER BY created_at, comparison_id"
    ).fetchall()
    assert len(rows) == 2
    assert {r[0] for r in rows} == {first, second}
    assert rows[0][1:9] == ("a", "b", ["cart_id"], 1, 2, 4, 3, True)
    assert Comparison.from_json(rows[0][9]) == crafted
    samples = con.execute(
        "SELECT class, ordinal, key->>'cart_id', columns, trail->>'events' FROM meta.comparison_samples "
        "WHERE comparison_id = ? ORDER BY class, ordinal",
        [first],
    ).fetchall()
    assert [(r[0], r[2]) for r in samples if r[0] == "changed"] == [
        ("changed", "c02"),
        ("changed", "c03"),
        ("changed", "c04"),
        ("changed", "c06"),
    ]
    assert len(samples) == 10
    assert ("changed", 1, "c03", ["total_amount", "code"], "1") in samples


def test_record_commits_on_its_own_beside_a_callers_open_transaction(
    con: duckdb.DuckDBPyConnection, crafted: Comparison
) -> None:
    record(con, crafted, schema="meta")
    con.execute("BEGIN TRANSACTION")
    record(con, crafted, schema="meta")
    con.execute("ROLLBACK")
    assert con.execute("SELECT count(*) FROM meta.comparisons").fetchone() == (2,)
    assert con.execute("SELECT count(*) FROM meta.comparison_samples").fetchone() == (20,)


def test_compare_and_record_on_ducklake(tmp_path: Path) -> None:
    con = new_connection("ducklake")
    con.execute(f"ATTACH 'ducklake:{tmp_path}/catalog.ducklake' AS lake (DATA_PATH '{tmp_path}/data')")
    for schema in ("projections", "raw", "meta"):
        con.execute(f"CREATE SCHEMA lake.{schema}")
    _load(con, "lake.main.")
    con.execute("CREATE TABLE lake.projections.cart_summary_v1 AS SELECT * FROM lake.main.a")
    con.execute("CREATE TABLE lake.projections.cart_summary_v2 AS SELECT * FROM lake.main.b")
    con.execute("CREATE TABLE lake.raw.events AS SELECT * FROM lake.main.events")
    con.execute("CREATE VIEW lake.raw.all_events AS SELECT * FROM lake.raw.events")  # the trail's default relation
    result = compare(
        con,
        "lake.projections.cart_summary_v1",
        "lake.projections.cart_summary_v2",
        ["cart_id"],
        tolerances={"score": 1e-6},
        trail=TrailSpec(),
    )
    assert result.counts() == {"only_in_a": 1, "only_in_b": 2, "changed": 4, "identical": 3}
    trail = result.samples["changed"][0].trail
    assert trail is not None and trail.events == 3
    ids = [record(con, result, schema="lake.meta") for _ in range(2)]
    stored = con.execute(
        "SELECT comparison_id::VARCHAR, rows_changed FROM lake.meta.comparisons ORDER BY comparison_id"
    ).fetchall()
    assert stored == sorted((i, 4) for i in ids)
    assert con.execute("SELECT count(*) FROM lake.meta.comparison_samples").fetchone() == (20,)
    con.close()


_ROW = st.tuples(st.sampled_from([None, "x", "y"]), st.one_of(st.none(), st.integers(-3, 3)))


@settings(max_examples=25, deadline=None)
@given(
    a=st.dictionaries(st.integers(0, 12), _ROW, max_size=10),
    b=st.dictionaries(st.integers(0, 12), _ROW, max_size=10),
)
def test_counts_agree_with_a_reference_on_random_tables(
    a: dict[int, tuple[str | None, int | None]], b: dict[int, tuple[str | None, int | None]]
) -> None:
    con = duckdb.connect()
    for name, rows in (("a", a), ("b", b)):
        con.execute(f"CREATE TABLE {name} (k INTEGER, s VARCHAR, n INTEGER)")
        if rows:
            con.executemany(f"INSERT INTO {name} VALUES (?, ?, ?)", [(k, *v) for k, v in rows.items()])
    result = compare(con, "a", "b", ["k"], sample_size=3)
    common = a.keys() & b.keys()
    changed = sorted(k for k in common if a[k] != b[k])
    assert result.counts() == {
        "only_in_a": len(a.keys() - b.keys()),
        "only_in_b": len(b.keys() - a.keys()),
        "changed": len(changed),
        "identical": len(common) - len(changed),
    }
    assert _keys_int(result, "changed") == changed[:3]
    assert _keys_int(result, "identical") == sorted(common - set(changed))[:3]
    cols = {c.name: c for c in result.columns}
    assert cols["n"].mismatches == sum(1 for k in common if a[k][1] != b[k][1])
    assert cols["n"].null_on_one_side == sum(1 for k in common if (a[k][1] is None) != (b[k][1] is None))
    both = [b[k][1] - a[k][1] for k in common if None not in (a[k][1], b[k][1]) and a[k][1] != b[k][1]]  # type: ignore[operator]
    delta = cols["n"].delta
    assert (delta.sum if delta else 0) == sum(both)
    con.close()


def _keys_int(comparison: Comparison, row_class: str) -> list[int]:
    return [int(s.key["k"]) for s in comparison.samples[row_class]]


@pytest.mark.parametrize("index", range(3))
def test_docs_examples_run(index: int) -> None:
    blocks = re.findall(r"```python\n(.*?)```", DOCS.read_text(), re.DOTALL)
    assert len(blocks) == 3
    if not blocks[index].startswith("# not-run:"):
        exec(compile(blocks[index], f"docs/diff.md[{index}]", "exec"), {})
