"""Tickets through the public API: list_for_allocation, get_by_code, TicketNotFound."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from tests.support import STARTS_AT
from ticketing import allocations, events, tickets
from ticketing.errors import NotFound, TicketNotFound
from ticketing.models import Allocation, Ticket


def _bought(conn: psycopg.Connection[Any], event_id: int, who: str, quantity: int) -> Allocation:
    hold = allocations.reserve(conn, event_id=event_id, fingerprint=who, quantity=quantity)
    return allocations.purchase(conn, allocation_id=hold.id, fingerprint=who)


def test_list_for_allocation_returns_tickets_by_number(conn: psycopg.Connection[Any]) -> None:
    event = events.create_event(conn, name="show", starts_at=STARTS_AT, total_tickets=6)
    _bought(conn, event.id, "alice", 1)  # 1
    bob = _bought(conn, event.id, "bob", 1)  # 2
    _bought(conn, event.id, "carol", 3)  # 3, 4, 5
    allocations.cancel(conn, allocation_id=bob.id, fingerprint="bob")  # 2 back to the pool
    dave = _bought(conn, event.id, "dave", 2)  # pooled 2, then 6
    listed = tickets.list_for_allocation(conn, dave.id)
    assert all(isinstance(t, Ticket) for t in listed)
    assert [t.number for t in listed] == [2, 6]
    assert [(t.event_id, t.allocation_id, t.voided_at) for t in listed] == [
        (event.id, dave.id, None),
        (event.id, dave.id, None),
    ]
    assert listed[0].code != listed[1].code
    voided = tickets.list_for_allocation(conn, bob.id)
    assert [t.number for t in voided] == [2]
    assert voided[0].voided_at is not None


def test_list_for_allocation_of_a_big_purchase(conn: psycopg.Connection[Any]) -> None:
    event = events.create_event(conn, name="arena", starts_at=STARTS_AT, total_tickets=500)
    bought = _bought(conn, event.id, "alice", 250)
    listed = tickets.list_for_allocation(conn, bought.id)
    assert [t.number for t in listed] == list(range(1, 251))
    assert len({t.code for t in listed}) == 250
    assert all(len(t.code) >= 22 for t in listed)
    assert len({t.id for t in listed}) == 250


def test_list_for_allocation_without_tickets_is_empty(conn: psycopg.Connection[Any]) -> None:
    event = events.create_event(conn, name="show", starts_at=STARTS_AT, total_tickets=5)
    hold = allocations.reserve(conn, event_id=event.id, fingerprint="alice", quantity=2)
    assert tickets.list_for_allocation(conn, hold.id) == []
    cancelled = allocations.reserve(conn, event_id=event.id, fingerprint="bob", quantity=1)
    allocations.cancel(conn, allocation_id=cancelled.id, fingerprint="bob")
    assert tickets.list_for_allocation(conn, cancelled.id) == []
    assert tickets.list_for_allocation(conn, 987_654_321) == []


def test_get_by_code(conn: psycopg.Connection[Any]) -> None:
    event = events.create_event(conn, name="show", starts_at=STARTS_AT, total_tickets=5)
    alice = _bought(conn, event.id, "alice", 2)
    bob = _bought(conn, event.id, "bob", 1)
    for allocation in (alice, bob):
        for ticket in tickets.list_for_allocation(conn, allocation.id):
            assert tickets.get_by_code(conn, ticket.code) == ticket


def test_get_by_code_finds_voided_tickets(conn: psycopg.Connection[Any]) -> None:
    event = events.create_event(conn, name="show", starts_at=STARTS_AT, total_tickets=5)
    alice = _bought(conn, event.id, "alice", 1)
    (issued,) = tickets.list_for_allocation(conn, alice.id)
    allocations.cancel(conn, allocation_id=alice.id, fingerprint="alice")
    found = tickets.get_by_code(conn, issued.code)
    assert found.id == issued.id
    assert found.number == issued.number
    assert found.voided_at is not None
    assert found.voided_at >= issued.created_at


@pytest.mark.parametrize("code", ["A" * 22, "x", "nope-" * 40])
def test_get_by_code_unknown_raises_ticket_not_found(
    conn: psycopg.Connection[Any], code: str
) -> None:
    event = events.create_event(conn, name="show", starts_at=STARTS_AT, total_tickets=5)
    _bought(conn, event.id, "alice", 2)
    with pytest.raises(TicketNotFound) as info:
        tickets.get_by_code(conn, code)
    assert isinstance(info.value, NotFound)
    assert isinstance(info.value, LookupError)


def test_get_by_code_is_exact(conn: psycopg.Connection[Any]) -> None:
    event = events.create_event(conn, name="show", starts_at=STARTS_AT, total_tickets=5)
    alice = _bought(conn, event.id, "alice", 1)
    (issued,) = tickets.list_for_allocation(conn, alice.id)
    for near in (issued.code[:-1], issued.code + "A", " " + issued.code):
        with pytest.raises(TicketNotFound):
            tickets.get_by_code(conn, near)
