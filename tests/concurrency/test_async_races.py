"""Races with asyncio tasks, each on its own connection, started together; and sync threads
and async tasks on one event at once. Exact final numbers."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from typing import Any

import psycopg
import pytest

from tests.support import BARRIER_TIMEOUT, JOIN_TIMEOUT, assert_consistent, make_event
from ticketing import admin, aio, allocations, db
from ticketing.errors import SoldOut, TicketingError

pytestmark = pytest.mark.race


async def _buyers(
    dsn: str, event_id: int, names: list[str], ready: asyncio.Event, start: asyncio.Event
) -> Counter[str]:
    """Each name reserves one ticket and buys it, on its own connection, once `start` is set
    (`ready` is set when every connection is open)."""
    connections = [await aio.connect(dsn) for _ in names]
    ready.set()
    outcomes: Counter[str] = Counter()

    async def buy(aconn: psycopg.AsyncConnection[Any], fingerprint: str) -> None:
        await start.wait()
        try:
            hold = await aio.allocations.reserve(
                aconn, event_id=event_id, fingerprint=fingerprint, quantity=1
            )
            await aio.allocations.purchase(aconn, allocation_id=hold.id, fingerprint=fingerprint)
        except TicketingError as exc:
            outcomes[type(exc).__name__] += 1
        else:
            outcomes["bought"] += 1

    try:
        await asyncio.wait_for(
            asyncio.gather(*(buy(c, n) for c, n in zip(connections, names, strict=True))),
            JOIN_TIMEOUT,
        )
    finally:
        for aconn in connections:
            await aconn.close()
    return outcomes


def test_fifty_tasks_for_the_last_ten_tickets(dsn: str, conn: psycopg.Connection[Any]) -> None:
    event = make_event(conn, 100)
    early = allocations.reserve(conn, event_id=event.id, fingerprint="early", quantity=90)
    allocations.purchase(conn, allocation_id=early.id, fingerprint="early")

    async def race() -> Counter[str]:
        ready, start = asyncio.Event(), asyncio.Event()
        names = [f"t{n}" for n in range(50)]
        buying = asyncio.ensure_future(_buyers(dsn, event.id, names, ready, start))
        await ready.wait()
        await asyncio.sleep(0)  # every task is waiting on start
        start.set()
        return await buying

    outcomes = asyncio.run(race())
    assert outcomes == Counter({"bought": 10, "SoldOut": 40})
    assert admin.sale_outcome(conn, event.id).sold == 100
    assert admin.check_invariants(conn) == []
    assert_consistent(conn)


def test_ten_concurrent_calls_with_one_idempotency_key_make_one_allocation(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    event = make_event(conn, 100)

    async def race() -> list[int]:
        connections = [await aio.connect(dsn) for _ in range(10)]
        start = asyncio.Event()

        async def reserve(aconn: psycopg.AsyncConnection[Any]) -> int:
            await start.wait()
            hold = await aio.allocations.reserve(
                aconn, event_id=event.id, fingerprint="same", quantity=2, idempotency_key="one-key"
            )
            return hold.id

        try:
            calls = asyncio.gather(*(reserve(c) for c in connections))
            await asyncio.sleep(0)  # every call is waiting on start
            start.set()
            return await asyncio.wait_for(calls, JOIN_TIMEOUT)
        finally:
            for aconn in connections:
                await aconn.close()

    ids = asyncio.run(race())
    assert len(set(ids)) == 1
    rows = conn.execute(
        "SELECT id, quantity FROM allocations WHERE event_id = %s", (event.id,)
    ).fetchall()
    assert rows == [(ids[0], 2)]
    assert_consistent(conn)


def test_sync_threads_and_async_tasks_on_one_event(dsn: str, conn: psycopg.Connection[Any]) -> None:
    event = make_event(conn, 20)
    threads_n, tasks_n = 30, 30
    barrier = threading.Barrier(threads_n + 1, timeout=BARRIER_TIMEOUT)
    sync_outcomes: Counter[str] = Counter()
    lock = threading.Lock()

    def sync_buyer(n: int) -> None:
        with db.connect(dsn) as own:
            barrier.wait()
            fingerprint = f"thread-{n}"
            try:
                hold = allocations.reserve(
                    own, event_id=event.id, fingerprint=fingerprint, quantity=1
                )
                allocations.purchase(own, allocation_id=hold.id, fingerprint=fingerprint)
            except SoldOut:
                outcome = "SoldOut"
            else:
                outcome = "bought"
            with lock:
                sync_outcomes[outcome] += 1

    async def tasks() -> Counter[str]:
        ready, start = asyncio.Event(), asyncio.Event()
        names = [f"task-{n}" for n in range(tasks_n)]
        buying = asyncio.ensure_future(_buyers(dsn, event.id, names, ready, start))
        await ready.wait()
        await asyncio.to_thread(barrier.wait)  # released together with the threads
        start.set()
        return await buying

    threads = [threading.Thread(target=sync_buyer, args=(n,)) for n in range(threads_n)]
    for thread in threads:
        thread.start()
    async_outcomes = asyncio.run(tasks())
    for thread in threads:
        thread.join(JOIN_TIMEOUT)
        assert not thread.is_alive()
    total = sync_outcomes + async_outcomes
    assert total == Counter({"bought": 20, "SoldOut": 40})
    assert admin.sale_outcome(conn, event.id).sold == 20
    assert admin.check_invariants(conn) == []
    assert_consistent(conn)
