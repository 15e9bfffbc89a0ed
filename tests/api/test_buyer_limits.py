"""Buyer counters exist for events with a limit only (0010).

An event without max_per_buyer writes no buyer_inventory row; setting a limit
counts every buyer afresh under the event's slot locks; a reservation or a
cancel that started before the limit was set, and waited for a slot, counts
itself once it holds one.
"""

from __future__ import annotations

import threading
from typing import Any

import psycopg
import pytest

from tests.support import INSERT_LAPSED, assert_consistent, make_event, wait_until_blocked
from ticketing import admin, allocations, db, events
from ticketing.errors import BuyerLimitExceeded


@pytest.fixture(params=[1, 4], ids=["1-slot", "4-slots"])
def slots(request: pytest.FixtureRequest) -> int:
    return int(request.param)


def _counters(conn: psycopg.Connection[Any], event_id: int) -> dict[str, int]:
    rows = conn.execute(
        "SELECT fingerprint, quantity FROM buyer_inventory WHERE event_id = %s", (event_id,)
    ).fetchall()
    return {str(r[0]): int(r[1]) for r in rows}


def _set_limit(admin_conn: psycopg.Connection[Any], event_id: int, limit: int | None) -> None:
    admin_conn.execute("UPDATE events SET max_per_buyer = %s WHERE id = %s", (limit, event_id))


def _reserve(conn: psycopg.Connection[Any], event_id: int, who: str, quantity: int) -> int:
    return allocations.reserve(conn, event_id=event_id, fingerprint=who, quantity=quantity).id


def _lapsed(admin_conn: psycopg.Connection[Any], event_id: int, who: str, quantity: int) -> None:
    """A hold that lapsed a minute ago (backdating is the superuser's)."""
    admin_conn.execute(INSERT_LAPSED, (event_id, who, quantity))


def test_an_event_without_a_limit_keeps_no_buyer_counters(
    conn: psycopg.Connection[Any], admin_conn: psycopg.Connection[Any], slots: int
) -> None:
    event_id = make_event(conn, total=20, slots=slots).id
    held = _reserve(conn, event_id, "ann", 2)
    bought = _reserve(conn, event_id, "bob", 3)
    allocations.purchase(conn, allocation_id=bought, fingerprint="bob")
    allocations.cancel(conn, allocation_id=held, fingerprint="ann")
    _lapsed(admin_conn, event_id, "cat", 4)
    assert allocations.expire_due(conn) == 1
    allocations.cancel(conn, allocation_id=bought, fingerprint="bob")
    assert _counters(conn, event_id) == {}
    assert events.get_availability(conn, event_id).available == 20
    assert admin.check_invariants(conn) == []
    assert_consistent(conn)


def test_setting_a_limit_counts_every_live_buyer(
    conn: psycopg.Connection[Any], admin_conn: psycopg.Connection[Any], slots: int
) -> None:
    event_id = make_event(conn, total=20, slots=slots).id
    _reserve(conn, event_id, "ann", 2)
    bought = _reserve(conn, event_id, "ann", 1)
    allocations.purchase(conn, allocation_id=bought, fingerprint="ann")
    dropped = _reserve(conn, event_id, "bob", 3)
    allocations.cancel(conn, allocation_id=dropped, fingerprint="bob")
    _reserve(conn, event_id, "cat", 1)

    _set_limit(admin_conn, event_id, 4)

    assert _counters(conn, event_id) == {"ann": 3, "cat": 1}
    with pytest.raises(BuyerLimitExceeded):
        _reserve(conn, event_id, "ann", 2)
    _reserve(conn, event_id, "ann", 1)
    _reserve(conn, event_id, "bob", 4)
    assert _counters(conn, event_id) == {"ann": 4, "bob": 4, "cat": 1}
    assert admin.check_invariants(conn) == []
    assert_consistent(conn)


def test_setting_a_limit_below_a_live_buyer_is_refused_and_counts_nothing(
    conn: psycopg.Connection[Any], admin_conn: psycopg.Connection[Any], slots: int
) -> None:
    event_id = make_event(conn, total=20, slots=slots).id
    _reserve(conn, event_id, "ann", 5)
    with pytest.raises(psycopg.DatabaseError) as info:
        _set_limit(admin_conn, event_id, 4)
    assert info.value.sqlstate == "TK006"
    assert _counters(conn, event_id) == {}
    assert events.get_event(conn, event_id).max_per_buyer is None
    assert_consistent(conn)


def test_a_limit_removed_and_set_again_is_counted_again(
    conn: psycopg.Connection[Any], admin_conn: psycopg.Connection[Any], slots: int
) -> None:
    event_id = make_event(conn, total=20, slots=slots, max_per_buyer=4).id
    _reserve(conn, event_id, "ann", 3)
    _set_limit(admin_conn, event_id, None)
    second = _reserve(conn, event_id, "ann", 3)
    # Left as they were while the event has no limit.
    assert _counters(conn, event_id) == {"ann": 3}
    allocations.cancel(conn, allocation_id=second, fingerprint="ann")
    _reserve(conn, event_id, "ann", 4)

    _set_limit(admin_conn, event_id, 7)

    assert _counters(conn, event_id) == {"ann": 7}
    with pytest.raises(BuyerLimitExceeded):
        _reserve(conn, event_id, "ann", 1)
    with pytest.raises(psycopg.DatabaseError) as info:
        _set_limit(admin_conn, event_id, 6)
    assert info.value.sqlstate == "TK006"
    assert_consistent(conn)


def test_setting_a_limit_reclaims_lapsed_holds_before_counting(
    conn: psycopg.Connection[Any], admin_conn: psycopg.Connection[Any], slots: int
) -> None:
    event_id = make_event(conn, total=20, slots=slots).id
    _lapsed(admin_conn, event_id, "ann", 4)
    _reserve(conn, event_id, "ann", 2)
    _set_limit(admin_conn, event_id, 3)
    assert _counters(conn, event_id) == {"ann": 2}
    assert_consistent(conn)


def _while_a_limit_is_set(
    dsn: str,
    admin_conn: psycopg.Connection[Any],
    event_id: int,
    limit: int,
    call: Any,
) -> Any:
    """Run `call(conn)` on a connection of its own while another transaction sets the limit.

    The setter holds every slot lock when the call starts; the call reads "no limit",
    waits for a slot, and the setter commits while it waits. Returns what the call
    returned or raised.
    """
    outcome: list[Any] = []
    other = db.connect(dsn)
    pid = other.info.backend_pid

    def run() -> None:
        try:
            outcome.append(call(other))
        except Exception as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run)
    try:
        with admin_conn.transaction():
            _set_limit(admin_conn, event_id, limit)
            with psycopg.connect(admin_conn.info.dsn, autocommit=True) as watcher:
                thread.start()
                wait_until_blocked(watcher, pid)
        thread.join(timeout=30)
        assert not thread.is_alive(), "the call hung"
    finally:
        other.close()
    return outcome[0]


@pytest.mark.parametrize(("quantity", "counted"), [(2, 3), (3, None)])
def test_a_reservation_that_waited_for_a_new_limit_counts_itself(
    dsn: str,
    conn: psycopg.Connection[Any],
    admin_conn: psycopg.Connection[Any],
    slots: int,
    quantity: int,
    counted: int | None,
) -> None:
    event_id = make_event(conn, total=20, slots=slots).id
    _reserve(conn, event_id, "ann", 1)

    result = _while_a_limit_is_set(
        dsn, admin_conn, event_id, 3, lambda c: _reserve(c, event_id, "ann", quantity)
    )

    if counted is None:
        assert isinstance(result, BuyerLimitExceeded), result
        assert _counters(conn, event_id) == {"ann": 1}
    else:
        assert isinstance(result, int), result
        assert _counters(conn, event_id) == {"ann": counted}
    assert admin.check_invariants(conn) == []
    assert_consistent(conn)


def test_a_cancel_that_waited_for_a_new_limit_counts_itself(
    dsn: str, conn: psycopg.Connection[Any], admin_conn: psycopg.Connection[Any], slots: int
) -> None:
    event_id = make_event(conn, total=20, slots=slots).id
    first = _reserve(conn, event_id, "ann", 2)
    _reserve(conn, event_id, "ann", 1)

    result = _while_a_limit_is_set(
        dsn,
        admin_conn,
        event_id,
        5,
        lambda c: allocations.cancel(c, allocation_id=first, fingerprint="ann"),
    )

    assert result.status == "cancelled", result
    assert _counters(conn, event_id) == {"ann": 1}
    assert admin.check_invariants(conn) == []
    assert_consistent(conn)


def test_a_lapsed_hold_in_an_event_without_a_limit_is_reclaimed_when_sold_out(
    conn: psycopg.Connection[Any], admin_conn: psycopg.Connection[Any], slots: int
) -> None:
    event_id = make_event(conn, total=20, slots=slots).id
    _lapsed(admin_conn, event_id, "ann", 20)
    _reserve(conn, event_id, "bob", 20)
    statuses = conn.execute(
        "SELECT fingerprint, status FROM allocations WHERE event_id = %s ORDER BY id", (event_id,)
    ).fetchall()
    assert statuses == [("ann", "expired"), ("bob", "reserved")]
    assert _counters(conn, event_id) == {}
    assert_consistent(conn)
