"""The result of a comparison: the dataclasses ``compare`` returns, and their JSON form.

:class:`Comparison` holds everything found about two relations (schema diff, key health of each
side, row classes, per-column stats, numeric deltas, samples with their trails). ``to_json`` and
``Comparison.from_json`` are an exact round trip of the report documented in docs/diff.md
(``schema_version`` 1). This module imports nothing else of the comparison code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from warehouse.errors import ComparisonError

__all__ = [
    "ROW_CLASSES",
    "SCHEMA_VERSION",
    "ColumnStats",
    "ColumnType",
    "Comparison",
    "DeltaStats",
    "DuplicateKey",
    "DuplicateKeyError",
    "DuplicatePolicy",
    "KeyReport",
    "RowClass",
    "Sample",
    "SchemaDiff",
    "Trail",
    "TypeChange",
    "percent",
]

SCHEMA_VERSION = 1
ROW_CLASSES = ("only_in_a", "only_in_b", "changed", "identical")
DuplicatePolicy = Literal["refuse", "first"]


@dataclass(frozen=True)
class ColumnType:
    """A column name and its DuckDB type."""

    name: str
    type: str


@dataclass(frozen=True)
class TypeChange:
    """A column present on both sides with a different type."""

    name: str
    a_type: str
    b_type: str


@dataclass(frozen=True)
class SchemaDiff:
    """Columns added (only in B), removed (only in A) and retyped (on both, type differs)."""

    added: list[ColumnType]
    removed: list[ColumnType]
    type_changed: list[TypeChange]
    common: list[ColumnType]


@dataclass(frozen=True)
class DuplicateKey:
    """One key held by several rows of a relation."""

    key: dict[str, Any]
    rows: int


@dataclass(frozen=True)
class KeyReport:
    """Key health of one side: null keys and duplicate keys, found before any row is compared."""

    rows: int
    distinct_keys: int
    null_key_rows: int
    duplicate_keys: int
    duplicate_rows: int
    null_key_sample: list[dict[str, Any]]
    duplicate_sample: list[DuplicateKey]

    @property
    def rows_set_aside(self) -> int:
        """Rows not compared: those with a null key, and all but one row of each duplicated key."""
        return self.null_key_rows + self.duplicate_rows - self.duplicate_keys


@dataclass(frozen=True)
class RowClass:
    """How many keys fall in one class, and their share of all keys of A ∪ B."""

    count: int
    percent: float


@dataclass(frozen=True)
class DeltaStats:
    """Distribution of B−A over the rows where a numeric column differs beyond its tolerance."""

    count: int
    min: float
    p50: float
    p95: float
    max: float
    sum: float
    histogram_edges: list[float]
    histogram_counts: list[int]


@dataclass(frozen=True)
class ColumnStats:
    """Match counts of one column over the rows present on both sides."""

    name: str
    a_type: str
    b_type: str
    compared_rows: int
    matches: int
    mismatches: int
    null_on_one_side: int
    tolerated: int
    tolerance: float | None
    delta: DeltaStats | None

    @property
    def match_percent(self) -> float:
        """Share of compared rows where the column matches (100 when there are none)."""
        return percent(self.matches, self.compared_rows, empty=100.0)


@dataclass(frozen=True)
class Trail:
    """The events that fed one key: streams, count, position range, event types with counts."""

    streams: list[str]
    events: int
    first_position: int | None
    last_position: int | None
    event_types: dict[str, int]


@dataclass(frozen=True)
class Sample:
    """One sampled key of a class; ``a``/``b`` hold values as text (None when absent or NULL)."""

    key: dict[str, Any]
    columns: list[str]
    a: dict[str, str | None] | None
    b: dict[str, str | None] | None
    trail: Trail | None = None


@dataclass(frozen=True)
class Comparison:
    """Everything ``compare`` found about two relations; see docs/diff.md for the JSON form."""

    a: str
    b: str
    keys: list[str]
    compared_at: str
    tolerances: dict[str, float]
    sample_size: int
    duplicate_keys: DuplicatePolicy
    trail_events: str | None
    schema: SchemaDiff
    key_reports: dict[str, KeyReport]
    rows: dict[str, RowClass]
    columns: list[ColumnStats]
    samples: dict[str, list[Sample]]

    @property
    def total_keys(self) -> int:
        """Keys of A ∪ B that took part in the comparison."""
        return sum(c.count for c in self.rows.values())

    @property
    def differs(self) -> bool:
        """True when the schema or any row differs."""
        s = self.schema
        return bool(s.added or s.removed or s.type_changed or any(self.rows[c].count for c in ROW_CLASSES[:3]))

    def counts(self) -> dict[str, int]:
        """Row counts per class."""
        return {name: self.rows[name].count for name in ROW_CLASSES}

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready form (``schema_version`` 1, documented in docs/diff.md)."""
        return _to_dict(self)

    def to_json(self, indent: int | None = 2) -> str:
        """The report as JSON text, keys in a stable order."""
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str | dict[str, Any]) -> Comparison:
        """Read a report written by :meth:`to_json`."""
        return _from_dict(json.loads(text) if isinstance(text, str) else text)


def percent(part: int, whole: int, empty: float = 0.0) -> float:
    """``part`` as a percentage of ``whole``, rounded to 4 decimals (``empty`` when ``whole`` is 0)."""
    return round(100.0 * part / whole, 4) if whole else empty


# ---------------------------------------------------------------------------------------------
# JSON form
# ---------------------------------------------------------------------------------------------


def _to_dict(c: Comparison) -> dict[str, Any]:
    def sample(s: Sample) -> dict[str, Any]:
        trail = None
        if s.trail is not None:
            t = s.trail
            trail = {
                "streams": t.streams,
                "events": t.events,
                "first_position": t.first_position,
                "last_position": t.last_position,
                "event_types": t.event_types,
            }
        return {"key": s.key, "columns": s.columns, "a": s.a, "b": s.b, "trail": trail}

    def key_report(r: KeyReport) -> dict[str, Any]:
        return {
            "rows": r.rows,
            "distinct_keys": r.distinct_keys,
            "null_key_rows": r.null_key_rows,
            "duplicate_keys": r.duplicate_keys,
            "duplicate_rows": r.duplicate_rows,
            "rows_set_aside": r.rows_set_aside,
            "null_key_sample": r.null_key_sample,
            "duplicate_sample": [{"key": d.key, "rows": d.rows} for d in r.duplicate_sample],
        }

    def column(s: ColumnStats) -> dict[str, Any]:
        delta = None
        if s.delta is not None:
            d = s.delta
            delta = {
                "count": d.count,
                "min": d.min,
                "p50": d.p50,
                "p95": d.p95,
                "max": d.max,
                "sum": d.sum,
                "histogram": {"edges": d.histogram_edges, "counts": d.histogram_counts},
            }
        return {
            "name": s.name,
            "a_type": s.a_type,
            "b_type": s.b_type,
            "compared_rows": s.compared_rows,
            "matches": s.matches,
            "mismatches": s.mismatches,
            "null_on_one_side": s.null_on_one_side,
            "tolerated": s.tolerated,
            "tolerance": s.tolerance,
            "match_percent": s.match_percent,
            "delta": delta,
        }

    return {
        "schema_version": SCHEMA_VERSION,
        "a": c.a,
        "b": c.b,
        "keys": c.keys,
        "compared_at": c.compared_at,
        "options": {
            "tolerances": c.tolerances,
            "sample_size": c.sample_size,
            "duplicate_keys": c.duplicate_keys,
            "trail_events": c.trail_events,
        },
        "schema": {
            "added": [{"name": x.name, "type": x.type} for x in c.schema.added],
            "removed": [{"name": x.name, "type": x.type} for x in c.schema.removed],
            "type_changed": [{"name": x.name, "a_type": x.a_type, "b_type": x.b_type} for x in c.schema.type_changed],
            "common": [{"name": x.name, "type": x.type} for x in c.schema.common],
        },
        "key_reports": {side: key_report(r) for side, r in c.key_reports.items()},
        "rows": {
            "total": c.total_keys,
            **{name: {"count": r.count, "percent": r.percent} for name, r in c.rows.items()},
        },
        "columns": [column(s) for s in c.columns],
        "samples": {name: [sample(s) for s in items] for name, items in c.samples.items()},
    }


def _from_dict(d: dict[str, Any]) -> Comparison:
    if d.get("schema_version") != SCHEMA_VERSION:
        raise ComparisonError(
            f"comparison report has schema_version {d.get('schema_version')!r}; this version reads {SCHEMA_VERSION}."
        )

    def sample(s: dict[str, Any]) -> Sample:
        t = s["trail"]
        trail = None if t is None else Trail(**t)
        return Sample(s["key"], s["columns"], s["a"], s["b"], trail)

    def column(s: dict[str, Any]) -> ColumnStats:
        delta = None
        if s["delta"] is not None:
            x = s["delta"]
            delta = DeltaStats(
                x["count"],
                x["min"],
                x["p50"],
                x["p95"],
                x["max"],
                x["sum"],
                x["histogram"]["edges"],
                x["histogram"]["counts"],
            )
        fields = {k: v for k, v in s.items() if k not in ("delta", "match_percent")}
        return ColumnStats(**fields, delta=delta)

    def key_report(r: dict[str, Any]) -> KeyReport:
        return KeyReport(
            r["rows"],
            r["distinct_keys"],
            r["null_key_rows"],
            r["duplicate_keys"],
            r["duplicate_rows"],
            r["null_key_sample"],
            [DuplicateKey(x["key"], x["rows"]) for x in r["duplicate_sample"]],
        )

    schema = d["schema"]
    options = d["options"]
    return Comparison(
        a=d["a"],
        b=d["b"],
        keys=d["keys"],
        compared_at=d["compared_at"],
        tolerances=options["tolerances"],
        sample_size=options["sample_size"],
        duplicate_keys=options["duplicate_keys"],
        trail_events=options["trail_events"],
        schema=SchemaDiff(
            added=[ColumnType(**x) for x in schema["added"]],
            removed=[ColumnType(**x) for x in schema["removed"]],
            type_changed=[TypeChange(**x) for x in schema["type_changed"]],
            common=[ColumnType(**x) for x in schema["common"]],
        ),
        key_reports={side: key_report(r) for side, r in d["key_reports"].items()},
        rows={name: RowClass(d["rows"][name]["count"], d["rows"][name]["percent"]) for name in ROW_CLASSES},
        columns=[column(s) for s in d["columns"]],
        samples={name: [sample(s) for s in d["samples"][name]] for name in ROW_CLASSES},
    )


class DuplicateKeyError(ComparisonError):
    """Raised when a compared relation holds several rows for one key and the policy is to refuse."""

    def __init__(self, message: str, report: dict[str, KeyReport]) -> None:
        super().__init__(message)
        # The key report of each side ("a", "b"), the offending one(s) included, for callers that render it.
        self.report = report
