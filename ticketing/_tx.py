"""Runs one query function's work atomically, with a lock timeout, bounded retries
and error translation.

A function that owns its transaction (the connection was idle) retries
deadlocks and serialization failures a few times; inside a caller's
transaction it raises `Busy` at once and lets the caller retry the whole
transaction, since only the caller knows what else it did.

Work that is one statement (`one_statement=True`, e.g. `reserve`) runs on an
idle autocommit connection as that statement alone: one round trip, atomic
by itself. Such statements set their own lock timeout
(`set_config('lock_timeout', %(lock_timeout)s, true)` in a FROM clause), so
they need no BEGIN, SET and COMMIT around them.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any, Literal, LiteralString, TypeVar

import psycopg
from psycopg.pq import TransactionStatus

from ticketing.errors import RETRYABLE_SQLSTATES, TicketingError, translate
from ticketing.queries import load

T = TypeVar("T")
Isolation = Literal["REPEATABLE READ", "SERIALIZABLE"]

#: How long a query function waits for a row lock before it raises `Busy`.
LOCK_TIMEOUT = "3s"
#: Attempts at a transaction the function owns, when it meets deadlocks or
#: serialization failures.
ATTEMPTS = 5

_Q = load("session.sql")
SET_LOCK_TIMEOUT = _Q["set_lock_timeout"]
SET_ISOLATION: dict[str, LiteralString] = {
    "REPEATABLE READ": _Q["set_repeatable_read"],
    "SERIALIZABLE": _Q["set_serializable"],
}


def atomic(
    conn: psycopg.Connection[object],
    work: Callable[[psycopg.Connection[object]], T],
    *,
    isolation: Isolation | None = None,
    one_statement: bool = False,
) -> T:
    """Run `work(conn)` inside `conn.transaction()` and return its result.

    `isolation` applies when the function owns the transaction; inside a
    caller's transaction, the caller's level stands. With `one_statement`,
    on an idle autocommit connection, `work` runs without a transaction block.
    """
    owns = owns_transaction(conn)
    bare = one_statement and owns and conn.autocommit
    attempts = ATTEMPTS if owns else 1
    for attempt in range(1, attempts + 1):
        try:
            if bare:
                return work(conn)
            with conn.transaction():
                if owns and isolation is not None:
                    conn.execute(SET_ISOLATION[isolation])
                conn.execute(SET_LOCK_TIMEOUT, {"timeout": LOCK_TIMEOUT})
                return work(conn)
        except psycopg.Error as exc:
            delay = retry_delay(exc, attempt, attempts)
            if delay is None:
                raise translate(exc) from exc
            time.sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


def owns_transaction(conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> bool:
    """Whether a query function starts (and so may retry) its own transaction."""
    return conn.info.transaction_status == TransactionStatus.IDLE


def retry_delay(exc: psycopg.Error, attempt: int, attempts: int) -> float | None:
    """Seconds to wait before the next attempt, or None when `exc` is final."""
    if exc.sqlstate in RETRYABLE_SQLSTATES and attempt < attempts:
        return random.uniform(0, 0.005 * 2**attempt)  # noqa: S311 - jitter, not secrets
    return None


def guarded(call: Callable[[], T]) -> T:
    """Run a call outside a transaction (connecting, migrating) with error translation."""
    try:
        return call()
    except psycopg.Error as exc:
        raise translate(exc) from exc


__all__ = [
    "ATTEMPTS",
    "LOCK_TIMEOUT",
    "SET_ISOLATION",
    "SET_LOCK_TIMEOUT",
    "Isolation",
    "TicketingError",
    "atomic",
    "guarded",
    "owns_transaction",
    "retry_delay",
]
