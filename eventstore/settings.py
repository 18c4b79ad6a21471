"""Configuration read from the environment, with the CLI's flags layered on top."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path

from eventstore.errors import ConfigurationError

__all__ = [
    "DEFAULT_LONG_STREAM_DAYS",
    "DEFAULT_LONG_STREAM_THRESHOLD",
    "Settings",
    "TenantField",
    "parse_closing_events",
    "parse_duration",
    "parse_tenant_field",
    "validate_identifier",
]

#: A stream whose first and last events lie further apart than this many days is long-lived.
DEFAULT_LONG_STREAM_DAYS = 30.0
#: A stream with more events than this is long (analytics.stream_stats, ``ingest --long-stream-threshold``).
DEFAULT_LONG_STREAM_THRESHOLD = 1000

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
    long_stream_days: float = DEFAULT_LONG_STREAM_DAYS
    # stream type -> the event types that close such a stream ("*": any stream type); empty: the projections'
    closing_events: tuple[tuple[str, tuple[str, ...]], ...] = ()
    # `maintain` never expires what time travel within this window needs (PROJECTIONIST_TIME_TRAVEL_WINDOW)
    time_travel_window: timedelta = timedelta(0)
    # the channel `follow` LISTENs on and the store's trigger NOTIFYs (PROJECTIONIST_NOTIFY_CHANNEL; docs/follow.md)
    notify_channel: str = "projectionist_events"
    # where the tenant of a native or eventsourcing store's event is (PROJECTIONIST_TENANT_FIELD); None: no tenants
    tenant_field: TenantField | None = None

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
            long_stream_days=_days(env.get("PROJECTIONIST_LONG_STREAM_DAYS"), "PROJECTIONIST_LONG_STREAM_DAYS"),
            closing_events=parse_closing_events(env.get("PROJECTIONIST_CLOSING_EVENT_TYPES") or ""),
            time_travel_window=parse_duration(
                env.get("PROJECTIONIST_TIME_TRAVEL_WINDOW") or "0s", "PROJECTIONIST_TIME_TRAVEL_WINDOW"
            ),
            notify_channel=env.get("PROJECTIONIST_NOTIFY_CHANNEL") or "projectionist_events",
            tenant_field=parse_tenant_field(env.get("PROJECTIONIST_TENANT_FIELD") or ""),
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
        validate_identifier(self.notify_channel, "PROJECTIONIST_NOTIFY_CHANNEL")
        return self

    @property
    def uses_embedded_store(self) -> bool:
        """True when the event store is Projectionist's own embedded PostgreSQL."""
        return self.event_store_dsn is None


@dataclass(frozen=True)
class TenantField:
    """Where a store without tenants of its own keeps an event's tenant: a field of ``metadata`` or ``data``
    (both JSON objects), or a ``column`` of the native table."""

    place: str  # "metadata" | "data" | "column"
    name: str

    def __str__(self) -> str:
        return f"{self.place}.{self.name}"


_TENANT_PLACES = ("metadata", "data", "column")
_JSON_FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def parse_tenant_field(text: str) -> TenantField | None:
    """``tenant_id`` or ``metadata.tenant_id``, ``data.tenantId``, ``column.tenant_id`` → a :class:`TenantField`.

    The value of ``PROJECTIONIST_TENANT_FIELD`` (empty: None, no tenants). A bare name is a metadata
    field. Raises ConfigurationError naming the setting and the forms it accepts.
    """
    text = text.strip()
    if not text:
        return None
    place, dot, name = text.partition(".")
    if not dot:
        place, name = "metadata", text
    fix = (
        "use a metadata field (tenant_id or metadata.tenant_id), a payload field (data.tenant_id) or a column of "
        "the native events table (column.tenant_id); names are letters, digits and underscores"
    )
    if place not in _TENANT_PLACES or not _JSON_FIELD.match(name):
        raise ConfigurationError(f"PROJECTIONIST_TENANT_FIELD={text!r} names no tenant field: {fix}.")
    if place == "column":
        validate_identifier(name, "PROJECTIONIST_TENANT_FIELD column")
    return TenantField(place, name)


def _days(text: str | None, what: str) -> float:
    if not text:
        return DEFAULT_LONG_STREAM_DAYS
    try:
        days = float(text)
    except ValueError:
        days = -1.0
    if not days > 0 or days == float("inf"):
        raise ConfigurationError(f"{what}={text!r} is not a positive number of days: use e.g. 30 or 0.5.")
    return days


def parse_closing_events(text: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """``cart:CartConfirmed,CartCancelled;order:OrderShipped`` → ``(("cart", ("CartCancelled", "CartConfirmed")), …)``.

    The value of ``PROJECTIONIST_CLOSING_EVENT_TYPES``: per stream type (``*`` for any), the event types that
    close a stream of that type. Raises ConfigurationError naming the part that is not of that form.
    """
    parsed: dict[str, tuple[str, ...]] = {}
    for part in (p.strip() for p in text.split(";")):
        if not part:
            continue
        stream_type, colon, types = part.partition(":")
        names = tuple(sorted({t.strip() for t in types.split(",") if t.strip()}))
        if not colon or not stream_type.strip() or not names:
            raise ConfigurationError(
                f"PROJECTIONIST_CLOSING_EVENT_TYPES part {part!r} is not STREAM_TYPE:EventType[,EventType…]: use e.g. "
                "cart:CartConfirmed,CartCancelled;order:OrderShipped ('*' as the stream type for any)."
            )
        parsed[stream_type.strip()] = names
    return tuple(sorted(parsed.items()))


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str, what: str = "duration") -> timedelta:
    """``7d``, ``12h``, ``30m``, ``0s``, ``2w`` → a timedelta; ConfigurationError naming ``what`` otherwise."""
    match = _DURATION.match(text)
    if not match:
        raise ConfigurationError(
            f"{what} {text!r} is not a duration: use a number and a unit, e.g. 7d, 12h, 30m, 0s (units s, m, h, d, w)."
        )
    return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])
