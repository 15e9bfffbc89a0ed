"""Operator views: every invariant checked against the data, and event status."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import class_row

from ticketing import _validate as validate
from ticketing._atx import atomic
from ticketing.errors import EventNotFound
from ticketing.models import EventStatus, SaleOutcome
from ticketing.queries import load

Q = load("admin.sql")
CHECKS = tuple(name for name in Q if name.startswith("check_"))


_EVENT_STATUS_ROW = class_row(EventStatus)


async def check_invariants(
    conn: psycopg.AsyncConnection[Any], *, event_id: int | None = None
) -> list[str]:
    """Every violation of the layer's invariants, one line each; [] when all hold.

    With `event_id`, only that event's rows are checked (in time that follows
    the event's size, not the database's); `EventNotFound` if it does not
    exist. Ledger entries that name a missing allocation are found only by
    the whole-database check. All checks read one snapshot (REPEATABLE READ
    when the function owns the transaction), so a busy database cannot show
    a half-applied change.
    """
    params = {"event_id": None if event_id is None else validate.identifier("event_id", event_id)}

    async def work(conn: psycopg.AsyncConnection[Any]) -> list[str]:
        problems: list[str] = []
        async with conn.cursor() as cur:
            if event_id is not None:
                await cur.execute(Q["event_exists"], params)
                if await cur.fetchone() is None:
                    raise EventNotFound(f"event {event_id} does not exist")
            for name in CHECKS:
                # Unprepared: each plan is made for this event_id (or for NULL).
                await cur.execute(Q[name], params, prepare=False)
                problems.extend(row[0] for row in await cur.fetchall())
        return problems

    return await atomic(conn, work, isolation="REPEATABLE READ")


async def event_status(
    conn: psycopg.AsyncConnection[Any], *, event_id: int | None = None, limit: int = 1000
) -> list[EventStatus]:
    """Events (one, or the first `limit` by start time) with their availability."""
    params = {
        "event_id": None if event_id is None else validate.identifier("event_id", event_id),
        "limit": validate.integer("limit", limit, 1, validate.MAX_LIMIT),
    }

    async def work(conn: psycopg.AsyncConnection[Any]) -> list[EventStatus]:
        async with conn.cursor(row_factory=_EVENT_STATUS_ROW) as cur:
            await cur.execute(Q["status"], params)
            return await cur.fetchall()

    return await atomic(conn, work)


async def sale_outcome(conn: psycopg.AsyncConnection[Any], event_id: int) -> SaleOutcome:
    """Valid tickets of the event, and the holds of it that lapsed (count and tickets)."""
    params = {"event_id": validate.identifier("event_id", event_id)}

    async def work(conn: psycopg.AsyncConnection[Any]) -> SaleOutcome:
        cur = await conn.execute(Q["sale_outcome"], params)
        row = await cur.fetchone()
        assert row is not None  # an aggregate always returns its one row
        return SaleOutcome(int(row[0]), int(row[1]), int(row[2]))

    return await atomic(conn, work)
