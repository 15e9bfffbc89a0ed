"""A coroutine of ticketing.aio cancelled at any point (a client gone, asyncio.timeout) leaves
nothing partial: the change happened whole or not at all, no transaction stays open on the
connection, and the connection (or the pool) serves the next call."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
import pytest
from psycopg.pq import TransactionStatus

from tests.support import assert_consistent, make_event, scalar
from ticketing import admin, aio
from ticketing.models import AllocationStatus

#: Cancellation points per operation: delays spread over one uncancelled call's duration.
POINTS = 40

Operation = Callable[[psycopg.AsyncConnection[Any], int], Awaitable[Any]]


async def _cancel_after(call: Awaitable[Any], delay: float) -> bool:
    """Run `call`, cancel it after `delay` seconds; whether it was cancelled (not finished)."""
    task = asyncio.ensure_future(call)
    await asyncio.sleep(delay)
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        return True
    return False


async def _duration(conn: psycopg.AsyncConnection[Any], operation: Operation, n: int) -> float:
    started = time.perf_counter()
    await operation(conn, n)
    return time.perf_counter() - started


def _check(conn: psycopg.Connection[Any], event_id: int) -> None:
    assert_consistent(conn)
    assert admin.check_invariants(conn, event_id=event_id) == []


@pytest.mark.parametrize("keyed", [False, True], ids=["one-statement", "with-idempotency-key"])
def test_a_cancelled_reserve_is_whole_or_absent(
    dsn: str, conn: psycopg.Connection[Any], keyed: bool
) -> None:
    event = make_event(conn, 10_000)

    async def reserve(aconn: psycopg.AsyncConnection[Any], n: int) -> Any:
        return await aio.allocations.reserve(
            aconn,
            event_id=event.id,
            fingerprint=f"buyer-{n}",
            quantity=2,
            idempotency_key=f"key-{n}" if keyed else None,
        )

    async def scenario() -> tuple[int, int]:
        aconn = await aio.connect(dsn)
        try:
            span = await _duration(aconn, reserve, 0)
            cancelled = 0
            for n in range(1, POINTS + 1):
                cancelled += await _cancel_after(reserve(aconn, n), span * (n - 1) / POINTS)
                # Nothing left open on the connection: it is idle and answers.
                assert aconn.info.transaction_status == TransactionStatus.IDLE
                await aconn.execute("SELECT 1")
            return cancelled, POINTS
        finally:
            await aconn.close()

    cancelled, points = asyncio.run(scenario())
    assert cancelled > 0, "some calls were cancelled before they finished"
    # Each call either made its whole allocation (2 tickets held) or nothing.
    made = int(scalar(conn, "SELECT count(*) FROM allocations WHERE event_id = %s", (event.id,)))
    assert points + 1 - cancelled <= made <= points + 1
    held = int(
        scalar(
            conn,
            "SELECT coalesce(sum(quantity), 0) FROM allocations WHERE event_id = %s",
            (event.id,),
        )
    )
    assert held == 2 * made
    _check(conn, event.id)


@pytest.mark.parametrize("step", ["purchase", "cancel"])
def test_a_cancelled_purchase_or_cancel_is_whole_or_absent(
    dsn: str, conn: psycopg.Connection[Any], step: str
) -> None:
    event = make_event(conn, 10_000)

    async def scenario() -> int:
        aconn = await aio.connect(dsn)
        try:
            holds = [
                await aio.allocations.reserve(
                    aconn, event_id=event.id, fingerprint=f"b{n}", quantity=3
                )
                for n in range(POINTS + 1)
            ]
            if step == "cancel":
                for hold in holds:
                    await aio.allocations.purchase(
                        aconn, allocation_id=hold.id, fingerprint=hold.fingerprint
                    )
            operation = aio.allocations.purchase if step == "purchase" else aio.allocations.cancel

            async def run(aconn: psycopg.AsyncConnection[Any], n: int) -> Any:
                return await operation(
                    aconn, allocation_id=holds[n].id, fingerprint=holds[n].fingerprint
                )

            span = await _duration(aconn, run, 0)
            cancelled = 0
            for n in range(1, POINTS + 1):
                cancelled += await _cancel_after(run(aconn, n), span * (n - 1) / POINTS)
                assert aconn.info.transaction_status == TransactionStatus.IDLE
                await aconn.execute("SELECT 1")
            return cancelled
        finally:
            await aconn.close()

    cancelled = asyncio.run(scenario())
    assert cancelled > 0
    target = AllocationStatus.PURCHASED if step == "purchase" else AllocationStatus.CANCELLED
    rows = conn.execute(
        "SELECT status, count(*) FROM allocations WHERE event_id = %s GROUP BY status", (event.id,)
    ).fetchall()
    counts = {AllocationStatus(status): int(n) for status, n in rows}
    before = AllocationStatus.RESERVED if step == "purchase" else AllocationStatus.PURCHASED
    # Every allocation is wholly before or wholly after the step, with tickets to match.
    assert set(counts) <= {before, target}
    assert sum(counts.values()) == POINTS + 1
    assert POINTS + 1 - cancelled <= counts.get(target, 0) <= POINTS + 1
    _check(conn, event.id)


def test_a_pool_connection_given_back_mid_call_serves_the_next_one(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    event = make_event(conn, 10_000)

    async def scenario() -> int:
        async with aio.create_pool(dsn, min_size=1, max_size=1) as pool:

            async def keyed_reserve(n: int) -> Any:
                async with pool.connection() as pooled:
                    return await aio.allocations.reserve(
                        pooled,
                        event_id=event.id,
                        fingerprint=f"p{n}",
                        quantity=1,
                        idempotency_key=f"p{n}",
                    )

            started = time.perf_counter()
            await keyed_reserve(0)
            span = time.perf_counter() - started
            cancelled = 0
            for n in range(1, POINTS + 1):
                cancelled += await _cancel_after(keyed_reserve(n), span * (n - 1) / POINTS)
                # The pool's one connection comes back idle, or is replaced: the next call works.
                async with pool.connection() as pooled:
                    assert pooled.info.transaction_status == TransactionStatus.IDLE
            last = await keyed_reserve(POINTS + 1)
            assert last.status is AllocationStatus.RESERVED
            return cancelled

    cancelled = asyncio.run(scenario())
    assert cancelled > 0
    made = int(scalar(conn, "SELECT count(*) FROM allocations WHERE event_id = %s", (event.id,)))
    assert POINTS + 2 - cancelled <= made <= POINTS + 2
    _check(conn, event.id)


def test_asyncio_timeout_on_a_lock_wait_rolls_back(
    dsn: str, conn: psycopg.Connection[Any], admin_conn: psycopg.Connection[Any]
) -> None:
    # A reserve that waits on a locked slot row is cut short by asyncio.timeout: the server's
    # statement is cancelled, nothing is taken, and the connection is idle again.
    event = make_event(conn, 10)

    async def scenario() -> TransactionStatus:
        aconn = await aio.connect(dsn)
        try:
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.3):
                    await aio.allocations.reserve(
                        aconn,
                        event_id=event.id,
                        fingerprint="waits",
                        quantity=10,
                        idempotency_key="w",
                    )
            status = aconn.info.transaction_status
            await aconn.execute("SELECT 1")
            return status
        finally:
            await aconn.close()

    with admin_conn.transaction():
        admin_conn.execute(
            "SELECT * FROM inventory_slots WHERE event_id = %s FOR UPDATE", (event.id,)
        )
        status = asyncio.run(scenario())
    assert status == TransactionStatus.IDLE
    assert (
        int(scalar(conn, "SELECT count(*) FROM allocations WHERE event_id = %s", (event.id,))) == 0
    )
    _check(conn, event.id)
