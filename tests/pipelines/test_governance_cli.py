"""``projectionist explain`` and ``projectionist events`` end to end, the diff's link to explain, the asset check."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import dagster as dg
import pytest
from click.testing import CliRunner

from eventstore.connection import connect
from eventstore.demo import append_demo_shop
from eventstore.native_store import NewEvent, append
from pipelines.checks import build_checks
from pipelines.cli import cli
from projections import discover
from tests.pipelines.conftest import resource_for


def run(*args: str, home: Path, env: dict[str, str]) -> tuple[int, str]:
    result = CliRunner(env=env).invoke(cli, ["--home", str(home), *args])
    return result.exit_code, result.output


def test_explain_events_the_diff_link_and_the_unhandled_check(
    store_dsn: str, tmp_path: Path, lake_env: dict[str, str]
) -> None:
    env = {**lake_env, "PROJECTIONIST_EVENT_STORE_DSN": store_dsn}
    append_demo_shop(store_dsn, events=300, writers=2, seed=9, hold_seconds=0)
    for args in (
        ["ingest"],
        ["rebuild", "cart_summary", "--version", "1"],
        ["promote", "cart_summary", "1", "--force"],
        ["rebuild", "cart_summary", "--version", "2"],
    ):
        code, output = run(*args, home=tmp_path, env=env)
        assert code == 0, output

    # The diff's sampled keys carry the explain command; it runs as printed.
    code, output = run("diff", "cart_summary", "1", "2", "--markdown", "--sample", "1", home=tmp_path, env=env)
    assert code == 0, output
    commands = [line.split("explain: ", 1)[1] for line in output.splitlines() if "explain: " in line]
    assert commands and all(c.startswith("projectionist explain cart_summary cart-") for c in commands)
    command = shlex.split(commands[0].rstrip(" |"))
    assert command[-2:] == ["--version", "2"]
    code, output = run(*command[1:], "--json", home=tmp_path, env=env)
    assert code == 0, output
    explained = json.loads(output)
    cart = explained["key"]["cart_id"]
    with connect(store_dsn) as conn:
        stored = [
            int(r[0])
            for r in conn.execute(
                "SELECT global_position FROM events WHERE stream_id = %s ORDER BY stream_version", [cart]
            ).fetchall()
        ]
    assert [e["global_position"] for e in explained["events"]] == stored
    assert explained["version"] == 2 and explained["row"]["currency"] in ("EUR", "USD")
    code, output = run("explain", "cart_summary", cart, home=tmp_path, env=env)
    assert code == 0 and "cart_summary v1 (live, projections.cart_summary_v1" in output, output
    assert f"built from {len(stored)} event(s) of 1 stream(s)" in output
    for args, message in (
        (["explain", "cart_summary", "cart-nope"], "error: no row of cart_summary v1 has cart_id = 'cart-nope'"),
        (["explain", "cart_sumary", cart], "error: unknown projection 'cart_sumary' (did you mean 'cart_summary'?)"),
        (["explain", "cart_summary", cart, "--version", "3"], "error: cart_summary v3 is not built"),
    ):
        code, output = run(*args, home=tmp_path, env=env)
        assert code == 2 and message in output, output

    # The catalog of the demo shop: ItemAdded v1 and v2, currency only in v2.
    code, output = run("events", "--json", home=tmp_path, env=env)
    assert code == 0, output
    fields = {(e["event_type"], e["event_version"]): {f["field"] for f in e["fields"]} for e in json.loads(output)}
    assert fields[("ItemAdded", 1)] == {"product_id", "quantity", "unit_price"}
    assert fields[("ItemAdded", 2)] == {"product_id", "quantity", "unit_price", "currency"}
    # (The check passing on the demo shop is asserted by tests/pipelines/test_definitions.py's job run.)

    # A type nobody handles: the check fails and names it; `events` flags it; --since shows it as new.
    with connect(store_dsn) as conn:
        append(conn, "payment-7", "payment", [NewEvent("PaymentRequested", {"amount": 12.5})])
        conn.commit()
    assert run("ingest", home=tmp_path, env=env)[0] == 0
    check = next(c for c in build_checks(discover()) if "no_unhandled_event_types" in str(c.check_keys))
    result = evaluate(check, resource_for(store_dsn, lake_env, tmp_path))
    assert not result.passed
    assert (
        result.description
        == "unhandled event types and versions: PaymentRequested v1 (1 events of stream type payment)"
    )
    code, output = run("events", home=tmp_path, env=env)
    assert code == 0 and "payment / PaymentRequested v1: 1 events" in output, output
    assert "    ! unhandled: no projection consumes PaymentRequested" in output
    code, output = run("events", "--since", "2026-06-01", home=tmp_path, env=env)
    assert code == 0 and output.startswith("schema changes since 2026-06-01 00:00 UTC: 1\n  new: PaymentRequested v1")


def evaluate(check: dg.AssetChecksDefinition, resource: object) -> dg.AssetCheckResult:
    """Run one asset check directly, with the resource of the test."""
    result = check(projectionist=resource)  # type: ignore[call-arg]
    assert isinstance(result, dg.AssetCheckResult)
    return result


LEAKY = """
from projections import Column, Projection, Sql

PROJECTION = Projection(
    name="contacts",
    version=1,
    description="Customers and their email (copied into a column said to be public: a leak).",
    key=("customer_id",),
    consumes=("CartOpened",),
    columns=(
        Column("customer_id", "VARCHAR", "The customer."),
        Column("email", "VARCHAR", "Their email."),
    ),
    body=Sql(
        "SELECT data->>'customer_id' AS customer_id, max(data->>'email') AS email, "
        "max(global_position) AS last_global_position FROM events GROUP BY 1"
    ),
    stream_keys=Sql("SELECT DISTINCT stream_id, data->>'customer_id' AS customer_id FROM events"),
)
"""


def test_privacy_lists_declarations_forget_removes_a_customer_and_the_check_names_a_leak(
    store_dsn: str, tmp_path: Path, lake_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {**lake_env, "PROJECTIONIST_EVENT_STORE_DSN": store_dsn}
    append_demo_shop(store_dsn, events=200, writers=2, seed=4, hold_seconds=0)
    assert run("ingest", home=tmp_path, env=env)[0] == 0
    assert run("project", home=tmp_path, env=env)[0] == 0
    code, output = run("privacy", home=tmp_path, env=env)
    assert code == 0, output
    assert "CartOpened v1: public customer_id; every other field is private" in output
    assert output.endswith("subject field (forget): customer_id\nno private value reaches analytics.*\n")
    check = next(c for c in build_checks(discover()) if "no_private_values_in_analytics" in str(c.check_keys))
    assert evaluate(check, resource_for(store_dsn, lake_env, tmp_path)).passed

    with connect(store_dsn) as conn:
        customer, email = conn.execute(
            "SELECT data->>'customer_id', data->>'email' FROM events WHERE event_type = 'CartOpened' LIMIT 1"
        ).fetchone()
    code, output = run("forget", customer, home=tmp_path, env=env)
    assert code == 2 and "forget cannot be undone" in output and "Nothing was changed." in output, output
    code, output = run("forget", customer, "--dry-run", home=tmp_path, env=env)
    assert code == 0 and "would mask" in output, output
    code, output = run("forget", customer, "--yes", "--json", home=tmp_path, env=env)
    assert code == 0, output
    done = json.loads(output[output.index("{") :])
    assert done["events"] >= 1 and done["values_removed"] == 1 and done["keys_reprojected"]["cart_summary v2"] >= 1
    code, output = run(
        "sql",
        "--csv",
        "SELECT count(*) FROM raw.all_events WHERE contains(data::VARCHAR, ?)".replace("?", f"'{email}'"),
        home=tmp_path,
        env=env,
    )
    assert code == 0 and output.splitlines()[-1] == "0", output
    code, output = run("forget", "customer-nobody", "--yes", "--no-ingest", home=tmp_path, env=env)
    assert code == 0 and "nothing to forget" in output, output

    # A projection copying the email into a public column: `privacy` exits 1 naming it; so does the check.
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "contacts.py").write_text(LEAKY, encoding="utf-8")
    leaky_env = {**env, "PROJECTIONIST_PROJECTIONS": str(folder)}
    assert run("project", home=tmp_path, env=leaky_env)[0] == 0
    code, output = run("privacy", home=tmp_path, env=leaky_env)
    assert code == 1, output
    assert "  ! analytics.contacts.email holds " in output and "private field CartOpened v1.email" in output
    monkeypatch.setenv("PROJECTIONIST_PROJECTIONS", str(folder))
    failed = evaluate(check, resource_for(store_dsn, lake_env, tmp_path))
    assert not failed.passed and "analytics.contacts.email holds" in str(failed.description)
