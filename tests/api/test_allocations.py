"""Allocations through the public API: reserve, purchase, cancel, lookups and the sweeper."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import psycopg
import pytest

from tests.support import LAPSE, MISSING_ID, SHORT, counters, make_event, row_count
from ticketing import allocations, db, events, tickets
from ticketing.errors import (
    AllocationNotFound,
    BuyerLimitExceeded,
    HoldExpired,
    IdempotencyConflict,
    InvalidTransition,
    NotFound,
    SoldOut,
)
from ticketing.models import Allocation, AllocationStatus, Availability


def _buyer(conn: psycopg.Connection[Any], event_id: int, fingerprint: str) -> int | None:
    row = conn.execute(
        "SELECT quantity FROM buyer_inventory WHERE event_id = %s AND fingerprint = %s",
        (event_id, fingerprint),
    ).fetchone()
    return None if row is None else int(row[0])


def _avail(conn: psycopg.Connection[Any], event_id: int) -> tuple[int, int, int]:
    a = events.get_availability(conn, event_id)
    return a.reserved, a.purchased, a.available


# --- reserve -------------------------------------------------------------------------------


def test_reserve_creates_a_hold(conn: psycopg.Connection[Any]) -> None:
    event = make_event(conn, total=10)
    hold = timedelta(minutes=15)
    alloc = allocations.reserve(conn, event_id=event.id, fingerprint="alice", quantity=3, hold=hold)
    assert isinstance(alloc, Allocation)
    assert alloc.status is AllocationStatus.RESERVED
    assert alloc.status == "reserved"
    assert alloc.event_id == event.id
    assert alloc.fingerprint == "alice"
    assert alloc.quantity == 3
    assert alloc.idempotency_key is None
    assert alloc.expires_at == alloc.created_at + hold
    assert alloc.updated_at == alloc.created_at
    assert _avail(conn, event.id) == (3, 0, 7)
    assert counters(conn, event.id) == (3, 0)
    # An event without max_per_buyer keeps no buyer counters.
    assert _buyer(conn, event.id, "alice") is None
    assert tickets.list_for_allocation(conn, alloc.id) == []


def test_reserve_counts_the_buyer_of_an_event_with_a_limit(conn: psycopg.Connection[Any]) -> None:
    event = make_event(conn, total=10, max_per_buyer=5)
    allocations.reserve(conn, event_id=event.id, fingerprint="alice", quantity=3)
    assert _buyer(conn, event.id, "alice") == 3


def test_reserve_default_hold_is_ten_minutes(conn: psycopg.Connection[Any]) -> None:
    event = make_event(conn)
    alloc = allocations.reserve(conn, event_id=event.id, fingerprint="alice", quantity=1)
    assert alloc.expires_at == alloc.created_at + timedelta(minutes=10)


def test_reserve_uses_database_time(conn: psycopg.Connection[Any]) -> None:
    event = make_event(conn)
    before = conn.execute("SELECT now()").fetchone()
    alloc = allocations.reserve(conn, event_id=event.id, fingerprint="alice", quantity=1)
    after = conn.execute("SELECT now()").fetchone()
    assert before is not None
    assert after is not None
    assert before[0] <= alloc.created_at <= after[0]


def test_reserve_several_buyers_until_sold_out(conn: psycopg.Connection[Any]) -> None:
    event = make_event(conn, total=5, max_per_buyer=10)
    allocations.reserve(conn, event_id=event.id, fingerprint="alice", quantity=2)
    allocations.reserve(conn, event_id=event.id, fingerprint="bob", quantity=2)
    allocations.reserve(conn, event_id=event.id, fingerprint="alice", quantity=1)
    assert _avail(conn, event.id) == (5, 0, 0)
    assert _buyer(conn, event.id, "alice") == 3
    assert _buyer(conn, event.id, "bob") == 2
    with pytest.raises(SoldOut) as info:
        allocations.reserve(conn, event_id=event.id, fingerprint="carol", quantity=1)
    assert info.value.available == 0


# --- idempotency ---------------------------------------------------------------------------


def test_same_idempotency_key_returns_same_allocation_and_takes_nothing(
    conn: psycopg.Connection[Any],
) -> None:
    event = make_event(conn, total=10, max_per_buyer=10)
    first = allocations.reserve(
        conn, event_id=event.id, fingerprint="alice", quantity=4, idempotency_key="req-1"
    )
    assert first.idempotency_key == "req-1"
    again = allocations.reserve(
        conn, event_id=event.id, fingerprint="alice", quantity=4, idempotency_key="req-1"
    )
    assert again == first
    assert row_count(conn, "allocations") == 1
    assert _avail(conn, event.id) == (4, 0, 6)
    assert _buyer(conn, event.id, "alice") == 4


def test_idempotent_retry_ignores_a_different_hold(conn: psycopg.Connection[Any]) -> None:
    event = make_event(conn, total=10)
    first = allocations.reserve(
        conn, event_id=event.id, fingerprint="alice", quantity=2, idempotency_key="req-1"
    )
    again = allocations.reserve(
        conn,
        event_id=event.id,
        fingerprint="alice",
        quantity=2,
        hold=timedelta(days=1),
        idempotency_key="req-1",
    )
    assert again == first


def test_idempotent_retry_after_purchase_returns_it_as_it_is_now(
    conn: psycopg.Connection[Any],
) -> None:
    event = make_event(conn, total=10)
    first = allocations.reserve(
        conn, event_id=event.id, fingerprint="alice", quantity=2, idempotency_key="req-1"
    )
    bought = allocations.purchase(conn, allocation_id=first.id, fingerprint="alice")
    again = allocations.reserve(
        conn, event_id=event.id, fingerprint="alice", quantity=2, idempotency_key="req-1"
    )
    assert again == bought
    assert again.status is AllocationStatus.PURCHASED
    assert row_count(conn, "allocations") == 1
    assert row_count(conn, "tickets") == 2
    assert _avail(conn, event.id) == (0, 2, 8)


def test_idempotent_retry_after_cancel_returns_the_cancelled_allocation(
    conn: psycopg.Connection[Any],
) -> None:
    event = make_event(conn, total=10)
    first = allocations.reserve(
        conn, event_id=event.id, fingerprint="alice", quantity=2, idempotency_key="req-1"
    )
    cancelled = allocations.cancel(conn, allocation_id=first.id, fingerprint="alice")
    again = allocations.reserve(
        conn, event_id=event.id, fingerprint="alice", quantity=2, idempotency_key="req-1"
    )
    assert again == cancelled
    assert again.status is AllocationStatus.CANCELLED
    assert _avail(conn, event.id) == (0, 0, 10)


def test_idempotent_retry_on_a_sold_out_event_returns_the_original(
    conn: psycopg.Connection[Any],
) -> None:
    event = make_event(conn, total=3)
    first = allocations.reserve(
        conn, event_id=event.id, fingerprint="alice", quantity=3, idempotency_key="req-1"
    )
    again = allocations.reserve(
        conn, event_id=event.id, fingerprint="alice", quantity=3, idempotency_key="req-1"
    )
    assert again == first
    assert _avail(conn, event.id) == (3, 0, 0)


@pytest.mark.parametrize("change", ["event", "fingerprint", "quantity"])
def test_idempotency_key_reused_for_a_different_request_conflicts(
    conn: psycopg.Connection[Any], change: str
) -> None:
    event = make_event(conn, total=10)
    other = make_event(conn, total=10)
    first = allocations.reserve(
        conn, event_id=event.id, fingerprint="alice", quantity=2, idempotency_key="req-1"
    )
    request: dict[str, Any] = {"event_id": event.id, "fingerprint": "alice", "quantity": 2}
    if change == "event":
        request["event_id"] = other.id
    elif change == "fingerprint":
        request["fingerprint"] = "bob"
    else:
        request["quantity"] = 3
    with pytest.raises(IdempotencyConflict):
        allocations.reserve(conn, idempotency_key="req-1", **request)
    assert row_count(conn, "allocations") == 1
    assert allocations.get_allocation(conn, first.id) == first
    assert _avail(conn, event.id) == (2, 0, 8)
    assert _avail(conn, other.id) == (0, 0, 10)
    assert _buyer(conn, event.id, "bob") is None


def test_different_idempotency_keys_make_different_allocations(
    conn: psycopg.Connection[Any],
) -> None:
    event = make_event(conn, total=10)
    a = allocations.reserve(
        conn, event_id=event.id, fingerprint="alice", quantity=2, idempotency_key="req-1"
    )
    b = allocations.reserve(
        conn, event_id=event.id, fingerprint="alice", quantity=2, idempotency_key="req-2"
    )
    c = allocations.reserve(conn, event_id=event.id, fingerprint="alice", quantity=2)
    assert len({a.id, b.id, c.id}) == 3
    assert _avail(conn, event.id) == (6, 0, 4)


# --- buyer limit and sold out ---------------------------------------------------------------


def test_buyer_limit_counts_holds_and_purchases(conn: psycopg.Connection[Any]) -> None:
    event = make_event(conn, total=100, max_per_buyer=4)
    first = allocations.reserve(conn, event_id=event.id, fingerprint="alice", quantity=3)
    allocations.purchase(conn, allocation_id=first.id, fingerprint="alice")
    allocations.reserve(conn, event_id=event.id, fingerprint="alice", quantity=1)
    with pytest.raises(BuyerLimitExceeded):
        allocations.reserve(conn, event_id=event.id, fingerprint="alice", quantity=1)
    # Another buyer is not affected.
    allocations.reserve(conn, event_id=event.id, fingerprint="bob", quantity=4)
    assert row_count(conn, "allocations") == 3
    assert _buyer(conn, event.id, "alice") == 4
    assert _avail(conn, event.id) == (5, 3, 92)


def test_buyer_limit_in_one_request(conn: psycopg.Connection[Any]) -> None:
    event = make_event(conn, total=100, max_per_buyer=4)
    with pytest.raises(BuyerLimitExceeded):
        allocations.reserve(conn, event_id=event.id, fingerprint="alice", quantity=5)
    allocations.reserve(conn, event_id=event.id, fingerprint="alice", quantity=4)
    assert row_count(conn, "allocations") == 1
    assert _avail(conn, event.id) == (4, 0, 96)


def test_cancel_frees_the_buyer_limit(conn: psycopg.Connection[Any]) -> None:
    event = make_event(conn, total=100, max_per_buyer=2)
    a = allocations.reserve(conn, event_id=event.id, fingerprint="alice", quantity=2)
    allocations.cancel(conn, allocation_id=a.id, fingerprint="alice")
    assert _buyer(conn, event.id, "alice") == 0
    b = allocations.reserve(conn, event_id=event.id, fingerprint="alice", quantity=2)
    assert b.status is AllocationStatus.RESERVED


def test_lapsed_hold_frees_the_buyer_limit(conn: psycopg.Connection[Any]) -> None:
    event = make_event(conn, total=100, max_per_buyer=2)
    old = allocations.reserve(conn, event_id=event.id, fingerprint="alice", quantity=2, hold=SHORT)
    time.sleep(LAPSE)
    new = allocations.reserve(conn, event_id=event.id, fingerprint="alice", quantity=2)
    assert new.status is AllocationStatus.RESERVED
    assert allocations.get_allocation(conn, old.id).status is AllocationStatus.EXPIRED
    assert _buyer(conn, event.id, "alice") == 2
    assert counters(conn, event.id) == (2, 0)


def test_buyer_limit_is_raised_before_sold_out(conn: psycopg.Connection[Any]) -> None:
    event = make_event(conn, total=4, max_per_buyer=3)
    allocations.reserve(conn, event_id=event.id, fingerprint="alice", quantity=3)
    # 2 more is over both alice's limit (5 > 3) and the capacity (5 > 4).
    with pytest.raises(BuyerLimitExceeded):
        allocations.reserve(conn, event_id=event.id, fingerprint="alice", quantity=2)
    # On a fresh buyer, over both the limit (4 > 3) and what is left (4 > 1).
    with pytest.raises(BuyerLimitExceeded):
        allocations.reserve(conn, event_id=event.id, fingerprint="bob", quantity=4)
    # Within the limit but over what is left: sold out.
    with pytest.raises(SoldOut) as info:
        allocations.reserve(conn, event_id=event.id, fingerprint="bob", quantity=2)
    assert info.value.available == 1
    assert row_count(conn, "allocations") == 1
    assert _buyer(conn, event.id, "bob") is None


def test_sold_out_reports_exact_availability(conn: psycopg.Connection[Any]) -> None:
    event = make_event(conn, total=10)
    allocations.reserve(conn, event_id=event.id, fingerprint="alice", quantity=7)
    with pytest.raises(SoldOut) as info:
        allocations.reserve(conn, event_id=event.id, fingerprint="bob", quantity=4)
    assert info.value.available == 3
    assert row_count(conn, "allocations") == 1
    assert _avail(conn, event.id) == (7, 0, 3)
    assert _buyer(conn, event.id, "bob") is None
    exact = allocations.reserve(conn, event_id=event.id, fingerprint="bob", quantity=3)
    assert exact.status is AllocationStatus.RESERVED
    assert _avail(conn, event.id) == (10, 0, 0)


def test_sold_out_counts_purchases(conn: psycopg.Connection[Any]) -> None:
    event = make_event(conn, total=6)
    a = allocations.reserve(conn, event_id=event.id, fingerprint="alice", quantity=4)
    allocations.purchase(conn, allocation_id=a.id, fingerprint="alice")
    allocations.reserve(conn, event_id=event.id, fingerprint="bob", quantity=1)
    with pytest.raises(SoldOut) as info:
        allocations.reserve(conn, event_id=event.id, fingerprint="carol", quantity=2)
    assert info.value.available == 1


@pytest.mark.parametrize("quantity", [6, 10_000])
def test_quantity_above_total_tickets_is_sold_out(
    conn: psycopg.Connection[Any], quantity: int
) -> None:
    event = make_event(conn, total=5)
    with pytest.raises(SoldOut) as info:
        allocations.reserve(conn, event_id=event.id, fingerprint="alice", quantity=quantity)
    assert info.value.available == 5
    assert row_count(conn, "allocations") == 0
    assert _avail(conn, event.id) == (0, 0, 5)


def test_sold_out_available_counts_reclaimed_lapsed_holds(conn: psycopg.Connection[Any]) -> None:
    event = make_event(conn, total=10)
    lapsing = allocations.reserve(
        conn, event_id=event.id, fingerprint="alice", quantity=4, hold=SHORT
    )
    allocations.reserve(conn, event_id=event.id, fingerprint="bob", quantity=5)
    time.sleep(LAPSE)
    with pytest.raises(SoldOut) as info:
        allocations.reserve(conn, event_id=event.id, fingerprint="carol", quantity=6)
    assert info.value.available == 5
    # The failed statement's reclaim was rolled back with it.
    assert allocations.get_allocation(conn, lapsing.id).status is AllocationStatus.RESERVED
    assert counters(conn, event.id) == (9, 0)


def test_reserve_reclaims_lapsed_holds(conn: psycopg.Connection[Any]) -> None:
    event = make_event(conn, total=5, max_per_buyer=10)
    old = allocations.reserve(conn, event_id=event.id, fingerprint="alice", quantity=5, hold=SHORT)
    time.sleep(LAPSE)
    new = allocations.reserve(conn, event_id=event.id, fingerprint="bob", quantity=5)
    assert new.status is AllocationStatus.RESERVED
    gone = allocations.get_allocation(conn, old.id)
    assert gone.status is AllocationStatus.EXPIRED
    assert gone.status == "expired"
    assert counters(conn, event.id) == (5, 0)
    assert _buyer(conn, event.id, "alice") == 0
    assert _buyer(conn, event.id, "bob") == 5
    assert _avail(conn, event.id) == (5, 0, 0)


# --- purchase ------------------------------------------------------------------------------


def test_purchase_issues_numbered_tickets(conn: psycopg.Connection[Any]) -> None:
    event = make_event(conn, total=10, max_per_buyer=10)
    hold = allocations.reserve(conn, event_id=event.id, fingerprint="alice", quantity=4)
    bought = allocations.purchase(conn, allocation_id=hold.id, fingerprint="alice")
    assert bought.id == hold.id
    assert bought.status is AllocationStatus.PURCHASED
    assert bought.quantity == 4
    assert bought.expires_at == hold.expires_at
    assert bought.created_at == hold.created_at
    assert bought.updated_at >= hold.updated_at
    issued = tickets.list_for_allocation(conn, hold.id)
    assert [t.number for t in issued] == [1, 2, 3, 4]
    assert all(t.event_id == event.id and t.allocation_id == hold.id for t in issued)
    assert all(t.voided_at is None for t in issued)
    codes = [t.code for t in issued]
    assert len(set(codes)) == 4
    assert all(len(c) >= 22 for c in codes)
    assert _avail(conn, event.id) == (0, 4, 6)
    assert _buyer(conn, event.id, "alice") == 4


def test_second_purchase_continues_numbering(conn: psycopg.Connection[Any]) -> None:
    event = make_event(conn, total=10)
    a = allocations.reserve(conn, event_id=event.id, fingerprint="alice", quantity=2)
    b = allocations.reserve(conn, event_id=event.id, fingerprint="bob", quantity=3)
    allocations.purchase(conn, allocation_id=b.id, fingerprint="bob")
    allocations.purchase(conn, allocation_id=a.id, fingerprint="alice")
    assert [t.number for t in tickets.list_for_allocation(conn, b.id)] == [1, 2, 3]
    assert [t.number for t in tickets.list_for_allocation(conn, a.id)] == [4, 5]
    all_codes = conn.execute("SELECT count(DISTINCT code) FROM tickets").fetchone()
    assert all_codes == (5,)


def test_purchase_again_returns_it_unchanged(conn: psycopg.Connection[Any]) -> None:
    event = make_event(conn, total=10)
    hold = allocations.reserve(conn, event_id=event.id, fingerprint="alice", quantity=2)
    bought = allocations.purchase(conn, allocation_id=hold.id, fingerprint="alice")
    issued = tickets.list_for_allocation(conn, hold.id)
    again = allocations.purchase(conn, allocation_id=hold.id, fingerprint="alice")
    assert again == bought
    assert tickets.list_for_allocation(conn, hold.id) == issued
    assert row_count(conn, "tickets") == 2
    assert _avail(conn, event.id) == (0, 2, 8)


def test_purchase_of_a_lapsed_hold_raises_hold_expired(conn: psycopg.Connection[Any]) -> None:
    event = make_event(conn, total=10)
    hold = allocations.reserve(conn, event_id=event.id, fingerprint="alice", quantity=2, hold=SHORT)
    time.sleep(LAPSE)
    with pytest.raises(HoldExpired):
        allocations.purchase(conn, allocation_id=hold.id, fingerprint="alice")
    assert allocations.get_allocation(conn, hold.id) == hold
    assert row_count(conn, "tickets") == 0
    assert _avail(conn, event.id) == (0, 0, 10)


def test_purchase_of_an_expired_hold_raises_hold_expired(conn: psycopg.Connection[Any]) -> None:
    event = make_event(conn, total=10)
    hold = allocations.reserve(conn, event_id=event.id, fingerprint="alice", quantity=2, hold=SHORT)
    time.sleep(LAPSE)
    assert allocations.expire_due(conn) == 1
    expired = allocations.get_allocation(conn, hold.id)
    assert expired.status is AllocationStatus.EXPIRED
    with pytest.raises(HoldExpired):
        allocations.purchase(conn, allocation_id=hold.id, fingerprint="alice")
    assert allocations.get_allocation(conn, hold.id) == expired
    assert row_count(conn, "tickets") == 0
    assert counters(conn, event.id) == (0, 0)


def test_purchase_of_a_cancelled_allocation_raises_invalid_transition(
    conn: psycopg.Connection[Any],
) -> None:
    event = make_event(conn, total=10)
    hold = allocations.reserve(conn, event_id=event.id, fingerprint="alice", quantity=2)
    cancelled = allocations.cancel(conn, allocation_id=hold.id, fingerprint="alice")
    with pytest.raises(InvalidTransition):
        allocations.purchase(conn, allocation_id=hold.id, fingerprint="alice")
    assert allocations.get_allocation(conn, hold.id) == cancelled
    assert row_count(conn, "tickets") == 0
    assert _avail(conn, event.id) == (0, 0, 10)


def test_purchase_with_wrong_fingerprint_is_not_found(conn: psycopg.Connection[Any]) -> None:
    event = make_event(conn, total=10)
    hold = allocations.reserve(conn, event_id=event.id, fingerprint="alice", quantity=2)
    with pytest.raises(AllocationNotFound) as info:
        allocations.purchase(conn, allocation_id=hold.id, fingerprint="mallory")
    assert isinstance(info.value, NotFound)
    assert allocations.get_allocation(conn, hold.id) == hold
    assert row_count(conn, "tickets") == 0


def test_purchase_of_missing_allocation_is_not_found(conn: psycopg.Connection[Any]) -> None:
    with pytest.raises(AllocationNotFound):
        allocations.purchase(conn, allocation_id=MISSING_ID, fingerprint="alice")


# --- cancel --------------------------------------------------------------------------------


def test_cancel_a_live_hold_returns_its_capacity(conn: psycopg.Connection[Any]) -> None:
    event = make_event(conn, total=10, max_per_buyer=10)
    hold = allocations.reserve(conn, event_id=event.id, fingerprint="alice", quantity=3)
    cancelled = allocations.cancel(conn, allocation_id=hold.id, fingerprint="alice")
    assert cancelled.id == hold.id
    assert cancelled.status is AllocationStatus.CANCELLED
    assert cancelled.quantity == 3
    assert cancelled.expires_at == hold.expires_at
    assert _avail(conn, event.id) == (0, 0, 10)
    assert counters(conn, event.id) == (0, 0)
    assert _buyer(conn, event.id, "alice") == 0


def test_cancel_a_lapsed_hold(conn: psycopg.Connection[Any]) -> None:
    event = make_event(conn, total=10)
    hold = allocations.reserve(conn, event_id=event.id, fingerprint="alice", quantity=3, hold=SHORT)
    time.sleep(LAPSE)
    cancelled = allocations.cancel(conn, allocation_id=hold.id, fingerprint="alice")
    assert cancelled.status is AllocationStatus.CANCELLED
    assert counters(conn, event.id) == (0, 0)
    assert _avail(conn, event.id) == (0, 0, 10)
    assert allocations.expire_due(conn) == 0
    assert allocations.get_allocation(conn, hold.id) == cancelled


def test_cancel_a_purchase_voids_tickets_and_returns_capacity(
    conn: psycopg.Connection[Any],
) -> None:
    event = make_event(conn, total=5, max_per_buyer=10)
    hold = allocations.reserve(conn, event_id=event.id, fingerprint="alice", quantity=3)
    allocations.purchase(conn, allocation_id=hold.id, fingerprint="alice")
    cancelled = allocations.cancel(conn, allocation_id=hold.id, fingerprint="alice")
    assert cancelled.status is AllocationStatus.CANCELLED
    voided = tickets.list_for_allocation(conn, hold.id)
    assert [t.number for t in voided] == [1, 2, 3]
    assert all(t.voided_at is not None for t in voided)
    assert all(t.voided_at >= t.created_at for t in voided if t.voided_at is not None)
    assert _avail(conn, event.id) == (0, 0, 5)
    assert counters(conn, event.id) == (0, 0)
    assert _buyer(conn, event.id, "alice") == 0


def test_cancelled_purchase_numbers_are_reused(conn: psycopg.Connection[Any]) -> None:
    event = make_event(conn, total=5)
    a = allocations.reserve(conn, event_id=event.id, fingerprint="alice", quantity=3)
    allocations.purchase(conn, allocation_id=a.id, fingerprint="alice")
    b = allocations.reserve(conn, event_id=event.id, fingerprint="bob", quantity=2)
    allocations.purchase(conn, allocation_id=b.id, fingerprint="bob")
    assert [t.number for t in tickets.list_for_allocation(conn, b.id)] == [4, 5]
    allocations.cancel(conn, allocation_id=a.id, fingerprint="alice")
    c = allocations.reserve(conn, event_id=event.id, fingerprint="carol", quantity=2)
    allocations.purchase(conn, allocation_id=c.id, fingerprint="carol")
    assert [t.number for t in tickets.list_for_allocation(conn, c.id)] == [1, 2]
    d = allocations.reserve(conn, event_id=event.id, fingerprint="dave", quantity=1)
    allocations.purchase(conn, allocation_id=d.id, fingerprint="dave")
    assert [t.number for t in tickets.list_for_allocation(conn, d.id)] == [3]
    valid = conn.execute(
        "SELECT array_agg(number ORDER BY number) FROM tickets"
        " WHERE event_id = %s AND voided_at IS NULL",
        (event.id,),
    ).fetchone()
    assert valid == ([1, 2, 3, 4, 5],)
    assert _avail(conn, event.id) == (0, 5, 0)
    assert row_count(conn, "tickets") == 8


def test_cancel_of_cancelled_returns_it_unchanged(conn: psycopg.Connection[Any]) -> None:
    event = make_event(conn, total=10)
    hold = allocations.reserve(conn, event_id=event.id, fingerprint="alice", quantity=2)
    allocations.purchase(conn, allocation_id=hold.id, fingerprint="alice")
    cancelled = allocations.cancel(conn, allocation_id=hold.id, fingerprint="alice")
    voided = tickets.list_for_allocation(conn, hold.id)
    again = allocations.cancel(conn, allocation_id=hold.id, fingerprint="alice")
    assert again == cancelled
    assert tickets.list_for_allocation(conn, hold.id) == voided
    assert _avail(conn, event.id) == (0, 0, 10)
    assert counters(conn, event.id) == (0, 0)


def test_cancel_of_expired_raises_invalid_transition(conn: psycopg.Connection[Any]) -> None:
    event = make_event(conn, total=10)
    hold = allocations.reserve(conn, event_id=event.id, fingerprint="alice", quantity=2, hold=SHORT)
    time.sleep(LAPSE)
    assert allocations.expire_due(conn) == 1
    expired = allocations.get_allocation(conn, hold.id)
    with pytest.raises(InvalidTransition):
        allocations.cancel(conn, allocation_id=hold.id, fingerprint="alice")
    assert allocations.get_allocation(conn, hold.id) == expired
    assert counters(conn, event.id) == (0, 0)


def test_cancel_with_wrong_fingerprint_is_not_found(conn: psycopg.Connection[Any]) -> None:
    event = make_event(conn, total=10)
    hold = allocations.reserve(conn, event_id=event.id, fingerprint="alice", quantity=2)
    bought = allocations.purchase(conn, allocation_id=hold.id, fingerprint="alice")
    with pytest.raises(AllocationNotFound):
        allocations.cancel(conn, allocation_id=hold.id, fingerprint="mallory")
    assert allocations.get_allocation(conn, hold.id) == bought
    assert all(t.voided_at is None for t in tickets.list_for_allocation(conn, hold.id))
    assert _avail(conn, event.id) == (0, 2, 8)


def test_cancel_of_missing_allocation_is_not_found(conn: psycopg.Connection[Any]) -> None:
    with pytest.raises(AllocationNotFound):
        allocations.cancel(conn, allocation_id=MISSING_ID, fingerprint="alice")


# --- lookups -------------------------------------------------------------------------------


def test_get_allocation(conn: psycopg.Connection[Any]) -> None:
    event = make_event(conn, total=10)
    hold = allocations.reserve(
        conn, event_id=event.id, fingerprint="alice", quantity=2, idempotency_key="k"
    )
    assert allocations.get_allocation(conn, hold.id) == hold
    bought = allocations.purchase(conn, allocation_id=hold.id, fingerprint="alice")
    assert allocations.get_allocation(conn, hold.id) == bought


def test_get_allocation_missing_is_not_found(conn: psycopg.Connection[Any]) -> None:
    with pytest.raises(AllocationNotFound):
        allocations.get_allocation(conn, MISSING_ID)


def test_list_for_buyer_newest_first_with_event_filter(conn: psycopg.Connection[Any]) -> None:
    one = make_event(conn, total=10)
    two = make_event(conn, total=10)
    a1 = allocations.reserve(conn, event_id=one.id, fingerprint="alice", quantity=1)
    b1 = allocations.reserve(conn, event_id=one.id, fingerprint="bob", quantity=1)
    a2 = allocations.reserve(conn, event_id=two.id, fingerprint="alice", quantity=2)
    a3 = allocations.reserve(conn, event_id=one.id, fingerprint="alice", quantity=3)
    a3 = allocations.purchase(conn, allocation_id=a3.id, fingerprint="alice")
    a1 = allocations.cancel(conn, allocation_id=a1.id, fingerprint="alice")
    assert allocations.list_for_buyer(conn, fingerprint="alice") == [a3, a2, a1]
    assert allocations.list_for_buyer(conn, fingerprint="alice", event_id=one.id) == [a3, a1]
    assert allocations.list_for_buyer(conn, fingerprint="alice", event_id=two.id) == [a2]
    assert allocations.list_for_buyer(conn, fingerprint="bob") == [b1]
    assert allocations.list_for_buyer(conn, fingerprint="bob", event_id=two.id) == []
    assert allocations.list_for_buyer(conn, fingerprint="nobody") == []
    assert allocations.list_for_buyer(conn, fingerprint="alice", event_id=MISSING_ID) == []


def test_list_for_buyer_ties_on_created_at_go_by_id(conn: psycopg.Connection[Any]) -> None:
    event = make_event(conn, total=10)
    # Both rows in one statement share now(): the newer id comes first.
    conn.execute(
        "INSERT INTO allocations (event_id, fingerprint, quantity)"
        " VALUES (%(e)s, 'alice', 1), (%(e)s, 'alice', 2)",
        {"e": event.id},
    )
    listed = allocations.list_for_buyer(conn, fingerprint="alice")
    assert [a.quantity for a in listed] == [2, 1]
    assert listed[0].created_at == listed[1].created_at
    assert listed[0].id > listed[1].id


# --- expire_due ----------------------------------------------------------------------------


def test_expire_due_counts_and_respects_limit(conn: psycopg.Connection[Any]) -> None:
    one = make_event(conn, total=10, max_per_buyer=10)
    two = make_event(conn, total=10, max_per_buyer=10)
    first = allocations.reserve(conn, event_id=one.id, fingerprint="alice", quantity=1, hold=SHORT)
    second = allocations.reserve(conn, event_id=two.id, fingerprint="bob", quantity=2, hold=SHORT)
    third = allocations.reserve(conn, event_id=one.id, fingerprint="carol", quantity=3, hold=SHORT)
    live = allocations.reserve(conn, event_id=one.id, fingerprint="dave", quantity=4)
    bought = allocations.reserve(conn, event_id=two.id, fingerprint="erin", quantity=5)
    allocations.purchase(conn, allocation_id=bought.id, fingerprint="erin")
    time.sleep(LAPSE)
    assert counters(conn, one.id) == (8, 0)
    assert counters(conn, two.id) == (2, 5)

    assert allocations.expire_due(conn, limit=2) == 2
    # Oldest expiry first.
    assert allocations.get_allocation(conn, first.id).status is AllocationStatus.EXPIRED
    assert allocations.get_allocation(conn, second.id).status is AllocationStatus.EXPIRED
    assert allocations.get_allocation(conn, third.id).status is AllocationStatus.RESERVED
    assert counters(conn, one.id) == (7, 0)
    assert counters(conn, two.id) == (0, 5)

    assert allocations.expire_due(conn, limit=2) == 1
    assert allocations.get_allocation(conn, third.id).status is AllocationStatus.EXPIRED
    assert allocations.expire_due(conn) == 0

    assert allocations.get_allocation(conn, live.id).status is AllocationStatus.RESERVED
    assert allocations.get_allocation(conn, bought.id).status is AllocationStatus.PURCHASED
    assert counters(conn, one.id) == (4, 0)
    assert counters(conn, two.id) == (0, 5)
    assert events.get_availability(conn, one.id) == Availability(
        event_id=one.id, total_tickets=10, reserved=4, purchased=0, available=6
    )
    assert events.get_availability(conn, two.id) == Availability(
        event_id=two.id, total_tickets=10, reserved=0, purchased=5, available=5
    )
    assert _buyer(conn, one.id, "alice") == 0
    assert _buyer(conn, two.id, "bob") == 0
    assert _buyer(conn, one.id, "carol") == 0
    assert _buyer(conn, one.id, "dave") == 4


def test_expire_due_on_raw_lapsed_rows(
    conn: psycopg.Connection[Any], admin_conn: psycopg.Connection[Any]
) -> None:
    event = make_event(conn, total=20)
    # Setting created_at takes the superuser: the application may not.
    admin_conn.execute(
        "INSERT INTO allocations (event_id, fingerprint, quantity, created_at, expires_at)"
        " SELECT %s, 'buyer' || g, 1, now() - interval '1 hour', now() - interval '1 minute'"
        " FROM generate_series(1, 12) AS g",
        (event.id,),
    )
    assert counters(conn, event.id) == (12, 0)
    assert allocations.expire_due(conn, limit=5) == 5
    assert allocations.expire_due(conn, limit=5) == 5
    assert allocations.expire_due(conn, limit=5) == 2
    assert allocations.expire_due(conn, limit=5) == 0
    assert counters(conn, event.id) == (0, 0)
    statuses = conn.execute("SELECT status, count(*) FROM allocations GROUP BY status").fetchall()
    assert statuses == [("expired", 12)]


# --- transactions --------------------------------------------------------------------------


class _Boom(Exception):
    pass


def _reserve_purchase_then_fail(tx_conn: psycopg.Connection[Any], event_id: int) -> None:
    with tx_conn.transaction():
        hold = allocations.reserve(tx_conn, event_id=event_id, fingerprint="alice", quantity=4)
        allocations.purchase(tx_conn, allocation_id=hold.id, fingerprint="alice")
        # Inside the transaction the work is visible.
        assert events.get_availability(tx_conn, event_id).purchased == 4
        raise _Boom


def test_reserve_joins_the_callers_transaction_and_rolls_back(
    conn: psycopg.Connection[Any], dsn: str
) -> None:
    event = make_event(conn, total=10)
    with db.connect(dsn, autocommit=False) as tx_conn:
        assert tx_conn.autocommit is False
        with pytest.raises(_Boom):
            _reserve_purchase_then_fail(tx_conn, event.id)
        assert events.get_availability(tx_conn, event.id).available == 10
    assert row_count(conn, "allocations") == 0
    assert row_count(conn, "tickets") == 0
    assert row_count(conn, "buyer_inventory") == 0
    assert counters(conn, event.id) == (0, 0)
    assert _avail(conn, event.id) == (0, 0, 10)


def test_caller_transaction_commits_all_or_nothing(conn: psycopg.Connection[Any], dsn: str) -> None:
    event = make_event(conn, total=5)
    with db.connect(dsn, autocommit=False) as tx_conn:
        with tx_conn.transaction():
            a = allocations.reserve(tx_conn, event_id=event.id, fingerprint="alice", quantity=3)
            # An error inside the caller's transaction leaves it usable.
            with pytest.raises(SoldOut) as info:
                allocations.reserve(tx_conn, event_id=event.id, fingerprint="bob", quantity=3)
            assert info.value.available == 2
            b = allocations.reserve(tx_conn, event_id=event.id, fingerprint="bob", quantity=2)
            # Not visible to others before the commit.
            assert row_count(conn, "allocations") == 0
        assert allocations.get_allocation(conn, a.id) == a
        assert allocations.get_allocation(conn, b.id) == b
    assert _avail(conn, event.id) == (5, 0, 0)
    assert row_count(conn, "allocations") == 2


def test_functions_work_on_an_autocommit_connection(
    conn: psycopg.Connection[Any], dsn: str
) -> None:
    assert conn.autocommit is True
    event = make_event(conn, total=10)
    hold = allocations.reserve(conn, event_id=event.id, fingerprint="alice", quantity=2)
    bought = allocations.purchase(conn, allocation_id=hold.id, fingerprint="alice")
    with db.connect(dsn) as other:
        # Each call committed on its own.
        assert allocations.get_allocation(other, hold.id) == bought
        assert events.get_availability(other, event.id).purchased == 2
    assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


def test_functions_on_a_non_autocommit_connection_without_a_transaction(dsn: str) -> None:
    with db.connect(dsn, autocommit=False) as tx_conn:
        event = make_event(tx_conn, total=3)
        hold = allocations.reserve(tx_conn, event_id=event.id, fingerprint="alice", quantity=1)
        assert tx_conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    with db.connect(dsn) as other:
        assert allocations.get_allocation(other, hold.id) == hold
