"""Races between real threads, each on its own connection, released together by a barrier."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import timedelta
from functools import partial
from typing import Any, LiteralString

import psycopg
import pytest

from tests.support import BARRIER_TIMEOUT, JOIN_TIMEOUT, assert_consistent, counters, make_event
from ticketing import allocations, db, events, tickets
from ticketing.errors import BuyerLimitExceeded, HoldExpired, InvalidTransition, SoldOut
from ticketing.models import Allocation, AllocationStatus

pytestmark = pytest.mark.race

Call = Callable[[psycopg.Connection[Any]], Any]

#: Every race runs against a one-slot event and a slotted one (7 slots, so the
#: capacity splits unevenly and near sell-out requests span several slots).
SLOTS = {"count": 1}


@pytest.fixture(autouse=True, params=[1, 7], ids=["1-slot", "7-slots"])
def _slots(request: pytest.FixtureRequest) -> None:
    SLOTS["count"] = request.param


def race(dsn: str, calls: Sequence[Call]) -> list[Any]:
    """Run each call in a thread of its own, on a connection of its own, all released at once.

    Returns what each call returned, or the exception it raised, in the order of `calls`.
    """
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)

    def run(i: int) -> None:
        try:
            conn = db.connect(dsn)
        except Exception as exc:
            barrier.abort()
            results[i] = exc
            return
        try:
            barrier.wait(timeout=BARRIER_TIMEOUT)
            results[i] = calls[i](conn)
        except Exception as exc:
            results[i] = exc
        finally:
            conn.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=JOIN_TIMEOUT)
    assert not any(thread.is_alive() for thread in threads), "a racing thread hung"
    return results


def kinds(results: Sequence[Any]) -> Counter[str]:
    """How many results of each type: Allocation, SoldOut, ..."""
    return Counter(type(r).__name__ for r in results)


def reserver(event_id: int, fingerprint: str, quantity: int = 1, **kwargs: Any) -> Call:
    def call(conn: psycopg.Connection[Any]) -> Allocation:
        return allocations.reserve(
            conn, event_id=event_id, fingerprint=fingerprint, quantity=quantity, **kwargs
        )

    return call


def buyer(event_id: int, fingerprint: str, quantity: int) -> Call:
    """Reserve, then purchase at once."""

    def call(conn: psycopg.Connection[Any]) -> Allocation:
        held = allocations.reserve(
            conn, event_id=event_id, fingerprint=fingerprint, quantity=quantity
        )
        return allocations.purchase(conn, allocation_id=held.id, fingerprint=fingerprint)

    return call


def valid_numbers(conn: psycopg.Connection[Any], event_id: int) -> list[int]:
    rows = conn.execute(
        "SELECT number FROM tickets WHERE event_id = %s AND voided_at IS NULL ORDER BY number",
        (event_id,),
    ).fetchall()
    return [int(r[0]) for r in rows]


def test_fifty_buyers_race_for_the_last_ten_tickets(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    event_id = make_event(conn, total=100, slots=SLOTS["count"]).id
    allocations.reserve(conn, event_id=event_id, fingerprint="early-a", quantity=60)
    buyer(event_id, "early-b", 30)(conn)

    results = race(dsn, [reserver(event_id, f"buyer-{i}") for i in range(50)])

    assert kinds(results) == {"Allocation": 10, "SoldOut": 40}
    assert {r.available for r in results if isinstance(r, SoldOut)} == {0}
    winners = [r for r in results if isinstance(r, Allocation)]
    assert len({w.id for w in winners}) == 10
    assert all(w.status is AllocationStatus.RESERVED and w.quantity == 1 for w in winners)
    assert counters(conn, event_id) == (70, 30)
    availability = events.get_availability(conn, event_id)
    assert (availability.reserved, availability.purchased, availability.available) == (70, 30, 0)
    assert_consistent(conn)


def test_one_buyer_races_itself_against_the_limit(dsn: str, conn: psycopg.Connection[Any]) -> None:
    event_id = make_event(conn, total=100, max_per_buyer=4, slots=SLOTS["count"]).id

    results = race(dsn, [reserver(event_id, "greedy") for _ in range(20)])

    assert kinds(results) == {"Allocation": 4, "BuyerLimitExceeded": 16}
    assert all(isinstance(r, Allocation | BuyerLimitExceeded) for r in results)
    assert counters(conn, event_id) == (4, 0)
    row = conn.execute(
        "SELECT quantity FROM buyer_inventory WHERE event_id = %s AND fingerprint = 'greedy'",
        (event_id,),
    ).fetchone()
    assert row == (4,)
    assert_consistent(conn)


def test_purchase_races_cancel(dsn: str, conn: psycopg.Connection[Any]) -> None:
    rounds = 20
    event_id = make_event(conn, total=100, slots=SLOTS["count"]).id
    holds = [
        allocations.reserve(conn, event_id=event_id, fingerprint=f"fan-{i}", quantity=2)
        for i in range(rounds)
    ]
    outcomes: Counter[str] = Counter()

    for held in holds:
        bought, cancelled = race(
            dsn,
            [
                partial(allocations.purchase, allocation_id=held.id, fingerprint=held.fingerprint),
                partial(allocations.cancel, allocation_id=held.id, fingerprint=held.fingerprint),
            ],
        )

        final = allocations.get_allocation(conn, held.id).status
        issued = tickets.list_for_allocation(conn, held.id)
        # Whatever happened, the allocation and its tickets agree.
        valid = [t for t in issued if t.voided_at is None]
        assert len(valid) == (2 if final is AllocationStatus.PURCHASED else 0)
        # Cancelling is allowed from reserved and from purchased, so the cancel always lands;
        # the purchase either got in first (its tickets are then voided) or is refused.
        if isinstance(bought, Allocation) and isinstance(cancelled, Allocation):
            assert bought.status is AllocationStatus.PURCHASED
            assert cancelled.status is AllocationStatus.CANCELLED
            assert final is AllocationStatus.CANCELLED
            assert len(issued) == 2
            outcomes["purchase, then cancel"] += 1
        elif isinstance(bought, InvalidTransition) and isinstance(cancelled, Allocation):
            assert cancelled.status is AllocationStatus.CANCELLED
            assert final is AllocationStatus.CANCELLED
            assert issued == []
            outcomes["cancel, then refused purchase"] += 1
        else:
            outcomes[f"purchase -> {type(bought).__name__}, cancel -> {cancelled!r}"] += 1

    purchase_won = outcomes["purchase, then cancel"]
    assert purchase_won + outcomes["cancel, then refused purchase"] == rounds, outcomes
    assert counters(conn, event_id) == (0, 0)
    voided = conn.execute(
        "SELECT count(*) FROM tickets WHERE event_id = %s AND voided_at IS NOT NULL", (event_id,)
    ).fetchone()
    assert voided == (2 * purchase_won,)
    assert valid_numbers(conn, event_id) == []
    assert_consistent(conn)


def test_purchase_races_expiry(dsn: str, conn: psycopg.Connection[Any]) -> None:
    buyers = 20
    event_id = make_event(conn, total=100, slots=SLOTS["count"]).id
    holds = [
        allocations.reserve(
            conn,
            event_id=event_id,
            fingerprint=f"late-{i}",
            quantity=2,
            hold=timedelta(milliseconds=400),
        )
        for i in range(buyers)
    ]
    finished = threading.Semaphore(0)

    def late_buyer(held: Allocation, offset: float) -> Call:
        def call(conn: psycopg.Connection[Any]) -> Allocation:
            try:
                row = conn.execute(
                    "SELECT extract(epoch FROM expires_at - clock_timestamp())"
                    " FROM allocations WHERE id = %s",
                    (held.id,),
                ).fetchone()
                assert row is not None
                time.sleep(max(float(row[0]) + offset, 0))
                return allocations.purchase(
                    conn, allocation_id=held.id, fingerprint=held.fingerprint
                )
            finally:
                finished.release()

        return call

    def sweeper(conn: psycopg.Connection[Any]) -> int:
        swept, done = 0, 0
        while done < buyers:
            swept += allocations.expire_due(conn)
            while finished.acquire(blocking=False):
                done += 1
            time.sleep(0.002)
        return swept

    # Buyers arrive from 30 ms before their hold lapses to 30 ms after.
    offsets = [-0.03 + 0.06 * i / (buyers - 1) for i in range(buyers)]
    *results, swept = race(
        dsn, [*(late_buyer(h, o) for h, o in zip(holds, offsets, strict=True)), sweeper]
    )
    assert isinstance(swept, int), swept
    # Holds whose purchase came too late and that the sweeper had not reached yet.
    swept += allocations.expire_due(conn)

    assert all(isinstance(r, Allocation | HoldExpired) for r in results), results
    bought = 0
    for held, result in zip(holds, results, strict=True):
        final = allocations.get_allocation(conn, held.id)
        issued = tickets.list_for_allocation(conn, held.id)
        if isinstance(result, Allocation):
            bought += 1
            assert result.status is AllocationStatus.PURCHASED
            assert final.status is AllocationStatus.PURCHASED
            assert len(issued) == 2
            assert all(t.voided_at is None for t in issued)
        else:
            assert final.status is AllocationStatus.EXPIRED
            assert issued == []
    assert swept == buyers - bought
    assert counters(conn, event_id) == (0, 2 * bought)
    numbers = valid_numbers(conn, event_id)  # distinct; with slots, not necessarily from 1 up
    assert len(set(numbers)) == len(numbers) == 2 * bought
    assert all(1 <= n <= 100 for n in numbers)
    assert_consistent(conn)


def test_concurrent_reserves_with_one_idempotency_key(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    event_id = make_event(conn, total=10, slots=SLOTS["count"]).id

    results = race(
        dsn, [reserver(event_id, "retrier", 3, idempotency_key="order-42") for _ in range(10)]
    )

    assert kinds(results) == {"Allocation": 10}
    assert len({r.id for r in results}) == 1
    assert all(r.quantity == 3 and r.idempotency_key == "order-42" for r in results)
    row = conn.execute(
        "SELECT count(*) FROM allocations WHERE event_id = %s", (event_id,)
    ).fetchone()
    assert row == (1,)
    assert counters(conn, event_id) == (3, 0)
    assert events.get_availability(conn, event_id).available == 7
    assert_consistent(conn)


INSERT_HOLD: LiteralString = (
    "INSERT INTO allocations (event_id, fingerprint, quantity) VALUES (%s, %s, 1) RETURNING id"
)


@pytest.mark.parametrize(("capacity", "raw_writers", "api_callers"), [(10, 10, 10), (10, 3, 4)])
def test_raw_writers_race_the_api(
    dsn: str, conn: psycopg.Connection[Any], capacity: int, raw_writers: int, api_callers: int
) -> None:
    event_id = make_event(conn, total=capacity, slots=SLOTS["count"]).id

    def raw_writer(fingerprint: str) -> Call:
        def call(conn: psycopg.Connection[Any]) -> int:
            row = conn.execute(INSERT_HOLD, (event_id, fingerprint)).fetchone()
            assert row is not None
            return int(row[0])

        return call

    calls = [raw_writer(f"raw-{i}") for i in range(raw_writers)]
    calls += [reserver(event_id, f"api-{i}") for i in range(api_callers)]
    results = race(dsn, calls)

    raw, api = results[:raw_writers], results[raw_writers:]
    taken = min(capacity, raw_writers + api_callers)
    raw_won = sum(isinstance(r, int) for r in raw)
    api_won = sum(isinstance(r, Allocation) for r in api)
    assert raw_won + api_won == taken
    # Losers learn it the same way whichever path they took: the sold-out SQLSTATE.
    assert all(isinstance(r, int) or getattr(r, "sqlstate", None) == "TK001" for r in raw), raw
    assert all(isinstance(r, Allocation | SoldOut) for r in api), api
    assert counters(conn, event_id) == (taken, 0)
    live = conn.execute(
        "SELECT coalesce(sum(quantity), 0) FROM allocations"
        " WHERE event_id = %s AND status IN ('reserved', 'purchased')",
        (event_id,),
    ).fetchone()
    assert live == (taken,)
    assert events.get_availability(conn, event_id).available == capacity - taken
    assert_consistent(conn)


def test_fifty_callers_all_get_an_answer(dsn: str, conn: psycopg.Connection[Any]) -> None:
    event_id = make_event(conn, total=60, slots=SLOTS["count"]).id

    results = race(dsn, [buyer(event_id, f"caller-{i}", 2) for i in range(50)])

    assert kinds(results) == {"Allocation": 30, "SoldOut": 20}
    assert {r.available for r in results if isinstance(r, SoldOut)} == {0}
    assert all(r.status is AllocationStatus.PURCHASED for r in results if isinstance(r, Allocation))
    assert counters(conn, event_id) == (0, 60)
    assert valid_numbers(conn, event_id) == list(range(1, 61))
    assert_consistent(conn)
