"""Discovering projections and upcasters: one Python module each, nothing else to register.

A module declares ``PROJECTION = Projection(...)`` and/or ``UPCASTERS = [Upcaster(...), ...]``, and may
declare ``CLOSING_EVENT_TYPES = {"cart": ("CartConfirmed", "CartCancelled")}``: per stream type, the event
types after which a stream of that type is finished (what ``projectionist streams`` and archiving read),
and ``PUBLIC_FIELDS = [PublicFields(...), ...]`` with ``SUBJECT_FIELD = "customer_id"``: the public payload
fields per event type and version, and the field naming a person (:mod:`projections.fields`).
Modules come from the bundled package ``projections.shop`` and, when the environment variable
``PROJECTIONIST_PROJECTIONS`` names a folder, from every ``*.py`` file in it (files starting with
``_`` are helpers and are skipped). A module that fails to import, declares neither, or repeats a
``(name, version)`` raises :class:`~eventstore.errors.ProjectionDefinitionError` naming the file.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import importlib
import importlib.util
import os
import pkgutil
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import ModuleType

from eventstore.errors import ConfigurationError
from projections.definition import Projection
from projections.errors import ProjectionDefinitionError
from projections.fields import FieldPolicy, PublicFields
from projections.public_events import PublicEvent
from projections.upcasting import Upcaster, Upcasters

__all__ = ["BUNDLED_PACKAGE", "ENV_FOLDER", "Registry", "discover", "field_policy"]

ENV_FOLDER = "PROJECTIONIST_PROJECTIONS"
BUNDLED_PACKAGE = "projections.shop"


class Registry:
    """The projections (by name and version) and the upcasters found in projection modules."""

    def __init__(
        self,
        projections: Mapping[tuple[str, int], Projection],
        upcasters: Upcasters,
        closing_events: Mapping[str, tuple[str, ...]] | None = None,
        fields: FieldPolicy | None = None,
    ) -> None:
        self._projections = dict(sorted(projections.items()))
        self.upcasters = upcasters
        self.fields = fields or FieldPolicy()  # public/private payload fields per event type and version
        self.closing_events = dict(sorted((closing_events or {}).items()))  # stream type -> closing event types

    def __iter__(self) -> Iterator[Projection]:
        return iter(self._projections.values())

    def __len__(self) -> int:
        return len(self._projections)

    def names(self) -> list[str]:
        """Every projection name, sorted."""
        return sorted({name for name, _ in self._projections})

    def declared_fields(self) -> dict[str, dict[str, str]]:
        """Per event type, the payload fields whose type the projections declare (``requires``).

        A field declared with different types by different projections is left out: the analytics
        views then infer it, rather than pick one projection's reading over another's.
        """
        seen: dict[str, dict[str, set[str]]] = {}
        for projection in self:
            for event_type, fields in projection.requires.items():
                for field, kind in fields.items():
                    seen.setdefault(event_type, {}).setdefault(field, set()).add(kind.upper())
        return {
            event_type: {field: next(iter(kinds)) for field, kinds in fields.items() if len(kinds) == 1}
            for event_type, fields in seen.items()
        }

    def versions(self, name: str) -> list[int]:
        """The versions of projection ``name``, ascending (empty if unknown)."""
        return sorted(v for n, v in self._projections if n == name)

    def get(self, name: str, version: int | None = None) -> Projection:
        """Projection ``name`` at ``version`` (default: its highest version)."""
        versions = self.versions(name)
        if not versions:
            raise ConfigurationError(
                f"unknown projection {name!r}{did_you_mean(name, self.names())}: known ones are {self.names()}; "
                f"add a module to {BUNDLED_PACKAGE} or to the folder in {ENV_FOLDER}."
            )
        chosen = versions[-1] if version is None else version
        if chosen not in versions:
            raise ConfigurationError(f"projection {name!r} has no version {version}: it has versions {versions}.")
        return self._projections[(name, chosen)]


def did_you_mean(name: str, known: list[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``known`` to a mistyped ``name``, or nothing."""
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _import_file(path: Path) -> ModuleType:
    # A stable, unique module name per file: two folders may both hold a "cart_summary.py".
    digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
    name = f"projectionist_user_{digest}_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:  # pragma: no cover - only for non-Python files
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def _load(label: str, load: object) -> ModuleType:
    assert callable(load)
    try:
        module = load()
    except ProjectionDefinitionError as exc:
        raise ProjectionDefinitionError(f"{label}: {exc}") from exc
    except SyntaxError as exc:
        raise ProjectionDefinitionError(
            f"{label}: syntax error at line {exc.lineno}: {exc.msg}; fix the module (nothing was loaded from it)."
        ) from exc
    except Exception as exc:
        raise ProjectionDefinitionError(
            f"{label}: importing it failed with {type(exc).__name__}: {exc}; fix the module."
        ) from exc
    assert isinstance(module, ModuleType)
    return module


def _modules(folder: Path | None, bundled: bool) -> Iterator[tuple[str, ModuleType]]:
    if bundled:
        package = importlib.import_module(BUNDLED_PACKAGE)
        for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
            if info.name.startswith("_"):
                continue
            qualified = f"{BUNDLED_PACKAGE}.{info.name}"
            label = str(Path(package.__path__[0]) / f"{info.name}.py")
            yield label, _load(label, lambda qualified=qualified: importlib.import_module(qualified))
    if folder is not None:
        if not folder.is_dir():
            raise ConfigurationError(
                f"{ENV_FOLDER}={folder} is not a folder: point it at a folder of projection modules."
            )
        # public/: one file per public event (projections.public_events), beside the projections
        for path in sorted([*folder.glob("*.py"), *folder.glob("public/*.py")]):
            if path.name.startswith("_"):
                continue
            yield str(path), _load(str(path), lambda path=path: _import_file(path))


def declared_types() -> dict[str, dict[str, str]] | None:
    """The field types the projections found now declare (:meth:`Registry.declared_fields`), or None
    when a projection module cannot be loaded: landing events must not depend on every projection
    module being sound, so the analytics views then keep the types they have."""
    try:
        return discover().declared_fields()
    except ProjectionDefinitionError:
        return None


def field_policy() -> FieldPolicy | None:
    """The public-field declarations found now, or None when a projection module cannot be loaded
    (as :func:`declared_types`: the analytics views then keep what they show)."""
    try:
        return discover().fields
    except ProjectionDefinitionError:
        return None


def discover(folder: Path | str | None = None, *, bundled: bool = True) -> Registry:
    """Load the bundled projection modules and those in ``folder`` (default: env ``PROJECTIONIST_PROJECTIONS``)."""
    if folder is None and os.environ.get(ENV_FOLDER):
        folder = os.environ[ENV_FOLDER]
    projections: dict[tuple[str, int], Projection] = {}
    upcasters: list[Upcaster] = []
    closing: dict[str, tuple[str, ...]] = {}
    public: list[PublicFields] = []
    subjects: dict[str, str] = {}  # subject field -> the module declaring it
    for label, module in _modules(Path(folder) if folder is not None else None, bundled):
        projection = getattr(module, "PROJECTION", None)
        declared = getattr(module, "UPCASTERS", None)
        closes = getattr(module, "CLOSING_EVENT_TYPES", None)
        fields = getattr(module, "PUBLIC_FIELDS", None)
        if projection is None and declared is None and closes is None and fields is None:
            raise ProjectionDefinitionError(
                f"{label} declares neither PROJECTION nor UPCASTERS (nor CLOSING_EVENT_TYPES, nor PUBLIC_FIELDS); "
                "define one, or start the file name with '_' if it only holds helpers."
            )
        for declaration in fields or ():
            if not isinstance(declaration, PublicFields):
                raise ProjectionDefinitionError(f"{label}: PUBLIC_FIELDS must hold projections.PublicFields values")
            public.append(dataclasses.replace(declaration, source=label))
        subject = getattr(module, "SUBJECT_FIELD", None)
        if subject is not None:
            if not isinstance(subject, str) or not subject:
                raise ProjectionDefinitionError(
                    f"{label}: SUBJECT_FIELD must be a payload field name, e.g. 'customer_id'"
                )
            subjects[subject] = label
        for stream_type, types in _closing_events(label, closes).items():
            closing[stream_type] = tuple(sorted({*closing.get(stream_type, ()), *types}))
        if projection is not None:
            if not isinstance(projection, Projection):
                raise ProjectionDefinitionError(f"{label}: PROJECTION must be a projections.Projection")
            key = (projection.name, projection.version)
            if key in projections:
                raise ProjectionDefinitionError(
                    f"{label}: projection {projection.name} v{projection.version} is already defined in "
                    f"{projections[key].source}; bump the version or rename one of them."
                )
            projections[key] = dataclasses.replace(projection, source=label)
        for upcaster in declared or ():
            if not isinstance(upcaster, Upcaster):
                raise ProjectionDefinitionError(f"{label}: UPCASTERS must hold projections.Upcaster values")
            upcasters.append(dataclasses.replace(upcaster, source=label))
    if len(subjects) > 1:
        raise ProjectionDefinitionError(
            f"two subject fields are declared ({', '.join(f'{f!r} in {m}' for f, m in sorted(subjects.items()))}); "
            "keep one SUBJECT_FIELD, or set PROJECTIONIST_SUBJECT_FIELD."
        )
    policy = FieldPolicy(public, next(iter(subjects), None))
    for projection in projections.values():
        if isinstance(projection, PublicEvent):
            projection.check_fields(policy)  # the public-field rule, before anything can build it
    return Registry(projections, Upcasters(upcasters), closing, policy)


def _closing_events(label: str, declared: object) -> dict[str, tuple[str, ...]]:
    if declared is None:
        return {}
    if not isinstance(declared, Mapping) or not all(
        isinstance(k, str)
        and not isinstance(v, str)
        and isinstance(v, tuple | list | set | frozenset)
        and all(isinstance(t, str) for t in v)
        for k, v in declared.items()
    ):
        raise ProjectionDefinitionError(
            f"{label}: CLOSING_EVENT_TYPES must map a stream type to a tuple of event types, e.g. "
            '{"cart": ("CartConfirmed", "CartCancelled")}'
        )
    return {str(k): tuple(sorted(v)) for k, v in declared.items()}
