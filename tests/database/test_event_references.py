"""What the foreign keys to events guaranteed, now held by the event's own rows (0009).

An allocation names an existing event; an event with allocations cannot be
deleted, even while a reservation is in flight; an event's id never changes.
No reservation takes a lock on the events row.
"""

from __future__ import annotations

import threading
from typing import Any

import psycopg
import pytest

from tests.support import assert_consistent, make_event, wait_until_blocked
from ticketing import allocations, db, events
from ticketing.errors import EventNotFound


def test_a_reservation_for_a_missing_event_is_event_not_found(
    conn: psycopg.Connection[Any],
) -> None:
    with pytest.raises(EventNotFound):
        allocations.reserve(conn, event_id=987654, fingerprint="a", quantity=1)
    assert conn.execute("SELECT count(*) FROM allocations").fetchone() == (0,)
    assert conn.execute("SELECT count(*) FROM allocation_history").fetchone() == (0,)


def test_raw_insert_for_a_missing_event_raises_the_foreign_key_error(
    conn: psycopg.Connection[Any],
) -> None:
    with pytest.raises(psycopg.errors.ForeignKeyViolation) as info:
        conn.execute(
            "INSERT INTO allocations (event_id, fingerprint, quantity) VALUES (987654, 'a', 1)"
        )
    assert info.value.diag.constraint_name == "allocations_event_id_fkey"
    assert info.value.diag.message_detail == (
        'Key (event_id)=(987654) is not present in table "events".'
    )


def test_an_event_without_allocations_can_be_deleted(
    conn: psycopg.Connection[Any], admin_conn: psycopg.Connection[Any]
) -> None:
    event_id = make_event(conn).id
    admin_conn.execute("DELETE FROM events WHERE id = %s", (event_id,))
    for table in ("event_inventory", "inventory_slots", "buyer_inventory", "ticket_number_pool"):
        count = admin_conn.execute(
            f"SELECT count(*) FROM {table} WHERE event_id = %s",
            (event_id,),
        ).fetchone()
        assert count == (0,), table
    with pytest.raises(EventNotFound):
        allocations.reserve(conn, event_id=event_id, fingerprint="a", quantity=1)
    assert_consistent(conn)


def test_an_event_with_allocations_cannot_be_deleted(
    conn: psycopg.Connection[Any], admin_conn: psycopg.Connection[Any]
) -> None:
    event_id = make_event(conn).id
    held = allocations.reserve(conn, event_id=event_id, fingerprint="a", quantity=1)
    allocations.cancel(conn, allocation_id=held.id, fingerprint="a")
    with pytest.raises(psycopg.errors.ForeignKeyViolation) as info:
        admin_conn.execute("DELETE FROM events WHERE id = %s", (event_id,))
    assert info.value.diag.constraint_name == "allocations_event_id_fkey"
    assert events.get_event(conn, event_id).id == event_id
    assert_consistent(conn)


def test_an_event_id_never_changes(
    conn: psycopg.Connection[Any], admin_conn: psycopg.Connection[Any]
) -> None:
    event_id = make_event(conn).id
    with pytest.raises(psycopg.Error) as info:
        admin_conn.execute("UPDATE events SET id = DEFAULT WHERE id = %s", (event_id,))
    assert info.value.sqlstate == "TK005"
    assert events.get_event(conn, event_id).id == event_id


@pytest.mark.race
def test_a_delete_waits_for_a_reservation_in_flight_and_is_refused(
    dsn: str, admin_dsn: str, admin_conn: psycopg.Connection[Any]
) -> None:
    with db.connect(dsn) as conn:
        event_id = make_event(conn, total=1).id
    outcome: list[BaseException | None] = []
    with db.connect(dsn) as buyer, db.connect(admin_dsn) as deleter:
        buyer_tx = buyer.transaction()
        buyer_tx.__enter__()
        buyer.execute(
            "INSERT INTO allocations (event_id, fingerprint, quantity) VALUES (%s, 'a', 1)",
            (event_id,),
        )

        def delete() -> None:
            try:
                deleter.execute("DELETE FROM events WHERE id = %s", (event_id,))
                outcome.append(None)
            except psycopg.Error as exc:
                outcome.append(exc)

        thread = threading.Thread(target=delete)
        thread.start()
        wait_until_blocked(admin_conn, deleter.info.backend_pid)
        buyer_tx.__exit__(None, None, None)  # commit the reservation
        thread.join(timeout=10)
    assert len(outcome) == 1
    assert isinstance(outcome[0], psycopg.errors.ForeignKeyViolation)
    assert admin_conn.execute(
        "SELECT count(*) FROM allocations WHERE event_id = %s", (event_id,)
    ).fetchone() == (1,)
    with db.connect(dsn) as conn:
        assert_consistent(conn)


@pytest.mark.race
def test_a_reservation_waiting_on_a_delete_gets_event_not_found(
    dsn: str, admin_dsn: str, admin_conn: psycopg.Connection[Any]
) -> None:
    with db.connect(dsn) as conn:
        event_id = make_event(conn, total=1).id
    outcome: list[BaseException | None] = []
    with db.connect(admin_dsn) as deleter, db.connect(dsn) as buyer:
        delete_tx = deleter.transaction()
        delete_tx.__enter__()
        deleter.execute("DELETE FROM events WHERE id = %s", (event_id,))

        def reserve() -> None:
            try:
                allocations.reserve(buyer, event_id=event_id, fingerprint="a", quantity=1)
                outcome.append(None)
            except Exception as exc:
                outcome.append(exc)

        thread = threading.Thread(target=reserve)
        thread.start()
        wait_until_blocked(admin_conn, buyer.info.backend_pid)
        delete_tx.__exit__(None, None, None)  # commit the delete
        thread.join(timeout=10)
    assert len(outcome) == 1
    assert isinstance(outcome[0], EventNotFound)
    assert admin_conn.execute("SELECT count(*) FROM allocations").fetchone() == (0,)
