"""A flash sale over HTTP: 200 concurrent clients, one ticket each, for 100 tickets."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import psycopg

from tests.service.conftest import HTTP_TIMEOUT
from tests.support import assert_consistent, make_event
from ticketing import admin, events
from ticketing.models import SaleOutcome

TICKETS = 100
BUYERS = 200


async def _buyer(http: httpx.AsyncClient, event_id: int, who: str, go: asyncio.Event) -> str:
    """Reserve one ticket and buy it; "sold" or "sold out" (anything else fails the test)."""
    await go.wait()
    held = await http.post(
        f"/events/{event_id}/reservations",
        json={"fingerprint": who, "quantity": 1},
        headers={"Idempotency-Key": f"checkout-{who}"},
    )
    if held.status_code == 409:
        body = held.json()
        assert body["error"] == "SoldOut", body
        assert body["available"] == 0, body
        return "sold out"
    assert held.status_code == 201, held.text
    allocation_id = held.json()["id"]
    bought = await http.post(f"/allocations/{allocation_id}/purchase", json={"fingerprint": who})
    assert bought.status_code == 200, bought.text
    assert bought.json()["status"] == "purchased"
    return "sold"


async def _sale(url: str, event_id: int) -> list[str]:
    limits = httpx.Limits(max_connections=BUYERS, max_keepalive_connections=BUYERS)
    async with httpx.AsyncClient(base_url=url, timeout=HTTP_TIMEOUT, limits=limits) as http:
        go = asyncio.Event()
        buyers = [
            asyncio.create_task(_buyer(http, event_id, f"buyer-{n:03}", go)) for n in range(BUYERS)
        ]
        await asyncio.sleep(0)  # every buyer waits on `go`
        go.set()
        return await asyncio.wait_for(asyncio.gather(*buyers), timeout=120)


def test_flash_sale_over_http_sells_exactly_the_tickets(
    service: str,
    client: httpx.Client,
    conn: psycopg.Connection[Any],
    admin_conn: psycopg.Connection[Any],
) -> None:
    event = make_event(conn, TICKETS)
    started = time.monotonic()
    results = asyncio.run(_sale(service, event.id))
    elapsed = time.monotonic() - started
    print(f"\nflash sale: {BUYERS} HTTP clients, {TICKETS} tickets, {elapsed:.2f} s")

    assert results.count("sold") == TICKETS
    assert results.count("sold out") == BUYERS - TICKETS
    assert admin.sale_outcome(conn, event.id) == SaleOutcome(TICKETS, 0, 0)
    assert admin.check_invariants(admin_conn) == []
    assert_consistent(admin_conn)
    availability = client.get(f"/events/{event.id}/availability").json()
    assert availability == {
        "event_id": event.id,
        "total_tickets": TICKETS,
        "reserved": 0,
        "purchased": TICKETS,
        "available": 0,
    }
    assert events.get_availability(conn, event.id).available == 0
    numbers = sorted(
        int(n)
        for (n,) in conn.execute(
            "SELECT number FROM tickets WHERE event_id = %s AND voided_at IS NULL", (event.id,)
        )
    )
    assert numbers == list(range(1, TICKETS + 1))
