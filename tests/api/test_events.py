"""Events through the public API: create, get, list, availability, EventNotFound."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest

from tests.support import MISSING_ID, STARTS_AT, counters, row_count
from ticketing import allocations, events
from ticketing.errors import EventNotFound, InvalidInput, NotFound, TicketingError
from ticketing.models import Availability, Event


def test_create_event_returns_the_stored_row(conn: psycopg.Connection[Any]) -> None:
    event = events.create_event(
        conn, name="Opening night", starts_at=STARTS_AT, total_tickets=250, max_per_buyer=6
    )
    assert isinstance(event, Event)
    assert event.id >= 1
    assert event.name == "Opening night"
    assert event.starts_at == STARTS_AT
    assert event.total_tickets == 250
    assert event.max_per_buyer == 6
    assert event.created_at == event.updated_at
    assert event.created_at.tzinfo is not None
    assert row_count(conn, "events") == 1
    row = conn.execute(
        "SELECT total_tickets, max_per_buyer, reserved, purchased FROM event_counters"
        " WHERE event_id = %s",
        (event.id,),
    ).fetchone()
    assert row == (250, 6, 0, 0)


def test_create_event_without_buyer_limit(conn: psycopg.Connection[Any]) -> None:
    event = events.create_event(conn, name="Open air", starts_at=STARTS_AT, total_tickets=1)
    assert event.max_per_buyer is None
    assert event.total_tickets == 1


def test_create_event_keeps_the_instant_of_other_time_zones(
    conn: psycopg.Connection[Any],
) -> None:
    paris = timezone(timedelta(hours=2))
    starts_at = datetime(2030, 6, 1, 22, 0, tzinfo=paris)
    event = events.create_event(conn, name="Late show", starts_at=starts_at, total_tickets=5)
    assert event.starts_at == STARTS_AT
    assert events.get_event(conn, event.id).starts_at == STARTS_AT


def test_get_event_round_trips(conn: psycopg.Connection[Any]) -> None:
    created = events.create_event(
        conn, name="Matinee", starts_at=STARTS_AT, total_tickets=40, max_per_buyer=2
    )
    assert events.get_event(conn, created.id) == created


def test_create_event_ids_are_distinct(conn: psycopg.Connection[Any]) -> None:
    ids = [
        events.create_event(conn, name=f"e{i}", starts_at=STARTS_AT, total_tickets=1).id
        for i in range(3)
    ]
    assert len(set(ids)) == 3
    assert ids == sorted(ids)


def test_get_event_missing_raises_event_not_found(conn: psycopg.Connection[Any]) -> None:
    with pytest.raises(EventNotFound) as info:
        events.get_event(conn, MISSING_ID)
    assert isinstance(info.value, NotFound)
    assert isinstance(info.value, LookupError)
    assert isinstance(info.value, TicketingError)


def test_list_events_empty(conn: psycopg.Connection[Any]) -> None:
    assert events.list_events(conn) == []


def test_list_events_orders_by_starts_at_then_id(conn: psycopg.Connection[Any]) -> None:
    late = events.create_event(
        conn, name="late", starts_at=STARTS_AT + timedelta(days=2), total_tickets=1
    )
    tie_a = events.create_event(conn, name="tie a", starts_at=STARTS_AT, total_tickets=1)
    early = events.create_event(
        conn, name="early", starts_at=STARTS_AT - timedelta(days=1), total_tickets=1
    )
    tie_b = events.create_event(conn, name="tie b", starts_at=STARTS_AT, total_tickets=1)
    listed = events.list_events(conn)
    assert [e.id for e in listed] == [early.id, tie_a.id, tie_b.id, late.id]
    assert listed == [early, tie_a, tie_b, late]


def test_list_events_starts_after_is_exclusive(conn: psycopg.Connection[Any]) -> None:
    past = events.create_event(
        conn, name="past", starts_at=STARTS_AT - timedelta(hours=1), total_tickets=1
    )
    at = events.create_event(conn, name="at", starts_at=STARTS_AT, total_tickets=1)
    after = events.create_event(
        conn, name="after", starts_at=STARTS_AT + timedelta(microseconds=1), total_tickets=1
    )
    later = events.create_event(
        conn, name="later", starts_at=STARTS_AT + timedelta(days=9), total_tickets=1
    )
    assert [e.id for e in events.list_events(conn, starts_after=STARTS_AT)] == [after.id, later.id]
    assert [e.id for e in events.list_events(conn, starts_after=STARTS_AT - timedelta(days=1))] == [
        past.id,
        at.id,
        after.id,
        later.id,
    ]
    assert events.list_events(conn, starts_after=STARTS_AT + timedelta(days=9)) == []


def test_list_events_limit(conn: psycopg.Connection[Any]) -> None:
    made = [
        events.create_event(
            conn, name=f"e{i}", starts_at=STARTS_AT + timedelta(hours=5 - i), total_tickets=1
        )
        for i in range(5)
    ]
    in_order = list(reversed(made))
    assert events.list_events(conn, limit=1) == in_order[:1]
    assert events.list_events(conn, limit=3) == in_order[:3]
    assert events.list_events(conn, limit=5) == in_order
    assert events.list_events(conn, limit=10_000) == in_order
    assert events.list_events(conn, starts_after=in_order[1].starts_at, limit=2) == in_order[2:4]


def test_availability_of_a_new_event(conn: psycopg.Connection[Any]) -> None:
    event = events.create_event(conn, name="fresh", starts_at=STARTS_AT, total_tickets=30)
    assert events.get_availability(conn, event.id) == Availability(
        event_id=event.id, total_tickets=30, reserved=0, purchased=0, available=30
    )


def test_availability_follows_reserve_purchase_and_cancel(conn: psycopg.Connection[Any]) -> None:
    event = events.create_event(conn, name="show", starts_at=STARTS_AT, total_tickets=10)
    a = allocations.reserve(conn, event_id=event.id, fingerprint="alice", quantity=3)
    b = allocations.reserve(conn, event_id=event.id, fingerprint="bob", quantity=2)
    avail = events.get_availability(conn, event.id)
    assert (avail.reserved, avail.purchased, avail.available) == (5, 0, 5)
    allocations.purchase(conn, allocation_id=a.id, fingerprint="alice")
    avail = events.get_availability(conn, event.id)
    assert (avail.reserved, avail.purchased, avail.available) == (2, 3, 5)
    allocations.cancel(conn, allocation_id=b.id, fingerprint="bob")
    avail = events.get_availability(conn, event.id)
    assert (avail.reserved, avail.purchased, avail.available) == (0, 3, 7)
    allocations.cancel(conn, allocation_id=a.id, fingerprint="alice")
    assert events.get_availability(conn, event.id) == Availability(
        event_id=event.id, total_tickets=10, reserved=0, purchased=0, available=10
    )


def test_availability_is_per_event(conn: psycopg.Connection[Any]) -> None:
    one = events.create_event(conn, name="one", starts_at=STARTS_AT, total_tickets=4)
    two = events.create_event(conn, name="two", starts_at=STARTS_AT, total_tickets=6)
    allocations.reserve(conn, event_id=one.id, fingerprint="alice", quantity=4)
    assert events.get_availability(conn, one.id).available == 0
    assert events.get_availability(conn, two.id).available == 6


def test_lapsed_holds_count_as_available_before_any_sweep(conn: psycopg.Connection[Any]) -> None:
    event = events.create_event(conn, name="show", starts_at=STARTS_AT, total_tickets=10)
    lapsing = allocations.reserve(
        conn,
        event_id=event.id,
        fingerprint="alice",
        quantity=4,
        hold=timedelta(milliseconds=200),
    )
    allocations.reserve(conn, event_id=event.id, fingerprint="bob", quantity=3)
    time.sleep(0.3)
    assert events.get_availability(conn, event.id) == Availability(
        event_id=event.id, total_tickets=10, reserved=3, purchased=0, available=7
    )
    # Nothing was swept: the hold is still 'reserved' and the raw counters still count it.
    assert allocations.get_allocation(conn, lapsing.id).status == "reserved"
    assert counters(conn, event.id) == (7, 0)


def test_lapsed_raw_hold_counts_as_available(
    conn: psycopg.Connection[Any], admin_conn: psycopg.Connection[Any]
) -> None:
    event = events.create_event(conn, name="show", starts_at=STARTS_AT, total_tickets=5)
    # Setting created_at takes the superuser: the application may not.
    admin_conn.execute(
        "INSERT INTO allocations (event_id, fingerprint, quantity, created_at, expires_at)"
        " VALUES (%s, 'carol', 5, now() - interval '2 hours', now() - interval '1 hour')",
        (event.id,),
    )
    assert counters(conn, event.id) == (5, 0)
    assert events.get_availability(conn, event.id) == Availability(
        event_id=event.id, total_tickets=5, reserved=0, purchased=0, available=5
    )


def test_get_availability_missing_raises_event_not_found(conn: psycopg.Connection[Any]) -> None:
    events.create_event(conn, name="other", starts_at=STARTS_AT, total_tickets=1)
    with pytest.raises(EventNotFound):
        events.get_availability(conn, MISSING_ID)


def test_reserve_on_missing_event_raises_event_not_found(conn: psycopg.Connection[Any]) -> None:
    with pytest.raises(EventNotFound):
        allocations.reserve(conn, event_id=MISSING_ID, fingerprint="alice", quantity=1)
    assert row_count(conn, "allocations") == 0
    assert row_count(conn, "buyer_inventory") == 0


def test_reserve_with_key_on_missing_event_raises_event_not_found(
    conn: psycopg.Connection[Any],
) -> None:
    with pytest.raises(EventNotFound):
        allocations.reserve(
            conn, event_id=MISSING_ID, fingerprint="alice", quantity=1, idempotency_key="k1"
        )
    assert row_count(conn, "allocations") == 0


# --- starts_at range ------------------------------------------------------------------------

EARLIEST = datetime(1, 1, 2, tzinfo=UTC)
LATEST = datetime(9999, 12, 30, tzinfo=UTC)
# Session time zones with the widest offsets either way, and a half-hour one.
ZONES = ["Pacific/Kiritimati", "Etc/GMT+12", "Asia/Tokyo", "America/St_Johns", "UTC"]


@pytest.mark.parametrize(
    "starts_at", [EARLIEST, LATEST, LATEST.astimezone(timezone(timedelta(hours=-14)))]
)
def test_starts_at_at_either_end_of_its_range_reads_back_in_every_session_time_zone(
    conn: psycopg.Connection[Any], starts_at: datetime
) -> None:
    created = events.create_event(conn, name="edge", starts_at=starts_at, total_tickets=1)
    for zone in ZONES:
        conn.execute("SELECT set_config('timezone', %s, false)", (zone,))
        assert events.get_event(conn, created.id).starts_at == starts_at
        assert [e.id for e in events.list_events(conn)] == [created.id]


@pytest.mark.parametrize(
    "starts_at",
    [
        EARLIEST - timedelta(microseconds=1),
        LATEST + timedelta(microseconds=1),
        datetime.max.replace(tzinfo=UTC),
        datetime.min.replace(tzinfo=timezone(timedelta(hours=-5))),
    ],
)
def test_starts_at_outside_its_range_is_invalid_input_and_writes_nothing(
    conn: psycopg.Connection[Any], starts_at: datetime
) -> None:
    with pytest.raises(
        InvalidInput, match="starts_at must be between 0001-01-02 and 9999-12-30 UTC"
    ):
        events.create_event(conn, name="edge", starts_at=starts_at, total_tickets=1)
    assert row_count(conn, "events") == 0


@pytest.mark.parametrize(
    "value", ["infinity", "-infinity", "9999-12-31 12:00+00", "0001-01-01 00:00+00"]
)
def test_raw_insert_of_a_start_outside_the_range_breaks_events_starts_at_range(
    conn: psycopg.Connection[Any], value: str
) -> None:
    with pytest.raises(psycopg.errors.CheckViolation, match="events_starts_at_range"):
        conn.execute(
            "INSERT INTO events (name, starts_at, total_tickets)"
            " VALUES ('raw', %s::timestamptz, 1)",
            (value,),
        )
    assert row_count(conn, "events") == 0
