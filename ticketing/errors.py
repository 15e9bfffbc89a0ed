"""The layer's typed errors, and the one place where database errors become them.

Guard triggers raise custom SQLSTATEs of class TK (schema.md, "Custom SQLSTATEs"); constraints
are told apart by their stable names. Nothing from psycopg escapes the public
API: unknown database errors become `DatabaseError`, lost connections
`ConnectionLost`.
"""

from __future__ import annotations

import re

import psycopg
from psycopg import errors as pg


class TicketingError(Exception):
    """Base of every error the layer raises."""


class NotFound(TicketingError, LookupError):
    """The thing asked for does not exist (or is not the caller's)."""


class EventNotFound(NotFound):
    """No event with that id."""


class AllocationNotFound(NotFound):
    """No allocation with that id, or not one owned by the given fingerprint."""


class TicketNotFound(NotFound):
    """No ticket with that code."""


class SoldOut(TicketingError):
    """Not enough tickets left for the quantity asked for."""

    def __init__(self, message: str, *, available: int) -> None:
        super().__init__(message)
        self.available = available


class BuyerLimitExceeded(TicketingError):
    """The buyer would hold more of the event's tickets than max_per_buyer allows."""


class HoldExpired(TicketingError):
    """The hold lapsed (or was marked expired) before it was purchased."""


class InvalidTransition(TicketingError):
    """The allocation's state machine does not allow this change."""


class IdempotencyConflict(TicketingError):
    """The idempotency key was already used for a different event, buyer or quantity."""


class InvalidInput(TicketingError, ValueError):
    """An argument is outside the layer's bounds; nothing was written."""


class Busy(TicketingError):
    """A lock wait, deadlock or serialization failure that retries did not resolve."""


class Forbidden(TicketingError):
    """The database refused: the login lacks the privilege, or the ledger is append-only."""


class DatabaseError(TicketingError):
    """A database error the layer has no more specific name for."""


class ConnectionLost(DatabaseError):
    """The connection to the server failed or broke; safe to retry on a new connection."""


# Custom SQLSTATEs raised by the guard triggers in sql/.
SOLD_OUT = "TK001"
BUYER_LIMIT = "TK002"
INVALID_TRANSITION = "TK003"
HOLD_EXPIRED = "TK004"
FORBIDDEN_CHANGE = "TK005"
CAPACITY_BELOW_LIVE = "TK006"
INVENTORY_MISSING = "TK007"  # an event without its event_inventory row: a damaged schema
APPEND_ONLY = "TK008"  # UPDATE, DELETE or TRUNCATE of a ledger table by a role not its owner
INSUFFICIENT_PRIVILEGE = "42501"

# Constraint names whose violation means the caller asked for something invalid.
_NOT_FOUND_BY_CONSTRAINT: dict[str, type[NotFound]] = {
    "allocations_event_id_fkey": EventNotFound,
    "tickets_event_id_fkey": EventNotFound,
    "tickets_allocation_fkey": AllocationNotFound,
}
_SOLD_OUT_CONSTRAINTS = {"inventory_slots_within_capacity"}
_AVAILABLE = re.compile(r"available=(-?\d+)")

# Errors that a fresh attempt of the whole transaction may not meet again.
RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})


def _message(exc: psycopg.Error) -> str:
    primary = exc.diag.message_primary
    return primary if primary else str(exc).strip()


def translate(exc: psycopg.Error) -> TicketingError:
    """Return the layer's error for a psycopg error (the caller chains it with `from`)."""
    state = exc.sqlstate
    constraint = exc.diag.constraint_name
    message = _message(exc)
    if isinstance(exc, psycopg.OperationalError) and state is None:
        return ConnectionLost(f"database connection failed: {message}")
    if state == SOLD_OUT or (state == "23514" and constraint in _SOLD_OUT_CONSTRAINTS):
        found = _AVAILABLE.search(exc.diag.message_detail or "")
        return SoldOut(message, available=int(found.group(1)) if found else 0)
    if state == BUYER_LIMIT:
        return BuyerLimitExceeded(message)
    if state == HOLD_EXPIRED:
        return HoldExpired(message)
    if state in (INVALID_TRANSITION, FORBIDDEN_CHANGE):
        return InvalidTransition(message)
    if state == CAPACITY_BELOW_LIVE:
        return InvalidInput(message)
    if state in (APPEND_ONLY, INSUFFICIENT_PRIVILEGE):
        return Forbidden(message)
    if isinstance(exc, pg.ForeignKeyViolation) and constraint in _NOT_FOUND_BY_CONSTRAINT:
        # DETAIL names the missing key: Key (event_id)=(42) is not present in table "events".
        missing = exc.diag.message_detail or message
        return _NOT_FOUND_BY_CONSTRAINT[constraint](missing)
    if isinstance(exc, pg.LockNotAvailable | pg.QueryCanceled):
        return Busy(f"gave up waiting: {message}")
    if state in RETRYABLE_SQLSTATES:
        return Busy(f"concurrent update: {message}")
    if isinstance(exc, pg.IntegrityError | psycopg.DataError):
        return InvalidInput(message)
    if isinstance(exc, pg.AdminShutdown | pg.CrashShutdown | pg.CannotConnectNow):
        return ConnectionLost(f"the server is going away: {message}")
    if isinstance(exc, psycopg.OperationalError):
        return ConnectionLost(message)
    return DatabaseError(message)
