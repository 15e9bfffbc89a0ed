"""The database's guarantees hold for any SQL written straight to the tables, not only the API."""

from __future__ import annotations

import threading
import time
from typing import Any, LiteralString

import psycopg
import pytest

from tests.support import (
    INSERT_LAPSED,
    STARTS_AT,
    assert_consistent,
    make_event,
    wait_until_blocked,
)
from ticketing import admin, allocations, db, events

ALLOWED = {
    ("reserved", "purchased"),
    ("reserved", "cancelled"),
    ("reserved", "expired"),
    ("purchased", "cancelled"),
}
STATUSES = ("reserved", "purchased", "cancelled", "expired")
FORBIDDEN = [(a, b) for a in STATUSES for b in STATUSES if a != b and (a, b) not in ALLOWED]
BEGIN: dict[str, LiteralString] = {
    "repeatable read": "BEGIN ISOLATION LEVEL REPEATABLE READ",
    "serializable": "BEGIN ISOLATION LEVEL SERIALIZABLE",
}
INSERT_HOLD: LiteralString = (
    "INSERT INTO allocations (event_id, fingerprint, quantity) VALUES (%s, %s, %s) RETURNING id"
)


def hold(conn: psycopg.Connection[Any], event_id: int, fingerprint: str, quantity: int) -> int:
    row = conn.execute(INSERT_HOLD, (event_id, fingerprint, quantity)).fetchone()
    assert row is not None
    return int(row[0])


def lapsed_hold(
    conn: psycopg.Connection[Any], event_id: int, fingerprint: str, quantity: int
) -> int:
    row = conn.execute(INSERT_LAPSED, (event_id, fingerprint, quantity)).fetchone()
    assert row is not None
    return int(row[0])


def set_status(conn: psycopg.Connection[Any], allocation_id: int, status: str) -> None:
    cur = conn.execute("UPDATE allocations SET status = %s WHERE id = %s", (status, allocation_id))
    assert cur.rowcount == 1


def allocation_in(conn: psycopg.Connection[Any], event_id: int, status: str) -> int:
    """A 3-ticket allocation of buyer 'x' brought to `status` by raw SQL."""
    if status == "expired":
        allocation_id = lapsed_hold(conn, event_id, "x", 3)
    else:
        allocation_id = hold(conn, event_id, "x", 3)
    if status != "reserved":
        set_status(conn, allocation_id, status)
    return allocation_id


def fails(conn: psycopg.Connection[Any], query: LiteralString, params: Any = None) -> psycopg.Error:
    """The error a statement raises (it must raise one)."""
    with pytest.raises(psycopg.Error) as caught:
        conn.execute(query, params)
    return caught.value


def inventory(conn: psycopg.Connection[Any], event_id: int) -> tuple[Any, ...]:
    """(total_tickets, max_per_buyer, reserved, purchased) of the event's counters."""
    row = conn.execute(
        "SELECT total_tickets, max_per_buyer, reserved, purchased"
        " FROM event_counters WHERE event_id = %s",
        (event_id,),
    ).fetchone()
    assert row is not None
    return tuple(row)


def buyer_quantity(conn: psycopg.Connection[Any], event_id: int, fingerprint: str) -> int:
    row = conn.execute(
        "SELECT quantity FROM buyer_inventory WHERE event_id = %s AND fingerprint = %s",
        (event_id, fingerprint),
    ).fetchone()
    return 0 if row is None else int(row[0])


def status_of(conn: psycopg.Connection[Any], allocation_id: int) -> str:
    row = conn.execute("SELECT status FROM allocations WHERE id = %s", (allocation_id,)).fetchone()
    assert row is not None
    return str(row[0])


def ticket_numbers(
    conn: psycopg.Connection[Any], allocation_id: int, *, voided: bool = False
) -> list[int]:
    rows = conn.execute(
        "SELECT number FROM tickets WHERE allocation_id = %s AND (voided_at IS NOT NULL) = %s"
        " ORDER BY number",
        (allocation_id, voided),
    ).fetchall()
    return [int(r[0]) for r in rows]


def pooled(conn: psycopg.Connection[Any], event_id: int) -> list[int]:
    rows = conn.execute(
        "SELECT number FROM ticket_number_pool WHERE event_id = %s ORDER BY number", (event_id,)
    ).fetchall()
    return [int(r[0]) for r in rows]


def rows(conn: psycopg.Connection[Any], table: LiteralString, event_id: int) -> int:
    row = conn.execute(
        "SELECT count(*) FROM " + table + " WHERE event_id = %s", (event_id,)
    ).fetchone()
    assert row is not None
    return int(row[0])


def buyers(conn: psycopg.Connection[Any], event_id: int) -> list[tuple[Any, ...]]:
    """(fingerprint, quantity) of the event's allocations, oldest first."""
    return conn.execute(
        "SELECT fingerprint, quantity FROM allocations WHERE event_id = %s ORDER BY id", (event_id,)
    ).fetchall()


def snapshot(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    """Everything a rejected statement must leave as it was."""
    return [
        *conn.execute("SELECT * FROM allocations ORDER BY id").fetchall(),
        *conn.execute("SELECT * FROM tickets ORDER BY id").fetchall(),
        *conn.execute("SELECT * FROM event_counters ORDER BY event_id").fetchall(),
        *conn.execute("SELECT * FROM buyer_inventory ORDER BY event_id, fingerprint").fetchall(),
        *conn.execute("SELECT * FROM ticket_number_pool ORDER BY event_id, number").fetchall(),
        *conn.execute("SELECT id, total_tickets, max_per_buyer FROM events ORDER BY id").fetchall(),
    ]


# --- raw inserts -------------------------------------------------------------------------------


def test_raw_insert_within_capacity_is_counted(shared_admin_conn: psycopg.Connection[Any]) -> None:
    event_id = make_event(shared_admin_conn, total=10, max_per_buyer=10).id
    hold(shared_admin_conn, event_id, "a", 3)
    hold(shared_admin_conn, event_id, "b", 7)

    assert inventory(shared_admin_conn, event_id) == (10, 10, 10, 0)
    assert buyer_quantity(shared_admin_conn, event_id, "a") == 3
    assert buyer_quantity(shared_admin_conn, event_id, "b") == 7
    availability = events.get_availability(shared_admin_conn, event_id)
    assert (availability.reserved, availability.purchased, availability.available) == (10, 0, 0)
    assert_consistent(shared_admin_conn)


def test_raw_insert_beyond_capacity_fails_sold_out(
    shared_admin_conn: psycopg.Connection[Any],
) -> None:
    event_id = make_event(shared_admin_conn, total=10).id
    hold(shared_admin_conn, event_id, "a", 8)
    before = snapshot(shared_admin_conn)

    err = fails(shared_admin_conn, INSERT_HOLD, (event_id, "b", 3))

    assert err.sqlstate == "TK001"
    assert err.diag.message_detail == "available=2"
    assert snapshot(shared_admin_conn) == before
    assert events.get_availability(shared_admin_conn, event_id).available == 2
    assert_consistent(shared_admin_conn)


def test_raw_multi_row_insert_is_checked_row_by_row_and_all_or_nothing(
    shared_admin_conn: psycopg.Connection[Any],
) -> None:
    event_id = make_event(shared_admin_conn, total=10).id

    err = fails(
        shared_admin_conn,
        "INSERT INTO allocations (event_id, fingerprint, quantity)"
        " VALUES (%s, 'a', 5), (%s, 'b', 6)",
        (event_id, event_id),
    )

    # The first row took 5 of the 10; the second found 5 left, and the statement took nothing.
    assert err.sqlstate == "TK001"
    assert err.diag.message_detail == "available=5"
    assert rows(shared_admin_conn, "allocations", event_id) == 0
    assert inventory(shared_admin_conn, event_id) == (10, None, 0, 0)
    assert_consistent(shared_admin_conn)


def test_raw_insert_beyond_max_per_buyer_fails(shared_admin_conn: psycopg.Connection[Any]) -> None:
    event_id = make_event(shared_admin_conn, total=10, max_per_buyer=4).id
    hold(shared_admin_conn, event_id, "a", 3)
    before = snapshot(shared_admin_conn)

    assert fails(shared_admin_conn, INSERT_HOLD, (event_id, "a", 2)).sqlstate == "TK002"
    # Two rows of one buyer in one statement add up.
    err = fails(
        shared_admin_conn,
        "INSERT INTO allocations (event_id, fingerprint, quantity)"
        " VALUES (%s, 'b', 2), (%s, 'b', 3)",
        (event_id, event_id),
    )
    assert err.sqlstate == "TK002"
    assert snapshot(shared_admin_conn) == before
    hold(shared_admin_conn, event_id, "a", 1)
    assert buyer_quantity(shared_admin_conn, event_id, "a") == 4
    assert_consistent(shared_admin_conn)


def test_raw_insert_over_both_limits_reports_the_buyer_limit(
    shared_admin_conn: psycopg.Connection[Any],
) -> None:
    event_id = make_event(shared_admin_conn, total=5, max_per_buyer=4).id
    hold(shared_admin_conn, event_id, "a", 4)

    assert fails(shared_admin_conn, INSERT_HOLD, (event_id, "b", 5)).sqlstate == "TK002"
    assert inventory(shared_admin_conn, event_id) == (5, 4, 4, 0)


@pytest.mark.parametrize("status", ["purchased", "cancelled", "expired"])
def test_raw_insert_must_start_reserved(
    shared_admin_conn: psycopg.Connection[Any], status: str
) -> None:
    event_id = make_event(shared_admin_conn, total=10).id

    err = fails(
        shared_admin_conn,
        "INSERT INTO allocations (event_id, fingerprint, quantity, status) VALUES (%s, 'a', 2, %s)",
        (event_id, status),
    )

    assert err.sqlstate == "TK003"
    assert rows(shared_admin_conn, "allocations", event_id) == 0
    assert rows(shared_admin_conn, "tickets", event_id) == 0
    assert inventory(shared_admin_conn, event_id) == (10, None, 0, 0)


# --- raw quantity and identity updates ---------------------------------------------------------


def test_raw_quantity_update_on_a_hold_is_counted(
    shared_admin_conn: psycopg.Connection[Any],
) -> None:
    event_id = make_event(shared_admin_conn, total=10, max_per_buyer=10).id
    mine = hold(shared_admin_conn, event_id, "a", 3)
    hold(shared_admin_conn, event_id, "b", 5)

    shared_admin_conn.execute("UPDATE allocations SET quantity = 5 WHERE id = %s", (mine,))
    assert inventory(shared_admin_conn, event_id) == (10, 10, 10, 0)
    assert buyer_quantity(shared_admin_conn, event_id, "a") == 5
    assert events.get_availability(shared_admin_conn, event_id).available == 0

    err = fails(shared_admin_conn, "UPDATE allocations SET quantity = 6 WHERE id = %s", (mine,))
    assert err.sqlstate == "TK001"
    assert err.diag.message_detail == "available=0"
    assert inventory(shared_admin_conn, event_id) == (10, 10, 10, 0)

    shared_admin_conn.execute("UPDATE allocations SET quantity = 1 WHERE id = %s", (mine,))
    assert inventory(shared_admin_conn, event_id) == (10, 10, 6, 0)
    assert buyer_quantity(shared_admin_conn, event_id, "a") == 1
    assert events.get_availability(shared_admin_conn, event_id).available == 4
    assert_consistent(shared_admin_conn)


def test_raw_quantity_update_beyond_max_per_buyer_fails(
    shared_admin_conn: psycopg.Connection[Any],
) -> None:
    event_id = make_event(shared_admin_conn, total=10, max_per_buyer=4).id
    mine = hold(shared_admin_conn, event_id, "a", 3)

    assert fails(
        shared_admin_conn, "UPDATE allocations SET quantity = 5 WHERE id = %s", (mine,)
    ).sqlstate == ("TK002")
    assert buyer_quantity(shared_admin_conn, event_id, "a") == 3
    shared_admin_conn.execute("UPDATE allocations SET quantity = 4 WHERE id = %s", (mine,))
    assert buyer_quantity(shared_admin_conn, event_id, "a") == 4
    assert_consistent(shared_admin_conn)


@pytest.mark.parametrize("status", ["purchased", "cancelled", "expired"])
@pytest.mark.parametrize(
    "change",
    ["quantity = 1", "quantity = 4", "expires_at = expires_at + interval '1 minute'"],
)
def test_raw_quantity_or_expiry_change_only_for_holds(
    shared_admin_conn: psycopg.Connection[Any], status: str, change: LiteralString
) -> None:
    event_id = make_event(shared_admin_conn, total=10).id
    allocation_id = allocation_in(shared_admin_conn, event_id, status)
    before = snapshot(shared_admin_conn)

    err = fails(
        shared_admin_conn, "UPDATE allocations SET " + change + " WHERE id = %s", (allocation_id,)
    )

    assert err.sqlstate == "TK005"
    assert snapshot(shared_admin_conn) == before
    assert_consistent(shared_admin_conn)


@pytest.mark.parametrize(
    "change",
    [
        "fingerprint = 'someone else'",
        "created_at = created_at - interval '1 second'",
        "idempotency_key = 'k'",
        "event_id = %(other)s",
    ],
)
def test_raw_identity_change_fails(
    shared_admin_conn: psycopg.Connection[Any], change: LiteralString
) -> None:
    event_id = make_event(shared_admin_conn, total=10).id
    other = make_event(shared_admin_conn, total=10).id
    allocation_id = hold(shared_admin_conn, event_id, "x", 3)
    before = snapshot(shared_admin_conn)

    err = fails(
        shared_admin_conn,
        "UPDATE allocations SET " + change + " WHERE id = %(id)s",
        {"id": allocation_id, "other": other},
    )

    assert err.sqlstate == "TK005"
    assert snapshot(shared_admin_conn) == before


# --- the status state machine ------------------------------------------------------------------


@pytest.mark.parametrize(("old", "new"), FORBIDDEN)
def test_forbidden_transition_fails(
    shared_admin_conn: psycopg.Connection[Any], old: str, new: str
) -> None:
    event_id = make_event(shared_admin_conn, total=10).id
    hold(shared_admin_conn, event_id, "other", 2)
    allocation_id = allocation_in(shared_admin_conn, event_id, old)
    before = snapshot(shared_admin_conn)

    err = fails(
        shared_admin_conn, "UPDATE allocations SET status = %s WHERE id = %s", (new, allocation_id)
    )

    assert err.sqlstate == "TK003"
    assert status_of(shared_admin_conn, allocation_id) == old
    assert snapshot(shared_admin_conn) == before
    assert_consistent(shared_admin_conn)


def test_hold_cannot_expire_before_its_expiry(shared_admin_conn: psycopg.Connection[Any]) -> None:
    event_id = make_event(shared_admin_conn, total=10).id
    allocation_id = hold(shared_admin_conn, event_id, "x", 3)

    err = fails(
        shared_admin_conn,
        "UPDATE allocations SET status = 'expired' WHERE id = %s",
        (allocation_id,),
    )

    assert err.sqlstate == "TK003"
    assert status_of(shared_admin_conn, allocation_id) == "reserved"
    assert inventory(shared_admin_conn, event_id) == (10, None, 3, 0)


def test_lapsed_hold_cannot_be_purchased(shared_admin_conn: psycopg.Connection[Any]) -> None:
    event_id = make_event(shared_admin_conn, total=10).id
    allocation_id = lapsed_hold(shared_admin_conn, event_id, "x", 3)

    err = fails(
        shared_admin_conn,
        "UPDATE allocations SET status = 'purchased' WHERE id = %s",
        (allocation_id,),
    )

    assert err.sqlstate == "TK004"
    assert status_of(shared_admin_conn, allocation_id) == "reserved"
    assert ticket_numbers(shared_admin_conn, allocation_id) == []
    assert inventory(shared_admin_conn, event_id) == (10, None, 3, 0)
    assert_consistent(shared_admin_conn)


def test_lapsed_hold_cannot_be_extended(shared_admin_conn: psycopg.Connection[Any]) -> None:
    event_id = make_event(shared_admin_conn, total=10).id
    live = hold(shared_admin_conn, event_id, "x", 3)
    lapsed = lapsed_hold(shared_admin_conn, event_id, "y", 3)

    shared_admin_conn.execute(
        "UPDATE allocations SET expires_at = now() + interval '1 hour' WHERE id = %s", (live,)
    )
    err = fails(
        shared_admin_conn,
        "UPDATE allocations SET expires_at = now() + interval '1 hour' WHERE id = %s",
        (lapsed,),
    )

    assert err.sqlstate == "TK004"
    assert status_of(shared_admin_conn, lapsed) == "reserved"
    # The lapsed hold's tickets count as available, and it stays unpurchasable.
    assert events.get_availability(shared_admin_conn, event_id).available == 7
    err = fails(
        shared_admin_conn, "UPDATE allocations SET status = 'purchased' WHERE id = %s", (lapsed,)
    )
    assert err.sqlstate == "TK004"
    assert_consistent(shared_admin_conn)


@pytest.mark.parametrize(
    ("old", "new", "lapsed", "counts", "valid", "voided"),
    [
        # counts: the event's (reserved, purchased); another buyer holds 2 throughout.
        ("reserved", "purchased", False, (2, 3), [1, 2, 3], []),
        ("reserved", "cancelled", False, (2, 0), [], []),
        ("reserved", "cancelled", True, (2, 0), [], []),
        ("reserved", "expired", True, (2, 0), [], []),
        ("purchased", "cancelled", False, (2, 0), [], [1, 2, 3]),
    ],
)
def test_allowed_transition_keeps_counters_right(
    shared_admin_conn: psycopg.Connection[Any],
    old: str,
    new: str,
    lapsed: bool,
    counts: tuple[int, int],
    valid: list[int],
    voided: list[int],
) -> None:
    event_id = make_event(shared_admin_conn, total=10, max_per_buyer=10).id
    hold(shared_admin_conn, event_id, "other", 2)
    allocation_id = (lapsed_hold if lapsed else hold)(shared_admin_conn, event_id, "x", 3)
    if old == "purchased":
        set_status(shared_admin_conn, allocation_id, "purchased")

    set_status(shared_admin_conn, allocation_id, new)

    assert status_of(shared_admin_conn, allocation_id) == new
    assert inventory(shared_admin_conn, event_id) == (10, 10, *counts)
    assert buyer_quantity(shared_admin_conn, event_id, "x") == (3 if new == "purchased" else 0)
    assert ticket_numbers(shared_admin_conn, allocation_id) == valid
    assert ticket_numbers(shared_admin_conn, allocation_id, voided=True) == voided
    assert pooled(shared_admin_conn, event_id) == voided
    availability = events.get_availability(shared_admin_conn, event_id)
    assert availability.available == 10 - sum(counts)
    assert_consistent(shared_admin_conn)


# --- deletes and ticket tampering --------------------------------------------------------------


@pytest.mark.parametrize(
    "statement",
    [
        "DELETE FROM allocations WHERE id = %(allocation)s",
        "DELETE FROM allocations",
        "DELETE FROM tickets WHERE id = %(ticket)s",
        "DELETE FROM tickets",
        "UPDATE tickets SET number = 7 WHERE id = %(ticket)s",
        "UPDATE tickets SET number = number + 100",
        "UPDATE tickets SET code = 'AAAAAAAAAAAAAAAAAAAAAA' WHERE id = %(ticket)s",
        "UPDATE tickets SET voided_at = now() WHERE id = %(ticket)s",
        "UPDATE tickets SET voided_at = NULL WHERE id = %(voided)s",
        "UPDATE tickets SET voided_at = voided_at + interval '1 second' WHERE id = %(voided)s",
        "UPDATE tickets SET allocation_id = %(cancelled)s WHERE id = %(ticket)s",
        "UPDATE tickets SET created_at = created_at - interval '1 second' WHERE id = %(ticket)s",
    ],
)
def test_tampering_with_history_fails(
    shared_admin_conn: psycopg.Connection[Any], statement: LiteralString
) -> None:
    event_id = make_event(shared_admin_conn, total=10).id
    purchased = allocation_in(shared_admin_conn, event_id, "purchased")
    cancelled = hold(shared_admin_conn, event_id, "y", 2)
    set_status(shared_admin_conn, cancelled, "purchased")
    set_status(shared_admin_conn, cancelled, "cancelled")
    ticket = shared_admin_conn.execute(
        "SELECT min(id) FROM tickets WHERE allocation_id = %s", (purchased,)
    ).fetchone()
    voided = shared_admin_conn.execute(
        "SELECT min(id) FROM tickets WHERE allocation_id = %s", (cancelled,)
    ).fetchone()
    assert ticket is not None
    assert voided is not None
    before = snapshot(shared_admin_conn)

    err = fails(
        shared_admin_conn,
        statement,
        {"allocation": purchased, "ticket": ticket[0], "voided": voided[0], "cancelled": cancelled},
    )

    assert err.sqlstate == "TK005"
    assert snapshot(shared_admin_conn) == before
    assert_consistent(shared_admin_conn)


# --- raw purchase and cancel issue and void tickets --------------------------------------------


def test_raw_purchase_issues_tickets_and_raw_cancel_voids_them(
    shared_admin_conn: psycopg.Connection[Any],
) -> None:
    event_id = make_event(shared_admin_conn, total=10).id
    a = hold(shared_admin_conn, event_id, "a", 3)
    b = hold(shared_admin_conn, event_id, "b", 2)

    # One statement purchases both holds.
    cur = shared_admin_conn.execute(
        "UPDATE allocations SET status = 'purchased' WHERE event_id = %s", (event_id,)
    )
    assert cur.rowcount == 2
    assert ticket_numbers(shared_admin_conn, a) == [1, 2, 3]
    assert ticket_numbers(shared_admin_conn, b) == [4, 5]
    codes = shared_admin_conn.execute(
        "SELECT code FROM tickets WHERE event_id = %s", (event_id,)
    ).fetchall()
    assert len({c[0] for c in codes}) == 5
    assert all(len(c[0]) == 22 for c in codes)
    assert inventory(shared_admin_conn, event_id) == (10, None, 0, 5)

    set_status(shared_admin_conn, a, "cancelled")
    assert ticket_numbers(shared_admin_conn, a) == []
    assert ticket_numbers(shared_admin_conn, a, voided=True) == [1, 2, 3]
    assert pooled(shared_admin_conn, event_id) == [1, 2, 3]
    assert inventory(shared_admin_conn, event_id) == (10, None, 0, 2)

    # Voided numbers are issued again, lowest first, then above the highest ever issued.
    c = hold(shared_admin_conn, event_id, "c", 2)
    set_status(shared_admin_conn, c, "purchased")
    assert ticket_numbers(shared_admin_conn, c) == [1, 2]
    d = hold(shared_admin_conn, event_id, "d", 2)
    set_status(shared_admin_conn, d, "purchased")
    assert ticket_numbers(shared_admin_conn, d) == [3, 6]
    assert pooled(shared_admin_conn, event_id) == []
    assert inventory(shared_admin_conn, event_id) == (10, None, 0, 6)
    assert_consistent(shared_admin_conn)


def test_raw_purchase_with_a_bigger_quantity_is_checked(
    shared_admin_conn: psycopg.Connection[Any],
) -> None:
    event_id = make_event(shared_admin_conn, total=10).id
    hold(shared_admin_conn, event_id, "other", 5)
    mine = hold(shared_admin_conn, event_id, "a", 2)

    err = fails(
        shared_admin_conn,
        "UPDATE allocations SET status = 'purchased', quantity = 6 WHERE id = %s",
        (mine,),
    )
    assert err.sqlstate == "TK001"
    assert ticket_numbers(shared_admin_conn, mine) == []

    shared_admin_conn.execute(
        "UPDATE allocations SET status = 'purchased', quantity = 5 WHERE id = %s", (mine,)
    )
    assert ticket_numbers(shared_admin_conn, mine) == [1, 2, 3, 4, 5]
    assert inventory(shared_admin_conn, event_id) == (10, None, 5, 5)
    assert_consistent(shared_admin_conn)


# --- lowering capacity and the buyer limit -----------------------------------------------------


def event_settings(conn: psycopg.Connection[Any], event_id: int) -> tuple[Any, ...]:
    row = conn.execute(
        "SELECT e.total_tickets, e.max_per_buyer, i.total_tickets, i.max_per_buyer"
        " FROM events AS e JOIN event_counters AS i ON i.event_id = e.id WHERE e.id = %s",
        (event_id,),
    ).fetchone()
    assert row is not None
    return tuple(row)


def test_lowering_capacity_below_live_fails(shared_admin_conn: psycopg.Connection[Any]) -> None:
    event_id = make_event(shared_admin_conn, total=10).id
    hold(shared_admin_conn, event_id, "a", 4)
    bought = hold(shared_admin_conn, event_id, "b", 2)
    set_status(shared_admin_conn, bought, "purchased")

    err = fails(shared_admin_conn, "UPDATE events SET total_tickets = 5 WHERE id = %s", (event_id,))

    assert err.sqlstate == "TK006"
    assert event_settings(shared_admin_conn, event_id) == (10, None, 10, None)
    shared_admin_conn.execute("UPDATE events SET total_tickets = 6 WHERE id = %s", (event_id,))
    assert event_settings(shared_admin_conn, event_id) == (6, None, 6, None)
    assert events.get_availability(shared_admin_conn, event_id).available == 0
    assert fails(shared_admin_conn, INSERT_HOLD, (event_id, "c", 1)).sqlstate == "TK001"
    assert_consistent(shared_admin_conn)


def test_lowering_capacity_reclaims_lapsed_holds(
    shared_admin_conn: psycopg.Connection[Any],
) -> None:
    event_id = make_event(shared_admin_conn, total=10).id
    hold(shared_admin_conn, event_id, "a", 4)
    lapsed = lapsed_hold(shared_admin_conn, event_id, "b", 4)

    shared_admin_conn.execute("UPDATE events SET total_tickets = 5 WHERE id = %s", (event_id,))

    assert status_of(shared_admin_conn, lapsed) == "expired"
    assert event_settings(shared_admin_conn, event_id) == (5, None, 5, None)
    assert inventory(shared_admin_conn, event_id) == (5, None, 4, 0)
    assert buyer_quantity(shared_admin_conn, event_id, "b") == 0
    assert events.get_availability(shared_admin_conn, event_id).available == 1
    assert_consistent(shared_admin_conn)


def test_lowering_capacity_below_live_keeps_lapsed_holds(
    shared_admin_conn: psycopg.Connection[Any],
) -> None:
    event_id = make_event(shared_admin_conn, total=10).id
    hold(shared_admin_conn, event_id, "a", 4)
    lapsed = lapsed_hold(shared_admin_conn, event_id, "b", 4)

    err = fails(shared_admin_conn, "UPDATE events SET total_tickets = 3 WHERE id = %s", (event_id,))

    assert err.sqlstate == "TK006"
    assert status_of(shared_admin_conn, lapsed) == "reserved"
    assert event_settings(shared_admin_conn, event_id) == (10, None, 10, None)
    assert inventory(shared_admin_conn, event_id) == (10, None, 8, 0)
    assert_consistent(shared_admin_conn)


def test_lowering_capacity_below_a_valid_ticket_number_fails(
    shared_admin_conn: psycopg.Connection[Any],
) -> None:
    event_id = make_event(shared_admin_conn, total=10).id
    a = hold(shared_admin_conn, event_id, "a", 3)
    set_status(shared_admin_conn, a, "purchased")
    b = hold(shared_admin_conn, event_id, "b", 2)
    set_status(shared_admin_conn, b, "purchased")
    set_status(shared_admin_conn, a, "cancelled")
    assert ticket_numbers(shared_admin_conn, b) == [4, 5]

    # Two tickets are live, but one of them is number 5.
    err = fails(shared_admin_conn, "UPDATE events SET total_tickets = 4 WHERE id = %s", (event_id,))

    assert err.sqlstate == "TK006"
    assert event_settings(shared_admin_conn, event_id) == (10, None, 10, None)
    shared_admin_conn.execute("UPDATE events SET total_tickets = 5 WHERE id = %s", (event_id,))
    c = hold(shared_admin_conn, event_id, "c", 3)
    set_status(shared_admin_conn, c, "purchased")
    assert ticket_numbers(shared_admin_conn, c) == [1, 2, 3]
    assert_consistent(shared_admin_conn)


@pytest.mark.parametrize("old_limit", [None, 6])
def test_lowering_max_per_buyer_below_a_buyers_live_quantity_fails(
    shared_admin_conn: psycopg.Connection[Any], old_limit: int | None
) -> None:
    event_id = make_event(shared_admin_conn, total=10, max_per_buyer=old_limit).id
    hold(shared_admin_conn, event_id, "a", 2)
    bought = hold(shared_admin_conn, event_id, "a", 2)
    set_status(shared_admin_conn, bought, "purchased")
    hold(shared_admin_conn, event_id, "b", 1)

    err = fails(shared_admin_conn, "UPDATE events SET max_per_buyer = 3 WHERE id = %s", (event_id,))

    assert err.sqlstate == "TK006"
    assert event_settings(shared_admin_conn, event_id) == (10, old_limit, 10, old_limit)
    shared_admin_conn.execute("UPDATE events SET max_per_buyer = 4 WHERE id = %s", (event_id,))
    assert event_settings(shared_admin_conn, event_id) == (10, 4, 10, 4)
    assert fails(shared_admin_conn, INSERT_HOLD, (event_id, "a", 1)).sqlstate == "TK002"
    assert_consistent(shared_admin_conn)


def test_lowering_max_per_buyer_reclaims_lapsed_holds(
    shared_admin_conn: psycopg.Connection[Any],
) -> None:
    event_id = make_event(shared_admin_conn, total=10, max_per_buyer=6).id
    hold(shared_admin_conn, event_id, "a", 2)
    lapsed = lapsed_hold(shared_admin_conn, event_id, "a", 3)
    assert buyer_quantity(shared_admin_conn, event_id, "a") == 5

    shared_admin_conn.execute("UPDATE events SET max_per_buyer = 2 WHERE id = %s", (event_id,))

    assert status_of(shared_admin_conn, lapsed) == "expired"
    assert buyer_quantity(shared_admin_conn, event_id, "a") == 2
    assert event_settings(shared_admin_conn, event_id) == (10, 2, 10, 2)
    assert inventory(shared_admin_conn, event_id) == (10, 2, 2, 0)
    assert_consistent(shared_admin_conn)


# Capacity and limit changes racing an open transaction: each waits for the transaction's
# locks, then checks what it committed.


def in_thread(dsn: str, sql: str, params: tuple[Any, ...]) -> tuple[threading.Thread, list[Any]]:
    """Run one statement on its own connection in a thread; its outcome lands in the list."""
    outcome: list[Any] = []

    def run() -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            try:
                conn.execute(sql, params)
                outcome.append("ok")
            except psycopg.Error as exc:
                outcome.append(exc.sqlstate)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


def statement_waits(conn: psycopg.Connection[Any], pattern: str) -> bool:
    row = conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND wait_event_type = 'Lock' AND query LIKE %s",
        (pattern,),
    ).fetchone()
    return row is not None and row[0] == 1


def wait_until_statement_blocked(conn: psycopg.Connection[Any], pattern: str) -> None:
    for _ in range(200):
        if statement_waits(conn, pattern):
            return
        threading.Event().wait(0.02)
    pytest.fail(f"no statement like {pattern!r} ever waited for a lock")


def test_lowering_max_per_buyer_waits_for_a_hold_that_grew(
    conn: psycopg.Connection[Any], admin_dsn: str, admin_conn: psycopg.Connection[Any]
) -> None:
    event = events.create_event(
        conn, name="limit", starts_at=STARTS_AT, total_tickets=10, max_per_buyer=4
    )
    x = allocations.reserve(conn, event_id=event.id, fingerprint="x", quantity=2)
    y = allocations.reserve(conn, event_id=event.id, fingerprint="y", quantity=2)
    # Raw writes of quantity and of the limit take the superuser: the application may not.
    mover = db.connect(admin_dsn, autocommit=False)
    try:
        # One statement moves a ticket from x to y: no new capacity is taken.
        mover.execute(
            "UPDATE allocations SET quantity = CASE fingerprint WHEN 'x' THEN 1 ELSE 3 END"
            " WHERE id IN (%s, %s)",
            (x.id, y.id),
        )
        thread, outcome = in_thread(
            admin_dsn, "UPDATE events SET max_per_buyer = 2 WHERE id = %s", (event.id,)
        )
        wait_until_statement_blocked(admin_conn, "UPDATE events SET max_per_buyer%")
        mover.commit()
        thread.join(timeout=30)
    finally:
        mover.close()
    assert outcome == ["TK006"]  # y now holds 3: the limit cannot drop to 2
    assert events.get_event(conn, event.id).max_per_buyer == 4
    assert admin.check_invariants(conn) == []
    assert_consistent(conn)


def test_cutting_capacity_waits_for_a_purchase_in_flight(
    dsn: str, conn: psycopg.Connection[Any], admin_dsn: str, admin_conn: psycopg.Connection[Any]
) -> None:
    event = events.create_event(conn, name="cut", starts_at=STARTS_AT, total_tickets=3)
    sold = allocations.reserve(conn, event_id=event.id, fingerprint="p", quantity=2)
    allocations.purchase(conn, allocation_id=sold.id, fingerprint="p")
    hold = allocations.reserve(conn, event_id=event.id, fingerprint="h", quantity=1)
    buyer = db.connect(dsn, autocommit=False)
    try:
        buyer.execute("SELECT 1")  # open a transaction that the purchase joins
        allocations.purchase(buyer, allocation_id=hold.id, fingerprint="h")  # ticket 3
        cancel, cancelled = in_thread(
            dsn, "UPDATE allocations SET status = 'cancelled' WHERE id = %s", (sold.id,)
        )
        # The superuser sees every session's query; the cut is an operator's change.
        wait_until_statement_blocked(admin_conn, "UPDATE allocations SET status = 'cancelled'%")
        cut, outcome = in_thread(
            admin_dsn, "UPDATE events SET total_tickets = 2 WHERE id = %s", (event.id,)
        )
        wait_until_statement_blocked(admin_conn, "UPDATE events SET total_tickets%")
        buyer.commit()
        cancel.join(timeout=30)
        cut.join(timeout=30)
    finally:
        buyer.close()
    assert cancelled == ["ok"]
    assert outcome == ["TK006"]  # valid ticket 3 would sit above a total of 2
    assert events.get_event(conn, event.id).total_tickets == 3
    availability = events.get_availability(conn, event.id)
    assert (availability.reserved, availability.purchased, availability.available) == (0, 1, 2)
    assert admin.check_invariants(conn) == []
    assert_consistent(conn)


# --- tickets inserted by hand ------------------------------------------------------------------

INSERT_TICKET: LiteralString = (
    "INSERT INTO tickets (event_id, allocation_id, number) VALUES (%s, %s, %s) RETURNING id"
)


def test_ticket_for_a_hold_fails(shared_admin_conn: psycopg.Connection[Any]) -> None:
    event_id = make_event(shared_admin_conn, total=10).id
    allocation_id = hold(shared_admin_conn, event_id, "x", 3)

    err = fails(shared_admin_conn, INSERT_TICKET, (event_id, allocation_id, 1))

    assert err.sqlstate == "TK005"
    assert rows(shared_admin_conn, "tickets", event_id) == 0


@pytest.mark.parametrize("status", ["cancelled", "expired"])
def test_ticket_for_a_dead_allocation_fails(
    shared_admin_conn: psycopg.Connection[Any], status: str
) -> None:
    event_id = make_event(shared_admin_conn, total=10).id
    allocation_id = allocation_in(shared_admin_conn, event_id, status)

    err = fails(shared_admin_conn, INSERT_TICKET, (event_id, allocation_id, 1))

    assert err.sqlstate == "TK005"
    assert rows(shared_admin_conn, "tickets", event_id) == 0


@pytest.mark.parametrize("number", [4, 9, 11])
def test_extra_ticket_for_a_purchase_fails(
    shared_admin_conn: psycopg.Connection[Any], number: int
) -> None:
    event_id = make_event(shared_admin_conn, total=10).id
    allocation_id = allocation_in(shared_admin_conn, event_id, "purchased")
    before = snapshot(shared_admin_conn)

    err = fails(shared_admin_conn, INSERT_TICKET, (event_id, allocation_id, number))

    assert err.sqlstate == "TK005"
    assert snapshot(shared_admin_conn) == before
    assert ticket_numbers(shared_admin_conn, allocation_id) == [1, 2, 3]


def test_ticket_of_another_events_allocation_fails(
    shared_admin_conn: psycopg.Connection[Any],
) -> None:
    event_id = make_event(shared_admin_conn, total=10).id
    other = make_event(shared_admin_conn, total=10).id
    allocation_id = allocation_in(shared_admin_conn, event_id, "purchased")

    err = fails(shared_admin_conn, INSERT_TICKET, (other, allocation_id, 5))

    assert err.sqlstate == "23503"
    assert err.diag.constraint_name == "tickets_allocation_fkey"


def test_duplicate_valid_number_violates_the_exclusion_constraint(
    shared_admin_conn: psycopg.Connection[Any],
) -> None:
    event_id = make_event(shared_admin_conn, total=10).id
    allocation_id = allocation_in(shared_admin_conn, event_id, "purchased")
    before = snapshot(shared_admin_conn)

    # The constraint is checked as the row goes in, before the statement's guard trigger.
    err = fails(shared_admin_conn, INSERT_TICKET, (event_id, allocation_id, 2))

    assert err.sqlstate == "23P01"
    assert err.diag.constraint_name == "tickets_number_excl"
    assert snapshot(shared_admin_conn) == before


def test_exclusion_constraint_holds_without_the_guard_triggers(
    shared_admin_conn: psycopg.Connection[Any],
) -> None:
    event_id = make_event(shared_admin_conn, total=10).id
    allocation_id = hold(shared_admin_conn, event_id, "x", 3)
    before = snapshot(shared_admin_conn)

    with shared_admin_conn.transaction(force_rollback=True):
        shared_admin_conn.execute("ALTER TABLE tickets DISABLE TRIGGER USER")
        # The guard would refuse a ticket for a hold; with it off, only the constraint speaks.
        shared_admin_conn.execute(INSERT_TICKET, (event_id, allocation_id, 1))
        shared_admin_conn.execute(INSERT_TICKET, (event_id, allocation_id, 2))
        err = fails(shared_admin_conn, INSERT_TICKET, (event_id, allocation_id, 1))

    assert err.sqlstate == "23P01"
    assert err.diag.constraint_name == "tickets_number_excl"
    assert snapshot(shared_admin_conn) == before
    assert fails(shared_admin_conn, INSERT_TICKET, (event_id, allocation_id, 1)).sqlstate == "TK005"


def test_ticket_number_above_capacity_fails(shared_admin_conn: psycopg.Connection[Any]) -> None:
    event_id = make_event(shared_admin_conn, total=10).id
    allocation_id = hold(shared_admin_conn, event_id, "x", 2)
    before = snapshot(shared_admin_conn)

    with shared_admin_conn.transaction(force_rollback=True):
        # Without the inventory trigger a purchase issues no tickets, so only the number is wrong.
        shared_admin_conn.execute(
            "ALTER TABLE allocations DISABLE TRIGGER allocations_apply_updates"
        )
        set_status(shared_admin_conn, allocation_id, "purchased")
        shared_admin_conn.execute(INSERT_TICKET, (event_id, allocation_id, 10))
        err = fails(shared_admin_conn, INSERT_TICKET, (event_id, allocation_id, 11))

    assert err.sqlstate == "TK005"
    assert "above" in (err.diag.message_primary or "")
    assert snapshot(shared_admin_conn) == before


def test_voided_ticket_inserted_by_hand_fails(admin_conn: psycopg.Connection[Any]) -> None:
    """A ticket is born valid; only cancelling its allocation voids it."""
    event_id = make_event(admin_conn, total=10).id
    allocation_id = allocation_in(admin_conn, event_id, "purchased")
    before = snapshot(admin_conn)

    # Were this accepted, number 10 would count as issued but never pooled: the next purchase
    # would be numbered from 11, above capacity, and fail although tickets are left.
    err = fails(
        admin_conn,
        "INSERT INTO tickets (event_id, allocation_id, number, voided_at)"
        " VALUES (%s, %s, 10, now())",
        (event_id, allocation_id),
    )

    assert err.sqlstate == "TK005"
    assert snapshot(admin_conn) == before


# --- transactions older than the rows they change -----------------------------------------------
# now() is when a transaction began, so a transaction can change a row that another transaction
# created after it began: a cancel queued behind a purchase, a reserve queued behind the event's
# lock that reclaims a hold created meanwhile, a caller's long transaction. The write is valid.


def test_cancel_in_a_transaction_older_than_the_purchase(
    shared_admin_dsn: str, shared_admin_conn: psycopg.Connection[Any]
) -> None:
    event_id = make_event(shared_admin_conn, total=10).id
    allocation_id = hold(shared_admin_conn, event_id, "x", 2)
    with db.connect(shared_admin_dsn) as older:
        older.execute("BEGIN")
        set_status(shared_admin_conn, allocation_id, "purchased")

        set_status(older, allocation_id, "cancelled")
        older.execute("COMMIT")

    assert status_of(shared_admin_conn, allocation_id) == "cancelled"
    assert ticket_numbers(shared_admin_conn, allocation_id, voided=True) == [1, 2]
    assert pooled(shared_admin_conn, event_id) == [1, 2]
    assert inventory(shared_admin_conn, event_id) == (10, None, 0, 0)
    assert_consistent(shared_admin_conn)


@pytest.mark.parametrize("new_status", ["purchased", "cancelled"])
def test_update_in_a_transaction_older_than_the_allocation(
    shared_admin_dsn: str, shared_admin_conn: psycopg.Connection[Any], new_status: str
) -> None:
    event_id = make_event(shared_admin_conn, total=10).id
    with db.connect(shared_admin_dsn) as older:
        older.execute("BEGIN")
        older.execute("SELECT 1")
        allocation_id = hold(shared_admin_conn, event_id, "x", 2)

        set_status(older, allocation_id, new_status)
        older.execute("COMMIT")

    assert status_of(shared_admin_conn, allocation_id) == new_status
    assert ticket_numbers(shared_admin_conn, allocation_id) == (
        [1, 2] if new_status == "purchased" else []
    )
    assert_consistent(shared_admin_conn)


def test_reclaim_in_a_transaction_older_than_the_lapsed_hold(
    shared_admin_dsn: str, shared_admin_conn: psycopg.Connection[Any]
) -> None:
    event_id = make_event(shared_admin_conn, total=5).id
    with db.connect(shared_admin_dsn) as older:
        older.execute("BEGIN")
        older.execute("SELECT 1")
        row = shared_admin_conn.execute(
            "INSERT INTO allocations (event_id, fingerprint, quantity, expires_at)"
            " VALUES (%s, 'h', 3, now() + interval '50 milliseconds') RETURNING id",
            (event_id,),
        ).fetchone()
        assert row is not None
        time.sleep(0.1)

        # The hold has lapsed: this hold needs its tickets and reclaims it.
        mine = hold(older, event_id, "x", 4)
        older.execute("COMMIT")

    assert status_of(shared_admin_conn, int(row[0])) == "expired"
    assert status_of(shared_admin_conn, mine) == "reserved"
    assert inventory(shared_admin_conn, event_id) == (5, None, 4, 0)
    assert_consistent(shared_admin_conn)


# --- raw writers at REPEATABLE READ and SERIALIZABLE -------------------------------------------


@pytest.mark.parametrize("level", list(BEGIN))
def test_second_snapshot_writer_fails_after_first_commits(
    shared_admin_dsn: str, shared_admin_conn: psycopg.Connection[Any], level: str
) -> None:
    event_id = make_event(shared_admin_conn, total=10).id
    with db.connect(shared_admin_dsn) as a, db.connect(shared_admin_dsn) as b:
        a.execute(BEGIN[level])
        b.execute(BEGIN[level])
        a.execute("SELECT 1 FROM allocations")
        b.execute("SELECT 1 FROM allocations")

        hold(a, event_id, "a", 6)
        a.execute("COMMIT")
        err = fails(b, INSERT_HOLD, (event_id, "b", 6))
        b.execute("ROLLBACK")

    assert err.sqlstate == "40001"
    assert buyers(shared_admin_conn, event_id) == [("a", 6)]
    assert inventory(shared_admin_conn, event_id) == (10, None, 6, 0)
    assert_consistent(shared_admin_conn)


@pytest.mark.race
@pytest.mark.parametrize("level", list(BEGIN))
@pytest.mark.parametrize(
    ("first_ends", "second_sqlstate"), [("COMMIT", "40001"), ("ROLLBACK", None)]
)
def test_snapshot_writer_waiting_on_another(
    shared_admin_dsn: str,
    shared_admin_conn: psycopg.Connection[Any],
    level: str,
    first_ends: LiteralString,
    second_sqlstate: str | None,
) -> None:
    event_id = make_event(shared_admin_conn, total=10).id
    outcome: list[str | None] = []
    with db.connect(shared_admin_dsn) as a, db.connect(shared_admin_dsn) as b:
        a.execute(BEGIN[level])
        b.execute(BEGIN[level])
        a.execute("SELECT 1 FROM allocations")
        b.execute("SELECT 1 FROM allocations")
        hold(a, event_id, "a", 6)

        def second() -> None:
            try:
                hold(b, event_id, "b", 6)
                b.execute("COMMIT")
                outcome.append(None)
            except psycopg.Error as exc:
                b.execute("ROLLBACK")
                outcome.append(exc.sqlstate)

        thread = threading.Thread(target=second)
        thread.start()
        wait_until_blocked(shared_admin_conn, b.info.backend_pid)
        a.execute(first_ends)
        thread.join(timeout=30)
        assert not thread.is_alive()

    assert outcome == [second_sqlstate]
    winner = "a" if first_ends == "COMMIT" else "b"
    assert buyers(shared_admin_conn, event_id) == [(winner, 6)]
    assert inventory(shared_admin_conn, event_id) == (10, None, 6, 0)
    assert_consistent(shared_admin_conn)


@pytest.mark.parametrize("level", list(BEGIN))
@pytest.mark.parametrize(
    ("second_quantity", "purchase_sqlstate", "hold_status"),
    [
        # The second writer needs the lapsed hold's tickets: it marks it expired, and the
        # purchase meets a row changed after its snapshot.
        (4, "40001", "expired"),
        # Nobody needed the tickets: the hold is still reserved, and the guard sees it lapsed.
        (1, "TK004", "reserved"),
    ],
)
def test_purchase_of_a_hold_that_lapsed_after_the_snapshot_fails(
    shared_admin_dsn: str,
    shared_admin_conn: psycopg.Connection[Any],
    level: str,
    second_quantity: int,
    purchase_sqlstate: str,
    hold_status: str,
) -> None:
    event_id = make_event(shared_admin_conn, total=5).id
    row = shared_admin_conn.execute(
        "INSERT INTO allocations (event_id, fingerprint, quantity, expires_at)"
        " VALUES (%s, 'h', 3, now() + interval '500 milliseconds')"
        " RETURNING id, extract(epoch FROM expires_at - clock_timestamp())",
        (event_id,),
    ).fetchone()
    assert row is not None
    short_hold, remaining = int(row[0]), float(row[1])
    with db.connect(shared_admin_dsn) as a:
        a.execute(BEGIN[level])
        assert a.execute(
            "SELECT status, expires_at > clock_timestamp() FROM allocations WHERE id = %s",
            (short_hold,),
        ).fetchone() == ("reserved", True)
        time.sleep(max(remaining, 0) + 0.05)

        hold(shared_admin_conn, event_id, "b", second_quantity)
        assert status_of(shared_admin_conn, short_hold) == hold_status

        err = fails(a, "UPDATE allocations SET status = 'purchased' WHERE id = %s", (short_hold,))
        a.execute("ROLLBACK")

    assert err.sqlstate == purchase_sqlstate
    assert status_of(shared_admin_conn, short_hold) == hold_status
    assert rows(shared_admin_conn, "tickets", event_id) == 0
    live = shared_admin_conn.execute(
        "SELECT coalesce(sum(quantity), 0) FROM allocations"
        " WHERE event_id = %s AND (status = 'purchased'"
        "   OR (status = 'reserved' AND expires_at > clock_timestamp()))",
        (event_id,),
    ).fetchone()
    assert live == (second_quantity,)
    assert events.get_availability(shared_admin_conn, event_id).available == 5 - second_quantity
    assert_consistent(shared_admin_conn)
