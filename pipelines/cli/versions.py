"""The projection commands: ``project``, ``rebuild``, ``promote``, ``rollback``, ``retain``, ``versions``,
``diff`` and ``follow``.

Also the projection parts of ``status`` and ``demo``: :func:`echo_projection_status`, :func:`demo_projections`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import click

from eventstore.errors import ConfigurationError
from eventstore.settings import parse_duration
from pipelines.cli.base import cli, fail_cleanly, settings
from pipelines.cli.maintain import expire_dropped
from warehouse.errors import PromotionError

if TYPE_CHECKING:
    import duckdb

    from projections import Registry
    from warehouse.versions import ProjectResult

__all__ = ["demo_projections", "echo_projection_status", "version_records", "version_rows"]


def _lake() -> duckdb.DuckDBPyConnection:
    from warehouse.lake import LakeConfig, open_lake

    return open_lake(LakeConfig.from_settings(settings()))


def _echo_results(results: list[ProjectResult]) -> None:
    for r in results:
        poison = f", {r.dead_letters:,} dead-lettered" if r.dead_letters else ""
        click.echo(
            f"{r.name} v{r.version}: {r.events:,} events, {r.keys:,} keys recomputed, {r.rows:,} rows{poison}; "
            f"checkpoint {r.checkpoint} ({r.seconds:.1f} s)"
        )


@cli.command("project")
@click.argument("names", nargs=-1)
@click.option("--dry-run", is_flag=True, help="Say how many events each version is behind; change nothing.")
@fail_cleanly
def project_command(names: tuple[str, ...], dry_run: bool) -> None:
    """Bring every live and ready projection version up to the lake's checkpoint (only touched keys)."""
    from projections import discover
    from warehouse.versions import lag, list_versions, project, validate_target

    registry = discover()
    for name in names:
        validate_target(registry, name)
    con = _lake()
    try:
        if dry_run:
            behind = [
                (v.name, v.version, v.state, lag(con, v.name, v.version)[0])
                for v in list_versions(con)
                if v.state in ("live", "ready") and (not names or v.name in names)
            ]
            for name, version, state, events in behind:
                word = f"would advance over {events:,} events" if events else "is up to date"
                click.echo(f"dry run: {name} v{version} ({state}) {word}")
            click.echo("dry run: nothing was changed" if behind else "dry run: no live or ready version to advance")
            return
        results = project(con, registry, names=list(names) or None)
    finally:
        con.close()
    if results:
        _echo_results(results)
    else:
        click.echo("every projection version is up to date")


@cli.command("rebuild")
@click.argument("name")
@click.option("--version", "version", type=int, required=True, help="The version to build from the lake.")
@click.option(
    "--chunk-events",
    type=click.IntRange(1),
    help="Events per committed chunk (default: 5,000,000 for SQL bodies, 500,000 for polars, 1,000,000 for folds).",
)
@click.option("--dry-run", is_flag=True, help="Say how many events and chunks the rebuild would take; build nothing.")
@click.option(
    "--shards",
    type=click.IntRange(1),
    help="Split the streams into K shards built by K processes at once, then swapped in together.",
)
@click.option(
    "--shard",
    type=click.IntRange(0),
    help="Build only shard I of the planned sharded rebuild (what each of the K processes runs; any machine can).",
)
@click.option("--tenant", help="Only this tenant's rows of a per-tenant projection (docs/versions.md, Tenants).")
@fail_cleanly
def rebuild_command(
    name: str,
    version: int,
    chunk_events: int | None,
    dry_run: bool,
    shards: int | None,
    shard: int | None,
    tenant: str | None,
) -> None:
    """Build projections.NAME_vN from every event in the lake while the live version keeps serving."""
    if tenant is not None:
        from pipelines.cli.tenants import rebuild_one_tenant

        return rebuild_one_tenant(name, version, tenant)

    from projections import discover
    from warehouse.ingest import lake_checkpoint
    from warehouse.progress import LOG_SECONDS, every
    from warehouse.versions import CHUNK_EVENTS, build_shard, list_versions, rebuild, resumable_rebuild, validate_target

    registry = discover()
    projection = validate_target(registry, name, version)
    if shard is not None:
        con = _lake()
        try:
            rows, dead = build_shard(con, registry, name, version, shard)
        finally:
            con.close()
        poison = f", {dead:,} dead-lettered" if dead else ""
        click.echo(f"{name} v{version} shard {shard}: {rows:,} rows{poison}")
        return
    if shards is not None and not dry_run:
        _sharded_rebuild(registry, name, version, shards)
        return
    con = _lake()
    try:
        if dry_run:
            checkpoint, events = lake_checkpoint(con)
            size = chunk_events or CHUNK_EVENTS[projection.kind]
            planned = max(1, -(-events // size)) if projection.keyed_by_stream else 1
            click.echo(
                f"dry run: {name} v{version} would be built from {events:,} events up to checkpoint {checkpoint} "
                f"in {planned} chunk(s) of at most {size:,} events, beside the live version; nothing was built"
            )
            return
        unfinished = resumable_rebuild(con, registry, name, version)
        continuing = f", continuing after chunk {unfinished.chunks_done} of {unfinished.chunks}" if unfinished else ""
        click.echo(f"rebuilding {name} v{version} from raw.all_events{continuing} …", err=True)
        if sys.stderr.isatty():
            # The bar moves as DuckDB scans a chunk; a resumed rebuild starts where the last run stopped.
            total = unfinished.events if unfinished else lake_checkpoint(con)[1]
            with click.progressbar(length=total, label=f"{name} v{version}", file=sys.stderr) as bar:
                result = rebuild(con, registry, name, version, events_done=bar.update, chunk_events=chunk_events)
        else:
            line = lambda n: click.echo(f"{name} v{version}: {n:,} events so far", err=True)  # noqa: E731
            result = rebuild(
                con, registry, name, version, events_done=every(LOG_SECONDS, line), chunk_events=chunk_events
            )
        state = next(v.state for v in list_versions(con, name) if v.version == version)
    finally:
        con.close()
    chunks = ""
    if result.chunks > 1:
        resumed = f", {result.resumed_chunks} of them committed by an earlier run" if result.resumed_chunks else ""
        chunks = f" in {result.chunks} chunks{resumed}"
    click.echo(
        f"{name} v{version} {state}: {result.rows:,} rows from {result.events:,} events{chunks}, checkpoint "
        f"{result.checkpoint} ({result.seconds:.1f} s)"
    )


#: Times a failed shard is built again, alone, before the sharded rebuild gives up.
SHARD_RETRIES = 1


def _sharded_rebuild(registry: Registry, name: str, version: int, shards: int) -> None:
    """Plan K shards, build each in a process of its own (a failed one again, alone), then swap them in once."""
    from warehouse.versions import finish_shards, list_versions, plan_shards

    con = _lake()
    try:
        plan = plan_shards(con, registry, name, version, shards)
    finally:
        con.close()
    todo = [i for i in range(plan.shards) if i not in plan.done]
    kept = f", {len(plan.done)} already built" if plan.done else ""
    click.echo(
        f"rebuilding {name} v{version} from {plan.events:,} events in {plan.shards} shards{kept}, "
        f"{len(todo)} process(es) at once …",
        err=True,
    )
    current = settings()
    base = [sys.executable, "-c", "from pipelines.cli import main; main()", "--home", str(current.home)]
    env = dict(os.environ)
    if current.event_store_dsn:  # in the environment, not the command line: `ps` shows every user the latter
        env["PROJECTIONIST_EVENT_STORE_DSN"] = current.event_store_dsn
    for attempt in range(SHARD_RETRIES + 1):
        workers = {
            i: subprocess.Popen(
                [*base, "rebuild", name, "--version", str(version), "--shard", str(i)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for i in todo
        }
        failed = []
        for i, worker in workers.items():
            output, _ = worker.communicate()
            if worker.returncode == 0:
                click.echo(output.strip(), err=True)
            else:
                failed.append(i)
                last = (output.strip().splitlines() or ["(no output)"])[-1]
                again = "; building it again alone" if attempt < SHARD_RETRIES else ""
                click.echo(f"shard {i} failed: {last}{again}", err=True)
        todo = failed
        if not todo:
            break
    con = _lake()
    try:
        result = finish_shards(con, registry, name, version)  # names the shards still missing, if any
        state = next(v.state for v in list_versions(con, name) if v.version == version)
    finally:
        con.close()
    click.echo(
        f"{name} v{version} {state}: {result.rows:,} rows from {result.events:,} events in {result.chunks} shards, "
        f"checkpoint {result.checkpoint}"
    )


def _known(con: duckdb.DuckDBPyConnection, name: str) -> None:
    """Refuse a name that is neither a registered projection nor one with versions in the lake."""
    from projections import discover
    from projections.registry import did_you_mean
    from warehouse.versions import list_versions

    names = sorted({*discover().names(), *(v.name for v in list_versions(con))})
    if name not in names:
        raise ConfigurationError(f"unknown projection {name!r}{did_you_mean(name, names)}: known ones are {names}.")


@cli.command("promote")
@click.argument("name")
@click.argument("version", type=int)
@click.option("--force", is_flag=True, help="Promote without a recorded comparison against the live version.")
@click.option("--keep", type=click.IntRange(0), help="Then drop retired versions beyond the newest K.")
@click.option("--yes", is_flag=True, help="With --keep: drop even the version `rollback` would restore.")
@click.option("--dry-run", is_flag=True, help="Run every check and say what would happen; change nothing.")
@click.option("--tenant", help="Only this tenant's rows of a per-tenant projection (docs/versions.md, Tenants).")
@fail_cleanly
def promote_command(
    name: str, version: int, force: bool, keep: int | None, yes: bool, dry_run: bool, tenant: str | None
) -> None:
    """Make version N live: analytics.NAME swaps to it atomically (needs `projectionist diff` first)."""
    if tenant is not None:
        from pipelines.cli.tenants import promote_one_tenant

        return promote_one_tenant(name, version, tenant, force, dry_run)

    from projections import discover
    from warehouse.versions import promote, retain, validate_target

    registry = discover()
    validate_target(registry, name, version)
    con = _lake()
    try:
        # Every check first, without writing: a --keep that needs --yes is refused before the promotion.
        promotion = promote(con, registry, name, version, force=force, dry_run=dry_run or keep is not None)
        doomed = _doomed_after_promotion(con, name, promotion.from_version, keep) if keep is not None else []
        if promotion.from_version in doomed and not yes:
            raise PromotionError(
                f"--keep {keep} would drop v{promotion.from_version}, the version `projectionist rollback {name}` "
                "would restore after this promotion: keep more, or confirm with --yes. Nothing was changed."
            )
        if not dry_run and keep is not None:
            promotion = promote(con, registry, name, version, force=force)
            doomed = retain(con, name, keep)
    finally:
        con.close()
    previous = f"v{promotion.from_version}" if promotion.from_version is not None else "nothing"
    gate = f" (comparison {promotion.comparison_id})" if promotion.comparison_id else ""
    if dry_run:
        click.echo(f"dry run: {name} v{version} would become live (was {previous}){gate}; nothing was changed")
        if doomed:
            click.echo(f"dry run: --keep {keep} would drop retired versions: {', '.join(f'v{v}' for v in doomed)}")
        return
    click.echo(
        f"{name}: v{version} is live (was {previous}){gate}; analytics.{name} reads projections.{name}_v{version}"
    )
    if doomed:
        click.echo(f"dropped retired versions: {', '.join(f'v{v}' for v in doomed)}")


def _doomed_after_promotion(con: duckdb.DuckDBPyConnection, name: str, retiring: int | None, keep: int) -> list[int]:
    """The retired versions ``--keep`` would drop once the promotion retired ``retiring`` too."""
    from warehouse.versions import list_versions

    retired = {v.version for v in list_versions(con, name) if v.state == "retired"}
    if retiring is not None:
        retired.add(retiring)
    return sorted(retired, reverse=True)[keep:]


@cli.command("rollback")
@click.argument("name")
@click.option("--dry-run", is_flag=True, help="Check that a rollback can be done and say what it would do.")
@click.option("--tenant", help="Only this tenant's rows of a per-tenant projection (docs/versions.md, Tenants).")
@fail_cleanly
def rollback_command(name: str, dry_run: bool, tenant: str | None) -> None:
    """Make the previous live version of NAME live again."""
    if tenant is not None:
        from pipelines.cli.tenants import rollback_one_tenant

        return rollback_one_tenant(name, tenant, dry_run)

    from projections import discover
    from warehouse.versions import rollback

    con = _lake()
    try:
        _known(con, name)
        promotion = rollback(con, name, registry=discover(), dry_run=dry_run)
    finally:
        con.close()
    if dry_run:
        click.echo(
            f"dry run: {name} v{promotion.to_version} would be live again (v{promotion.from_version} retired); "
            "nothing was changed"
        )
        return
    click.echo(f"{name}: v{promotion.to_version} is live again (v{promotion.from_version} retired)")


@cli.command("retain")
@click.argument("name")
@click.option("--keep", type=click.IntRange(0), required=True, help="Retired versions to keep.")
@click.option("--yes", is_flag=True, help="Also drop the version `rollback` would restore.")
@click.option("--dry-run", is_flag=True, help="Say which versions would be dropped; drop nothing.")
@click.option(
    "--older-than",
    default="7d",
    show_default=True,
    help="Then expire the lake snapshots superseded longer ago than this, deleting dropped versions' files (0s: now).",
)
@fail_cleanly
def retain_command(name: str, keep: int, yes: bool, dry_run: bool, older_than: str) -> None:
    """Drop the tables of NAME's retired versions beyond the newest K, and expire the files no snapshot needs."""
    from warehouse.versions import retain

    parse_duration(older_than, "--older-than")  # a bad duration is refused before anything is dropped
    con = _lake()
    try:
        _known(con, name)
        dropped = retain(con, name, keep, dry_run=dry_run, drop_rollback_target=yes)
        listed = ", ".join(f"v{v}" for v in dropped)
        if dry_run:
            click.echo(f"dry run: would drop {listed}; nothing was dropped" if dropped else "dry run: nothing to drop")
            return
        click.echo(f"dropped {listed}" if dropped else "nothing to drop")
        if dropped:
            expire_dropped(con, older_than)
    finally:
        con.close()


def version_records(con: duckdb.DuckDBPyConnection, name: str | None = None) -> list[dict[str, Any]]:
    """The versions in the lake as JSON-ready objects (``--json`` of ``versions`` and ``status``)."""
    from warehouse.versions import lags, list_versions

    versions = list_versions(con, name)
    lag = lags(con, [v for v in versions if v.state not in ("dropped", "building")])
    records = []
    for v in versions:
        behind = lag[(v.name, v.version)][0] if (v.name, v.version) in lag else None
        records.append(
            {
                "projection": v.name,
                "version": v.version,
                "state": v.state,
                "rows": v.rows,
                "checkpoint": str(v.checkpoint),
                "lag_events": behind,
                "built_at": v.built_at.isoformat() if v.built_at else None,
                "build_seconds": v.build_seconds,
            }
        )
    return records


def version_rows(con: duckdb.DuckDBPyConnection, name: str | None = None) -> list[str]:
    """Lines of a table of projection versions: state, rows, checkpoint, lag, build."""
    from warehouse.versions import lags, list_versions

    versions = list_versions(con, name)
    lag = lags(con, [v for v in versions if v.state not in ("dropped", "building")])
    lines = [f"{'projection':<16} {'ver':>3}  {'state':<8} {'rows':>10}  {'checkpoint':<14} {'lag':>8}  built"]
    for v in versions:
        behind = f"{lag[(v.name, v.version)][0]:,}" if (v.name, v.version) in lag else "-"
        built = f"{v.built_at:%Y-%m-%d %H:%M:%S} ({v.build_seconds:.1f} s)" if v.built_at and v.build_seconds else "-"
        lines.append(
            f"{v.name:<16} {v.version:>3}  {v.state:<8} {v.rows:>10,}  {v.checkpoint!s:<14} {behind:>8}  {built}"
        )
    return lines if versions else []


@cli.command("versions")
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array of versions.")
@fail_cleanly
def versions_command(name: str | None, as_json: bool) -> None:
    """List projection versions in the lake: state, rows, checkpoint, lag (events), build."""
    con = _lake()
    try:
        if name is not None:
            _known(con, name)
        if as_json:
            click.echo(json.dumps(version_records(con, name), indent=2))
            return
        lines = version_rows(con, name)
    finally:
        con.close()
    click.echo("\n".join(lines) if lines else "no projection versions yet: run `projectionist project`")


def echo_projection_status(con: duckdb.DuckDBPyConnection) -> None:
    """The projection part of `projectionist status`: versions and recent dead letters."""
    from warehouse.versions import dead_letters, unfinished_rebuilds

    lines = version_rows(con)
    if not lines:
        click.echo("projections: none built yet (run `projectionist project`)")
        return
    click.echo("projections:")
    for line in lines:
        click.echo(f"  {line}")
    for unfinished in unfinished_rebuilds(con):
        click.echo(
            f"  rebuild of {unfinished.name} v{unfinished.version} unfinished: {unfinished.chunks_done} of "
            f"{unfinished.chunks} chunks committed (last at {unfinished.updated_at:%Y-%m-%d %H:%M:%S}); "
            f"`projectionist rebuild {unfinished.name} --version {unfinished.version}` continues it"
        )
    letters = dead_letters(con, since=datetime.now(UTC) - timedelta(days=1))
    if letters:
        click.echo(f"  dead letters (last 24 h): {len(letters):,}")
        for letter in letters[:5]:
            consumer = letter.projection if letter.version is None else f"{letter.projection} v{letter.version}"
            click.echo(f"    {consumer} event {letter.event_id} (position {letter.global_position}): {letter.reason}")


def _tolerances(values: tuple[str, ...]) -> dict[str, float]:
    tolerances: dict[str, float] = {}
    for value in values:
        column, sep, amount = value.partition("=")
        try:
            tolerances[column.strip()] = float(amount)
        except ValueError:
            sep = ""
        if not sep or not column.strip():
            raise ConfigurationError(f"--tolerance {value!r} must look like COLUMN=NUMBER, e.g. total_amount=0.01.")
    return tolerances


@cli.command("diff")
@click.argument("name")
@click.argument("a", type=int, required=False)
@click.argument("b", type=int, required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
@click.option("--markdown", "as_markdown", is_flag=True, help="Print the comparison as Markdown.")
@click.option("--html", "html_path", type=click.Path(dir_okay=False, path_type=Path), help="Also write HTML here.")
@click.option("--sample", "sample_size", default=5, show_default=True, type=click.IntRange(0), help="Samples/class.")
@click.option("--tolerance", "tolerances", multiple=True, help="COLUMN=X: numeric differences up to X match.")
@click.option("--tenant", help="Only this tenant's rows of a per-tenant projection (docs/versions.md, Tenants).")
@fail_cleanly
def diff_command(
    name: str,
    a: int | None,
    b: int | None,
    as_json: bool,
    as_markdown: bool,
    html_path: Path | None,
    sample_size: int,
    tolerances: tuple[str, ...],
    tenant: str | None,
) -> None:
    """Compare versions A (default: live) and B (default: newest candidate) of NAME; record it for the gate."""
    from projections import discover
    from warehouse.diff import (
        check_expectation,
        compare_versions,
        expectation_for,
        render_html,
        render_markdown,
        render_text,
        resolve_pair,
    )
    from warehouse.versions import validate_target

    registry = discover()
    validate_target(registry, name)
    parsed = _tolerances(tolerances)
    con = _lake()
    try:
        a, b = resolve_pair(con, registry, name, a, b, tenant=tenant)
        comparison, comparison_id = compare_versions(
            con, registry, name, a, b, sample_size=sample_size, tolerances=parsed, tenant=tenant
        )
        result = check_expectation(con, comparison, expectation_for(registry, name, comparison, b))
    finally:
        con.close()
    verdict = f"declared changes of {name} v{b}: {result}"
    if html_path is not None:
        html_path.write_text(render_html(comparison, verdict), encoding="utf-8")
    if as_json:
        click.echo(comparison.to_json())
    elif as_markdown:
        click.echo(render_markdown(comparison))
    else:
        click.echo(render_text(comparison))
    click.echo(f"\nrecorded as comparison {comparison_id} in meta.comparisons", err=as_json)
    click.echo(verdict, err=as_json)
    if html_path is not None:
        click.echo(f"HTML report: {html_path}", err=as_json)


class _Stop:
    """Set by SIGINT/SIGTERM: the loop finishes its current commit, then exits."""

    def __init__(self) -> None:
        self.requested = False

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True


@cli.command("follow")
@click.option(
    "--interval",
    default=1.0,
    show_default=True,
    type=click.FloatRange(0.05),
    help="Seconds between polls (at most: a NOTIFY from the store's trigger starts a cycle at once).",
)
@click.option(
    "--report-held-after",
    default=30.0,
    show_default=True,
    type=click.FloatRange(0),
    help="Name an open transaction that holds the safe head back for this many seconds.",
)
@click.option("--max-cycles", type=click.IntRange(1), hidden=True, help="Stop after this many cycles (tests).")
@fail_cleanly
def follow_command(interval: float, report_held_after: float, max_cycles: int | None) -> None:
    """Ingest and project continuously until SIGINT or SIGTERM; survives restarts of the store and the lake.

    One line per cycle that did something, one per outage (then retried with backoff) and one when it
    recovers; it exits only on a terminal error (exit 2) or a signal.
    """
    from pipelines.follow import Follower
    from projections import discover

    current = settings()
    registry = discover()
    stop = _Stop()
    previous: dict[int, Any] = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        previous[signum] = signal.signal(signum, stop)
    follower = Follower(
        current,
        registry,
        log=click.echo,  # flushes: a service's log is read as it is written
        warn=lambda line: click.echo(line, err=True),
        interval=interval,
        holder_after=report_held_after,
    )
    cycles = 0
    try:
        click.echo(f"following the {current.store_kind} event store every {interval:g} s; Ctrl-C stops")
        follower.wait(0)  # LISTEN before the first cycle: a commit during it is announced, none is missed
        while not stop.requested:
            wait = follower.cycle()
            cycles += 1
            if max_cycles is not None and cycles >= max_cycles:
                break
            follower.wait(wait, stopped=lambda: stop.requested)  # a NOTIFY from the store ends it early
    finally:
        follower.close(drain=not stop.requested)  # a signal stops the wide lane where it is
        for restored, handler in previous.items():
            signal.signal(restored, handler)
    click.echo("stopped" if stop.requested else f"stopped after {cycles} cycles")


def demo_projections() -> None:
    """The demo's projection part: cart_summary v1 live, v2 a candidate, the others live, then a diff."""
    from projections import discover
    from warehouse.diff import check_expectation, compare_versions, expectation_for, render_text
    from warehouse.versions import list_versions, project, promote, rebuild

    registry = discover()
    con = _lake()
    try:
        built = {(v.name, v.version) for v in list_versions(con)}
        if ("cart_summary", 1) not in built:
            rebuild(con, registry, "cart_summary", 1)
            promote(con, registry, "cart_summary", 1, actor="demo")
        results = project(con, registry)
        if ("cart_summary", 2) not in built:
            rebuild(con, registry, "cart_summary", 2)
        click.echo("\n-- projection versions (projectionist versions)")
        _echo_results(results)
        click.echo("\n".join(version_rows(con)))
        comparison, comparison_id = compare_versions(con, registry, "cart_summary", 1, 2, sample_size=2)
        result = check_expectation(con, comparison, expectation_for(registry, "cart_summary", comparison, 2))
    finally:
        con.close()
    click.echo("\n-- projectionist diff cart_summary 1 2")
    click.echo(render_text(comparison))
    click.echo(f"recorded as comparison {comparison_id}; declared changes of cart_summary v2: {result}")
    click.echo(
        '\nquery the live versions: projectionist sql "SELECT status, count(*), sum(total_amount) '
        'FROM analytics.cart_summary GROUP BY ALL"\n'
        "the candidate: projections.cart_summary_v2; promote it with `projectionist promote cart_summary 2`"
    )
