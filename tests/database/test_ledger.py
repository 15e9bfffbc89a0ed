"""The ledger (sql/0007_ledger.sql): allocation_history and event_history.

Triggers append one entry per allocation insert and per change of an allocation's status or
quantity, and one per event creation and per change of its capacity settings, in the same
transaction as the change. Only the tables' owner may rewrite them; `check_invariants` (and
`ticketing check`) replays them against the current rows.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, LiteralString

import psycopg
import pytest

from tests.support import (
    APP_LOGIN,
    BARRIER_TIMEOUT,
    INSERT_LAPSED,
    JOIN_TIMEOUT,
    LAPSE,
    MISSING_ID,
    SHORT,
    STARTS_AT,
    make_event,
    row_count,
    scalar,
)
from ticketing import admin, allocations, db, events
from ticketing.errors import BuyerLimitExceeded, HoldExpired, InvalidTransition, SoldOut
from ticketing.models import Allocation, AllocationStatus, Event

LEDGER_TABLES: tuple[LiteralString, ...] = ("allocation_history", "event_history")
APPEND_ONLY = "TK008"
OWNER = "ticketing_owner"
# (old_status, new_status, old_quantity, new_quantity)
AllocationEntry = tuple[str | None, str, int | None, int]
# (created, old_total_tickets, new_total_tickets, old_max_per_buyer, new_max_per_buyer)
EventEntry = tuple[bool, int | None, int, int | None, int | None]


def _reserve(
    conn: psycopg.Connection[Any],
    event_id: int,
    fingerprint: str,
    quantity: int,
    hold: timedelta = timedelta(minutes=10),
) -> Allocation:
    return allocations.reserve(
        conn, event_id=event_id, fingerprint=fingerprint, quantity=quantity, hold=hold
    )


def _allocation_entries(conn: psycopg.Connection[Any], allocation_id: int) -> list[AllocationEntry]:
    return conn.execute(
        "SELECT old_status, new_status, old_quantity, new_quantity FROM allocation_history"
        " WHERE allocation_id = %s ORDER BY id",
        (allocation_id,),
    ).fetchall()


def _statuses(conn: psycopg.Connection[Any], allocation_id: int) -> list[str]:
    return [entry[1] for entry in _allocation_entries(conn, allocation_id)]


def _allocation_entry_ids(conn: psycopg.Connection[Any], allocation_id: int) -> list[int]:
    rows = conn.execute(
        "SELECT id FROM allocation_history WHERE allocation_id = %s ORDER BY id", (allocation_id,)
    ).fetchall()
    return [int(row[0]) for row in rows]


def _event_entries(conn: psycopg.Connection[Any], event_id: int) -> list[EventEntry]:
    return conn.execute(
        "SELECT created, old_total_tickets, new_total_tickets, old_max_per_buyer,"
        " new_max_per_buyer FROM event_history WHERE event_id = %s ORDER BY id",
        (event_id,),
    ).fetchall()


def _event_entry_ids(conn: psycopg.Connection[Any], event_id: int) -> list[int]:
    rows = conn.execute(
        "SELECT id FROM event_history WHERE event_id = %s ORDER BY id", (event_id,)
    ).fetchall()
    return [int(row[0]) for row in rows]


def _recorded_by(conn: psycopg.Connection[Any], table: LiteralString) -> list[str]:
    """Who wrote each entry of a ledger table, in entry order."""
    return [str(row[0]) for row in conn.execute(f"SELECT recorded_by FROM {table} ORDER BY id")]


def _transaction_ids(
    conn: psycopg.Connection[Any], table: LiteralString, owner_id: int
) -> list[str]:
    """The writing transactions of one allocation's (or event's) entries, in entry order."""
    column: LiteralString = "allocation_id" if table == "allocation_history" else "event_id"
    rows = conn.execute(
        f"SELECT transaction_id::text FROM {table} WHERE {column} = %s ORDER BY id", (owner_id,)
    ).fetchall()
    return [str(row[0]) for row in rows]


@contextmanager
def _as_owner(admin_conn: psycopg.Connection[Any]) -> Iterator[psycopg.Connection[Any]]:
    """The superuser connection acting as the ledger's owner, as an operator correcting it."""
    admin_conn.execute(f"SET ROLE {OWNER}")
    try:
        yield admin_conn
    finally:
        admin_conn.execute("RESET ROLE")


def _alice_bought_bob_holds(conn: psycopg.Connection[Any]) -> tuple[Event, Allocation, int]:
    """An event of 10 with alice's purchase of 2 (two entries) and bob's hold of 1.

    Returns the event, alice's allocation and bob's allocation id.
    """
    event = make_event(conn, total=10)
    alice = _reserve(conn, event.id, "alice", 2)
    alice = allocations.purchase(conn, allocation_id=alice.id, fingerprint="alice")
    bob = _reserve(conn, event.id, "bob", 1)
    assert admin.check_invariants(conn) == []
    return event, alice, bob.id


# --- allocation entries -------------------------------------------------------------------------


def test_reserve_writes_one_insert_entry(conn: psycopg.Connection[Any]) -> None:
    event = make_event(conn)
    alloc = _reserve(conn, event.id, "alice", 3)
    rows = conn.execute(
        "SELECT allocation_id, event_id, fingerprint, old_status, new_status, old_quantity,"
        " new_quantity, recorded_by FROM allocation_history"
    ).fetchall()
    assert rows == [(alloc.id, event.id, "alice", None, "reserved", None, 3, APP_LOGIN)]


def test_purchase_then_cancel_write_old_and_new(conn: psycopg.Connection[Any]) -> None:
    event = make_event(conn)
    alloc = _reserve(conn, event.id, "alice", 2)
    allocations.purchase(conn, allocation_id=alloc.id, fingerprint="alice")
    allocations.cancel(conn, allocation_id=alloc.id, fingerprint="alice")
    assert _allocation_entries(conn, alloc.id) == [
        (None, "reserved", None, 2),
        ("reserved", "purchased", 2, 2),
        ("purchased", "cancelled", 2, 2),
    ]
    # Repeating a purchase or a cancel changes no row, so it writes nothing.
    allocations.cancel(conn, allocation_id=alloc.id, fingerprint="alice")
    assert row_count(conn, "allocation_history") == 3
    assert admin.check_invariants(conn) == []


def test_updates_that_change_neither_status_nor_quantity_write_nothing(
    conn: psycopg.Connection[Any], admin_conn: psycopg.Connection[Any]
) -> None:
    event = make_event(conn)
    alloc = _reserve(conn, event.id, "alice", 2)
    admin_conn.execute(
        "UPDATE allocations SET expires_at = expires_at + interval '1 minute' WHERE id = %s",
        (alloc.id,),
    )
    conn.execute("UPDATE allocations SET status = status WHERE id = %s", (alloc.id,))
    admin_conn.execute(
        "UPDATE allocations SET quantity = quantity, status = 'reserved' WHERE id = %s",
        (alloc.id,),
    )
    assert allocations.get_allocation(conn, alloc.id).expires_at == alloc.expires_at + timedelta(
        minutes=1
    )
    assert _allocation_entries(conn, alloc.id) == [(None, "reserved", None, 2)]
    assert admin.check_invariants(conn) == []


def test_a_holds_quantity_change_is_one_entry(
    conn: psycopg.Connection[Any], admin_conn: psycopg.Connection[Any]
) -> None:
    event = make_event(conn)
    alloc = _reserve(conn, event.id, "alice", 2)
    admin_conn.execute("UPDATE allocations SET quantity = 5 WHERE id = %s", (alloc.id,))
    assert _allocation_entries(conn, alloc.id) == [
        (None, "reserved", None, 2),
        ("reserved", "reserved", 2, 5),
    ]
    assert _recorded_by(conn, "allocation_history") == [APP_LOGIN, "postgres"]
    assert admin.check_invariants(conn) == []


def test_idempotent_retry_writes_no_second_entry(conn: psycopg.Connection[Any]) -> None:
    event = make_event(conn)
    first = allocations.reserve(
        conn, event_id=event.id, fingerprint="alice", quantity=2, idempotency_key="req-1"
    )
    again = allocations.reserve(
        conn, event_id=event.id, fingerprint="alice", quantity=2, idempotency_key="req-1"
    )
    assert again == first
    assert _allocation_entries(conn, first.id) == [(None, "reserved", None, 2)]
    assert row_count(conn, "allocation_history") == 1


def test_one_multi_row_statement_gives_one_entry_per_changed_row(
    conn: psycopg.Connection[Any], admin_conn: psycopg.Connection[Any]
) -> None:
    event = make_event(conn, total=20)
    inserted = conn.execute(
        "INSERT INTO allocations (event_id, fingerprint, quantity)"
        " SELECT %s, 'buyer' || g, g FROM generate_series(1, 3) AS g RETURNING id",
        (event.id,),
    ).fetchall()
    ids = sorted(int(row[0]) for row in inserted)
    assert len(ids) == 3
    rows = conn.execute(
        "SELECT allocation_id, fingerprint, new_quantity, transaction_id::text"
        " FROM allocation_history ORDER BY id"
    ).fetchall()
    # In id order, all three written by the one statement's transaction.
    assert [row[:3] for row in rows] == [
        (ids[0], "buyer1", 1),
        (ids[1], "buyer2", 2),
        (ids[2], "buyer3", 3),
    ]
    assert len({row[3] for row in rows}) == 1

    # Two rows change status, the third only its expiry: two entries, from one trigger call.
    with admin_conn.transaction():
        admin_conn.execute("SET LOCAL track_functions = 'all'")
        admin_conn.execute(
            "UPDATE allocations"
            " SET status = CASE WHEN quantity < 3 THEN 'cancelled' ELSE status END,"
            " expires_at = expires_at + interval '1 minute' WHERE event_id = %s",
            (event.id,),
        )
        calls = admin_conn.execute(
            "SELECT pg_stat_get_xact_function_calls('allocations_apply_updates'::regproc),"
            " pg_stat_get_xact_function_calls('allocations_guard_transition'::regproc)"
        ).fetchone()
    assert calls == (1, 3)  # the row-level guard, for contrast, ran once per row
    # Cancelled rows stay cancelled and the hold stays a hold: no entries.
    conn.execute("UPDATE allocations SET status = status WHERE event_id = %s", (event.id,))
    assert [_statuses(conn, i) for i in ids] == [
        ["reserved", "cancelled"],
        ["reserved", "cancelled"],
        ["reserved"],
    ]
    changed = admin_conn.execute(
        "SELECT count(DISTINCT transaction_id) FROM allocation_history WHERE old_status IS NOT NULL"
    ).fetchone()
    assert changed == (1,)
    assert row_count(conn, "allocation_history") == 5
    assert admin.check_invariants(conn) == []


def test_expire_due_writes_one_entry_per_expired_hold(
    conn: psycopg.Connection[Any], admin_conn: psycopg.Connection[Any]
) -> None:
    event = make_event(conn, total=20)
    lapsed = [int(scalar(admin_conn, INSERT_LAPSED, (event.id, f"b{i}", 1))) for i in range(4)]
    live = _reserve(conn, event.id, "live", 1)
    assert allocations.expire_due(conn, limit=1000) == 4
    rows = conn.execute(
        "SELECT allocation_id, old_status, new_status, recorded_by, transaction_id::text"
        " FROM allocation_history WHERE old_status IS NOT NULL ORDER BY id"
    ).fetchall()
    assert [row[:4] for row in rows] == [(i, "reserved", "expired", APP_LOGIN) for i in lapsed]
    assert len({row[4] for row in rows}) == 1  # one sweeper statement
    assert _statuses(conn, live.id) == ["reserved"]
    assert row_count(conn, "allocation_history") == 4 * 2 + 1
    assert admin.check_invariants(conn) == []


# --- event entries ------------------------------------------------------------------------------


def test_create_event_writes_a_creation_entry(conn: psycopg.Connection[Any]) -> None:
    event = make_event(conn, total=7, max_per_buyer=3)
    plain = make_event(conn, total=5)
    rows = conn.execute(
        "SELECT event_id, created, old_total_tickets, new_total_tickets, old_max_per_buyer,"
        " new_max_per_buyer, recorded_by FROM event_history ORDER BY id"
    ).fetchall()
    assert rows == [
        (event.id, True, None, 7, None, 3, APP_LOGIN),
        (plain.id, True, None, 5, None, None, APP_LOGIN),
    ]


def test_event_updates_write_entries_only_for_capacity_changes(
    conn: psycopg.Connection[Any], admin_conn: psycopg.Connection[Any]
) -> None:
    event = make_event(conn, total=10)
    statements: list[LiteralString] = [
        "UPDATE events SET name = 'renamed' WHERE id = %s",
        "UPDATE events SET total_tickets = total_tickets WHERE id = %s",
        "UPDATE events SET total_tickets = 10, max_per_buyer = NULL WHERE id = %s",
        "UPDATE events SET max_per_buyer = 4 WHERE id = %s",
        "UPDATE events SET max_per_buyer = 4, name = 'again' WHERE id = %s",
        "UPDATE events SET total_tickets = 12 WHERE id = %s",
        "UPDATE events SET total_tickets = 11, max_per_buyer = NULL WHERE id = %s",
        "UPDATE events SET name = 'last' WHERE id = %s",
    ]
    for statement in statements:
        admin_conn.execute(statement, (event.id,))
    assert _event_entries(conn, event.id) == [
        (True, None, 10, None, None),
        (False, 10, 10, None, 4),
        (False, 10, 12, 4, 4),
        (False, 12, 11, 4, None),
    ]
    assert events.get_event(conn, event.id).name == "last"
    assert admin.check_invariants(conn) == []


def test_superuser_capacity_raise_and_lowering_are_recorded_as_postgres(
    conn: psycopg.Connection[Any], admin_conn: psycopg.Connection[Any]
) -> None:
    event = make_event(conn, total=10)
    alice = _reserve(conn, event.id, "alice", 3)
    lapsed = int(scalar(admin_conn, INSERT_LAPSED, (event.id, "bob", 2)))
    admin_conn.execute("UPDATE events SET total_tickets = 20 WHERE id = %s", (event.id,))
    # Lowering reclaims bob's lapsed hold first, in the same transaction.
    admin_conn.execute("UPDATE events SET total_tickets = 4 WHERE id = %s", (event.id,))
    # Below the 3 tickets live: refused, and nothing recorded.
    with pytest.raises(psycopg.Error) as info:
        admin_conn.execute("UPDATE events SET total_tickets = 2 WHERE id = %s", (event.id,))
    assert info.value.sqlstate == "TK006"
    rows = conn.execute(
        "SELECT created, old_total_tickets, new_total_tickets, recorded_by FROM event_history"
        " WHERE event_id = %s ORDER BY id",
        (event.id,),
    ).fetchall()
    assert rows == [
        (True, None, 10, APP_LOGIN),
        (False, 10, 20, "postgres"),
        (False, 20, 4, "postgres"),
    ]
    assert _allocation_entries(conn, lapsed) == [
        (None, "reserved", None, 2),
        ("reserved", "expired", 2, 2),
    ]
    assert _statuses(conn, alice.id) == ["reserved"]
    assert _recorded_by(conn, "allocation_history") == [APP_LOGIN, "postgres", "postgres"]
    lowering = _transaction_ids(conn, "event_history", event.id)[2]
    assert _transaction_ids(conn, "allocation_history", lapsed)[1] == lowering
    assert events.get_event(conn, event.id).total_tickets == 4
    assert admin.check_invariants(conn) == []


# --- who, when, which transaction ---------------------------------------------------------------


def test_recorded_by_is_the_login_not_the_definer_or_current_role(
    conn: psycopg.Connection[Any], admin_conn: psycopg.Connection[Any]
) -> None:
    # The functions that write the ledger run as its owner...
    definers = admin_conn.execute(
        "SELECT proname, prosecdef, pg_get_userbyid(proowner) FROM pg_proc WHERE proname IN"
        " ('allocations_apply_insert', 'allocations_apply_updates', 'events_record_capacity')"
        " ORDER BY proname"
    ).fetchall()
    assert definers == [
        ("allocations_apply_insert", True, OWNER),
        ("allocations_apply_updates", True, OWNER),
        ("events_record_capacity", True, OWNER),
    ]
    # ...yet each entry names the login that made the change.
    event = make_event(conn)
    alloc = _reserve(conn, event.id, "alice", 1)
    # A superuser acting as ticketing_app is still recorded as itself.
    admin_conn.execute("SET ROLE ticketing_app")
    assert scalar(admin_conn, "SELECT current_user") == "ticketing_app"
    other = make_event(admin_conn)
    allocations.cancel(admin_conn, allocation_id=alloc.id, fingerprint="alice")
    admin_conn.execute("RESET ROLE")
    assert _recorded_by(conn, "event_history") == [APP_LOGIN, "postgres"]
    assert _recorded_by(conn, "allocation_history") == [APP_LOGIN, "postgres"]
    assert _event_entries(conn, other.id) == [(True, None, 10, None, None)]


def test_entries_carry_the_writing_transaction_and_clock_time(
    conn: psycopg.Connection[Any], dsn: str
) -> None:
    event = make_event(conn)
    with db.connect(dsn, autocommit=False) as tx_conn:
        with tx_conn.transaction():
            before = scalar(tx_conn, "SELECT clock_timestamp()")
            alloc = _reserve(tx_conn, event.id, "alice", 2)
            allocations.purchase(tx_conn, allocation_id=alloc.id, fingerprint="alice")
            xid = str(scalar(tx_conn, "SELECT pg_current_xact_id()::text"))
            after = scalar(tx_conn, "SELECT clock_timestamp()")
        allocations.cancel(tx_conn, allocation_id=alloc.id, fingerprint="alice")
    transactions = _transaction_ids(conn, "allocation_history", alloc.id)
    assert transactions[:2] == [xid, xid]
    assert int(transactions[2]) > int(xid)
    [created] = _transaction_ids(conn, "event_history", event.id)
    assert int(created) < int(xid)
    times = [
        row[0]
        for row in conn.execute(
            "SELECT recorded_at FROM allocation_history WHERE allocation_id = %s ORDER BY id",
            (alloc.id,),
        )
    ]
    # clock_timestamp(), not the transaction's start: two entries of one transaction differ.
    assert before < times[0] < times[1] < after < times[2]


# --- append-only --------------------------------------------------------------------------------


def _some_history(conn: psycopg.Connection[Any]) -> tuple[int, int]:
    """One event and one allocation: a row in each ledger table. Returns the row counts."""
    event = make_event(conn)
    _reserve(conn, event.id, "alice", 1)
    return row_count(conn, "allocation_history"), row_count(conn, "event_history")


#: A well-formed entry of each ledger table, which the application may still not append.
FORGED_ENTRY: dict[str, LiteralString] = {
    "allocation_history": (
        "INSERT INTO allocation_history (allocation_id, event_id, fingerprint, new_status,"
        " new_quantity) SELECT allocation_id, event_id, fingerprint, 'cancelled', new_quantity"
        " FROM allocation_history"
    ),
    "event_history": (
        "INSERT INTO event_history (event_id, created, old_total_tickets, new_total_tickets)"
        " SELECT event_id, false, new_total_tickets, 1000 FROM event_history"
    ),
}


def _upsert(table: LiteralString) -> LiteralString:
    """An INSERT that rewrites the existing entries through ON CONFLICT DO UPDATE."""
    return (
        f"INSERT INTO {table} OVERRIDING SYSTEM VALUE SELECT * FROM {table}"
        " ON CONFLICT (id) DO UPDATE SET recorded_by = 'mallory'"
    )


def _merge_delete(table: LiteralString) -> LiteralString:
    """A MERGE that deletes the existing entries."""
    return (
        f"MERGE INTO {table} AS h USING (SELECT id FROM {table}) AS s ON h.id = s.id"
        " WHEN MATCHED THEN DELETE"
    )


@pytest.mark.parametrize("table", LEDGER_TABLES)
def test_application_may_not_write_the_ledger(
    conn: psycopg.Connection[Any], table: LiteralString
) -> None:
    counts = _some_history(conn)
    statements: list[LiteralString] = [
        f"UPDATE {table} SET recorded_by = 'mallory'",
        f"UPDATE {table} SET recorded_by = 'mallory' WHERE false",
        f"DELETE FROM {table}",
        f"TRUNCATE {table}",
        FORGED_ENTRY[table],
        _upsert(table),
        _merge_delete(table),
    ]
    for statement in statements:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(statement)
    assert (row_count(conn, "allocation_history"), row_count(conn, "event_history")) == counts
    assert _recorded_by(conn, table) == [APP_LOGIN]


@pytest.mark.parametrize("table", LEDGER_TABLES)
def test_superuser_is_refused_by_the_append_only_guard(
    conn: psycopg.Connection[Any], admin_conn: psycopg.Connection[Any], table: LiteralString
) -> None:
    counts = _some_history(conn)
    statements: list[tuple[str, LiteralString]] = [
        ("UPDATE", f"UPDATE {table} SET recorded_by = 'mallory'"),
        ("DELETE", f"DELETE FROM {table} WHERE false"),
        ("TRUNCATE", f"TRUNCATE {table}"),
        # The same changes in other clothes.
        ("UPDATE", _upsert(table)),
        ("DELETE", _merge_delete(table)),
    ]
    for op, statement in statements:
        with pytest.raises(psycopg.Error) as info:
            admin_conn.execute(statement)
        assert info.value.sqlstate == APPEND_ONLY
        diag = info.value.diag
        assert diag.message_primary == f"{table} is append-only: {op} refused for role postgres"
        assert diag.message_hint == "only the table owner may correct the ledger"
        assert "function ledger_guard_append_only()" in (diag.context or "")
    assert (row_count(conn, "allocation_history"), row_count(conn, "event_history")) == counts
    assert _recorded_by(conn, table) == [APP_LOGIN]


def test_owner_may_correct_the_ledger(
    conn: psycopg.Connection[Any], admin_conn: psycopg.Connection[Any]
) -> None:
    assert _some_history(conn) == (1, 1)
    with _as_owner(admin_conn) as owner:
        assert scalar(owner, "SELECT current_user") == OWNER
        for table in LEDGER_TABLES:
            updated = owner.execute(f"UPDATE {table} SET recorded_by = 'corrected'")
            assert updated.rowcount == 1
            assert _recorded_by(conn, table) == ["corrected"]
        assert owner.execute("DELETE FROM allocation_history").rowcount == 1
        owner.execute("TRUNCATE event_history")
    assert (row_count(conn, "allocation_history"), row_count(conn, "event_history")) == (0, 0)
    # Back to the superuser itself: refused again.
    with pytest.raises(psycopg.Error) as info:
        admin_conn.execute("DELETE FROM event_history")
    assert info.value.sqlstate == APPEND_ONLY


# --- same transaction as the change -------------------------------------------------------------


class _Boom(Exception):
    pass


def _create_reserve_purchase_then_fail(tx_conn: psycopg.Connection[Any]) -> None:
    with tx_conn.transaction():
        event = make_event(tx_conn)
        alloc = _reserve(tx_conn, event.id, "alice", 2)
        allocations.purchase(tx_conn, allocation_id=alloc.id, fingerprint="alice")
        # Inside the transaction the entries are there...
        assert _statuses(tx_conn, alloc.id) == ["reserved", "purchased"]
        assert _event_entries(tx_conn, event.id) == [(True, None, 10, None, None)]
        raise _Boom


def test_rolled_back_transaction_leaves_no_entry(conn: psycopg.Connection[Any], dsn: str) -> None:
    with db.connect(dsn, autocommit=False) as tx_conn, pytest.raises(_Boom):
        _create_reserve_purchase_then_fail(tx_conn)
    # ...and they went with it.
    assert (row_count(conn, "allocation_history"), row_count(conn, "event_history")) == (0, 0)
    assert admin.check_invariants(conn) == []


def test_a_failed_call_inside_a_callers_transaction_takes_only_its_own_entries(
    conn: psycopg.Connection[Any], dsn: str
) -> None:
    event = make_event(conn, total=5)
    with db.connect(dsn, autocommit=False) as tx_conn, tx_conn.transaction():
        alice = _reserve(tx_conn, event.id, "alice", 3)
        # Its savepoint rolls back: the reservation's insert and entry go, the rest stays.
        with pytest.raises(SoldOut):
            _reserve(tx_conn, event.id, "bob", 3)
        bob = _reserve(tx_conn, event.id, "bob", 2)
        xid = str(scalar(tx_conn, "SELECT pg_current_xact_id()::text"))
        # Not visible to others before the commit.
        assert row_count(conn, "allocation_history") == 0
    assert _allocation_entries(conn, alice.id) == [(None, "reserved", None, 3)]
    assert _allocation_entries(conn, bob.id) == [(None, "reserved", None, 2)]
    assert row_count(conn, "allocation_history") == 2
    # Written in savepoints, recorded with the top-level transaction's id.
    assert _transaction_ids(conn, "allocation_history", alice.id) == [xid]
    assert _transaction_ids(conn, "allocation_history", bob.id) == [xid]
    assert admin.check_invariants(conn) == []


def test_refused_operations_write_no_entry(
    conn: psycopg.Connection[Any], admin_conn: psycopg.Connection[Any]
) -> None:
    event = make_event(conn, total=3, max_per_buyer=2)
    alice = _reserve(conn, event.id, "alice", 2)
    with pytest.raises(SoldOut):
        _reserve(conn, event.id, "carol", 2)
    lapsing = _reserve(conn, event.id, "bob", 1, hold=SHORT)
    with pytest.raises(BuyerLimitExceeded):
        _reserve(conn, event.id, "alice", 1)
    time.sleep(LAPSE)
    with pytest.raises(HoldExpired):
        allocations.purchase(conn, allocation_id=lapsing.id, fingerprint="bob")
    # Short of room, this reservation reclaims bob's lapsed hold (writing its entry) and is
    # still short: the entry rolls back with it. The superuser may count the trigger's calls.
    with admin_conn.transaction():
        admin_conn.execute("SET LOCAL track_functions = 'all'")
        with pytest.raises(psycopg.Error) as info, admin_conn.transaction():
            admin_conn.execute(
                "INSERT INTO allocations (event_id, fingerprint, quantity) VALUES (%s, 'carol', 2)",
                (event.id,),
            )
        calls = scalar(
            admin_conn,
            "SELECT pg_stat_get_xact_function_calls('allocations_apply_updates'::regproc)",
        )
    assert info.value.sqlstate == "TK001"  # sold out
    assert calls == 1
    with pytest.raises(SoldOut):
        _reserve(conn, event.id, "carol", 2)
    # The sweeper still finds the hold.
    assert allocations.expire_due(conn) == 1
    with pytest.raises(InvalidTransition):
        allocations.cancel(conn, allocation_id=lapsing.id, fingerprint="bob")
    assert _statuses(conn, alice.id) == ["reserved"]
    assert _statuses(conn, lapsing.id) == ["reserved", "expired"]
    assert row_count(conn, "allocation_history") == 3
    assert row_count(conn, "allocations") == 2
    assert admin.check_invariants(conn) == []


# --- replay: check_invariants -------------------------------------------------------------------


def test_check_is_clean_on_a_fresh_database(conn: psycopg.Connection[Any]) -> None:
    assert "check_ledger_allocations" in admin.CHECKS
    assert "check_ledger_events" in admin.CHECKS
    assert admin.check_invariants(conn) == []


def test_check_finds_a_changed_quantity_mid_history(
    conn: psycopg.Connection[Any], admin_conn: psycopg.Connection[Any]
) -> None:
    _, alice, _ = _alice_bought_bob_holds(conn)
    first, second = _allocation_entry_ids(conn, alice.id)
    with _as_owner(admin_conn) as owner:
        owner.execute("UPDATE allocation_history SET new_quantity = 3 WHERE id = %s", (first,))
    assert admin.check_invariants(conn) == [
        f"allocation {alice.id}: ledger entry {second} records reserved x2 -> purchased x2"
        " after reserved x3"
    ]


def test_check_finds_a_changed_quantity_of_the_last_entry(
    conn: psycopg.Connection[Any], admin_conn: psycopg.Connection[Any]
) -> None:
    event, alice, _ = _alice_bought_bob_holds(conn)
    last = _allocation_entry_ids(conn, alice.id)[-1]
    with _as_owner(admin_conn) as owner:
        owner.execute("UPDATE allocation_history SET new_quantity = 5 WHERE id = %s", (last,))
    assert admin.check_invariants(conn) == [
        f"allocation {alice.id} is purchased x2 (event {event.id}, buyer alice),"
        f" its ledger replays to purchased x5 (event {event.id}, buyer alice)"
    ]


def test_check_finds_a_deleted_last_entry(
    conn: psycopg.Connection[Any], admin_conn: psycopg.Connection[Any]
) -> None:
    event, alice, bob = _alice_bought_bob_holds(conn)
    with _as_owner(admin_conn) as owner:
        for allocation_id in (alice.id, bob):
            owner.execute(
                "DELETE FROM allocation_history WHERE id = %s",
                (_allocation_entry_ids(conn, allocation_id)[-1],),
            )
    assert admin.check_invariants(conn) == [
        f"allocation {alice.id} is purchased x2 (event {event.id}, buyer alice),"
        f" its ledger replays to reserved x2 (event {event.id}, buyer alice)",
        f"allocation {bob} is reserved x1 (event {event.id}, buyer bob), its ledger replays to"
        " nothing",
    ]


def test_check_finds_an_entry_for_a_missing_allocation(
    conn: psycopg.Connection[Any], admin_conn: psycopg.Connection[Any]
) -> None:
    event, _, _ = _alice_bought_bob_holds(conn)
    with _as_owner(admin_conn) as owner:
        row = owner.execute(
            "INSERT INTO allocation_history (allocation_id, event_id, fingerprint, new_status,"
            " new_quantity) VALUES (%s, %s, 'mallory', 'purchased', 4) RETURNING id",
            (MISSING_ID, event.id),
        ).fetchone()
    assert row is not None
    # Missing, and (not an opening entry) born purchased instead of reserved.
    assert admin.check_invariants(conn) == [
        f"allocation {MISSING_ID} is missing, its ledger replays to purchased x4"
        f" (event {event.id}, buyer mallory)",
        f"allocation {MISSING_ID}: ledger entry {row[0]} records insert x- -> purchased x4"
        " after nothing x-",
    ]


def test_check_finds_a_changed_event_total(
    conn: psycopg.Connection[Any], admin_conn: psycopg.Connection[Any]
) -> None:
    event = make_event(conn, total=10, max_per_buyer=4)
    plain = make_event(conn, total=5)
    admin_conn.execute("UPDATE events SET total_tickets = 15 WHERE id = %s", (event.id,))
    created, raised = _event_entry_ids(conn, event.id)
    [plain_created] = _event_entry_ids(conn, plain.id)
    assert admin.check_invariants(conn) == []
    with _as_owner(admin_conn) as owner:
        for entry in (created, plain_created):
            owner.execute("UPDATE event_history SET new_total_tickets = 12 WHERE id = %s", (entry,))
    assert admin.check_invariants(conn) == [
        f"event {event.id}: ledger entry {raised} records total 10 -> 15, max 4 -> 4"
        " after total 12, max 4",
        f"event {plain.id} has total 5, max -, its ledger replays to total 12, max -",
    ]


def test_check_finds_a_deleted_creation_entry(
    conn: psycopg.Connection[Any], admin_conn: psycopg.Connection[Any]
) -> None:
    event = make_event(conn, total=10, max_per_buyer=4)
    plain = make_event(conn, total=5)
    admin_conn.execute("UPDATE events SET total_tickets = 15 WHERE id = %s", (event.id,))
    created, raised = _event_entry_ids(conn, event.id)
    [plain_created] = _event_entry_ids(conn, plain.id)
    with _as_owner(admin_conn) as owner:
        for entry in (created, plain_created):
            owner.execute("DELETE FROM event_history WHERE id = %s", (entry,))
    assert admin.check_invariants(conn) == [
        f"event {event.id}: ledger entry {raised} records total 10 -> 15, max 4 -> 4"
        " after total nothing, max -",
        f"event {plain.id} has total 5, max -, its ledger replays to nothing",
    ]


def _cli_check(url: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    return subprocess.run(
        [sys.executable, "-m", "ticketing", "--database-url", url, "check"],
        capture_output=True,
        text=True,
        env=environ,
        timeout=120,
        check=False,
    )


def test_cli_check_reports_a_tampered_ledger(
    conn: psycopg.Connection[Any], admin_conn: psycopg.Connection[Any], admin_dsn: str
) -> None:
    # As an operator runs it, with the superuser's URL.
    event, alice, _ = _alice_bought_bob_holds(conn)
    sound = _cli_check(admin_dsn)
    assert sound.returncode == 0, sound.stdout + sound.stderr
    assert f"all {len(admin.CHECKS)} invariant checks passed" in sound.stdout
    with _as_owner(admin_conn) as owner:
        owner.execute(
            "DELETE FROM allocation_history WHERE id = %s",
            (_allocation_entry_ids(conn, alice.id)[-1],),
        )
    done = _cli_check(admin_dsn)
    assert done.returncode == 1, done.stdout + done.stderr
    violations = [line for line in done.stdout.splitlines() if line.startswith("violation:")]
    assert violations == [
        f"violation: allocation {alice.id} is purchased x2 (event {event.id}, buyer alice),"
        f" its ledger replays to reserved x2 (event {event.id}, buyer alice)"
    ]
    assert done.stderr.strip() == "1 invariant violation"


def test_migration_opens_the_ledger_with_the_rows_already_there(admin_dsn: str, dsn: str) -> None:
    assert db.rollback_last(admin_dsn) == ["0011_comments"]
    assert db.rollback_last(admin_dsn) == ["0010_counters_for_limits"]
    assert db.rollback_last(admin_dsn) == ["0009_lean_write_path"]
    assert db.rollback_last(admin_dsn) == ["0008_roles"]
    assert db.rollback_last(admin_dsn) == ["0007_ledger"]
    with db.connect(admin_dsn) as before:
        event = make_event(before, total=10, max_per_buyer=4)
        before.execute("UPDATE events SET total_tickets = 12 WHERE id = %s", (event.id,))
        held = _reserve(before, event.id, "alice", 2)
        bought = _reserve(before, event.id, "bob", 3)
        allocations.purchase(before, allocation_id=bought.id, fingerprint="bob")
        dropped = _reserve(before, event.id, "carol", 1)
        allocations.cancel(before, allocation_id=dropped.id, fingerprint="carol")
        lapsed = int(scalar(before, INSERT_LAPSED, (event.id, "dave", 1)))
    assert db.migrate(admin_dsn) == [
        "0007_ledger",
        "0008_roles",
        "0009_lean_write_path",
        "0010_counters_for_limits",
        "0011_comments",
    ]

    with db.connect(dsn) as conn:
        # One opening entry per row, with its state at migration time.
        assert _event_entries(conn, event.id) == [(True, None, 12, None, 4)]
        assert _allocation_entries(conn, held.id) == [(None, "reserved", None, 2)]
        assert _allocation_entries(conn, bought.id) == [(None, "purchased", None, 3)]
        assert _allocation_entries(conn, dropped.id) == [(None, "cancelled", None, 1)]
        assert _allocation_entries(conn, lapsed) == [(None, "reserved", None, 1)]
        assert set(_recorded_by(conn, "allocation_history")) == {"postgres"}
        assert admin.check_invariants(conn) == []
        # Later changes continue from there.
        allocations.purchase(conn, allocation_id=held.id, fingerprint="alice")
        allocations.cancel(conn, allocation_id=bought.id, fingerprint="bob")
        assert allocations.expire_due(conn) == 1
        assert _statuses(conn, held.id) == ["reserved", "purchased"]
        assert _statuses(conn, bought.id) == ["purchased", "cancelled"]
        assert _statuses(conn, lapsed) == ["reserved", "expired"]
        assert row_count(conn, "allocation_history") == 4 + 3
        assert admin.check_invariants(conn) == []


# --- replay after a realistic workload ----------------------------------------------------------


def test_ledger_replays_a_mixed_workload(conn: psycopg.Connection[Any]) -> None:
    big = make_event(conn, total=6, max_per_buyer=3)
    small = make_event(conn, total=4)
    # Holds that will lapse: swept, refused at purchase, reclaimed by a reservation.
    swept = _reserve(conn, big.id, "carol", 1, hold=SHORT)
    late = _reserve(conn, big.id, "hank", 1, hold=SHORT)
    reclaimed = _reserve(conn, small.id, "erin", 2, hold=SHORT)

    bought_back = _reserve(conn, big.id, "alice", 2)
    allocations.purchase(conn, allocation_id=bought_back.id, fingerprint="alice")
    dropped = _reserve(conn, big.id, "bob", 1)
    allocations.cancel(conn, allocation_id=dropped.id, fingerprint="bob")
    bought = _reserve(conn, small.id, "dave", 2)
    allocations.purchase(conn, allocation_id=bought.id, fingerprint="dave")
    with pytest.raises(BuyerLimitExceeded):
        _reserve(conn, big.id, "alice", 2)

    time.sleep(LAPSE)
    with pytest.raises(HoldExpired):
        allocations.purchase(conn, allocation_id=late.id, fingerprint="hank")
    # small is full but for erin's lapsed hold: frank's reservation reclaims it.
    frank = _reserve(conn, small.id, "frank", 2)
    with pytest.raises(SoldOut):
        _reserve(conn, small.id, "gina", 1)
    assert allocations.expire_due(conn) == 2
    allocations.cancel(conn, allocation_id=bought_back.id, fingerprint="alice")
    big_now = events.get_availability(conn, big.id)
    assert (big_now.reserved, big_now.purchased, big_now.available) == (0, 0, 6)

    expected = {
        bought_back.id: ["reserved", "purchased", "cancelled"],
        dropped.id: ["reserved", "cancelled"],
        swept.id: ["reserved", "expired"],
        late.id: ["reserved", "expired"],
        bought.id: ["reserved", "purchased"],
        reclaimed.id: ["reserved", "expired"],
        frank.id: ["reserved"],
    }
    assert {i: _statuses(conn, i) for i in expected} == expected
    for allocation_id, statuses in expected.items():
        alloc = allocations.get_allocation(conn, allocation_id)
        assert alloc.status is AllocationStatus(statuses[-1])
    assert row_count(conn, "allocations") == len(expected)
    assert row_count(conn, "allocation_history") == sum(len(s) for s in expected.values())
    # erin's hold expired in frank's reserving transaction.
    assert (
        _transaction_ids(conn, "allocation_history", reclaimed.id)[1]
        == _transaction_ids(conn, "allocation_history", frank.id)[0]
    )
    assert _event_entries(conn, big.id) == [(True, None, 6, None, 3)]
    assert _event_entries(conn, small.id) == [(True, None, 4, None, None)]
    assert admin.check_invariants(conn) == []


# --- concurrency --------------------------------------------------------------------------------


def test_concurrent_buyers_write_exactly_their_entries(
    conn: psycopg.Connection[Any], dsn: str
) -> None:
    threads_count, attempts, total = 8, 5, 20
    event = events.create_event(
        conn, name="rush", starts_at=STARTS_AT, total_tickets=total, slots=4
    )
    barrier = threading.Barrier(threads_count)
    bought: list[int] = []
    sold_out: list[str] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def buyer(n: int) -> None:
        fingerprint = f"buyer{n}"
        try:
            with db.connect(dsn) as own:
                barrier.wait(timeout=BARRIER_TIMEOUT)
                for _ in range(attempts):
                    try:
                        hold = _reserve(own, event.id, fingerprint, 1)
                    except SoldOut:
                        with lock:
                            sold_out.append(fingerprint)
                        continue
                    allocations.purchase(own, allocation_id=hold.id, fingerprint=fingerprint)
                    with lock:
                        bought.append(hold.id)
        except BaseException as exc:
            barrier.abort()
            with lock:
                errors.append(exc)

    threads = [threading.Thread(target=buyer, args=(n,)) for n in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=JOIN_TIMEOUT)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    # Sold out exactly; every other attempt was refused.
    assert len(bought) == total
    assert len(sold_out) == threads_count * attempts - total
    assert row_count(conn, "allocation_history") == 2 * total
    assert {i: _statuses(conn, i) for i in bought} == {i: ["reserved", "purchased"] for i in bought}
    # One transaction per reservation and per purchase, all by the application's login.
    assert scalar(conn, "SELECT count(DISTINCT transaction_id) FROM allocation_history") == (
        2 * total
    )
    assert set(_recorded_by(conn, "allocation_history")) == {APP_LOGIN}
    assert _event_entries(conn, event.id) == [(True, None, total, None, None)]
    assert admin.check_invariants(conn) == []


def test_check_finds_a_quantity_rewritten_on_a_purchase_and_a_forged_birth(
    conn: psycopg.Connection[Any], admin_conn: psycopg.Connection[Any]
) -> None:
    event = make_event(conn, total=10, max_per_buyer=None)
    hold = allocations.reserve(conn, event_id=event.id, fingerprint="ann", quantity=2)
    allocations.purchase(conn, allocation_id=hold.id, fingerprint="ann")
    allocations.cancel(conn, allocation_id=hold.id, fingerprint="ann")
    inserted, bought, cancelled = (
        row[0]
        for row in conn.execute(
            "SELECT id FROM allocation_history WHERE allocation_id = %s ORDER BY id", (hold.id,)
        ).fetchall()
    )
    assert admin.check_invariants(conn) == []
    with _as_owner(admin_conn) as owner:
        # A purchase of 5 from a hold of 2, cancelled back to 2: each step chains.
        owner.execute("UPDATE allocation_history SET new_quantity = 5 WHERE id = %s", (bought,))
        owner.execute("UPDATE allocation_history SET old_quantity = 5 WHERE id = %s", (cancelled,))
    assert admin.check_invariants(conn) == [
        f"allocation {hold.id}: ledger entry {cancelled} records purchased x5 -> cancelled x2"
        " after purchased x5",
    ]
    with _as_owner(admin_conn) as owner:
        # Born purchased: the insert entry gone, the purchase made to look like one.
        owner.execute("DELETE FROM allocation_history WHERE id IN (%s, %s)", (inserted, cancelled))
        owner.execute(
            "UPDATE allocation_history SET old_status = NULL, old_quantity = NULL,"
            " new_status = 'cancelled', new_quantity = 2 WHERE id = %s",
            (bought,),
        )
    assert admin.check_invariants(conn) == [
        f"allocation {hold.id}: ledger entry {bought} records insert x- -> cancelled x2"
        " after nothing x-",
    ]


def test_an_event_deleted_before_its_first_allocation_is_recorded_and_replays(
    conn: psycopg.Connection[Any], admin_conn: psycopg.Connection[Any]
) -> None:
    kept = make_event(conn, total=10, max_per_buyer=2)
    gone = make_event(conn, total=7, max_per_buyer=3)
    admin_conn.execute("DELETE FROM events WHERE id = %s", (gone.id,))
    rows = conn.execute(
        "SELECT event_id, created, old_total_tickets, new_total_tickets, old_max_per_buyer,"
        " new_max_per_buyer, recorded_by FROM event_history ORDER BY id"
    ).fetchall()
    assert rows == [
        (kept.id, True, None, 10, None, 2, APP_LOGIN),
        (gone.id, True, None, 7, None, 3, APP_LOGIN),
        (gone.id, False, 7, 0, 3, None, "postgres"),
    ]
    assert admin.check_invariants(conn) == []
