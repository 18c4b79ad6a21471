"""The privacy commands: ``forget`` (a person's private event fields, out of every lake tier) and ``privacy``
(what is declared public or private, and whether any private value reaches ``analytics.*``).

Heavy modules (the lake, the projections) are imported inside the commands: ``--help`` stays instant.
"""

from __future__ import annotations

import json
from typing import Any

import click

from eventstore.errors import ConfigurationError
from pipelines.cli.base import cli, fail_cleanly, settings

__all__: list[str] = []


@cli.command("forget")
@click.argument("subject")
@click.option("--dry-run", is_flag=True, help="Count the subject's streams and events; change nothing.")
@click.option("--yes", is_flag=True, help="Confirm: a forget cannot be undone.")
@click.option("--no-ingest", is_flag=True, help="Do not ingest what settled in the store first.")
@click.option("--json", "as_json", is_flag=True, help="Print what was done as one JSON object.")
@fail_cleanly
def forget_command(subject: str, dry_run: bool, yes: bool, no_ingest: bool, as_json: bool) -> None:
    """Make SUBJECT's private event fields unreadable in every tier of the lake.

    SUBJECT is a value of the subject field (SUBJECT_FIELD next to the domain's PUBLIC_FIELDS, or
    PROJECTIONIST_SUBJECT_FIELD), e.g. a customer id. The private fields of the subject's streams are
    replaced in raw and archive, every projection version recomputes the affected keys, other copies
    are rewritten, and earlier snapshots and their files are deleted. The store is left as it is:
    docs/governance.md says what to do there.
    """
    from eventstore.connection import event_store_dsn
    from pipelines.cli.lake import DEFAULT_BATCH_SIZE, ingest_and_report
    from projections import discover
    from warehouse.analytics import DEFAULT_LONG_STREAM_THRESHOLD
    from warehouse.lake import LakeConfig, open_lake
    from warehouse.privacy import forget

    registry = discover()
    field = registry.fields.subject()  # a missing subject field fails before anything is opened
    if not yes and not dry_run:
        raise ConfigurationError(
            f"forget cannot be undone: it removes the private fields of the streams whose {field} is {subject!r} "
            "from the lake for good, and time travel to before it. See what it would change with --dry-run, then "
            "run it with --yes. Nothing was changed."
        )
    current = settings()
    if not no_ingest and not dry_run:
        # What the store recorded before the forget must not land afterwards with the subject's values.
        ingest_and_report(
            current,
            event_store_dsn(current),
            batch_size=DEFAULT_BATCH_SIZE,
            compact_after=64,
            threshold=DEFAULT_LONG_STREAM_THRESHOLD,
        )
    con = open_lake(LakeConfig.from_settings(current), read_only=dry_run)
    try:
        result = forget(con, registry, subject, dry_run=dry_run)
    finally:
        con.close()
    if as_json:
        click.echo(json.dumps(result.as_json(), indent=2))
        return
    if result.events == 0 and not result.streams:
        click.echo(f"no stream of the lake names {field} {subject!r}: nothing to forget")
        return
    if result.dry_run:
        verb = "would mask" if dry_run else "nothing left to mask:"
        click.echo(
            f"{result.streams:,} stream(s) of {field} {subject!r}: {verb} {result.events:,} event(s), "
            f"{result.values_removed:,} distinct private value(s)"
        )
        return
    click.echo(
        f"forgot {field} {subject!r}: {result.events:,} event(s) of {result.streams:,} stream(s) masked, "
        f"{result.values_removed:,} distinct private value(s) removed; they now read {result.token}"
    )
    for version, keys in sorted(result.keys_reprojected.items()):
        click.echo(f"  re-projected {version}: {keys:,} key(s)")
    if result.copies_scrubbed:
        click.echo(f"  rewrote {result.copies_scrubbed:,} other cop(ies) (dead letters, samples, staging)")
    click.echo(
        f"  expired {result.snapshots_expired:,} earlier snapshot(s), deleted {result.files_deleted:,} file(s); "
        "recorded in meta.forgotten (without the subject)"
    )


@cli.command("privacy")
@click.option("--json", "as_json", is_flag=True, help="Print the declarations and the leaks as JSON.")
@fail_cleanly
def privacy_command(as_json: bool) -> None:
    """The public/private declaration of every event type and version, and any private value found in analytics.*.

    Exits 1 when a private field's value reaches a column of analytics.* (each leak is named).
    """
    from projections import discover
    from warehouse.lake import LakeConfig, open_lake
    from warehouse.privacy import private_leaks

    registry = discover()
    con = open_lake(LakeConfig.from_settings(settings()), read_only=True)
    try:
        leaks = private_leaks(con, registry)
    finally:
        con.close()
    declarations: list[dict[str, Any]] = [
        {"event_type": d.event_type, "version": d.version, "public": list(d.public), "source": d.source}
        for d in registry.fields
    ]
    if as_json:
        click.echo(
            json.dumps(
                {
                    "subject_field": registry.fields.subject_field,
                    "declarations": declarations,
                    "leaks": [leak.__dict__ for leak in leaks],
                },
                indent=2,
            )
        )
    else:
        if not declarations:
            click.echo("no PUBLIC_FIELDS are declared: analysts see every payload field (docs/governance.md)")
        for d in declarations:
            public = ", ".join(d["public"]) or "(none)"
            click.echo(f"{d['event_type']} v{d['version']}: public {public}; every other field is private")
        if registry.fields.subject_field:
            click.echo(f"subject field (forget): {registry.fields.subject_field}")
        click.echo(
            f"{len(leaks)} private value leak(s) in analytics.*" if leaks else "no private value reaches analytics.*"
        )
        for leak in leaks:
            click.echo(f"  ! {leak}")
    if leaks:
        raise SystemExit(1)
