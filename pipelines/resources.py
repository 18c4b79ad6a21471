"""The Dagster resource: Projectionist's settings, from the same environment variables as the CLI."""

import contextlib
import os
from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg
import duckdb
from pydantic import PrivateAttr

from eventstore.adapters import adapter_class
from eventstore.connection import event_store_dsn
from eventstore.private import secure_home
from eventstore.settings import Settings
from projections.registry import Registry
from warehouse.ingest import EventSource
from warehouse.lake import LakeConfig, open_lake
from warehouse.query import sandbox
from warehouse.sources import close_source, open_source

__all__ = ["ENV_FIELDS", "ProjectionistResource", "current_registry", "resource_from_env"]

#: Resource field → environment variable, the CLI's configuration contract.
ENV_FIELDS = {
    "home": "PROJECTIONIST_HOME",
    "event_store_dsn": "PROJECTIONIST_EVENT_STORE_DSN",
    "store_kind": "PROJECTIONIST_EVENT_STORE_KIND",
    "store_schema": "PROJECTIONIST_EVENT_STORE_SCHEMA",
    "store_table": "PROJECTIONIST_EVENT_STORE_TABLE",
    "lake": "PROJECTIONIST_LAKE",
    "lake_data": "PROJECTIONIST_LAKE_DATA",
    "long_stream_days": "PROJECTIONIST_LONG_STREAM_DAYS",
    "closing_events": "PROJECTIONIST_CLOSING_EVENT_TYPES",
    "time_travel_window": "PROJECTIONIST_TIME_TRAVEL_WINDOW",
    "tenant_field": "PROJECTIONIST_TENANT_FIELD",
}


def current_registry() -> Registry:
    """The projections found now (``projections.discover``): what every asset, check and job reads at run time."""
    from projections import discover

    return discover()


class ProjectionistResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """Where the event store and the lake are; unset fields take the CLI's defaults."""

    home: str | None = None
    event_store_dsn: str | None = None
    store_kind: str | None = None
    store_schema: str | None = None
    store_table: str | None = None
    lake: str | None = None
    lake_data: str | None = None
    long_stream_days: str | None = None  # a number of days, as in PROJECTIONIST_LONG_STREAM_DAYS
    closing_events: str | None = None  # as in PROJECTIONIST_CLOSING_EVENT_TYPES
    time_travel_window: str | None = None  # a duration, as in PROJECTIONIST_TIME_TRAVEL_WINDOW
    tenant_field: str | None = None  # as in PROJECTIONIST_TENANT_FIELD
    max_lag_events: int = 10_000
    long_stream_threshold: int = 1000

    def settings(self) -> Settings:
        """The settings the CLI would use, with this resource's fields on top; the home is made private."""
        env = {
            "PROJECTIONIST_LONG_STREAM_DAYS": self.long_stream_days or "",
            "PROJECTIONIST_CLOSING_EVENT_TYPES": self.closing_events or "",
            "PROJECTIONIST_TIME_TRAVEL_WINDOW": self.time_travel_window or "",
            "PROJECTIONIST_TENANT_FIELD": self.tenant_field or "",
        }
        settings = Settings.from_env(env).with_overrides(
            home=self.home,
            event_store_dsn=self.event_store_dsn,
            store_kind=self.store_kind,
            store_schema=self.store_schema,
            store_table=self.store_table,
            lake=self.lake,
            lake_data=self.lake_data,
        )
        adapter_class(settings.store_kind)  # an unknown kind fails before anything is opened
        tightened = secure_home(settings.home)
        if tightened:
            dg.get_dagster_logger().warning(
                f"{settings.home} and {tightened - 1:,} files and folders under it were readable by other users; "
                "they are now private to their owner (0700 folders, 0600 files; docs/security.md)"
            )
        return settings

    # Within one execution (a run's steps in one process, a sensor tick) the lake is attached once:
    # attaching costs 250-500 ms, and a run of ingest_and_project has about twenty steps.
    _sharing: bool = PrivateAttr(default=False)
    _lake: duckdb.DuckDBPyConnection | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self._sharing = True

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        self._drop_lake()

    def _drop_lake(self) -> None:
        if self._lake is not None:
            with contextlib.suppress(duckdb.Error):
                self._lake.close()
            self._lake = None

    @contextmanager
    def lake_connection(self, *, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """A DuckDB connection with the lake attached as ``lake``.

        During an execution, the read-write connection is opened once and shared by the steps that
        follow (they run one after another in one process); a read-only request reuses it when it is
        open and otherwise opens a read-only connection of its own, so a sensor never creates a lake.
        A failure drops the shared connection: the next step, or a retry, starts on a new one.
        """
        if not self._sharing or (read_only and self._lake is None):
            settings = self.settings()
            config = LakeConfig.from_settings(settings)
            con = open_lake(config, read_only=read_only)
            try:
                if read_only:  # what only reads gets the analysts' locks too (defence in depth)
                    sandbox(con, config.data_path, settings.home / "tmp" / "dagster")
                yield con
            finally:
                con.close()
            return
        if self._lake is None:
            self._lake = open_lake(LakeConfig.from_settings(self.settings()))
        try:
            yield self._lake
        except BaseException:
            self._drop_lake()
            raise

    @contextmanager
    def event_source(self) -> Iterator[EventSource]:
        """The configured event store (any kind), as the ingest reads it."""
        settings = self.settings()
        source = open_source(settings, event_store_dsn(settings))
        try:
            yield source
        finally:
            close_source(source)


def resource_from_env(env: dict[str, str] | None = None) -> ProjectionistResource:
    """The resource bound to the environment variables that are set (``dg.EnvVar``), defaults otherwise."""
    env = dict(os.environ) if env is None else env
    bound = {field: dg.EnvVar(var) for field, var in ENV_FIELDS.items() if env.get(var)}
    return ProjectionistResource(**bound)  # type: ignore[arg-type]  # Dagster resolves each EnvVar at run time
