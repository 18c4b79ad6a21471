"""Public (integration) events: versioned contracts other services consume instead of the private events.

A public event is declared like a projection, one file per event and version under a domain's
``public/`` folder (``projections/shop/public/``), as ``PROJECTION = PublicEvent(...)``: a projection
whose rows are the public events (here one per key) built from the lake. Being a projection, a new
version is built beside the old one (``rebuild``), compared with the same ``diff``, promoted, rolled
back, and its change feed delivered to consumers (docs/integration.md); in the lake each built version
is also shown as ``public.<name>_v<N>`` (:mod:`warehouse.feeds.public`).

The public-field rule (:mod:`projections.fields`) holds at load: a public event may have no
``Column(public=False)``, may consume only event types whose public fields are declared, and every
field it ``requires`` must be public in the newest declared version of its event type (what the body
reads, upcast); otherwise the
registry refuses it, so nothing can build or promote it. The data is checked again when its
``public`` views are written (``private_leaks`` over the ``public`` schema).
"""

from __future__ import annotations

from dataclasses import dataclass

from projections.definition import Projection
from projections.errors import ProjectionDefinitionError
from projections.fields import FieldPolicy

__all__ = ["PUBLIC_SCHEMA", "PublicEvent"]

PUBLIC_SCHEMA = "public"


@dataclass(frozen=True, eq=False)
class PublicEvent(Projection):
    """A versioned public event ``public.<name>_v<N>``: a projection held to the public-field rule."""

    def check_fields(self, policy: FieldPolicy) -> None:
        """Raise a :class:`ProjectionDefinitionError` naming the first private thing this public event carries."""
        where = f"public event {self.label}"
        for column in self.columns:
            if not column.public:
                raise ProjectionDefinitionError(
                    f"{where}: column {column.name} is declared public=False, and a public event carries only "
                    "public fields: leave the column out (or publish an opaque value instead)."
                )
        for event_type in self.consumes:
            if not policy.declares(event_type):
                raise ProjectionDefinitionError(
                    f"{where}: it consumes {event_type}, whose public fields are not declared: add "
                    f"PublicFields({event_type!r}, <version>, public=(...)) to the domain's PUBLIC_FIELDS."
                )
        current: dict[str, int] = {}  # the body reads events upcast to their newest declared version
        for declaration in policy:
            current[declaration.event_type] = max(declaration.version, current.get(declaration.event_type, 0))
        for event_type, fields in self.requires.items():
            for field in fields:
                version = current.get(event_type)
                if version is not None and policy.is_private(event_type, version, field):
                    raise ProjectionDefinitionError(
                        f"{where}: it reads {event_type} v{version}.{field}, a private field: a public event "
                        "may read only public fields (declare it public in PUBLIC_FIELDS if it is meant to be)."
                    )
