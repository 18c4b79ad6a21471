"""What every long-running test asserts at the end: each live or ready version equals a fresh computation."""

from __future__ import annotations

import duckdb
import pyarrow as pa

from projections import compute, discover
from warehouse.versions import list_versions


def assert_versions_equal_fresh_computation(con: duckdb.DuckDBPyConnection, *, nonempty: bool = False) -> int:
    """Compare every live and ready version in the lake of ``con`` with ``compute`` over raw.all_events.

    Returns how many versions were compared; ``nonempty`` also requires each to hold rows.
    """
    registry = discover()
    compared = 0
    for info in [v for v in list_versions(con) if v.state in ("live", "ready")]:
        projection = registry.get(info.name, info.version)
        fresh = compute(con, projection, "lake.raw.all_events", upcasters=registry.upcasters).rows
        key = ", ".join(projection.key)
        table = con.execute(f"SELECT * FROM {info.table} ORDER BY {key}").to_arrow_table()
        assert table.num_rows == fresh.num_rows, info
        assert table.num_rows > 0 or not nonempty, info
        assert table.cast(fresh.schema).equals(pa.Table.from_batches(fresh.to_batches())), info
        compared += 1
    return compared
