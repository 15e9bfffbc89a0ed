"""Issued tickets: listed per allocation, looked up by code."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import class_row

from ticketing import _validate as validate
from ticketing._atx import atomic
from ticketing.errors import TicketNotFound
from ticketing.models import Ticket
from ticketing.queries import load

Q = load("tickets.sql")
_TICKET_ROW = class_row(Ticket)


async def list_for_allocation(
    conn: psycopg.AsyncConnection[Any], allocation_id: int
) -> list[Ticket]:
    """The allocation's tickets (voided ones included), by number."""
    params = {"allocation_id": validate.identifier("allocation_id", allocation_id)}

    async def work(conn: psycopg.AsyncConnection[Any]) -> list[Ticket]:
        async with conn.cursor(row_factory=_TICKET_ROW) as cur:
            await cur.execute(Q["list_for_allocation"], params)
            return await cur.fetchall()

    return await atomic(conn, work)


async def get_by_code(conn: psycopg.AsyncConnection[Any], code: str) -> Ticket:
    """The ticket with this code, or `TicketNotFound`."""
    params = {"code": validate.text("code", code)}

    async def work(conn: psycopg.AsyncConnection[Any]) -> Ticket:
        async with conn.cursor(row_factory=_TICKET_ROW) as cur:
            await cur.execute(Q["get_by_code"], params)
            row = await cur.fetchone()
        if row is None:
            raise TicketNotFound("no ticket has this code")
        return row

    return await atomic(conn, work)
