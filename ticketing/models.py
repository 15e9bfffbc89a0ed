"""Frozen pydantic records for the rows the query functions return."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import NamedTuple

from pydantic import BaseModel, ConfigDict


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class AllocationStatus(StrEnum):
    """Where an allocation is in its life: reserved -> purchased | cancelled | expired."""

    RESERVED = "reserved"
    PURCHASED = "purchased"
    EXPIRED = "expired"
    CANCELLED = "cancelled"


class Event(_Record):
    """Something with a date that sells a fixed number of tickets."""

    id: int
    name: str
    starts_at: datetime
    total_tickets: int
    max_per_buyer: int | None
    created_at: datetime
    updated_at: datetime


class Availability(_Record):
    """An event's capacity right now; lapsed holds count as available."""

    event_id: int
    total_tickets: int
    reserved: int
    purchased: int
    available: int


class Allocation(_Record):
    """A buyer's hold (reserved) or purchase of `quantity` tickets of one event."""

    id: int
    event_id: int
    fingerprint: str
    quantity: int
    status: AllocationStatus
    expires_at: datetime
    idempotency_key: str | None
    created_at: datetime
    updated_at: datetime


class Ticket(_Record):
    """One issued ticket: its number within the event and its unguessable code."""

    id: int
    event_id: int
    allocation_id: int
    number: int
    code: str
    voided_at: datetime | None
    created_at: datetime


class EventStatus(_Record):
    """One line of `ticketing status`: an event and its availability."""

    id: int
    name: str
    starts_at: datetime
    total_tickets: int
    reserved: int
    purchased: int
    available: int


class SaleOutcome(NamedTuple):
    """What a sale ended with, counted from the rows (not from the slot counters)."""

    sold: int  # valid tickets issued
    holds_expired: int
    tickets_expired: int
