"""Events and their availability."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import class_row

from ticketing import _validate as validate
from ticketing._atx import atomic
from ticketing.errors import EventNotFound
from ticketing.models import Availability, Event
from ticketing.queries import load

Q = load("events.sql")
_EVENT_ROW = class_row(Event)
_AVAILABILITY_ROW = class_row(Availability)


async def create_event(
    conn: psycopg.AsyncConnection[Any],
    *,
    name: str,
    starts_at: datetime,
    total_tickets: int,
    max_per_buyer: int | None = None,
    slots: int | None = None,
) -> Event:
    """Create an event with `total_tickets` for sale.

    Its capacity is split over `slots` inventory rows (1-64, at most one per
    ticket) that buyers claim independently; None picks one per 64 tickets,
    at most 16, so small events get one. See docs/design.md, 1.7 "Choosing K".
    """
    params = {
        "name": validate.text("name", name),
        "starts_at": validate.instant("starts_at", starts_at),
        "total_tickets": validate.integer(
            "total_tickets", total_tickets, 1, validate.MAX_TOTAL_TICKETS
        ),
        "max_per_buyer": None
        if max_per_buyer is None
        else validate.integer("max_per_buyer", max_per_buyer, 1, validate.MAX_PER_BUYER),
    }
    params["slots"] = (
        ""
        if slots is None
        else str(validate.integer("slots", slots, 1, min(validate.MAX_SLOTS, total_tickets)))
    )

    async def work(conn: psycopg.AsyncConnection[Any]) -> Event:
        async with conn.cursor(row_factory=_EVENT_ROW) as cur:
            await cur.execute(Q["create_event"], params)
            row = await cur.fetchone()
        assert row is not None
        return row

    return await atomic(conn, work, one_statement=True)


async def get_event(conn: psycopg.AsyncConnection[Any], event_id: int) -> Event:
    """The event with this id, or `EventNotFound`."""
    params = {"event_id": validate.identifier("event_id", event_id)}

    async def work(conn: psycopg.AsyncConnection[Any]) -> Event:
        async with conn.cursor(row_factory=_EVENT_ROW) as cur:
            await cur.execute(Q["get_event"], params)
            row = await cur.fetchone()
        if row is None:
            raise EventNotFound(f"event {event_id} does not exist")
        return row

    return await atomic(conn, work)


async def list_events(
    conn: psycopg.AsyncConnection[Any], *, starts_after: datetime | None = None, limit: int = 100
) -> list[Event]:
    """Events starting after `starts_after` (all when None), by start time then id."""
    params = {
        "starts_after": None
        if starts_after is None
        else validate.aware("starts_after", starts_after),
        "limit": validate.integer("limit", limit, 1, validate.MAX_LIMIT),
    }

    async def work(conn: psycopg.AsyncConnection[Any]) -> list[Event]:
        async with conn.cursor(row_factory=_EVENT_ROW) as cur:
            await cur.execute(Q["list_events"], params)
            return await cur.fetchall()

    return await atomic(conn, work)


async def get_availability(conn: psycopg.AsyncConnection[Any], event_id: int) -> Availability:
    """How many of the event's tickets are reserved, purchased and available right now.

    Holds past their expires_at count as available even before the sweeper runs.
    """
    params = {"event_id": validate.identifier("event_id", event_id)}

    async def work(conn: psycopg.AsyncConnection[Any]) -> Availability:
        async with conn.cursor(row_factory=_AVAILABILITY_ROW) as cur:
            await cur.execute(Q["get_availability"], params)
            row = await cur.fetchone()
        if row is None:
            raise EventNotFound(f"event {event_id} does not exist")
        return row

    return await atomic(conn, work)
