"""What the tests share besides fixtures (those are in conftest.py): constants, factories, small
queries, and the consistency checks (counters, buyer totals and tickets agree with allocations)."""

from __future__ import annotations

import socket
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, LiteralString

import psycopg

from ticketing import events
from ticketing.models import Event

# --- constants ---------------------------------------------------------------------------------

#: The repository's top folder (sql/, ticketing/, pyproject.toml).
REPO = Path(__file__).resolve().parent.parent
#: The `ticketing` command of the running interpreter's environment.
TICKETING = str(Path(sys.executable).with_name("ticketing"))
#: The login conftest's `dsn` and `conn` use: a member of ticketing_app only.
APP_LOGIN = "ticketing_test_app"
#: Every migration, in order.
MIGRATION_IDS = [
    "0001_events",
    "0002_allocations",
    "0003_tickets",
    "0004_inventory",
    "0005_events_starts_at_range",
    "0006_events_starts_at_validate",
    "0007_ledger",
    "0008_roles",
    "0009_lean_write_path",
    "0010_counters_for_limits",
    "0011_comments",
]

#: When the tests' events start: far enough ahead that no event of a test has started.
STARTS_AT = datetime(2030, 6, 1, 20, 0, tzinfo=UTC)
#: An id no row has.
MISSING_ID = 987_654_321
#: A hold that lapses while a test waits LAPSE seconds.
SHORT = timedelta(milliseconds=200)
LAPSE = 0.35  # seconds: long enough for a SHORT hold to lapse
#: Generous bounds that only a hung test reaches.
BARRIER_TIMEOUT = 30.0
JOIN_TIMEOUT = 60.0
WAIT_TIMEOUT = 10.0

# A raw hold that lapsed a minute ago: created an hour ago, so that the CHECKs on expiry hold
# (only a superuser may set created_at). The insert trigger counts it like any hold.
INSERT_LAPSED: LiteralString = """
    INSERT INTO allocations (event_id, fingerprint, quantity, created_at, expires_at)
    VALUES (%s, %s, %s, now() - interval '1 hour', now() - interval '1 minute')
    RETURNING id
"""


# --- factories and small queries ---------------------------------------------------------------


def make_event(
    conn: psycopg.Connection[Any],
    total: int = 10,
    *,
    max_per_buyer: int | None = None,
    slots: int | None = None,
    name: str = "show",
) -> Event:
    """An event through the API, starting at STARTS_AT."""
    return events.create_event(
        conn,
        name=name,
        starts_at=STARTS_AT,
        total_tickets=total,
        max_per_buyer=max_per_buyer,
        slots=slots,
    )


def scalar(conn: psycopg.Connection[Any], query: LiteralString, params: Any = None) -> Any:
    """The first column of the one row `query` returns."""
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0]


def row_count(conn: psycopg.Connection[Any], table: LiteralString) -> int:
    return int(scalar(conn, f"SELECT count(*) FROM {table}"))


def counters(conn: psycopg.Connection[Any], event_id: int) -> tuple[int, int]:
    """The event's raw event_counters counters (reserved, purchased)."""
    row = conn.execute(
        "SELECT reserved, purchased FROM event_counters WHERE event_id = %s", (event_id,)
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def wait_until_blocked(observer: psycopg.Connection[Any], pid: int) -> None:
    """Return once backend `pid` waits on a heavyweight lock (`observer` must see its session:
    the superuser's or the same role's)."""
    deadline = time.monotonic() + WAIT_TIMEOUT
    while True:
        row = observer.execute(
            "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (pid,)
        ).fetchone()
        if row is not None and row[0] == "Lock":
            return
        assert time.monotonic() < deadline, f"backend {pid} never waited on a lock"
        time.sleep(0.01)


def free_port() -> int:
    """A local TCP port that nothing listens on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# --- consistency checks ------------------------------------------------------------------------

# Every table of the layer, parents first.
TABLES: tuple[LiteralString, ...] = (
    "events",
    "event_inventory",
    "inventory_slots",
    "buyer_inventory",
    "allocations",
    "tickets",
    "ticket_number_pool",
    "allocation_history",
    "event_history",
)


def table_rows(conn: psycopg.Connection[Any]) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table of the layer, in a stable order: for "nothing was written"."""
    with conn.cursor() as cur:
        return {t: cur.execute(f"SELECT * FROM {t} ORDER BY 1, 2").fetchall() for t in TABLES}


# Each query returns the rows that break one rule; an empty result means the rule holds.
CHECKS: dict[str, LiteralString] = {
    "every event has one inventory row with its capacity settings": """
        SELECT e.id, i.event_id, e.total_tickets, i.total_tickets, e.max_per_buyer, i.max_per_buyer
        FROM events AS e
        FULL JOIN event_counters AS i ON i.event_id = e.id
        WHERE e.id IS NULL OR i.event_id IS NULL
           OR e.total_tickets <> i.total_tickets
           OR e.max_per_buyer IS DISTINCT FROM i.max_per_buyer
    """,
    "event_counters counts equal the sums of allocations by status, within capacity": """
        SELECT i.event_id, i.total_tickets, i.reserved, coalesce(s.reserved, 0) AS sum_reserved,
               i.purchased, coalesce(s.purchased, 0) AS sum_purchased
        FROM event_counters AS i
        LEFT JOIN (
            SELECT event_id,
                   sum(quantity) FILTER (WHERE status = 'reserved') AS reserved,
                   sum(quantity) FILTER (WHERE status = 'purchased') AS purchased
            FROM allocations
            GROUP BY event_id
        ) AS s ON s.event_id = i.event_id
        WHERE i.reserved <> coalesce(s.reserved, 0)
           OR i.purchased <> coalesce(s.purchased, 0)
           OR i.reserved + i.purchased > i.total_tickets
    """,
    "buyer_inventory equals each buyer's live quantity, within max_per_buyer": """
        SELECT coalesce(b.event_id, l.event_id) AS event_id,
               coalesce(b.fingerprint, l.fingerprint) AS fingerprint,
               b.quantity AS counted, l.quantity AS live, i.max_per_buyer
        FROM (
            SELECT bi.* FROM buyer_inventory AS bi
            JOIN event_inventory AS e ON e.event_id = bi.event_id
            WHERE e.max_per_buyer IS NOT NULL
        ) AS b
        FULL JOIN (
            SELECT a.event_id, a.fingerprint, sum(a.quantity) AS quantity
            FROM allocations AS a
            JOIN event_inventory AS e ON e.event_id = a.event_id
            WHERE a.status IN ('reserved', 'purchased') AND e.max_per_buyer IS NOT NULL
            GROUP BY a.event_id, a.fingerprint
        ) AS l ON l.event_id = b.event_id AND l.fingerprint = b.fingerprint
        LEFT JOIN event_counters AS i ON i.event_id = coalesce(b.event_id, l.event_id)
        WHERE coalesce(b.quantity, 0) <> coalesce(l.quantity, 0)
           OR coalesce(l.quantity, 0) > coalesce(i.max_per_buyer, 2147483647)
    """,
    "valid tickets: quantity for a purchase, none otherwise; voided only by a cancel": """
        SELECT a.id, a.status, a.quantity,
               count(t.id) FILTER (WHERE t.voided_at IS NULL) AS valid,
               count(t.id) FILTER (WHERE t.voided_at IS NOT NULL) AS voided
        FROM allocations AS a
        LEFT JOIN tickets AS t ON t.allocation_id = a.id
        GROUP BY a.id
        HAVING count(t.id) FILTER (WHERE t.voided_at IS NULL)
                   <> CASE WHEN a.status = 'purchased' THEN a.quantity ELSE 0 END
            OR count(t.id) FILTER (WHERE t.voided_at IS NOT NULL)
                   NOT IN (0, CASE WHEN a.status = 'cancelled' THEN a.quantity ELSE 0 END)
    """,
    "valid ticket numbers are within the event's capacity": """
        SELECT t.id, t.event_id, t.number, i.total_tickets
        FROM tickets AS t
        JOIN event_counters AS i ON i.event_id = t.event_id
        WHERE t.voided_at IS NULL AND t.number > i.total_tickets
    """,
    # Numbers are unique among valid tickets (the exclusion constraint) and in the pool (its
    # key), so valid + pooled == highest ever issued, with none both, means each number up
    # to the highest is exactly one of the two: cancels lose no numbers.
    "in each slot's number range, every number up to the highest issued there is either"
    " valid or pooled, never both": """
        WITH slots AS (
            SELECT event_id, slot, first_number AS lo, first_number + capacity - 1 AS hi
            FROM inventory_slots
        ), per_slot AS (
            SELECT s.event_id, s.slot, s.lo,
                   (SELECT max(t.number) FROM tickets AS t
                    WHERE t.event_id = s.event_id AND t.number BETWEEN s.lo AND s.hi) AS high,
                   (SELECT count(*) FROM tickets AS t
                    WHERE t.event_id = s.event_id AND t.voided_at IS NULL
                      AND t.number BETWEEN s.lo AND s.hi) AS valid,
                   (SELECT count(*) FROM ticket_number_pool AS p
                    WHERE p.event_id = s.event_id AND p.number BETWEEN s.lo AND s.hi) AS pooled,
                   (SELECT max(p.number) FROM ticket_number_pool AS p
                    WHERE p.event_id = s.event_id AND p.number BETWEEN s.lo AND s.hi) AS top_pooled
            FROM slots AS s
        ), both_ AS (
            SELECT p.event_id, count(*) AS n
            FROM ticket_number_pool AS p
            JOIN tickets AS t
              ON t.event_id = p.event_id AND t.number = p.number AND t.voided_at IS NULL
            GROUP BY p.event_id
        )
        SELECT s.event_id, s.slot, s.high, s.valid, s.pooled, s.top_pooled, b.n AS both_
        FROM per_slot AS s
        LEFT JOIN both_ AS b ON b.event_id = s.event_id
        WHERE s.valid + s.pooled <> coalesce(s.high - s.lo + 1, 0)
           OR coalesce(s.top_pooled, 0) > coalesce(s.high, 0)
           OR b.n IS NOT NULL
    """,
}


def violations(conn: psycopg.Connection[Any]) -> dict[str, list[tuple[Any, ...]]]:
    """The rows breaking each rule, for the rules that are broken."""
    found: dict[str, list[tuple[Any, ...]]] = {}
    for rule, query in CHECKS.items():
        rows = conn.execute(query).fetchall()
        if rows:
            found[rule] = rows
    return found


def assert_consistent(conn: psycopg.Connection[Any]) -> None:
    """Fail with the offending rows unless every event's counters, buyers and tickets agree."""
    found = violations(conn)
    assert not found, "\n".join(f"{rule}: {rows}" for rule, rows in found.items())
