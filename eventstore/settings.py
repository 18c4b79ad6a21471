"""Configuration read from the environment, with the CLI's flags layered on top."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from eventstore.errors import ConfigurationError

__all__ = ["Settings", "validate_identifier"]

_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def validate_identifier(value: str, what: str) -> str:
    """Return ``value`` if it is a plain lower-case SQL identifier, else raise ConfigurationError."""
    if not _IDENTIFIER.match(value):
        raise ConfigurationError(
            f"{what} {value!r} is not a valid identifier: use lower-case letters, digits and "
            "underscores, starting with a letter or underscore, at most 63 characters."
        )
    return value


@dataclass(frozen=True)
class Settings:
    """Where Projectionist keeps its data and which event store it reads."""

    home: Path
    event_store_dsn: str | None = None
    store_kind: str = "native"
    store_schema: str = "public"
    store_table: str = "events"
    lake: str | None = None
    lake_data: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``PROJECTIONIST_*`` environment variables."""
        env = os.environ if env is None else env
        settings = cls(
            home=Path(env.get("PROJECTIONIST_HOME") or ".projectionist").expanduser().absolute(),
            event_store_dsn=env.get("PROJECTIONIST_EVENT_STORE_DSN") or None,
            store_kind=env.get("PROJECTIONIST_EVENT_STORE_KIND") or "native",
            store_schema=env.get("PROJECTIONIST_EVENT_STORE_SCHEMA") or "public",
            store_table=env.get("PROJECTIONIST_EVENT_STORE_TABLE") or "events",
            lake=env.get("PROJECTIONIST_LAKE") or None,
            lake_data=env.get("PROJECTIONIST_LAKE_DATA") or None,
        )
        return settings.validated()

    def with_overrides(self, **changes: object) -> Settings:
        """Return a copy with the non-None values of ``changes`` applied, validated."""
        applied = {k: v for k, v in changes.items() if v is not None}
        if "home" in applied:
            applied["home"] = Path(str(applied["home"])).expanduser().absolute()
        return replace(self, **applied).validated()  # type: ignore[arg-type]

    def validated(self) -> Settings:
        """Raise ConfigurationError if a setting cannot work; return self otherwise.

        The store kind is checked against the registry of adapters where a store is opened
        (:func:`eventstore.adapters.adapter_class`; the CLI and the Dagster resource do it first thing).
        """
        validate_identifier(self.store_schema, "event store schema")
        validate_identifier(self.store_table, "event store table")
        return self

    @property
    def uses_embedded_store(self) -> bool:
        """True when the event store is Projectionist's own embedded PostgreSQL."""
        return self.event_store_dsn is None
