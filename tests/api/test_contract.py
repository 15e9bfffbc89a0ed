"""The API's contract, run against both the sync modules and ticketing.aio (parametrised).

`api` is either API behind one calling convention: `api.allocations.reserve(api.conn, ...)`
calls the sync function on a sync connection, or runs the coroutine on an AsyncConnection
to the same database in the fixture's event loop.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from datetime import timedelta
from types import ModuleType
from typing import Any

import psycopg
import pytest

from tests.support import LAPSE, MISSING_ID, SHORT, STARTS_AT, assert_consistent
from ticketing import admin, aio, allocations, events, tickets
from ticketing.errors import (
    AllocationNotFound,
    BuyerLimitExceeded,
    EventNotFound,
    HoldExpired,
    IdempotencyConflict,
    InvalidInput,
    InvalidTransition,
    SoldOut,
    TicketNotFound,
)
from ticketing.models import Allocation, AllocationStatus, Availability, Event, Ticket


class _Blocking:
    """A module of coroutines, called as plain functions in one event loop."""

    def __init__(self, runner: asyncio.Runner, module: ModuleType) -> None:
        self._runner = runner
        self._module = module

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._module, name)
        if not inspect.iscoroutinefunction(value):
            return value

        def call(*args: Any, **kwargs: Any) -> Any:
            return self._runner.run(value(*args, **kwargs))

        return call


@dataclass
class Api:
    kind: str
    conn: Any
    events: Any
    allocations: Any
    tickets: Any
    admin: Any
    run: Callable[[Coroutine[Any, Any, Any]], Any] = asyncio.run  # the async kind's event loop


@pytest.fixture(params=["sync", "async"])
def api(request: pytest.FixtureRequest, dsn: str, conn: psycopg.Connection[Any]) -> Iterator[Api]:
    if request.param == "sync":
        yield Api("sync", conn, events, allocations, tickets, admin)
        return
    with asyncio.Runner() as runner:
        aconn = runner.run(aio.connect(dsn))
        try:
            wrap: Callable[[ModuleType], _Blocking] = lambda m: _Blocking(runner, m)  # noqa: E731
            yield Api(
                "async",
                aconn,
                wrap(aio.events),
                wrap(aio.allocations),
                wrap(aio.tickets),
                wrap(aio.admin),
                runner.run,
            )
        finally:
            runner.run(aconn.close())


def _event(api: Api, total: int = 10, max_per_buyer: int | None = None) -> Event:
    return api.events.create_event(
        api.conn,
        name="contract",
        starts_at=STARTS_AT,
        total_tickets=total,
        max_per_buyer=max_per_buyer,
    )


def test_events_are_created_read_and_listed(api: Api) -> None:
    event = _event(api, 12, max_per_buyer=3)
    assert isinstance(event, Event)
    assert (event.name, event.total_tickets, event.max_per_buyer) == ("contract", 12, 3)
    assert api.events.get_event(api.conn, event.id) == event
    assert api.events.list_events(api.conn) == [event]
    assert api.events.get_availability(api.conn, event.id) == Availability(
        event_id=event.id, total_tickets=12, reserved=0, purchased=0, available=12
    )


def test_a_hold_is_purchased_and_its_tickets_issued(
    api: Api, conn: psycopg.Connection[Any]
) -> None:
    event = _event(api)
    hold = api.allocations.reserve(api.conn, event_id=event.id, fingerprint="ann", quantity=3)
    assert isinstance(hold, Allocation)
    assert (hold.status, hold.quantity) == (AllocationStatus.RESERVED, 3)
    sale = api.allocations.purchase(api.conn, allocation_id=hold.id, fingerprint="ann")
    assert sale.status is AllocationStatus.PURCHASED
    issued = api.tickets.list_for_allocation(api.conn, sale.id)
    assert [t.number for t in issued] == [1, 2, 3]
    assert all(isinstance(t, Ticket) for t in issued)
    assert api.tickets.get_by_code(api.conn, issued[0].code) == issued[0]
    assert api.allocations.purchase(api.conn, allocation_id=hold.id, fingerprint="ann") == sale
    assert api.events.get_availability(api.conn, event.id).purchased == 3
    assert api.allocations.get_allocation(api.conn, hold.id) == sale
    assert api.allocations.list_for_buyer(api.conn, fingerprint="ann") == [sale]
    assert api.admin.check_invariants(api.conn) == []
    assert api.admin.sale_outcome(api.conn, event.id) == (3, 0, 0)
    assert_consistent(conn)


def test_cancel_returns_the_capacity(api: Api) -> None:
    event = _event(api, 4)
    hold = api.allocations.reserve(api.conn, event_id=event.id, fingerprint="bo", quantity=4)
    sale = api.allocations.purchase(api.conn, allocation_id=hold.id, fingerprint="bo")
    done = api.allocations.cancel(api.conn, allocation_id=sale.id, fingerprint="bo")
    assert done.status is AllocationStatus.CANCELLED
    assert api.allocations.cancel(api.conn, allocation_id=sale.id, fingerprint="bo") == done
    assert api.events.get_availability(api.conn, event.id).available == 4
    assert [
        t.voided_at is not None for t in api.tickets.list_for_allocation(api.conn, sale.id)
    ] == [True] * 4
    with pytest.raises(InvalidTransition):
        api.allocations.purchase(api.conn, allocation_id=sale.id, fingerprint="bo")


def test_sold_out_and_buyer_limits(api: Api) -> None:
    event = _event(api, 5, max_per_buyer=3)
    api.allocations.reserve(api.conn, event_id=event.id, fingerprint="a", quantity=3)
    with pytest.raises(BuyerLimitExceeded):
        api.allocations.reserve(api.conn, event_id=event.id, fingerprint="a", quantity=1)
    with pytest.raises(SoldOut) as caught:
        api.allocations.reserve(api.conn, event_id=event.id, fingerprint="b", quantity=3)
    assert caught.value.available == 2
    assert api.events.get_availability(api.conn, event.id).reserved == 3


def test_idempotency_keys(api: Api) -> None:
    event = _event(api)
    first = api.allocations.reserve(
        api.conn, event_id=event.id, fingerprint="k", quantity=2, idempotency_key="key-1"
    )
    again = api.allocations.reserve(
        api.conn, event_id=event.id, fingerprint="k", quantity=2, idempotency_key="key-1"
    )
    assert again == first
    with pytest.raises(IdempotencyConflict):
        api.allocations.reserve(
            api.conn, event_id=event.id, fingerprint="k", quantity=3, idempotency_key="key-1"
        )
    assert api.events.get_availability(api.conn, event.id).reserved == 2


def test_lapsed_holds_expire(api: Api) -> None:
    event = _event(api)
    hold = api.allocations.reserve(
        api.conn, event_id=event.id, fingerprint="late", quantity=2, hold=SHORT
    )
    time.sleep(LAPSE)
    with pytest.raises(HoldExpired):
        api.allocations.purchase(api.conn, allocation_id=hold.id, fingerprint="late")
    assert api.allocations.expire_due(api.conn) == 1
    assert api.allocations.get_allocation(api.conn, hold.id).status is AllocationStatus.EXPIRED
    assert api.allocations.expire_due(api.conn) == 0


def test_not_found_and_bad_input(api: Api) -> None:
    event = _event(api)
    hold = api.allocations.reserve(api.conn, event_id=event.id, fingerprint="own", quantity=1)
    with pytest.raises(EventNotFound):
        api.events.get_event(api.conn, MISSING_ID)
    with pytest.raises(EventNotFound):
        api.allocations.reserve(api.conn, event_id=MISSING_ID, fingerprint="x", quantity=1)
    with pytest.raises(AllocationNotFound):
        api.allocations.purchase(api.conn, allocation_id=hold.id, fingerprint="someone else")
    with pytest.raises(AllocationNotFound):
        api.allocations.get_allocation(api.conn, MISSING_ID)
    with pytest.raises(TicketNotFound):
        api.tickets.get_by_code(api.conn, "no-such-code")
    with pytest.raises(EventNotFound):
        api.admin.check_invariants(api.conn, event_id=MISSING_ID)
    for bad in (
        lambda: api.allocations.reserve(api.conn, event_id=event.id, fingerprint="", quantity=1),
        lambda: api.allocations.reserve(api.conn, event_id=event.id, fingerprint="x", quantity=0),
        lambda: api.allocations.reserve(
            api.conn, event_id=event.id, fingerprint="x", quantity=1, hold=timedelta(0)
        ),
        lambda: api.events.create_event(
            api.conn, name="x", starts_at=STARTS_AT.replace(tzinfo=None), total_tickets=1
        ),
        lambda: api.allocations.expire_due(api.conn, limit=0),
    ):
        with pytest.raises(InvalidInput):
            bad()
    assert api.events.get_availability(api.conn, event.id).reserved == 1


def test_inside_a_callers_transaction(api: Api, conn: psycopg.Connection[Any]) -> None:
    event = _event(api)
    if api.kind == "sync":
        with api.conn.transaction(force_rollback=True):
            api.allocations.reserve(api.conn, event_id=event.id, fingerprint="t", quantity=2)
    else:

        async def rolled_back() -> None:
            async with api.conn.transaction(force_rollback=True):
                await aio.allocations.reserve(
                    api.conn, event_id=event.id, fingerprint="t", quantity=2
                )

        api.run(rolled_back())
    assert api.events.get_availability(api.conn, event.id).reserved == 0
    assert_consistent(conn)
