"""Private event fields in the lake: proving none reaches analysts, and forgetting a person.

:func:`private_leaks` checks the data, not the declarations: it collects the text values of every
declared-private payload field (:mod:`projections.fields`) that no public field also holds, and looks
for them in every text column of every view and table of the given schemas. A projection that copies
a private field into a column it did not declare ``public=False`` is caught whatever its body kind.

:func:`forget` makes one subject's private fields unreadable in every tier of the lake, in one commit:

1. the subject's streams are those with an event whose subject field (``SUBJECT_FIELD``, e.g.
   ``customer_id``) holds the subject, or whose id is the subject;
2. in ``raw.events`` and ``archive.events``, each private field of their events is replaced: a string
   by a token ``forgotten-<12 hex>`` (one per forget, so the subject's events still group together but
   no longer name them), any other value by null;
3. every version of every projection recomputes the keys those streams contribute to (before and
   after masking), from the masked events, as an incremental update would;
4. every other text value in the lake equal to or containing one of the removed values (dead letters'
   reasons, comparison samples, staging tables) is rewritten to the token;
5. ``meta.forgotten`` records when, the SHA-256 of the subject (never the subject), the counts and the
   token.

Then the old copies go: inlined rows are flushed, data files holding deleted rows are rewritten,
every earlier snapshot is expired and its files deleted. Time travel to before the forget ends there,
as it must. The event store itself is the store owner's: docs/governance.md says what to do there.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import duckdb
import pyarrow as pa

from eventstore.errors import ConfigurationError
from eventstore.quoting import quote_literal
from projections import Projection, Registry, compute
from projections.engine import keys_of_streams
from projections.fields import FieldPolicy
from warehouse.lake import columns_ddl, comment_column, retry_conflicts, rewriting, transaction
from warehouse.versions.catalog import list_versions
from warehouse.versions.lake_events import events_until
from warehouse.versions.rebuild_plan import unfinished_rebuilds

__all__ = ["ForgetResult", "Leak", "forget", "forgotten", "private_leaks", "private_values"]

#: Text values shorter than this are not matched (a one-letter private value would match everywhere).
MIN_VALUE_LENGTH = 3
_TOKEN_PREFIX = "forgotten-"
_FORGOTTEN = "meta.forgotten"
_FORGOTTEN_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("forgotten_at", "TIMESTAMPTZ", "When the subject was forgotten."),
    ("subject_sha256", "VARCHAR", "SHA-256 (hex) of the subject: the subject itself is not kept."),
    ("subject_field", "VARCHAR", "The payload field that named the subject (SUBJECT_FIELD)."),
    ("token", "VARCHAR", "What the subject's private text values read as since."),
    ("streams", "BIGINT", "Streams of the subject."),
    ("events", "BIGINT", "Events whose private fields were masked (raw and archive)."),
    ("values_removed", "BIGINT", "Distinct private values removed."),
    ("keys_reprojected", "BIGINT", "Projection rows recomputed (keys, summed over every version)."),
    ("copies_scrubbed", "BIGINT", "Other lake values (dead letters, samples, ...) that held a removed value."),
    ("actor", "VARCHAR", "Who ran the forget (the OS user)."),
)
_TEXT_TYPES = ("VARCHAR", "JSON")


@dataclass(frozen=True)
class Leak:
    """A column of an analyst-facing relation holding values of a private field."""

    relation: str
    column: str
    event_type: str
    event_version: int
    field: str
    rows: int

    def __str__(self) -> str:
        return (
            f"{self.relation}.{self.column} holds {self.rows:,} value(s) of private field "
            f"{self.event_type} v{self.event_version}.{self.field}"
        )


def _path(field: str) -> str:
    return quote_literal("$." + json.dumps(field))


def _policy_sql(policy: FieldPolicy) -> str:
    """SQL deciding, for columns event_type, event_version and field k, whether k is private."""
    declared = sorted({d.event_type for d in policy})
    if not declared:
        return "false"
    types = ", ".join(quote_literal(t) for t in declared)
    public = " OR ".join(
        f"(event_type = {quote_literal(d.event_type)} AND event_version = {d.version} AND k IN "
        f"({', '.join(quote_literal(f) for f in d.public) or 'NULL'}))"
        for d in policy
    )
    return f"(event_type IN ({types}) AND NOT ({public}))"


def private_values(con: duckdb.DuckDBPyConnection, policy: FieldPolicy, where: str = "true") -> str:
    """A temp table of ``(event_type, event_version, field, value)``: the private text values of the events
    of ``raw.all_events`` meeting ``where`` that no public field holds; returns its name."""
    name = "_private_values"
    keys = (
        "SELECT event_type, event_version, k, "
        "json_extract_string(data, '$.' || to_json(k)::VARCHAR) AS value, "
        "json_type(data, '$.' || to_json(k)::VARCHAR) AS kind "
        f"FROM (SELECT event_type, event_version, data FROM lake.raw.all_events WHERE {where}), "
        "unnest(json_keys(data)) AS t(k)"
    )
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE {name} AS "
        f"WITH kv AS ({keys}), marked AS (SELECT *, {_policy_sql(policy)} AS private FROM kv WHERE kind = 'VARCHAR') "
        "SELECT event_type, event_version, k AS field, value FROM marked "
        f"WHERE private AND length(value) >= {MIN_VALUE_LENGTH} "
        f"AND NOT regexp_full_match(value, '{_TOKEN_PREFIX}[0-9a-f]{{12}}') "  # an earlier forget's token
        "AND value NOT IN (SELECT value FROM marked WHERE NOT private AND value IS NOT NULL) "
        "GROUP BY ALL"
    )
    return name


def _relations(con: duckdb.DuckDBPyConnection, schemas: Sequence[str]) -> list[tuple[str, str, list[str]]]:
    """``(schema, name, text columns)`` of every table and view of ``schemas`` in the lake."""
    listed = ", ".join(quote_literal(s) for s in schemas)
    rows = con.execute(
        "SELECT schema_name, table_name, list(column_name ORDER BY column_index) FILTER "
        f"(WHERE data_type IN {_TEXT_TYPES!r}) FROM duckdb_columns() WHERE database_name = 'lake' "
        f"AND schema_name IN ({listed}) GROUP BY ALL ORDER BY ALL"
    ).fetchall()
    return [(str(s), str(t), [str(c) for c in cols or []]) for s, t, cols in rows]


def private_leaks(
    con: duckdb.DuckDBPyConnection, registry: Registry, schemas: Sequence[str] = ("analytics",)
) -> list[Leak]:
    """The columns of the views and tables of ``schemas`` that hold a private field's value (empty: none)."""
    if not len(registry.fields):
        return []
    values = private_values(con, registry.fields)
    try:
        # One query over every text column of every relation (each relation's columns unpivoted to
        # (column, value)): one plan and one pass over the catalog, not one per column.
        parts = [
            f"SELECT {quote_literal(f'{schema}.{name}')} AS relation, column_name, value FROM (UNPIVOT (SELECT "
            + ", ".join(f'CAST("{c}" AS VARCHAR) AS "{c}"' for c in columns)
            + f' FROM lake.{schema}."{name}") ON COLUMNS(*) INTO NAME column_name VALUE value)'
            for schema, name, columns in _relations(con, schemas)
            if columns
        ]
        if not parts:
            return []
        rows = con.execute(
            f"SELECT r.relation, r.column_name, p.event_type, p.event_version, p.field, count(*) "
            f"FROM ({' UNION ALL '.join(parts)}) AS r JOIN {values} AS p ON r.value = p.value "
            "GROUP BY ALL ORDER BY ALL"
        ).fetchall()
    finally:
        con.execute(f"DROP TABLE IF EXISTS {values}")
    return [Leak(str(r), str(c), str(t), int(v), str(f), int(n)) for r, c, t, v, f, n in rows]


@dataclass(frozen=True)
class ForgetResult:
    """What :func:`forget` did (or, with ``dry_run``, would do)."""

    dry_run: bool
    subject_field: str
    token: str
    streams: int
    events: int
    values_removed: int
    keys_reprojected: dict[str, int] = field(default_factory=dict)  # "name vN" -> keys recomputed
    copies_scrubbed: int = 0
    snapshots_expired: int = 0
    files_deleted: int = 0

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def forgotten(con: duckdb.DuckDBPyConnection, subject: str) -> list[dict[str, Any]]:
    """The forgets recorded for ``subject`` (matched by its SHA-256), oldest first."""
    if not con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE database_name = 'lake' AND schema_name = 'meta' "
        "AND table_name = 'forgotten'"
    ).fetchone()[0]:  # type: ignore[index]
        return []
    cursor = con.execute(f"SELECT * FROM {_FORGOTTEN} WHERE subject_sha256 = ? ORDER BY forgotten_at", [_sha(subject)])
    names = [d[0] for d in cursor.description or []]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def _sha(subject: str) -> str:
    return hashlib.sha256(subject.encode("utf-8")).hexdigest()


def _tiers(con: duckdb.DuckDBPyConnection) -> list[str]:
    present = {
        f"{s}.{t}"
        for s, t in con.execute(
            "SELECT schema_name, table_name FROM duckdb_tables() WHERE database_name = 'lake'"
        ).fetchall()
    }
    return [tier for tier in ("raw.events", "archive.events") if tier in present]


def _mask(data: Any, event_type: str, version: int, policy: FieldPolicy, token: str) -> tuple[str, set[str]] | None:
    """``data`` (JSON text) with its private fields replaced and the text values removed; None if it has none."""
    payload = json.loads(data) if isinstance(data, str) else data
    if not isinstance(payload, dict):
        return None
    removed: set[str] = set()
    changed = False
    for key, value in list(payload.items()):
        if policy.is_private(event_type, version, key) and value is not None and not _is_token(value):
            changed = True
            if isinstance(value, str):
                removed.add(value)
                payload[key] = token
            else:
                removed.update(_strings(value))
                payload[key] = None
    return (json.dumps(payload, ensure_ascii=False), removed) if changed else None


def _is_token(value: Any) -> bool:
    """A value an earlier forget left (forgetting twice changes nothing)."""
    return isinstance(value, str) and value.startswith(_TOKEN_PREFIX) and len(value) == len(_TOKEN_PREFIX) + 12


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _reproject(
    con: duckdb.DuckDBPyConnection,
    registry: Registry,
    streams: str,
    before: dict[tuple[str, int], pa.Table],
) -> dict[str, int]:
    """Recompute, from the (masked) events, the keys each version's subject streams contribute to."""
    done: dict[str, int] = {}
    for info in list_versions(con):
        if info.state == "dropped" or info.version not in registry.versions(info.name):
            continue
        projection = registry.get(info.name, info.version)
        with events_until(con, info.checkpoint) as events:
            after = keys_of_streams(con, projection, events, streams, upcasters=registry.upcasters)
            keys = (
                pa.concat_tables([before[(info.name, info.version)], after])
                .group_by(list(projection.key))
                .aggregate([])
            )
            if not keys.num_rows:
                continue
            result = compute(con, projection, events, keys, upcasters=registry.upcasters, policy="skip")
        _replace_keys(con, info.table, projection, keys, result.rows)
        # The version's row count follows its rows (an advance moves it by what it changes).
        con.execute(
            f"UPDATE meta.projection_versions SET rows = (SELECT count(*) FROM {info.table}) "
            "WHERE name = ? AND version = ?",
            [info.name, info.version],
        )
        done[f"{info.name} v{info.version}"] = keys.num_rows
    return done


def _replace_keys(
    con: duckdb.DuckDBPyConnection, table: str, projection: Projection, keys: pa.Table, rows: pa.Table
) -> None:
    con.register("_forget_keys", keys)
    con.register("_forget_rows", rows)
    try:
        match = " AND ".join(f"t.{k} IS NOT DISTINCT FROM k.{k}" for k in projection.key)
        con.execute(f"DELETE FROM {table} AS t WHERE EXISTS (SELECT 1 FROM _forget_keys AS k WHERE {match})")
        con.execute(f"INSERT INTO {table} SELECT * FROM _forget_rows")
    finally:
        con.unregister("_forget_keys")
        con.unregister("_forget_rows")


def _scrub(con: duckdb.DuckDBPyConnection, removed: set[str], token: str, skip: set[tuple[str, str]]) -> int:
    """Rewrite every text value of the lake that holds a removed value; returns how many were rewritten."""
    values = sorted((v for v in removed if len(v) >= MIN_VALUE_LENGTH), key=len, reverse=True)
    if not values:
        return 0
    changed = 0
    json_columns = {
        (str(s), str(t), str(c))
        for s, t, c in con.execute(
            "SELECT schema_name, table_name, column_name FROM duckdb_columns() WHERE database_name = 'lake' "
            "AND data_type = 'JSON'"
        ).fetchall()
    }
    for schema, name, columns in _relations(con, ("raw", "archive", "projections", "meta", "public")):
        for column in columns:
            if (f"{schema}.{name}", column) in skip:
                continue
            text = f'CAST("{column}" AS VARCHAR)'
            hit = " OR ".join(f"contains({text}, {quote_literal(v)})" for v in values)
            count = con.execute(f'SELECT count(*) FROM lake.{schema}."{name}" WHERE {hit}').fetchone()
            if not count or not count[0]:
                continue
            rewritten = text
            for v in values:
                rewritten = f"replace({rewritten}, {quote_literal(v)}, {quote_literal(token)})"
            cast = "JSON" if (schema, name, column) in json_columns else "VARCHAR"
            con.execute(f'UPDATE lake.{schema}."{name}" SET "{column}" = CAST({rewritten} AS {cast}) WHERE {hit}')
            changed += int(count[0])
    return changed


def _ensure_forgotten(con: duckdb.DuckDBPyConnection) -> None:
    if con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE database_name = 'lake' AND schema_name = 'meta' "
        "AND table_name = 'forgotten'"
    ).fetchone()[0]:  # type: ignore[index]
        return
    con.execute(f"CREATE TABLE {_FORGOTTEN} ({columns_ddl(_FORGOTTEN_COLUMNS)})")
    comment = "One row per `projectionist forget`: when, whom (as a SHA-256 only), and what was made unreadable."
    con.execute(f"COMMENT ON TABLE {_FORGOTTEN} IS {quote_literal(comment)}")
    for name, _, text in _FORGOTTEN_COLUMNS:
        con.execute(comment_column(_FORGOTTEN, f'"{name}"', text))


def forget(
    con: duckdb.DuckDBPyConnection,
    registry: Registry,
    subject: str,
    *,
    dry_run: bool = False,
    actor: str | None = None,
) -> ForgetResult:
    """Make ``subject``'s private fields unreadable in every tier of the lake (see the module's doc)."""
    policy = registry.fields
    subject_field = policy.subject()
    if not subject.strip():
        raise ConfigurationError("forget needs a subject: the value of the subject field, e.g. customer-2ca860ddeba8")
    if not len(policy):
        raise ConfigurationError(
            "no event fields are declared private: declare PUBLIC_FIELDS next to the upcasters "
            "(docs/governance.md), or there is nothing to forget."
        )
    pending = unfinished_rebuilds(con)
    if pending and not dry_run:
        names = ", ".join(f"{r.name} v{r.version}" for r in pending)
        raise ConfigurationError(
            f"unfinished rebuild(s) of {names} read the lake as it was when they started: finish them "
            "(`projectionist rebuild NAME --version N` resumes) before forgetting anyone."
        )
    token = _TOKEN_PREFIX + secrets.token_hex(6)
    path = _path(subject_field)
    found = (
        f"SELECT DISTINCT stream_id FROM lake.raw.all_events WHERE stream_id = {quote_literal(subject)} "
        f"OR json_extract_string(data, {path}) = {quote_literal(subject)}"
    )
    stream_ids = [str(r[0]) for r in con.execute(found).fetchall()]
    streams = pa.table({"stream_id": pa.array(stream_ids, pa.string())})
    con.register("_forget_streams", streams)
    try:
        return _forget(con, registry, policy, subject, subject_field, token, streams, dry_run, actor)
    finally:
        con.unregister("_forget_streams")


def _forget(
    con: duckdb.DuckDBPyConnection,
    registry: Registry,
    policy: FieldPolicy,
    subject: str,
    subject_field: str,
    token: str,
    streams: pa.Table,
    dry_run: bool,
    actor: str | None,
) -> ForgetResult:
    stream_query = "SELECT stream_id FROM _forget_streams"
    masked: dict[str, list[tuple[int, int, str]]] = {}
    removed: set[str] = set()
    for tier in _tiers(con):
        rows = con.execute(
            f"SELECT transaction_id, global_position, event_type, event_version, data FROM lake.{tier} "
            f"WHERE stream_id IN ({stream_query}) AND data IS NOT NULL"
        ).fetchall()
        for tx, position, event_type, version, data in rows:
            done = _mask(data, str(event_type), int(version), policy, token)
            if done is not None:
                masked.setdefault(tier, []).append((int(tx), int(position), done[0]))
                removed |= done[1]
    events = sum(len(v) for v in masked.values())
    if dry_run or not events:
        return ForgetResult(dry_run or not events, subject_field, token, streams.num_rows, events, len(removed))
    # The keys the subject's streams contribute to before masking (a key built from a private field changes).
    before: dict[tuple[str, int], pa.Table] = {}
    for info in list_versions(con):
        if info.state != "dropped" and info.version in registry.versions(info.name):
            projection = registry.get(info.name, info.version)
            with events_until(con, info.checkpoint) as scope:
                before[(info.name, info.version)] = keys_of_streams(
                    con, projection, scope, stream_query, upcasters=registry.upcasters
                )
    at = datetime.now(UTC)
    outcome: dict[str, Any] = {}

    def commit() -> None:
        with transaction(con):
            for tier, changes in masked.items():
                table = pa.table(
                    {
                        "transaction_id": pa.array([c[0] for c in changes], pa.int64()),
                        "global_position": pa.array([c[1] for c in changes], pa.int64()),
                        "data": pa.array([c[2] for c in changes], pa.string()),
                    }
                )
                con.register("_forget_masked", table)
                try:
                    con.execute(
                        f"UPDATE lake.{tier} AS e SET data = CAST(m.data AS JSON) FROM _forget_masked AS m "
                        "WHERE e.transaction_id = m.transaction_id AND e.global_position = m.global_position"
                    )
                finally:
                    con.unregister("_forget_masked")
            outcome["keys"] = _reproject(con, registry, "SELECT stream_id FROM _forget_streams", before)
            outcome["scrubbed"] = _scrub(con, removed, token, {(tier, "data") for tier in masked})
            _ensure_forgotten(con)
            con.execute(
                f"INSERT INTO {_FORGOTTEN} VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    at,
                    _sha(subject),
                    subject_field,
                    token,
                    streams.num_rows,
                    events,
                    len(removed),
                    sum(outcome["keys"].values()),
                    outcome["scrubbed"],
                    actor or getpass.getuser(),
                ],
            )

    retry_conflicts(commit, "forgetting a subject")
    expired, deleted = _purge_history(con)
    return ForgetResult(
        False,
        subject_field,
        token,
        streams.num_rows,
        events,
        len(removed),
        outcome["keys"],
        outcome["scrubbed"],
        expired,
        deleted,
    )


def _purge_history(con: duckdb.DuckDBPyConnection) -> tuple[int, int]:
    """Remove every earlier copy: inlined rows to files, files with deleted rows rewritten, old snapshots expired
    and their files deleted. Returns (snapshots expired, files deleted)."""

    def flush() -> None:
        with rewriting(con):
            con.execute("CALL ducklake_flush_inlined_data('lake')")

    retry_conflicts(flush, "flushing inlined rows")
    # A deleted row stays in its Parquet file (a delete file marks it) until the file is rewritten.
    meta = "__ducklake_metadata_lake"
    tables = con.execute(
        f"SELECT DISTINCT s.schema_name, t.table_name FROM {meta}.ducklake_delete_file AS d "
        f"JOIN {meta}.ducklake_table AS t ON t.table_id = d.table_id AND t.end_snapshot IS NULL "
        f"JOIN {meta}.ducklake_schema AS s ON s.schema_id = t.schema_id AND s.end_snapshot IS NULL "
        "WHERE d.end_snapshot IS NULL ORDER BY ALL"
    ).fetchall()
    for schema, table in tables:
        call = (
            f"CALL ducklake_rewrite_data_files('lake', {quote_literal(str(table))}, "
            f"schema => {quote_literal(str(schema))}, delete_threshold => 0)"
        )

        def rewrite(call: str = call) -> None:
            with rewriting(con):
                con.execute(call)

        retry_conflicts(rewrite, f"rewriting {schema}.{table} without the forgotten values")
    now = datetime.now(UTC)
    count = "SELECT count(*) FROM ducklake_snapshots('lake')"
    before = con.execute(count).fetchone()
    retry_conflicts(
        lambda: con.execute(
            f"CALL ducklake_expire_snapshots('lake', older_than => {quote_literal(now.isoformat())}::TIMESTAMPTZ)"
        ),
        "expiring the snapshots that held the forgotten values",
    )
    after = con.execute(count).fetchone()
    files = con.execute("SELECT count(*) FROM ducklake_cleanup_old_files('lake', cleanup_all => true)").fetchone()
    expired = (int(before[0]) if before else 0) - (int(after[0]) if after else 0)
    return expired, (int(files[0]) if files else 0)
