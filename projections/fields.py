"""Public and private event fields: what of an event may leave the service that owns it.

A domain declares, next to its upcasters, the **public** payload fields of each event type and version
it owns::

    PUBLIC_FIELDS = [
        PublicFields("CartOpened", 1, public=("customer_id",)),
        PublicFields("ItemAdded", 2, public=("product_id", "quantity", "unit_price", "currency")),
    ]
    SUBJECT_FIELD = "customer_id"  # whose data `projectionist forget` removes

The rule is default-deny within a declared type: every field of a declared version that is not listed
is private, and so is every field of a version of that type that has no declaration yet (a new version
shows nothing until someone decides). An event type with no declaration at all is *undeclared*: its
fields are shown as before and the event catalog flags it, so that a store adopting declarations is
not blinded overnight.

Private fields stay in ``raw`` and ``archive`` (the operator path) and projections may read them; the
typed views ``analytics.events_*`` leave them out, and a projection column that carries one says
``Column(..., public=False)`` and is left out of the live view. :func:`warehouse.privacy.private_leaks`
checks the result against the data.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from eventstore.errors import ConfigurationError
from projections.errors import ProjectionDefinitionError

__all__ = ["SUBJECT_FIELD_ENV", "FieldPolicy", "PublicFields"]

#: Overrides the domain's ``SUBJECT_FIELD``: the payload field that names a person.
SUBJECT_FIELD_ENV = "PROJECTIONIST_SUBJECT_FIELD"
_EVENT_TYPE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:-]{0,199}$")
_FIELD = re.compile(r"^[^\x00-\x1f]{1,200}$")


@dataclass(frozen=True)
class PublicFields:
    """The public payload fields of ``event_type`` at ``version`` (as stored, before upcasting)."""

    event_type: str
    version: int
    public: tuple[str, ...] = ()
    description: str = ""
    source: str = ""  # the file it was declared in, set by the registry

    def __post_init__(self) -> None:
        where = f"public fields of {self.event_type!r} v{self.version}"
        if not isinstance(self.event_type, str) or not _EVENT_TYPE.match(self.event_type):
            raise ProjectionDefinitionError(f"{where}: event type must be a name like 'ItemAdded'")
        if isinstance(self.version, bool) or not isinstance(self.version, int) or self.version < 1:
            raise ProjectionDefinitionError(f"{where}: version must be a positive integer")
        if isinstance(self.public, str) or not all(isinstance(f, str) and _FIELD.match(f) for f in self.public):
            raise ProjectionDefinitionError(f"{where}: public must be a tuple of field names, e.g. ('product_id',)")
        object.__setattr__(self, "public", tuple(self.public))


class FieldPolicy:
    """Every :class:`PublicFields` declaration, keyed by ``(event_type, version)``, and the subject field."""

    def __init__(self, declarations: Iterable[PublicFields] = (), subject_field: str | None = None) -> None:
        self._by_key: dict[tuple[str, int], PublicFields] = {}
        for declaration in declarations:
            key = (declaration.event_type, declaration.version)
            if key in self._by_key:
                other = self._by_key[key]
                raise ProjectionDefinitionError(
                    f"two declarations of the public fields of {key[0]} v{key[1]}: {other.source or '?'} and "
                    f"{declaration.source or '?'}; keep one of them."
                )
            self._by_key[key] = declaration
        self._types = {t for t, _ in self._by_key}
        self.subject_field = subject_field

    def __iter__(self) -> Iterator[PublicFields]:
        return iter(sorted(self._by_key.values(), key=lambda d: (d.event_type, d.version)))

    def __len__(self) -> int:
        return len(self._by_key)

    def declares(self, event_type: str) -> bool:
        """True when some version of ``event_type`` has a declaration (its fields are then private by default)."""
        return event_type in self._types

    def public(self, event_type: str, version: int) -> frozenset[str] | None:
        """The public fields of ``event_type`` at ``version``; None when the type is undeclared (no rule).

        A version of a declared type without its own declaration has no public field.
        """
        if event_type not in self._types:
            return None
        declaration = self._by_key.get((event_type, version))
        return frozenset(declaration.public) if declaration else frozenset()

    def is_private(self, event_type: str, version: int, field: str) -> bool:
        """True when ``field`` of ``event_type`` at ``version`` must not leave the operator path."""
        public = self.public(event_type, version)
        return public is not None and field not in public

    def subject(self) -> str:
        """The subject field (``PROJECTIONIST_SUBJECT_FIELD``, else the domain's ``SUBJECT_FIELD``); a clear
        error when neither is set."""
        chosen = os.environ.get(SUBJECT_FIELD_ENV, "").strip() or self.subject_field
        if not chosen:
            raise ConfigurationError(
                "no subject field is configured: declare SUBJECT_FIELD = '<field>' next to PUBLIC_FIELDS in a "
                f"projection module, or set {SUBJECT_FIELD_ENV} (e.g. customer_id)."
            )
        if not _FIELD.match(chosen):
            raise ConfigurationError(f"{SUBJECT_FIELD_ENV}={chosen!r} is not a field name: name one payload field.")
        return chosen
