"""SQL text built by Projectionist: the one way to write a string literal.

Identifiers are never built this way: they are checked (:func:`eventstore.settings.validate_identifier`)
and quoted by psycopg's ``sql.Identifier`` or, in DuckDB SQL, by :func:`quote_identifier`. Values go
through query parameters wherever the engine takes them; a literal is for the few places that cannot
(DDL, ``ATTACH``, SQL handed to ``postgres_query``).
"""

from __future__ import annotations

__all__ = ["quote_identifier", "quote_literal"]


def quote_literal(text: str) -> str:
    """``text`` as a SQL string literal, for PostgreSQL and DuckDB alike."""
    return "'" + text.replace("'", "''") + "'"


def quote_identifier(name: str) -> str:
    """``name`` as a double-quoted identifier, for PostgreSQL and DuckDB alike."""
    return '"' + name.replace('"', '""') + '"'
