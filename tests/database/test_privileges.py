"""Least privilege (migration 0008): what the application's role may and may not do.

`conn` logs in as a role that holds only ticketing_app. Its raw SQL cannot
oversell, rewrite history, or move an allocation off the state machine;
every refused statement leaves every table exactly as it was.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any, LiteralString

import psycopg
import pytest
from psycopg import errors as pg
from psycopg import sql

from tests.support import APP_LOGIN, STARTS_AT, TABLES, assert_consistent, scalar, table_rows
from ticketing import admin, allocations, db, events, tickets
from ticketing.errors import Forbidden, SoldOut
from ticketing.models import Allocation, Event

OWNER_DEFINED_FUNCTIONS = {
    "events_open_inventory",
    "events_guard_capacity",
    "allocations_apply_insert",
    "allocations_apply_updates",
    "events_guard_delete",
    "events_record_capacity",
}
# Everything the application's role may do to a table, column by column.
APP_COLUMN_GRANTS = {
    ("events", "INSERT"): {"name", "starts_at", "total_tickets", "max_per_buyer"},
    ("allocations", "INSERT"): {
        "event_id",
        "fingerprint",
        "quantity",
        "expires_at",
        "idempotency_key",
    },
    ("allocations", "UPDATE"): {"status"},
}


@pytest.fixture
def sale(conn: psycopg.Connection[Any]) -> tuple[Event, list[Allocation]]:
    """An event with a hold, a purchase and a cancelled purchase of three buyers."""
    event = events.create_event(
        conn, name="show", starts_at=STARTS_AT, total_tickets=10, max_per_buyer=4, slots=2
    )
    held = allocations.reserve(conn, event_id=event.id, fingerprint="ann", quantity=2)
    bought = allocations.reserve(conn, event_id=event.id, fingerprint="bob", quantity=3)
    bought = allocations.purchase(conn, allocation_id=bought.id, fingerprint="bob")
    gone = allocations.reserve(conn, event_id=event.id, fingerprint="cy", quantity=1)
    allocations.purchase(conn, allocation_id=gone.id, fingerprint="cy")
    gone = allocations.cancel(conn, allocation_id=gone.id, fingerprint="cy")
    return event, [held, bought, gone]


# --- the roles and the catalog ---------------------------------------------------------------


def test_both_roles_exist_cannot_log_in_and_the_login_holds_only_ticketing_app(
    admin_conn: psycopg.Connection[Any],
) -> None:
    rows = admin_conn.execute(
        "SELECT rolname, rolcanlogin, rolsuper, rolcreaterole, rolcreatedb, rolbypassrls "
        "FROM pg_roles WHERE rolname IN ('ticketing_owner', 'ticketing_app') ORDER BY 1"
    ).fetchall()
    assert rows == [
        ("ticketing_app", False, False, False, False, False),
        ("ticketing_owner", False, False, False, False, False),
    ]
    member_of = admin_conn.execute(
        "SELECT r.rolname FROM pg_auth_members AS m "
        "JOIN pg_roles AS r ON r.oid = m.roleid "
        "WHERE m.member = %s::regrole ORDER BY 1",
        (APP_LOGIN,),
    ).fetchall()
    assert member_of == [("ticketing_app",)]
    # ticketing_app itself is a member of nothing.
    assert (
        scalar(
            admin_conn,
            "SELECT count(*) FROM pg_auth_members WHERE member = 'ticketing_app'::regrole",
        )
        == 0
    )


def test_ticketing_owner_owns_every_object_of_the_schema(
    admin_conn: psycopg.Connection[Any],
) -> None:
    # Relations, sequences, functions and types in public that no extension
    # owns, except yoyo's bookkeeping tables.
    rows = admin_conn.execute(
        """
        SELECT kind, name, owner FROM (
            SELECT 'relation' AS kind, c.relname::text AS name, c.relowner::regrole::text AS owner,
                   c.oid AS oid, 'pg_class'::regclass AS catalog
            FROM pg_class AS c
            WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'v', 'S')
              AND c.relname NOT LIKE '%yoyo%'
            UNION ALL
            SELECT 'function', p.proname, p.proowner::regrole::text, p.oid, 'pg_proc'::regclass
            FROM pg_proc AS p
            WHERE p.pronamespace = 'public'::regnamespace
            UNION ALL
            SELECT 'type', t.typname, t.typowner::regrole::text, t.oid, 'pg_type'::regclass
            FROM pg_type AS t
            WHERE t.typnamespace = 'public'::regnamespace AND t.typtype = 'c'
              AND NOT EXISTS (SELECT 1 FROM pg_class AS c
                              WHERE c.oid = t.typrelid AND c.relkind <> 'c')
        ) AS o
        WHERE NOT EXISTS (SELECT 1 FROM pg_depend AS d
                          WHERE d.classid = o.catalog AND d.objid = o.oid AND d.deptype = 'e')
        ORDER BY kind, name
        """
    ).fetchall()
    owners = {(kind, name): owner for kind, name, owner in rows}
    assert set(owners.values()) == {"ticketing_owner"}, {
        key: owner for key, owner in owners.items() if owner != "ticketing_owner"
    }
    relations = {name for kind, name in owners if kind == "relation"}
    assert relations >= set(TABLES) | {"event_counters"}
    assert ("type", "allocation_change") in owners
    assert sum(1 for kind, _ in owners if kind == "function") == 25


def test_the_application_role_has_exactly_the_table_privileges_the_api_needs(
    admin_conn: psycopg.Connection[Any],
) -> None:
    table_privileges = ["SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER"]
    for table in [*TABLES, "event_counters"]:
        for privilege in table_privileges:
            expected = privilege == "SELECT"
            assert (
                scalar(
                    admin_conn,
                    "SELECT has_table_privilege(%s, %s, %s)",
                    (APP_LOGIN, table, privilege),
                )
                is expected
            ), (table, privilege)
        columns = [
            row[0]
            for row in admin_conn.execute(
                "SELECT attname FROM pg_attribute "
                "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
                (table,),
            ).fetchall()
        ]
        for privilege in ("INSERT", "UPDATE", "REFERENCES"):
            allowed = {
                column
                for column in columns
                if scalar(
                    admin_conn,
                    "SELECT has_column_privilege(%s, %s, %s, %s)",
                    (APP_LOGIN, table, column, privilege),
                )
            }
            assert allowed == APP_COLUMN_GRANTS.get((table, privilege), set()), (table, privilege)


def test_the_application_role_may_execute_none_of_the_functions(
    admin_conn: psycopg.Connection[Any],
) -> None:
    # Not even inventory_resplit: create_event(slots=...) passes the slot count to
    # the insert trigger instead.
    rows = admin_conn.execute(
        "SELECT p.proname FROM pg_proc AS p "
        "WHERE p.pronamespace = 'public'::regnamespace "
        "AND p.proowner = 'ticketing_owner'::regrole "
        "AND has_function_privilege(%s, p.oid, 'EXECUTE') ORDER BY 1",
        (APP_LOGIN,),
    ).fetchall()
    assert rows == []


def test_functions_that_write_for_the_application_run_as_owner_with_a_pinned_search_path(
    admin_conn: psycopg.Connection[Any],
) -> None:
    rows = admin_conn.execute(
        "SELECT proname, prosecdef, proconfig FROM pg_proc "
        "WHERE pronamespace = 'public'::regnamespace AND proowner = 'ticketing_owner'::regrole"
    ).fetchall()
    definers = {name: config for name, definer, config in rows if definer}
    assert set(definers) == OWNER_DEFINED_FUNCTIONS
    assert set(map(tuple, definers.values())) == {("search_path=public, pg_temp",)}
    # Every other function runs as its caller and leaves search_path alone.
    assert all(config is None for name, definer, config in rows if not definer)


def test_the_application_role_cannot_create_objects_or_change_roles(
    admin_conn: psycopg.Connection[Any],
) -> None:
    checks = {
        "SELECT has_schema_privilege(%s, 'public', 'CREATE')": False,
        "SELECT has_schema_privilege(%s, 'public', 'USAGE')": True,
        "SELECT pg_has_role(%s, 'ticketing_owner', 'MEMBER')": False,
        "SELECT pg_has_role(%s, 'ticketing_app', 'USAGE')": True,
    }
    for query, expected in checks.items():
        assert scalar(admin_conn, query, (APP_LOGIN,)) is expected, query


# --- the whole API as the application role ----------------------------------------------------


def test_the_whole_api_works_as_the_application_role(conn: psycopg.Connection[Any]) -> None:
    assert scalar(conn, "SELECT current_user") == APP_LOGIN
    event = events.create_event(
        conn, name="show", starts_at=STARTS_AT, total_tickets=130, max_per_buyer=5, slots=3
    )
    assert events.get_event(conn, event.id) == event
    assert [e.id for e in events.list_events(conn)] == [event.id]
    hold = allocations.reserve(
        conn, event_id=event.id, fingerprint="ann", quantity=2, idempotency_key="k1"
    )
    again = allocations.reserve(
        conn, event_id=event.id, fingerprint="ann", quantity=2, idempotency_key="k1"
    )
    assert again == hold
    bought = allocations.purchase(conn, allocation_id=hold.id, fingerprint="ann")
    issued = tickets.list_for_allocation(conn, bought.id)
    assert len(issued) == 2
    assert tickets.get_by_code(conn, issued[0].code) == issued[0]
    lapsing = allocations.reserve(
        conn, event_id=event.id, fingerprint="bob", quantity=1, hold=timedelta(milliseconds=1)
    )
    conn.execute("SELECT pg_sleep(0.05)")
    assert allocations.expire_due(conn) == 1
    assert allocations.get_allocation(conn, lapsing.id).status == "expired"
    assert allocations.cancel(conn, allocation_id=bought.id, fingerprint="ann").status == (
        "cancelled"
    )
    assert [a.id for a in allocations.list_for_buyer(conn, fingerprint="ann")] == [hold.id]
    availability = events.get_availability(conn, event.id)
    assert (availability.reserved, availability.purchased, availability.available) == (0, 0, 130)
    assert [s.id for s in admin.event_status(conn)] == [event.id]
    assert admin.check_invariants(conn) == []


# --- hostile raw SQL from the application role ------------------------------------------------

# Each statement is refused for lack of privilege. {event} is the sale's event id.
REFUSED: list[LiteralString] = [
    "UPDATE inventory_slots SET capacity = capacity + 100",
    "UPDATE inventory_slots SET reserved = 0",
    "INSERT INTO inventory_slots (event_id, slot, first_number, capacity) "
    "VALUES ({event}, 9, 11, 50)",
    "DELETE FROM inventory_slots",
    "UPDATE event_inventory SET total_tickets = 1000",
    "DELETE FROM buyer_inventory",
    "INSERT INTO ticket_number_pool (event_id, number) VALUES ({event}, 1)",
    "INSERT INTO tickets (event_id, allocation_id, number) SELECT event_id, id, 9 FROM allocations",
    "UPDATE tickets SET voided_at = now()",
    "DELETE FROM tickets",
    "DELETE FROM allocations",
    "DELETE FROM events",
    "UPDATE events SET total_tickets = total_tickets + 100",
    "UPDATE events SET max_per_buyer = NULL",
    "UPDATE allocations SET quantity = 1",
    "UPDATE allocations SET fingerprint = 'mallory'",
    "UPDATE allocations SET event_id = event_id",
    "UPDATE allocations SET expires_at = now() + interval '1 day'",
    "UPDATE allocations SET created_at = now() - interval '1 day'",
    "INSERT INTO allocations (event_id, fingerprint, quantity, status) "
    "VALUES ({event}, 'mallory', 1, 'purchased')",
    "INSERT INTO allocations (event_id, fingerprint, quantity, created_at, expires_at) "
    "VALUES ({event}, 'mallory', 1, now() - interval '1 hour', now() - interval '1 minute')",
    "INSERT INTO allocations (id, event_id, fingerprint, quantity) "
    "OVERRIDING SYSTEM VALUE VALUES (999, {event}, 'mallory', 1)",
    "TRUNCATE allocations",
    "TRUNCATE tickets",
    "TRUNCATE inventory_slots",
    "TRUNCATE allocation_history",
    "UPDATE allocation_history SET new_status = 'cancelled'",
    "DELETE FROM allocation_history",
    "INSERT INTO allocation_history (allocation_id, event_id, fingerprint, new_status, "
    "new_quantity) VALUES (999, {event}, 'mallory', 'purchased', 1)",
    "UPDATE event_history SET new_total_tickets = 1000",
    "DELETE FROM event_history",
    "SELECT inventory_move({event}, 1, true)",
    "SELECT inventory_take({event}, 5, '{{}}')",
    "SELECT inventory_layout({event}, 10, 1, NULL)",
    "SELECT inventory_apply(ARRAY[]::allocation_change[])",
    "SELECT * FROM ticket_numbers_take({event}, 1, 10, 1)",
    "SELECT allocations_reclaim_lapsed({event}, NULL, '{{}}')",
    "SELECT inventory_resplit({event}, 1)",
    "SELECT * FROM inventory_slots FOR UPDATE",
    "LOCK TABLE inventory_slots IN EXCLUSIVE MODE",
    "LOCK TABLE allocations IN ACCESS EXCLUSIVE MODE",
    "ALTER TABLE allocations DISABLE TRIGGER ALL",
    "ALTER TABLE inventory_slots DROP CONSTRAINT inventory_slots_within_capacity",
    "DROP TRIGGER allocations_apply_insert ON allocations",
    "CREATE OR REPLACE FUNCTION inventory_take(bigint, integer, bigint[]) RETURNS integer "
    "LANGUAGE sql AS 'SELECT 1'",
    "CREATE TABLE public.inventory_slots_copy (slot integer)",
    "SET session_replication_role = replica",
    "SET ROLE ticketing_owner",
    "GRANT ticketing_owner TO " + APP_LOGIN,
    "ALTER ROLE " + APP_LOGIN + " SUPERUSER",
]


@pytest.mark.parametrize("statement", REFUSED)
def test_raw_sql_beyond_the_applications_privileges_is_refused_and_changes_nothing(
    conn: psycopg.Connection[Any],
    admin_conn: psycopg.Connection[Any],
    sale: tuple[Event, list[Allocation]],
    statement: LiteralString,
) -> None:
    event, _ = sale
    before = table_rows(admin_conn)
    with pytest.raises(pg.InsufficientPrivilege), conn.transaction():  # LOCK needs one
        conn.execute(statement.format(event=event.id))
    assert table_rows(admin_conn) == before
    assert admin.check_invariants(admin_conn) == []
    assert scalar(conn, "SELECT current_user") == APP_LOGIN


# (statement, SQLSTATE): allowed by privilege, refused by the guards.
GUARDED: list[tuple[LiteralString, str]] = [
    # purchased (bob) -> reserved, cancelled (cy) -> purchased, reserved -> expired early.
    ("UPDATE allocations SET status = 'reserved' WHERE fingerprint = 'bob'", "TK003"),
    ("UPDATE allocations SET status = 'purchased' WHERE fingerprint = 'cy'", "TK003"),
    ("UPDATE allocations SET status = 'reserved' WHERE fingerprint = 'cy'", "TK003"),
    ("UPDATE allocations SET status = 'expired' WHERE fingerprint = 'ann'", "TK003"),
    ("UPDATE allocations SET status = 'sold'", "TK003"),
    # Holds beyond capacity or the buyer limit, one row or many.
    (
        "INSERT INTO allocations (event_id, fingerprint, quantity) VALUES ({event}, 'dan', 6)",
        "TK002",
    ),
    (
        "INSERT INTO allocations (event_id, fingerprint, quantity) "
        "SELECT {event}, 'buyer' || n, 1 FROM generate_series(1, 6) AS n",
        "TK001",
    ),
    (
        "INSERT INTO allocations (event_id, fingerprint, quantity) "
        "SELECT {event}, 'dan', 1 FROM generate_series(1, 5) AS n",
        "TK002",
    ),
    (
        "INSERT INTO allocations (event_id, fingerprint, quantity, expires_at) "
        "VALUES ({event}, 'dan', 1, now() + interval '8 days')",
        "23514",
    ),
]


@pytest.mark.parametrize(("statement", "sqlstate"), GUARDED)
def test_raw_sql_within_privileges_cannot_leave_the_rules(
    conn: psycopg.Connection[Any],
    admin_conn: psycopg.Connection[Any],
    sale: tuple[Event, list[Allocation]],
    statement: LiteralString,
    sqlstate: str,
) -> None:
    event, _ = sale
    before = table_rows(admin_conn)
    with pytest.raises(psycopg.Error) as raised:
        conn.execute(statement.format(event=event.id))
    assert raised.value.sqlstate == sqlstate
    assert table_rows(admin_conn) == before
    assert admin.check_invariants(admin_conn) == []


def test_a_purchase_after_expiry_is_refused_even_by_raw_sql(
    conn: psycopg.Connection[Any], admin_conn: psycopg.Connection[Any]
) -> None:
    event = events.create_event(conn, name="show", starts_at=STARTS_AT, total_tickets=3)
    hold = allocations.reserve(
        conn, event_id=event.id, fingerprint="ann", quantity=1, hold=timedelta(milliseconds=1)
    )
    conn.execute("SELECT pg_sleep(0.05)")
    with pytest.raises(psycopg.Error) as raised:
        conn.execute("UPDATE allocations SET status = 'purchased' WHERE id = %s", (hold.id,))
    assert raised.value.sqlstate == "TK004"
    assert scalar(admin_conn, "SELECT count(*) FROM tickets") == 0


def test_raw_sql_may_make_allowed_transitions_and_everything_stays_counted(
    conn: psycopg.Connection[Any], sale: tuple[Event, list[Allocation]]
) -> None:
    # The state machine is the rule: an allowed transition is allowed to any writer.
    event, (held, bought, _) = sale
    conn.execute("UPDATE allocations SET status = 'cancelled' WHERE id = %s", (bought.id,))
    conn.execute("UPDATE allocations SET status = 'purchased' WHERE id = %s", (held.id,))
    availability = events.get_availability(conn, event.id)
    assert (availability.reserved, availability.purchased, availability.available) == (0, 2, 8)
    assert len(tickets.list_for_allocation(conn, held.id)) == 2
    assert admin.check_invariants(conn) == []


def test_temporary_tables_cannot_stand_in_for_the_counters(
    conn: psycopg.Connection[Any], admin_conn: psycopg.Connection[Any]
) -> None:
    # The owner's functions search public before pg_temp: counters, tickets and the
    # ledger go to the real tables even when the caller's session shadows them.
    event = events.create_event(conn, name="show", starts_at=STARTS_AT, total_tickets=4)
    for table in (
        "inventory_slots",
        "event_inventory",
        "buyer_inventory",
        "tickets",
        "ticket_number_pool",
        "allocation_history",
    ):
        conn.execute(f"CREATE TEMP TABLE {table} (LIKE public.{table})")
    hold = allocations.reserve(conn, event_id=event.id, fingerprint="ann", quantity=3)
    allocations.purchase(conn, allocation_id=hold.id, fingerprint="ann")
    with pytest.raises(SoldOut):
        allocations.reserve(conn, event_id=event.id, fingerprint="bob", quantity=2)
    assert scalar(conn, "SELECT count(*) FROM pg_temp.inventory_slots") == 0
    assert scalar(conn, "SELECT count(*) FROM pg_temp.tickets") == 0
    assert scalar(admin_conn, "SELECT purchased FROM event_counters") == 3
    assert scalar(admin_conn, "SELECT count(*) FROM tickets WHERE voided_at IS NULL") == 3
    assert scalar(admin_conn, "SELECT count(*) FROM allocation_history") == 2
    assert admin.check_invariants(admin_conn) == []


def test_a_privilege_error_from_the_api_is_forbidden(
    admin_conn: psycopg.Connection[Any], dsn: str
) -> None:
    # A login that is not a member of ticketing_app gets a typed error, not a raw one. Roles
    # belong to the cluster: this one is named for the test's database and dropped after it.
    dbname = str(scalar(admin_conn, "SELECT current_database()"))
    nobody_role = f"ticketing_test_nobody_{dbname}"
    role = sql.Identifier(nobody_role)
    admin_conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(role))
    try:
        nobody = dsn.replace(f"//{APP_LOGIN}@", f"//{nobody_role}@")
        with db.connect(nobody) as stranger:
            with pytest.raises(Forbidden, match="permission denied for table events"):
                events.create_event(stranger, name="x", starts_at=STARTS_AT, total_tickets=1)
            with pytest.raises(Forbidden):
                allocations.get_allocation(stranger, 1)
        assert scalar(admin_conn, "SELECT count(*) FROM events") == 0
    finally:
        admin_conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(role))
    assert (
        scalar(admin_conn, "SELECT count(*) FROM pg_roles WHERE rolname = %s", (nobody_role,)) == 0
    )


# --- races as the application role ------------------------------------------------------------


@pytest.fixture
def app_connections(dsn: str) -> Iterator[list[psycopg.Connection[Any]]]:
    connections = [db.connect(dsn) for _ in range(8)]
    try:
        yield connections
    finally:
        for connection in connections:
            connection.close()


def test_concurrent_raw_inserts_by_the_application_role_never_oversell(
    conn: psycopg.Connection[Any],
    admin_conn: psycopg.Connection[Any],
    app_connections: list[psycopg.Connection[Any]],
) -> None:
    event = events.create_event(conn, name="show", starts_at=STARTS_AT, total_tickets=50, slots=4)
    barrier = threading.Barrier(len(app_connections))
    taken: list[int] = []
    refused: list[str] = []
    lock = threading.Lock()

    def buyer(index: int, connection: psycopg.Connection[Any]) -> None:
        barrier.wait()
        for attempt in range(10):
            try:
                connection.execute(
                    "INSERT INTO allocations (event_id, fingerprint, quantity) VALUES (%s, %s, 1)",
                    (event.id, f"buyer-{index}-{attempt}"),
                )
            except psycopg.Error as exc:
                with lock:
                    refused.append(str(exc.sqlstate))
            else:
                with lock:
                    taken.append(index)

    threads = [
        threading.Thread(target=buyer, args=(index, connection))
        for index, connection in enumerate(app_connections)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(taken) == 50
    assert sorted(set(refused)) == ["TK001"]
    assert len(refused) == 30
    assert scalar(admin_conn, "SELECT reserved FROM event_counters") == 50
    assert scalar(admin_conn, "SELECT count(*) FROM allocation_history") == 50
    assert_consistent(admin_conn)
    assert admin.check_invariants(admin_conn) == []


def test_the_slot_count_setting_is_bounded_and_applies_to_one_event(
    conn: psycopg.Connection[Any], admin_conn: psycopg.Connection[Any]
) -> None:
    insert: LiteralString = (
        "INSERT INTO events (name, starts_at, total_tickets) VALUES ('raw', %s, %s) RETURNING id"
    )
    for bad in ("0", "65", "11"):  # 11 slots for 10 tickets
        with pytest.raises(psycopg.Error) as raised:
            conn.execute(
                "INSERT INTO events (name, starts_at, total_tickets)"
                " SELECT 'raw', %s, 10 FROM (SELECT set_config('ticketing.slots', %s, true)) AS s",
                (STARTS_AT, bad),
            )
        assert raised.value.sqlstate == "TK006"
    assert scalar(admin_conn, "SELECT count(*) FROM events") == 0
    with conn.transaction():
        conn.execute("SELECT set_config('ticketing.slots', '3', true)")
        first = scalar(conn, insert, (STARTS_AT, 640))
        second = scalar(conn, insert, (STARTS_AT, 640))
    counts = admin_conn.execute(
        "SELECT event_id, slot_count FROM event_inventory ORDER BY event_id"
    ).fetchall()
    assert counts == [(first, 3), (second, 10)]  # the default: one per 64 tickets
    assert admin.check_invariants(admin_conn) == []
