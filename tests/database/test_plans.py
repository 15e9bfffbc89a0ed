"""Plans that do not depend on statistics.

The queries that run inside the triggers and functions on every reservation,
purchase, cancel and sweep must use their intended index on a database whose
tables were never analyzed (autovacuum may be off), and with the generic plan
that PL/pgSQL caches after a few calls. Each query here is the function's own
statement with its variables as parameters; a fragment of it is looked up in
the function's source, so that the copy cannot drift from the definition.
"""

from __future__ import annotations

from typing import Any, LiteralString

import psycopg
import pytest
from psycopg import sql

from tests.support import STARTS_AT
from ticketing import allocations, events
from ticketing.queries import load

HOLDS = 20_000
BOUGHT = 10_000
# Rows per INSERT: each row of a statement re-reads slot rows that the statement
# already updated (docs/design.md, 4.3).
CHUNK = 200

# (name, function whose source holds `fragment`, fragment, PREPARE statement,
#  EXECUTE arguments, index the plan must use, indexes it must not use)
PLANS: list[tuple[str, str | None, str, LiteralString, str, str, tuple[str, ...]]] = [
    (
        "slot claim",
        "inventory_take",
        "ORDER BY random()",
        "PREPARE q(bigint, integer) AS SELECT slot FROM inventory_slots"
        " WHERE event_id = $1 AND capacity - reserved - purchased >= $2"
        " ORDER BY random() LIMIT 1 FOR UPDATE SKIP LOCKED",
        "(%(event)s, 1)",
        "inventory_slots_pkey",
        (),
    ),
    (
        "highest number of a slot",
        "ticket_numbers_take",
        "ORDER BY t.number DESC",
        "PREPARE q(bigint, integer, integer) AS SELECT t.number FROM tickets AS t"
        " WHERE t.event_id = $1 AND t.number BETWEEN $2 AND $3"
        " ORDER BY t.number DESC LIMIT 1",
        "(%(event)s, 1, 1000000)",
        "Backward using tickets_event_number_idx",
        ("tickets_number_excl",),
    ),
    (
        "pooled numbers of a slot",
        "ticket_numbers_take",
        "ORDER BY number LIMIT p_count",
        "PREPARE q(bigint, integer, integer, integer) AS SELECT number FROM ticket_number_pool"
        " WHERE event_id = $1 AND number BETWEEN $2 AND $3 ORDER BY number LIMIT $4",
        "(%(event)s, 1, 1000000, 2)",
        "ticket_number_pool_pkey",
        (),
    ),
    (
        "valid tickets of an allocation",
        "tickets_guard_insert",
        "count(*) FILTER (WHERE t.voided_at IS NULL)",
        "PREPARE q(bigint) AS SELECT count(*) FILTER (WHERE t.voided_at IS NULL)"
        " FROM tickets AS t WHERE t.allocation_id = $1",
        "(%(allocation)s)",
        "tickets_allocation_id_idx",
        ("tickets_number_excl",),
    ),
    (
        "refunded tickets by slot",
        "inventory_apply",
        "t.allocation_id = ANY (ARRAY(",
        "PREPARE q(bigint, bigint[]) AS WITH refunded AS MATERIALIZED ("
        " SELECT t.number, t.voided_at FROM tickets AS t"
        " WHERE t.allocation_id = ANY (ARRAY(SELECT unnest($2))))"
        " SELECT s.slot, count(*)::integer FROM refunded AS r"
        " JOIN inventory_slots AS s ON s.event_id = $1"
        " AND r.number BETWEEN s.first_number AND s.first_number + s.capacity - 1"
        " WHERE r.voided_at IS NULL GROUP BY s.slot ORDER BY s.slot",
        "(%(event)s, ARRAY[%(allocation)s]::bigint[])",
        "tickets_allocation_id_idx",
        ("tickets_number_excl",),
    ),
    (
        "voiding refunded tickets",
        "inventory_apply",
        "WHERE t.id = r.id AND r.voided_at IS NULL",
        "PREPARE q(bigint[]) AS WITH refunded AS MATERIALIZED ("
        " SELECT t.id, t.voided_at FROM tickets AS t"
        " WHERE t.allocation_id = ANY (ARRAY(SELECT unnest($1))))"
        " UPDATE tickets AS t SET voided_at = greatest(now(), t.created_at)"
        " FROM refunded AS r WHERE t.id = r.id AND r.voided_at IS NULL",
        "(ARRAY[%(allocation)s]::bigint[])",
        "tickets_allocation_id_idx",
        ("tickets_number_excl", "Seq Scan on tickets"),
    ),
    (
        "lapsed holds of an event (availability)",
        None,
        "",
        "PREPARE q(bigint) AS SELECT coalesce(sum(a.quantity), 0) FROM allocations AS a"
        " WHERE a.event_id = $1 AND a.status = 'reserved'"
        " AND a.expires_at <= statement_timestamp()",
        "(%(event)s)",
        "allocations_event_hold_expiry_idx",
        (),
    ),
]


#: The tables whose plans are checked without statistics.
NEVER_ANALYZED = ("allocations", "tickets", "inventory_slots", "ticket_number_pool")


@pytest.fixture
def sold(conn: psycopg.Connection[Any], admin_conn: psycopg.Connection[Any]) -> dict[str, int]:
    """An event with HOLDS holds of 2, BOUGHT of them purchased (bulk statements, through the
    triggers), and a few through the API, in tables that were never analyzed."""
    # Never analyzed: autovacuum (on in a throwaway server) must leave these tables alone.
    for table in NEVER_ANALYZED:
        admin_conn.execute(
            sql.SQL("ALTER TABLE {} SET (autovacuum_enabled = false)").format(sql.Identifier(table))
        )
    event = events.create_event(conn, name="plans", starts_at=STARTS_AT, total_tickets=1_000_000)
    for first in range(1, HOLDS + 1, CHUNK):
        admin_conn.execute(
            "INSERT INTO allocations (event_id, fingerprint, quantity)"
            " SELECT %s, 'b' || g, 2 FROM generate_series(%s::integer, %s::integer) AS g",
            (event.id, first, min(HOLDS, first + CHUNK - 1)),
        )
    admin_conn.execute(
        "UPDATE allocations SET status = 'purchased'"
        " WHERE event_id = %s AND fingerprint IN"
        " (SELECT 'b' || g FROM generate_series(1, %s::integer) AS g)",
        (event.id, BOUGHT),
    )
    hold = allocations.reserve(conn, event_id=event.id, fingerprint="api", quantity=2)
    allocations.purchase(conn, allocation_id=hold.id, fingerprint="api")
    return {"event": event.id, "allocation": hold.id}


def _plan(conn: psycopg.Connection[Any], prepare: LiteralString, args: str) -> str:
    with conn.transaction(force_rollback=True):
        conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        conn.execute(prepare)
        try:
            rows = conn.execute(f"EXPLAIN EXECUTE q{args}").fetchall()  # type: ignore[arg-type]
        finally:
            conn.execute("DEALLOCATE q")
    return "\n".join(str(row[0]) for row in rows)


def test_the_tables_were_never_analyzed(
    admin_conn: psycopg.Connection[Any], sold: dict[str, int]
) -> None:
    rows = admin_conn.execute(
        "SELECT relname, reltuples FROM pg_class WHERE relname = ANY(%s) ORDER BY relname",
        (list(NEVER_ANALYZED),),
    ).fetchall()
    assert rows == [
        ("allocations", -1.0),
        ("inventory_slots", -1.0),
        ("ticket_number_pool", -1.0),
        ("tickets", -1.0),
    ]
    valid = admin_conn.execute("SELECT count(*) FROM tickets").fetchone()
    assert valid == (2 * BOUGHT + 2,)


def test_each_hot_query_uses_its_index_under_a_generic_plan_without_statistics(
    admin_conn: psycopg.Connection[Any], sold: dict[str, int]
) -> None:
    wrong: dict[str, str] = {}
    for name, function, fragment, prepare, args, index, avoided in PLANS:
        if function is not None:
            source = admin_conn.execute(
                "SELECT prosrc FROM pg_proc WHERE proname = %s", (function,)
            ).fetchone()
            assert source is not None
            assert fragment in " ".join(str(source[0]).split()), (function, fragment)
        plan = _plan(admin_conn, prepare, args % sold)
        if index not in plan or any(avoid in plan for avoid in avoided):
            wrong[name] = plan
    assert wrong == {}


@pytest.mark.parametrize(
    ("query", "index"),
    [("expire_due", "allocations_hold_expiry_idx")],
)
def test_the_sweeper_uses_its_index_under_a_generic_plan_without_statistics(
    admin_conn: psycopg.Connection[Any], sold: dict[str, int], query: str, index: str
) -> None:
    sql = load("allocations.sql")[query]
    with admin_conn.transaction(force_rollback=True):
        admin_conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        rows = admin_conn.execute(
            "EXPLAIN " + sql,  # type: ignore[operator]
            {"limit": 1000, "lock_timeout": "3s"},
        ).fetchall()
    plan = "\n".join(str(row[0]) for row in rows)
    assert index in plan, plan


def test_availability_uses_the_lapsed_holds_index_without_statistics(
    admin_conn: psycopg.Connection[Any], sold: dict[str, int]
) -> None:
    sql = load("events.sql")["get_availability"]
    with admin_conn.transaction(force_rollback=True):
        admin_conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        rows = admin_conn.execute(
            "EXPLAIN " + sql,  # type: ignore[operator]
            {"event_id": sold["event"]},
        ).fetchall()
    plan = "\n".join(str(row[0]) for row in rows)
    assert "allocations_event_hold_expiry_idx" in plan, plan
