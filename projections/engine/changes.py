"""Expected changes: keys whose declared columns changed between two versions' rows outside their ``where``."""

from __future__ import annotations

import duckdb
import pyarrow as pa

from eventstore.errors import ConfigurationError
from eventstore.quoting import quote_literal
from projections.definition import Projection
from projections.upcasting import RELATION

__all__ = ["expected_change_violations"]


def expected_change_violations(con: duckdb.DuckDBPyConnection, projection: Projection, old: str, new: str) -> pa.Table:
    """Keys in both ``old`` (previous version's rows) and ``new`` whose declared columns changed outside ``where``.

    Only the declared changes are checked (a column no change names is the diff gate's business);
    the result has the key columns and ``expected_change``, the description of the change broken.
    """
    for relation in (old, new):
        if not RELATION.match(relation):
            raise ConfigurationError(f"relation {relation!r} is not a table or view name")
    key = ", ".join(f"b.{k}" for k in projection.key)
    on = " AND ".join(f"a.{k} IS NOT DISTINCT FROM b.{k}" for k in projection.key)
    checks = [
        f"SELECT {key}, {quote_literal(change.description)} AS expected_change FROM {old} AS a JOIN {new} AS b ON {on} "
        f"WHERE ({' OR '.join(f'a.{c} IS DISTINCT FROM b.{c}' for c in change.columns)}) "
        f"AND NOT coalesce(({change.where}), false)"
        for change in projection.expected_changes
    ]
    if not checks:
        types = {c.name: c.type for c in projection.columns}
        columns = ", ".join(f"CAST(NULL AS {types[k]}) AS {k}" for k in projection.key)
        return con.sql(f"SELECT {columns}, CAST(NULL AS VARCHAR) AS expected_change LIMIT 0").to_arrow_table()
    return con.sql(" UNION ALL ".join(checks) + " ORDER BY ALL").to_arrow_table()
