# Generated from ticketing/aio/tickets.py by `make sync-api` (ticketing.aio._unasync).
# DO NOT CHANGE: edit the async source and regenerate.
"""Issued tickets: listed per allocation, looked up by code."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import class_row

from ticketing import _validate as validate
from ticketing._tx import atomic
from ticketing.errors import TicketNotFound
from ticketing.models import Ticket
from ticketing.queries import load

Q = load("tickets.sql")
_TICKET_ROW = class_row(Ticket)


def list_for_allocation(conn: psycopg.Connection[Any], allocation_id: int) -> list[Ticket]:
    """The allocation's tickets (voided ones included), by number."""
    params = {"allocation_id": validate.identifier("allocation_id", allocation_id)}

    def work(conn: psycopg.Connection[Any]) -> list[Ticket]:
        with conn.cursor(row_factory=_TICKET_ROW) as cur:
            cur.execute(Q["list_for_allocation"], params)
            return cur.fetchall()

    return atomic(conn, work)


def get_by_code(conn: psycopg.Connection[Any], code: str) -> Ticket:
    """The ticket with this code, or `TicketNotFound`."""
    params = {"code": validate.text("code", code)}

    def work(conn: psycopg.Connection[Any]) -> Ticket:
        with conn.cursor(row_factory=_TICKET_ROW) as cur:
            cur.execute(Q["get_by_code"], params)
            row = cur.fetchone()
        if row is None:
            raise TicketNotFound("no ticket has this code")
        return row

    return atomic(conn, work)
