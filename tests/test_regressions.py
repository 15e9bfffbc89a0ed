"""Concurrency cases found in review: a change of capacity or limit racing an open transaction."""

from __future__ import annotations

import threading
from typing import Any

import psycopg
import pytest

from tests.support import STARTS_AT, assert_consistent
from ticketing import admin, allocations, db, events


def _in_thread(dsn: str, sql: str, params: tuple[Any, ...]) -> tuple[threading.Thread, list[Any]]:
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


def _waiting(conn: psycopg.Connection[Any], pattern: str) -> bool:
    row = conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND wait_event_type = 'Lock' AND query LIKE %s",
        (pattern,),
    ).fetchone()
    return row is not None and row[0] == 1


def _wait_until_blocked(conn: psycopg.Connection[Any], pattern: str) -> None:
    for _ in range(200):
        if _waiting(conn, pattern):
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
        thread, outcome = _in_thread(
            admin_dsn, "UPDATE events SET max_per_buyer = 2 WHERE id = %s", (event.id,)
        )
        _wait_until_blocked(admin_conn, "UPDATE events SET max_per_buyer%")
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
        cancel, cancelled = _in_thread(
            dsn, "UPDATE allocations SET status = 'cancelled' WHERE id = %s", (sold.id,)
        )
        # The superuser sees every session's query; the cut is an operator's change.
        _wait_until_blocked(admin_conn, "UPDATE allocations SET status = 'cancelled'%")
        cut, outcome = _in_thread(
            admin_dsn, "UPDATE events SET total_tickets = 2 WHERE id = %s", (event.id,)
        )
        _wait_until_blocked(admin_conn, "UPDATE events SET total_tickets%")
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
