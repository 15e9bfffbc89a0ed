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
from typing import Literal, LiteralString, TypeVar

import psycopg
from psycopg.pq import TransactionStatus

from ticketing.errors import RETRYABLE_SQLSTATES, TicketingError, translate
from ticketing.queries import load

T = TypeVar("T")

#: How long a query function waits for a row lock before it raises `Busy`.
LOCK_TIMEOUT = "3s"
#: Attempts at a transaction the function owns, when it meets deadlocks or
#: serialization failures.
ATTEMPTS = 5

_Q = load("session.sql")
_SET_ISOLATION: dict[str, LiteralString] = {
    "REPEATABLE READ": _Q["set_repeatable_read"],
    "SERIALIZABLE": _Q["set_serializable"],
}


def atomic(
    conn: psycopg.Connection[object],
    work: Callable[[psycopg.Connection[object]], T],
    *,
    isolation: Literal["REPEATABLE READ", "SERIALIZABLE"] | None = None,
    one_statement: bool = False,
) -> T:
    """Run `work(conn)` inside `conn.transaction()` and return its result.

    `isolation` applies when the function owns the transaction; inside a
    caller's transaction, the caller's level stands. With `one_statement`,
    on an idle autocommit connection, `work` runs without a transaction block.
    """
    owns = conn.info.transaction_status == TransactionStatus.IDLE
    bare = one_statement and owns and conn.autocommit
    attempts = ATTEMPTS if owns else 1
    for attempt in range(1, attempts + 1):
        try:
            if bare:
                return work(conn)
            with conn.transaction():
                if owns and isolation is not None:
                    conn.execute(_SET_ISOLATION[isolation])
                conn.execute(_Q["set_lock_timeout"], {"timeout": LOCK_TIMEOUT})
                return work(conn)
        except psycopg.Error as exc:
            if exc.sqlstate in RETRYABLE_SQLSTATES and attempt < attempts:
                time.sleep(random.uniform(0, 0.005 * 2**attempt))  # noqa: S311 - jitter, not secrets
                continue
            raise translate(exc) from exc
    raise AssertionError("unreachable")  # pragma: no cover


def guarded(call: Callable[[], T]) -> T:
    """Run a call outside a transaction (connecting, migrating) with error translation."""
    try:
        return call()
    except psycopg.Error as exc:
        raise translate(exc) from exc


__all__ = ["ATTEMPTS", "LOCK_TIMEOUT", "TicketingError", "atomic", "guarded"]
