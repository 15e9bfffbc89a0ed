"""Inventory slots: layout, multi-slot fallback, ticket number ranges, capacity changes, races."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import psycopg
import pytest

from tests.support import BARRIER_TIMEOUT, JOIN_TIMEOUT, LAPSE, SHORT, assert_consistent, make_event
from ticketing import admin, allocations, db, events, tickets
from ticketing.errors import InvalidInput, SoldOut
from ticketing.models import Allocation, AllocationStatus

Slot = tuple[int, int, int, int, int]  # slot, first_number, capacity, reserved, purchased


def slot_rows(conn: psycopg.Connection[Any], event_id: int) -> list[Slot]:
    rows = conn.execute(
        "SELECT slot, first_number, capacity, reserved, purchased FROM inventory_slots"
        " WHERE event_id = %s ORDER BY slot",
        (event_id,),
    ).fetchall()
    return [(int(r[0]), int(r[1]), int(r[2]), int(r[3]), int(r[4])) for r in rows]


def reserved_by_slot(conn: psycopg.Connection[Any], event_id: int) -> list[int]:
    return [s[3] for s in slot_rows(conn, event_id)]


def free_by_slot(conn: psycopg.Connection[Any], event_id: int) -> list[int]:
    return [s[2] - s[3] - s[4] for s in slot_rows(conn, event_id)]


def slot_count(conn: psycopg.Connection[Any], event_id: int) -> int:
    row = conn.execute(
        "SELECT slot_count FROM event_inventory WHERE event_id = %s", (event_id,)
    ).fetchone()
    assert row is not None
    return int(row[0])


def assert_layout(conn: psycopg.Connection[Any], event_id: int, total: int, k: int) -> None:
    """k slots, numbered 0..k-1, capacities within 1 of each other adding up to total,
    consecutive ranges from 1, nothing counted yet."""
    rows = slot_rows(conn, event_id)
    assert slot_count(conn, event_id) == k
    assert len(rows) == k
    assert [r[0] for r in rows] == list(range(k))
    capacities = [r[2] for r in rows]
    assert sum(capacities) == total
    assert max(capacities) - min(capacities) <= 1
    assert capacities == sorted(capacities, reverse=True)  # the larger slots come first
    assert_consecutive(rows)
    assert all(r[3] == 0 and r[4] == 0 for r in rows)


def assert_consecutive(rows: list[Slot]) -> None:
    expected_first = 1
    for _, first, capacity, _, _ in rows:
        assert first == expected_first
        expected_first += capacity


def assert_all_good(conn: psycopg.Connection[Any]) -> None:
    assert_consistent(conn)
    assert admin.check_invariants(conn) == []


def reserve(
    conn: psycopg.Connection[Any],
    event_id: int,
    fingerprint: str,
    quantity: int,
    hold: timedelta = allocations.DEFAULT_HOLD,
) -> Allocation:
    return allocations.reserve(
        conn, event_id=event_id, fingerprint=fingerprint, quantity=quantity, hold=hold
    )


def availability(conn: psycopg.Connection[Any], event_id: int) -> tuple[int, int, int, int]:
    a = events.get_availability(conn, event_id)
    return a.total_tickets, a.reserved, a.purchased, a.available


def statuses(conn: psycopg.Connection[Any], ids: list[int]) -> list[AllocationStatus]:
    return [allocations.get_allocation(conn, i).status for i in ids]


def set_total(admin_conn: psycopg.Connection[Any], event_id: int, total: int) -> None:
    """An operator's capacity change: the application may not UPDATE events."""
    admin_conn.execute("UPDATE events SET total_tickets = %s WHERE id = %s", (total, event_id))


@contextmanager
def pinned(admin_dsn: str, event_id: int, slot: int) -> Iterator[None]:
    """Lock every slot of the event but `slot` from another (superuser) connection, so that
    the SKIP LOCKED fast paths (reserve, purchase, cancel of a hold) can only use `slot`."""
    other = db.connect(admin_dsn)
    try:
        with other.transaction():
            locked = other.execute(
                "SELECT slot FROM inventory_slots WHERE event_id = %s AND slot <> %s"
                " ORDER BY slot FOR UPDATE",
                (event_id, slot),
            ).fetchall()
            assert locked
            yield
    finally:
        other.close()


# --- layout -----------------------------------------------------------------------------------


#: total_tickets -> default slot count: one per 64 tickets, at least 1, at most 16.
DEFAULT_SLOTS = {10: 1, 127: 1, 128: 2, 1000: 15, 100_000: 16}


def test_default_slot_count(conn: psycopg.Connection[Any]) -> None:
    for total, expected in DEFAULT_SLOTS.items():
        event_id = make_event(conn, total).id

        assert_layout(conn, event_id, total, expected)
        row = conn.execute(
            "SELECT count(*) FROM inventory_slots WHERE event_id = %s", (event_id,)
        ).fetchone()
        assert row == (expected,), total
        assert availability(conn, event_id) == (total, 0, 0, total)
    assert_all_good(conn)


def test_default_layout_of_1000_tickets_is_exact(conn: psycopg.Connection[Any]) -> None:
    event_id = make_event(conn, 1000).id

    # 1000 = 15 * 66 + 10: the first ten slots get 67.
    rows = slot_rows(conn, event_id)
    assert [r[2] for r in rows] == [67] * 10 + [66] * 5
    assert rows[10][1] == 1 + 10 * 67
    assert rows[14][1] + rows[14][2] - 1 == 1000


def test_explicit_slot_count(conn: psycopg.Connection[Any]) -> None:
    for total, k in [(1, 1), (50, 1), (1000, 1), (1000, 5), (5, 5), (64, 64), (1001, 64)]:
        event_id = make_event(conn, total, slots=k).id

        assert_layout(conn, event_id, total, k)
        assert events.get_event(conn, event_id).total_tickets == total
    assert_all_good(conn)


def test_explicit_slot_count_of_1000_tickets_over_5(conn: psycopg.Connection[Any]) -> None:
    event_id = make_event(conn, 1000, slots=5).id

    assert slot_rows(conn, event_id) == [
        (0, 1, 200, 0, 0),
        (1, 201, 200, 0, 0),
        (2, 401, 200, 0, 0),
        (3, 601, 200, 0, 0),
        (4, 801, 200, 0, 0),
    ]


def test_slot_count_out_of_bounds_is_invalid_and_writes_nothing(
    conn: psycopg.Connection[Any],
) -> None:
    bad: list[tuple[int, Any]] = [
        (100, 0),
        (100, 65),
        (1000, 65),
        (10, 11),
        (1, 2),
        (63, 64),
        (100, -1),
        (100, True),
        (100, 2.0),
        (100, "4"),
    ]
    for total, k in bad:
        with pytest.raises(InvalidInput):
            make_event(conn, total, slots=k)

    for table in ("events", "event_inventory", "inventory_slots"):
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
        assert row == (0,), table


def test_resplit_after_the_first_allocation_is_refused(
    conn: psycopg.Connection[Any], admin_conn: psycopg.Connection[Any]
) -> None:
    event_id = make_event(conn, 100, slots=4).id
    reserve(conn, event_id, "a", 1)
    before = slot_rows(conn, event_id)

    # Only the owner may re-split (the application has no EXECUTE on it).
    with pytest.raises(psycopg.Error) as raised:
        admin_conn.execute("SELECT inventory_resplit(%s, 2)", (event_id,))

    assert raised.value.sqlstate == "TK006"
    assert slot_rows(conn, event_id) == before
    assert slot_count(conn, event_id) == 4
    assert_all_good(conn)


# --- reservations across slots -----------------------------------------------------------------


def test_five_single_free_seats_in_five_slots_serve_a_request_for_five(
    conn: psycopg.Connection[Any], admin_dsn: str
) -> None:
    event_id = make_event(conn, 10, slots=5).id
    assert [r[2] for r in slot_rows(conn, event_id)] == [2] * 5
    for s in range(5):
        with pinned(admin_dsn, event_id, s):
            reserve(conn, event_id, f"single-{s}", 1)
    assert free_by_slot(conn, event_id) == [1, 1, 1, 1, 1]

    big = reserve(conn, event_id, "five", 5)

    assert big.status is AllocationStatus.RESERVED
    assert big.quantity == 5
    assert reserved_by_slot(conn, event_id) == [2, 2, 2, 2, 2]
    assert availability(conn, event_id) == (10, 10, 0, 0)
    with pytest.raises(SoldOut) as raised:
        reserve(conn, event_id, "sixth", 1)
    assert raised.value.available == 0
    assert_all_good(conn)


def test_five_unplaced_singles_then_five_whatever_the_layout(
    conn: psycopg.Connection[Any],
) -> None:
    for attempt in range(5):
        event_id = make_event(conn, 10, slots=5).id
        for i in range(5):
            reserve(conn, event_id, f"single-{attempt}-{i}", 1)
        assert sum(free_by_slot(conn, event_id)) == 5

        reserve(conn, event_id, f"five-{attempt}", 5)

        assert reserved_by_slot(conn, event_id) == [2, 2, 2, 2, 2]
        with pytest.raises(SoldOut) as raised:
            reserve(conn, event_id, f"sixth-{attempt}", 1)
        assert raised.value.available == 0
    assert_all_good(conn)


def test_three_free_seats_spread_over_three_slots_serve_a_request_for_three(
    conn: psycopg.Connection[Any], admin_dsn: str
) -> None:
    event_id = make_event(conn, 8, slots=4).id
    holds = [reserve(conn, event_id, f"b{i}", 1) for i in range(8)]
    assert reserved_by_slot(conn, event_id) == [2, 2, 2, 2]
    for s in range(3):  # free one seat in each of slots 0, 1, 2
        with pinned(admin_dsn, event_id, s):
            allocations.cancel(conn, allocation_id=holds[s].id, fingerprint=f"b{s}")
    assert free_by_slot(conn, event_id) == [1, 1, 1, 0]
    assert availability(conn, event_id) == (8, 5, 0, 3)

    with pytest.raises(SoldOut) as too_many:
        reserve(conn, event_id, "four", 4)
    assert too_many.value.available == 3
    three = reserve(conn, event_id, "three", 3)

    assert three.quantity == 3
    assert free_by_slot(conn, event_id) == [0, 0, 0, 0]
    assert availability(conn, event_id) == (8, 8, 0, 0)
    with pytest.raises(SoldOut) as raised:
        reserve(conn, event_id, "late", 1)
    assert raised.value.available == 0
    assert_all_good(conn)


def test_request_larger_than_any_slot_spans_slots_in_order(conn: psycopg.Connection[Any]) -> None:
    event_id = make_event(conn, 100, slots=4).id

    hold = reserve(conn, event_id, "big", 60)

    assert hold.quantity == 60
    assert reserved_by_slot(conn, event_id) == [25, 25, 10, 0]
    assert sum(reserved_by_slot(conn, event_id)) == 60
    assert availability(conn, event_id) == (100, 60, 0, 40)
    with pytest.raises(SoldOut) as raised:
        reserve(conn, event_id, "greedy", 41)
    assert raised.value.available == 40
    rest = reserve(conn, event_id, "rest", 40)
    assert rest.quantity == 40
    assert free_by_slot(conn, event_id) == [0, 0, 0, 0]
    assert_all_good(conn)


def test_quantity_above_the_free_total_is_sold_out_with_the_free_count(
    conn: psycopg.Connection[Any],
) -> None:
    event_id = make_event(conn, 100, slots=4).id
    reserve(conn, event_id, "a", 70)

    with pytest.raises(SoldOut) as raised:
        reserve(conn, event_id, "b", 31)

    assert raised.value.available == 30
    assert reserved_by_slot(conn, event_id) == [25, 25, 20, 0]
    assert_all_good(conn)


# --- purchases and cancels ---------------------------------------------------------------------


def test_purchase_of_a_multi_slot_hold_numbers_tickets_from_the_slots_ranges(
    conn: psycopg.Connection[Any],
) -> None:
    event_id = make_event(conn, 100, slots=4).id
    hold = reserve(conn, event_id, "big", 60)
    before = slot_rows(conn, event_id)

    bought = allocations.purchase(conn, allocation_id=hold.id, fingerprint="big")

    assert bought.status is AllocationStatus.PURCHASED
    issued = tickets.list_for_allocation(conn, hold.id)
    numbers = [t.number for t in issued]
    assert len(numbers) == 60
    assert len(set(numbers)) == 60
    assert all(1 <= n <= 100 for n in numbers)
    after = slot_rows(conn, event_id)
    gained = {s[0]: after[s[0]][4] - s[4] for s in before}
    for n in numbers:
        owner = [s for s in after if s[1] <= n <= s[1] + s[2] - 1]
        assert len(owner) == 1
        assert gained[owner[0][0]] > 0
    per_slot = [sum(1 for n in numbers if s[1] <= n <= s[1] + s[2] - 1) for s in after]
    assert per_slot == [gained[s[0]] for s in after]
    # Every reserved ticket sat in slots 0-2 (25, 25, 10): the purchase moved exactly those.
    assert [(s[3], s[4]) for s in after] == [(0, 25), (0, 25), (0, 10), (0, 0)]
    assert sorted(numbers) == list(range(1, 61))
    assert availability(conn, event_id) == (100, 0, 60, 40)
    assert_all_good(conn)

    cancelled = allocations.cancel(conn, allocation_id=hold.id, fingerprint="big")

    assert cancelled.status is AllocationStatus.CANCELLED
    assert all(t.voided_at is not None for t in tickets.list_for_allocation(conn, hold.id))
    pooled = conn.execute(
        "SELECT number FROM ticket_number_pool WHERE event_id = %s ORDER BY number", (event_id,)
    ).fetchall()
    assert [int(r[0]) for r in pooled] == list(range(1, 61))
    assert [(s[3], s[4]) for s in slot_rows(conn, event_id)] == [(0, 0)] * 4
    assert availability(conn, event_id) == (100, 0, 0, 100)
    assert_all_good(conn)

    # The whole event sells again, reusing the pooled numbers within each slot's range.
    again = reserve(conn, event_id, "all", 100)
    allocations.purchase(conn, allocation_id=again.id, fingerprint="all")
    assert sorted(t.number for t in tickets.list_for_allocation(conn, again.id)) == list(
        range(1, 101)
    )
    assert [(s[3], s[4]) for s in slot_rows(conn, event_id)] == [
        (0, 25),
        (0, 25),
        (0, 25),
        (0, 25),
    ]
    assert_all_good(conn)


def test_purchase_pinned_to_one_slot_takes_numbers_from_its_range(
    conn: psycopg.Connection[Any], admin_dsn: str
) -> None:
    event_id = make_event(conn, 100, slots=4).id
    with pinned(admin_dsn, event_id, 2):
        hold = reserve(conn, event_id, "b", 5)
        allocations.purchase(conn, allocation_id=hold.id, fingerprint="b")

    assert [t.number for t in tickets.list_for_allocation(conn, hold.id)] == [51, 52, 53, 54, 55]
    assert [s[4] for s in slot_rows(conn, event_id)] == [0, 0, 5, 0]

    allocations.cancel(conn, allocation_id=hold.id, fingerprint="b")

    assert [s[4] for s in slot_rows(conn, event_id)] == [0, 0, 0, 0]
    assert availability(conn, event_id) == (100, 0, 0, 100)
    assert_all_good(conn)


def test_cancel_returns_purchased_counts_to_the_slots_that_own_the_numbers(
    conn: psycopg.Connection[Any], admin_dsn: str
) -> None:
    event_id = make_event(conn, 40, slots=4).id
    bought: list[Allocation] = []
    for s in range(4):
        with pinned(admin_dsn, event_id, s):
            hold = reserve(conn, event_id, f"b{s}", 3)
            bought.append(allocations.purchase(conn, allocation_id=hold.id, fingerprint=f"b{s}"))
    assert [s[4] for s in slot_rows(conn, event_id)] == [3, 3, 3, 3]

    allocations.cancel(conn, allocation_id=bought[1].id, fingerprint="b1")
    allocations.cancel(conn, allocation_id=bought[3].id, fingerprint="b3")

    assert [s[4] for s in slot_rows(conn, event_id)] == [3, 0, 3, 0]
    assert availability(conn, event_id) == (40, 0, 6, 34)
    assert_all_good(conn)


# --- lapsed holds ------------------------------------------------------------------------------


def test_lapsed_holds_in_several_slots_are_reclaimed_for_a_spanning_request(
    conn: psycopg.Connection[Any],
) -> None:
    event_id = make_event(conn, 8, slots=4).id
    old = [reserve(conn, event_id, f"old{i}", 2, hold=SHORT) for i in range(4)]
    assert reserved_by_slot(conn, event_id) == [2, 2, 2, 2]
    time.sleep(LAPSE)
    assert availability(conn, event_id) == (8, 0, 0, 8)

    fresh = reserve(conn, event_id, "fresh", 8)

    assert fresh.status is AllocationStatus.RESERVED
    assert statuses(conn, [a.id for a in old]) == [AllocationStatus.EXPIRED] * 4
    assert reserved_by_slot(conn, event_id) == [2, 2, 2, 2]
    assert availability(conn, event_id) == (8, 8, 0, 0)
    assert_all_good(conn)


def test_lapsed_holds_make_room_next_to_live_ones(conn: psycopg.Connection[Any]) -> None:
    event_id = make_event(conn, 12, slots=3).id
    live = reserve(conn, event_id, "live", 4)
    lapsed = [reserve(conn, event_id, f"lapsed{i}", 4, hold=SHORT) for i in range(2)]
    assert reserved_by_slot(conn, event_id) == [4, 4, 4]
    time.sleep(LAPSE)

    got = reserve(conn, event_id, "spanning", 6)

    assert got.quantity == 6
    assert statuses(conn, [a.id for a in lapsed]) == [AllocationStatus.EXPIRED] * 2
    assert allocations.get_allocation(conn, live.id).status is AllocationStatus.RESERVED
    assert sum(reserved_by_slot(conn, event_id)) == 10
    assert availability(conn, event_id) == (12, 10, 0, 2)
    with pytest.raises(SoldOut) as raised:
        reserve(conn, event_id, "three", 3)
    assert raised.value.available == 2
    assert_all_good(conn)


# --- capacity changes --------------------------------------------------------------------------


def test_raising_total_grows_the_last_slot(
    conn: psycopg.Connection[Any], admin_conn: psycopg.Connection[Any]
) -> None:
    event_id = make_event(conn, 100, slots=4).id
    reserve(conn, event_id, "all", 100)
    with pytest.raises(SoldOut):
        reserve(conn, event_id, "late", 1)

    set_total(admin_conn, event_id, 110)

    assert slot_rows(conn, event_id) == [
        (0, 1, 25, 25, 0),
        (1, 26, 25, 25, 0),
        (2, 51, 25, 25, 0),
        (3, 76, 35, 25, 0),
    ]
    assert slot_count(conn, event_id) == 4
    assert admin.check_invariants(conn) == []
    assert availability(conn, event_id) == (110, 100, 0, 10)
    more = reserve(conn, event_id, "more", 10)
    allocations.purchase(conn, allocation_id=more.id, fingerprint="more")
    numbers = [t.number for t in tickets.list_for_allocation(conn, more.id)]
    # Reserved tickets are interchangeable: any slot holding 10 of them may sell them.
    assert len(set(numbers)) == 10
    assert all(1 <= n <= 110 for n in numbers)
    assert sum(s[4] for s in slot_rows(conn, event_id)) == 10
    with pytest.raises(SoldOut) as raised:
        reserve(conn, event_id, "late", 1)
    assert raised.value.available == 0
    assert_all_good(conn)


def test_lowering_total_moves_holds_out_of_the_top_slots(
    conn: psycopg.Connection[Any], admin_dsn: str, admin_conn: psycopg.Connection[Any]
) -> None:
    event_id = make_event(conn, 100, slots=4).id
    with pinned(admin_dsn, event_id, 3):
        top = reserve(conn, event_id, "top", 10)
        lapsed = reserve(conn, event_id, "lapsed", 10, hold=SHORT)
    with pinned(admin_dsn, event_id, 2):
        middle = reserve(conn, event_id, "middle", 5)
    assert reserved_by_slot(conn, event_id) == [0, 0, 5, 20]
    time.sleep(LAPSE)

    set_total(admin_conn, event_id, 60)

    assert allocations.get_allocation(conn, lapsed.id).status is AllocationStatus.EXPIRED
    assert statuses(conn, [top.id, middle.id]) == [AllocationStatus.RESERVED] * 2
    rows = slot_rows(conn, event_id)
    # Slot 3 is emptied (its 10 live tickets move to slot 0), slot 2 keeps its 5 within 10.
    assert rows == [
        (0, 1, 25, 10, 0),
        (1, 26, 25, 0, 0),
        (2, 51, 10, 5, 0),
        (3, 61, 0, 0, 0),
    ]
    assert sum(r[3] for r in rows) == 15
    assert_consecutive(rows)
    assert availability(conn, event_id) == (60, 15, 0, 45)
    assert_all_good(conn)

    # Both live holds still buy their tickets, numbered within the new capacity.
    for hold in (top, middle):
        allocations.purchase(conn, allocation_id=hold.id, fingerprint=hold.fingerprint)
    numbers = [t.number for h in (top, middle) for t in tickets.list_for_allocation(conn, h.id)]
    assert len(set(numbers)) == 15
    assert all(1 <= n <= 60 for n in numbers)
    rest = reserve(conn, event_id, "rest", 45)
    assert rest.quantity == 45
    with pytest.raises(SoldOut) as raised:
        reserve(conn, event_id, "late", 1)
    assert raised.value.available == 0
    assert_all_good(conn)


def test_lowering_below_live_fails_and_changes_nothing(
    conn: psycopg.Connection[Any], admin_dsn: str, admin_conn: psycopg.Connection[Any]
) -> None:
    event_id = make_event(conn, 100, slots=4).id
    with pinned(admin_dsn, event_id, 3):
        reserve(conn, event_id, "top", 10)
    hold = reserve(conn, event_id, "other", 20)
    allocations.purchase(conn, allocation_id=hold.id, fingerprint="other")
    before = slot_rows(conn, event_id)
    assert sum(r[3] + r[4] for r in before) == 30

    with pytest.raises(psycopg.Error) as raised:
        set_total(admin_conn, event_id, 29)

    assert raised.value.sqlstate == "TK006"
    assert slot_rows(conn, event_id) == before
    assert events.get_event(conn, event_id).total_tickets == 100
    assert availability(conn, event_id) == (100, 10, 20, 70)
    assert_all_good(conn)


def test_lowering_below_a_valid_ticket_number_fails_and_changes_nothing(
    conn: psycopg.Connection[Any], admin_dsn: str, admin_conn: psycopg.Connection[Any]
) -> None:
    event_id = make_event(conn, 100, slots=4).id
    with pinned(admin_dsn, event_id, 3):
        hold = reserve(conn, event_id, "top", 2)
        allocations.purchase(conn, allocation_id=hold.id, fingerprint="top")
    assert [t.number for t in tickets.list_for_allocation(conn, hold.id)] == [76, 77]
    before = slot_rows(conn, event_id)

    with pytest.raises(psycopg.Error) as raised:
        set_total(admin_conn, event_id, 76)  # 2 live tickets, but number 77 is valid

    assert raised.value.sqlstate == "TK006"
    assert slot_rows(conn, event_id) == before
    assert events.get_event(conn, event_id).total_tickets == 100
    set_total(admin_conn, event_id, 77)
    assert slot_rows(conn, event_id)[3] == (3, 76, 2, 0, 2)
    assert_all_good(conn)


def test_lowering_into_a_lower_slot_then_raising_keeps_every_number_issuable(
    conn: psycopg.Connection[Any], admin_dsn: str, admin_conn: psycopg.Connection[Any]
) -> None:
    """Slot 1 issues (and voids) numbers 11-13; lowering to 5 empties it and moves its range
    start to 6; raising back to 20 gives it 6..20. Its 15 seats must still get 15 numbers
    within 6..20, and every number up to the highest issued there must be valid or pooled."""
    event_id = make_event(conn, 20, slots=2).id
    with pinned(admin_dsn, event_id, 1):
        hold = reserve(conn, event_id, "early", 3)
        allocations.purchase(conn, allocation_id=hold.id, fingerprint="early")
    assert [t.number for t in tickets.list_for_allocation(conn, hold.id)] == [11, 12, 13]
    allocations.cancel(conn, allocation_id=hold.id, fingerprint="early")

    set_total(admin_conn, event_id, 5)
    assert slot_rows(conn, event_id) == [(0, 1, 5, 0, 0), (1, 6, 0, 0, 0)]
    set_total(admin_conn, event_id, 20)
    assert slot_rows(conn, event_id) == [(0, 1, 5, 0, 0), (1, 6, 15, 0, 0)]
    assert admin.check_invariants(conn) == []

    everything = reserve(conn, event_id, "all", 20)
    bought = allocations.purchase(conn, allocation_id=everything.id, fingerprint="all")

    assert bought.status is AllocationStatus.PURCHASED
    numbers = sorted(t.number for t in tickets.list_for_allocation(conn, everything.id))
    assert numbers == list(range(1, 21))
    assert_all_good(conn)


# --- race --------------------------------------------------------------------------------------


@pytest.mark.race
def test_thirty_two_buyers_race_for_forty_tickets_in_sixteen_slots(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    threads_n = 32
    event_id = make_event(conn, 40, slots=16).id
    assert [r[2] for r in slot_rows(conn, event_id)] == [3] * 8 + [2] * 8
    quantities = [1 + i % 3 for i in range(threads_n)]
    first: list[Any] = [None] * threads_n
    second: list[list[Any]] = [[] for _ in range(threads_n)]
    start = threading.Barrier(threads_n)
    phase_two = threading.Barrier(threads_n)

    def run(i: int) -> None:
        try:
            own = db.connect(dsn)
        except Exception as exc:
            start.abort()
            phase_two.abort()
            first[i] = exc
            return
        try:
            start.wait(timeout=BARRIER_TIMEOUT)
            try:
                first[i] = reserve(own, event_id, f"buyer-{i}", quantities[i])
            except Exception as exc:
                first[i] = exc
            phase_two.wait(timeout=BARRIER_TIMEOUT)
            if isinstance(first[i], SoldOut):
                while True:
                    try:
                        second[i].append(reserve(own, event_id, f"buyer-{i}", 1))
                    except Exception as exc:
                        second[i].append(exc)
                        break
        finally:
            own.close()

    workers = [threading.Thread(target=run, args=(i,)) for i in range(threads_n)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=JOIN_TIMEOUT)
    assert not any(worker.is_alive() for worker in workers), "a racing thread hung"

    # Phase 1: every call either won its whole quantity or got SoldOut, and nobody got
    # SoldOut while their quantity was free (free only shrinks during phase 1).
    assert all(isinstance(r, Allocation | SoldOut) for r in first), first
    winners = [i for i in range(threads_n) if isinstance(first[i], Allocation)]
    losers = [i for i in range(threads_n) if isinstance(first[i], SoldOut)]
    won = sum(quantities[i] for i in winners)
    assert won <= 40
    assert all(first[i].quantity == quantities[i] for i in winners)
    assert len({first[i].id for i in winners}) == len(winners)
    assert losers, "63 tickets were asked for 40"
    free_after_phase_one = 40 - won
    for i in losers:
        assert free_after_phase_one <= first[i].available < quantities[i]
    assert all(second[i] == [] for i in winners)

    # Phase 2: the losers took single tickets until the event sold out, exactly.
    singles = [r for i in losers for r in second[i][:-1]]
    assert all(isinstance(r, Allocation) and r.quantity == 1 for r in singles), singles
    for i in losers:
        assert isinstance(second[i][-1], SoldOut), second[i]
        assert second[i][-1].available == 0
    assert won + len(singles) == 40
    assert free_by_slot(conn, event_id) == [0] * 16
    assert availability(conn, event_id) == (40, 40, 0, 0)
    row = conn.execute(
        "SELECT count(*), sum(quantity) FROM allocations WHERE event_id = %s AND status = %s",
        (event_id, "reserved"),
    ).fetchone()
    assert row == (len(winners) + len(singles), 40)
    assert_all_good(conn)
