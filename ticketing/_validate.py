"""Input bounds, checked before anything touches the database.

The database checks the same rules (CHECK constraints); these checks exist to
give a clear `InvalidInput` and to keep bad values off the wire.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from ticketing.errors import InvalidInput

MAX_TEXT = 200
MAX_TOTAL_TICKETS = 2_000_000_000
MAX_PER_BUYER = 10_000
MAX_QUANTITY = 10_000
MAX_HOLD = timedelta(days=7)
MAX_LIMIT = 10_000
MAX_SLOTS = 64
MAX_ID = 2**63 - 1
# A stored timestamp must read back in every session time zone (offsets up to
# about 16 hours) as a Python datetime (years 1..9999): a day of margin at
# each end. Matches the events_starts_at_range CHECK.
EARLIEST = datetime(1, 1, 2, tzinfo=UTC)
LATEST = datetime(9999, 12, 30, tzinfo=UTC)


def text(field: str, value: object) -> str:
    """A 1-200 character string without NUL."""
    if not isinstance(value, str):
        raise InvalidInput(f"{field} must be a string, not {type(value).__name__}")
    if not 1 <= len(value) <= MAX_TEXT:
        raise InvalidInput(f"{field} must be 1 to {MAX_TEXT} characters, got {len(value)}")
    if "\x00" in value:
        raise InvalidInput(f"{field} must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidInput(f"{field} must be valid Unicode text (no lone surrogates)") from exc
    return value


def integer(field: str, value: object, low: int, high: int) -> int:
    """An int (not a bool) within [low, high]."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"{field} must be an integer, not {type(value).__name__}")
    if not low <= value <= high:
        raise InvalidInput(f"{field} must be between {low:,} and {high:,}, got {value:,}")
    return value


def identifier(field: str, value: object) -> int:
    """A row id: a positive 64-bit integer."""
    return integer(field, value, 1, MAX_ID)


def aware(field: str, value: object) -> datetime:
    """A timezone-aware datetime."""
    if not isinstance(value, datetime):
        raise InvalidInput(f"{field} must be a datetime, not {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidInput(f"{field} must be timezone-aware")
    return value


def instant(field: str, value: object) -> datetime:
    """A timezone-aware datetime that can be stored: within EARLIEST..LATEST."""
    moment = aware(field, value)
    if not EARLIEST <= moment <= LATEST:
        raise InvalidInput(
            f"{field} must be between {EARLIEST.date().isoformat()} and"
            f" {LATEST.date().isoformat()} UTC, got {moment.isoformat()}"
        )
    return moment


def hold(value: object) -> timedelta:
    """A hold duration: more than zero, at most seven days."""
    if not isinstance(value, timedelta):
        raise InvalidInput(f"hold must be a timedelta, not {type(value).__name__}")
    if not timedelta(0) < value <= MAX_HOLD:
        raise InvalidInput(f"hold must be more than 0 and at most {MAX_HOLD}, got {value}")
    return value
