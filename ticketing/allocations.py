# Generated from ticketing/aio/allocations.py by `make sync-api` (ticketing.aio._unasync).
# DO NOT CHANGE: edit the async source and regenerate.
"""Allocations: a buyer's holds and purchases, and the sweeper that expires lapsed holds.

The statements here only change an allocation's own row. Capacity is taken
and returned, buyer limits enforced and tickets issued or voided by the
triggers on `allocations` (sql/0004_inventory.sql), so
the same rules hold for any SQL that writes the table.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import psycopg
from psycopg.rows import class_row

from ticketing import _validate as validate
from ticketing._tx import LOCK_TIMEOUT, atomic
from ticketing.errors import (
    AllocationNotFound,
    Busy,
    HoldExpired,
    IdempotencyConflict,
    InvalidTransition,
)
from ticketing.models import Allocation, AllocationStatus
from ticketing.queries import load

Q = load("allocations.sql")
_ALLOCATION_ROW = class_row(Allocation)
DEFAULT_HOLD = timedelta(minutes=10)


def _one(conn: psycopg.Connection[Any], name: str, params: dict[str, Any]) -> Allocation | None:
    with conn.cursor(row_factory=_ALLOCATION_ROW) as cur:
        cur.execute(Q[name], params)
        return cur.fetchone()


def _same_request(existing: Allocation, params: dict[str, Any]) -> Allocation:
    if (existing.event_id, existing.fingerprint, existing.quantity) != (
        params["event_id"],
        params["fingerprint"],
        params["quantity"],
    ):
        raise IdempotencyConflict(
            "this idempotency key was already used for a different event, buyer or quantity"
        )
    return existing


def reserve(
    conn: psycopg.Connection[Any],
    *,
    event_id: int,
    fingerprint: str,
    quantity: int,
    hold: timedelta = DEFAULT_HOLD,
    idempotency_key: str | None = None,
) -> Allocation:
    """Hold `quantity` tickets for the buyer until database now + `hold`.

    With an idempotency key already used for the same event, buyer and
    quantity, returns that allocation as it is now and takes nothing.
    Raises `EventNotFound`, `BuyerLimitExceeded` or `SoldOut`, in that order.
    """
    params = {
        "event_id": validate.identifier("event_id", event_id),
        "fingerprint": validate.text("fingerprint", fingerprint),
        "quantity": validate.integer("quantity", quantity, 1, validate.MAX_QUANTITY),
        "hold": validate.hold(hold),
        "idempotency_key": None
        if idempotency_key is None
        else validate.text("idempotency_key", idempotency_key),
        "lock_timeout": LOCK_TIMEOUT,
    }

    def work(conn: psycopg.Connection[Any]) -> Allocation:
        if idempotency_key is not None:
            existing = _one(conn, "get_by_idempotency_key", params)
            if existing is not None:
                return _same_request(existing, params)
        created = _one(conn, "reserve", params)
        if created is not None:
            return created
        # Another call with the same key committed between our two statements.
        existing = _one(conn, "get_by_idempotency_key", params)
        if existing is None:  # its row is not visible to this transaction's snapshot
            raise Busy("a concurrent reservation with this idempotency key is not visible yet")
        return _same_request(existing, params)

    return atomic(conn, work, one_statement=idempotency_key is None)


def purchase(conn: psycopg.Connection[Any], *, allocation_id: int, fingerprint: str) -> Allocation:
    """Turn the buyer's live hold into a purchase and issue its tickets.

    Purchasing a purchased allocation returns it unchanged. Raises
    `AllocationNotFound`, `HoldExpired` (lapsed or expired hold) or
    `InvalidTransition` (cancelled).
    """
    params = {
        "allocation_id": validate.identifier("allocation_id", allocation_id),
        "fingerprint": validate.text("fingerprint", fingerprint),
        "lock_timeout": LOCK_TIMEOUT,
    }

    def work(conn: psycopg.Connection[Any]) -> Allocation:
        done = _one(conn, "purchase", params)
        if done is not None:
            return done
        current = _buyer_allocation(conn, params)
        if current.status is AllocationStatus.PURCHASED:
            return current
        if current.status in (AllocationStatus.RESERVED, AllocationStatus.EXPIRED):
            raise HoldExpired(
                f"allocation {allocation_id}: the hold lapsed at {current.expires_at}"
            )
        raise InvalidTransition(f"allocation {allocation_id} is {current.status}, not purchasable")

    # One statement when it succeeds; the read that explains a refusal changes nothing.
    return atomic(conn, work, one_statement=True)


def cancel(conn: psycopg.Connection[Any], *, allocation_id: int, fingerprint: str) -> Allocation:
    """Cancel the buyer's hold (lapsed or not) or purchase; its capacity returns to sale.

    Cancelling a cancelled allocation returns it unchanged; cancelling an
    expired one raises `InvalidTransition`.
    """
    params = {
        "allocation_id": validate.identifier("allocation_id", allocation_id),
        "fingerprint": validate.text("fingerprint", fingerprint),
        "lock_timeout": LOCK_TIMEOUT,
    }

    def work(conn: psycopg.Connection[Any]) -> Allocation:
        done = _one(conn, "cancel", params)
        if done is not None:
            return done
        current = _buyer_allocation(conn, params)
        if current.status is AllocationStatus.CANCELLED:
            return current
        raise InvalidTransition(f"allocation {allocation_id} is {current.status}, not cancellable")

    return atomic(conn, work, one_statement=True)


def _buyer_allocation(conn: psycopg.Connection[Any], params: dict[str, Any]) -> Allocation:
    current = _one(conn, "get_buyer_allocation", params)
    if current is None:
        raise AllocationNotFound(f"allocation {params['allocation_id']} not found for this buyer")
    return current


def get_allocation(conn: psycopg.Connection[Any], allocation_id: int) -> Allocation:
    """The allocation with this id, or `AllocationNotFound`."""
    params = {"allocation_id": validate.identifier("allocation_id", allocation_id)}

    def work(conn: psycopg.Connection[Any]) -> Allocation:
        row = _one(conn, "get_allocation", params)
        if row is None:
            raise AllocationNotFound(f"allocation {allocation_id} does not exist")
        return row

    return atomic(conn, work)


def list_for_buyer(
    conn: psycopg.Connection[Any], *, fingerprint: str, event_id: int | None = None
) -> list[Allocation]:
    """The buyer's allocations (on one event, or all), newest first."""
    params = {
        "fingerprint": validate.text("fingerprint", fingerprint),
        "event_id": None if event_id is None else validate.identifier("event_id", event_id),
    }

    def work(conn: psycopg.Connection[Any]) -> list[Allocation]:
        with conn.cursor(row_factory=_ALLOCATION_ROW) as cur:
            cur.execute(Q["list_for_buyer"], params)
            return cur.fetchall()

    return atomic(conn, work)


def expire_due(conn: psycopg.Connection[Any], *, limit: int = 1000) -> int:
    """Mark up to `limit` lapsed holds expired in one batch; return how many.

    Holds another transaction has locked are skipped (SKIP LOCKED), so sweepers
    never wait on each other or on a buyer deciding a hold; returning capacity
    may wait, up to the lock timeout, for the event's inventory slots.
    """
    params = {
        "limit": validate.integer("limit", limit, 1, validate.MAX_LIMIT),
        "lock_timeout": LOCK_TIMEOUT,
    }

    def work(conn: psycopg.Connection[Any]) -> int:
        with conn.cursor() as cur:
            cur.execute(Q["expire_due"], params)
            return cur.rowcount

    return atomic(conn, work, one_statement=True)
