"""ticketing._tx for asyncio: the same atomic work, lock timeout, retries and translation.

Every decision (whether the function owns its transaction, which errors are
retried and after how long, the session statements) is ticketing._tx's; this
module only awaits. A coroutine cancelled inside `atomic` leaves its
transaction rolled back by `conn.transaction()`'s exit, and psycopg cancels a
statement still running on the server, so nothing partial is committed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import psycopg

from ticketing._tx import (
    ATTEMPTS,
    LOCK_TIMEOUT,
    SET_ISOLATION,
    SET_LOCK_TIMEOUT,
    Isolation,
    owns_transaction,
    retry_delay,
)
from ticketing.errors import translate

T = TypeVar("T")


async def atomic(
    conn: psycopg.AsyncConnection[Any],
    work: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]],
    *,
    isolation: Isolation | None = None,
    one_statement: bool = False,
) -> T:
    """Await `work(conn)` inside `conn.transaction()` and return its result (see ticketing._tx)."""
    owns = owns_transaction(conn)
    bare = one_statement and owns and conn.autocommit
    attempts = ATTEMPTS if owns else 1
    for attempt in range(1, attempts + 1):
        try:
            if bare:
                return await work(conn)
            async with conn.transaction():
                if owns and isolation is not None:
                    await conn.execute(SET_ISOLATION[isolation])
                await conn.execute(SET_LOCK_TIMEOUT, {"timeout": LOCK_TIMEOUT})
                return await work(conn)
        except psycopg.Error as exc:
            delay = retry_delay(exc, attempt, attempts)
            if delay is None:
                raise translate(exc) from exc
            await asyncio.sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


async def guarded(call: Callable[[], Awaitable[T]]) -> T:
    """Await a call outside a transaction (connecting) with error translation."""
    try:
        return await call()
    except psycopg.Error as exc:
        raise translate(exc) from exc


__all__ = ["LOCK_TIMEOUT", "atomic", "guarded"]
