"""Every endpoint of the service over HTTP, checked against the rows through the sync API."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import httpx
import psycopg
import pytest

from examples.service.app import create_app
from tests.service.conftest import HTTP_TIMEOUT, app_backends, serving, wait_for
from tests.support import STARTS_AT, make_event
from ticketing import allocations, events, tickets
from ticketing.models import Allocation, AllocationStatus, Availability, Event, Ticket

EVENT = {"name": "Kraftwerk", "starts_at": STARTS_AT.isoformat(), "total_tickets": 10}


def _reserve(http: httpx.Client, event_id: int, who: str, quantity: int, **extra: Any) -> Any:
    response = http.post(
        f"/events/{event_id}/reservations", json={"fingerprint": who, "quantity": quantity, **extra}
    )
    assert response.status_code == 201, response.text
    return response.json()


def test_health_answers_ok(client: httpx.Client) -> None:
    response = client.get("/health")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


def test_create_event_returns_the_record(
    client: httpx.Client, conn: psycopg.Connection[Any]
) -> None:
    response = client.post("/events", json={**EVENT, "max_per_buyer": 4, "slots": 2})
    assert response.status_code == 201, response.text
    created = Event.model_validate(response.json())
    assert created == events.get_event(conn, created.id)
    assert (created.name, created.starts_at, created.total_tickets, created.max_per_buyer) == (
        "Kraftwerk",
        STARTS_AT,
        10,
        4,
    )
    assert response.json() == created.model_dump(mode="json")


def test_get_event_and_list_events(client: httpx.Client, conn: psycopg.Connection[Any]) -> None:
    early = make_event(conn, name="early")
    late = events.create_event(
        conn, name="late", starts_at=STARTS_AT + timedelta(days=1), total_tickets=5
    )
    response = client.get(f"/events/{early.id}")
    assert (response.status_code, response.json()) == (200, early.model_dump(mode="json"))
    listed = client.get("/events")
    assert listed.status_code == 200
    assert listed.json() == [early.model_dump(mode="json"), late.model_dump(mode="json")]
    assert [e["id"] for e in client.get("/events", params={"limit": 1}).json()] == [early.id]
    after = client.get("/events", params={"starts_after": STARTS_AT.isoformat()})
    assert [e["id"] for e in after.json()] == [late.id]


def test_availability(client: httpx.Client, conn: psycopg.Connection[Any]) -> None:
    event = make_event(conn, 10)
    allocations.reserve(conn, event_id=event.id, fingerprint="a", quantity=3)
    response = client.get(f"/events/{event.id}/availability")
    assert response.status_code == 200
    assert Availability.model_validate(response.json()) == Availability(
        event_id=event.id, total_tickets=10, reserved=3, purchased=0, available=7
    )


def test_reserve_purchase_and_the_buyers_tickets(
    client: httpx.Client, conn: psycopg.Connection[Any]
) -> None:
    event = make_event(conn, 10)
    held = Allocation.model_validate(_reserve(client, event.id, "alice", 2, hold_seconds=90))
    assert (held.event_id, held.fingerprint, held.quantity, held.status) == (
        event.id,
        "alice",
        2,
        AllocationStatus.RESERVED,
    )
    assert timedelta(seconds=89) < held.expires_at - held.created_at <= timedelta(seconds=91)
    assert held.idempotency_key is None

    bought = client.post(f"/allocations/{held.id}/purchase", json={"fingerprint": "alice"})
    assert bought.status_code == 200, bought.text
    assert Allocation.model_validate(bought.json()).status is AllocationStatus.PURCHASED
    assert bought.json() == allocations.get_allocation(conn, held.id).model_dump(mode="json")
    # Purchasing again returns the purchase unchanged.
    again = client.post(f"/allocations/{held.id}/purchase", json={"fingerprint": "alice"})
    assert (again.status_code, again.json()) == (200, bought.json())

    listed = client.get(f"/allocations/{held.id}/tickets", params={"fingerprint": "alice"})
    assert listed.status_code == 200
    issued = [Ticket.model_validate(t) for t in listed.json()]
    assert issued == tickets.list_for_allocation(conn, held.id)
    assert [t.number for t in issued] == [1, 2]

    by_code = client.get(f"/tickets/{issued[1].code}")
    assert (by_code.status_code, by_code.json()) == (200, issued[1].model_dump(mode="json"))

    mine = client.get(f"/allocations/{held.id}", params={"fingerprint": "alice"})
    assert (mine.status_code, mine.json()) == (200, bought.json())
    for_buyer = client.get("/allocations", params={"fingerprint": "alice"})
    assert (for_buyer.status_code, for_buyer.json()) == (200, [bought.json()])
    on_event = client.get("/allocations", params={"fingerprint": "alice", "event_id": event.id})
    assert on_event.json() == [bought.json()]
    other = make_event(conn, 5)
    none = client.get("/allocations", params={"fingerprint": "alice", "event_id": other.id})
    assert (none.status_code, none.json()) == (200, [])


def test_default_hold_is_the_layers(client: httpx.Client, conn: psycopg.Connection[Any]) -> None:
    event = make_event(conn, 10)
    held = Allocation.model_validate(_reserve(client, event.id, "alice", 1))
    lasts = held.expires_at - held.created_at
    assert allocations.DEFAULT_HOLD - timedelta(seconds=1) < lasts <= allocations.DEFAULT_HOLD


def test_only_the_owner_sees_an_allocation_and_its_tickets(
    client: httpx.Client, conn: psycopg.Connection[Any]
) -> None:
    event = make_event(conn, 10)
    hold = allocations.reserve(conn, event_id=event.id, fingerprint="alice", quantity=1)
    allocations.purchase(conn, allocation_id=hold.id, fingerprint="alice")
    missing_id = hold.id + 1000
    for path in (f"/allocations/{hold.id}/tickets", f"/allocations/{hold.id}"):
        theirs = client.get(path, params={"fingerprint": "mallory"})
        assert theirs.status_code == 404
        assert theirs.json() == {
            "error": "AllocationNotFound",
            "detail": f"allocation {hold.id} not found for this buyer",
        }
    # Someone else's allocation reads exactly like one that does not exist.
    nobodys = client.get(f"/allocations/{missing_id}/tickets", params={"fingerprint": "mallory"})
    assert nobodys.status_code == 404
    assert nobodys.json()["detail"] == f"allocation {missing_id} not found for this buyer"


def test_idempotency_key_returns_the_same_hold(
    client: httpx.Client, conn: psycopg.Connection[Any]
) -> None:
    event = make_event(conn, 10)
    body = {"fingerprint": "alice", "quantity": 2}
    key = {"Idempotency-Key": "checkout-1"}
    first = client.post(f"/events/{event.id}/reservations", json=body, headers=key)
    second = client.post(f"/events/{event.id}/reservations", json=body, headers=key)
    assert first.status_code == second.status_code == 201
    assert first.json() == second.json()
    assert first.json()["idempotency_key"] == "checkout-1"
    assert events.get_availability(conn, event.id).reserved == 2
    assert len(allocations.list_for_buyer(conn, fingerprint="alice")) == 1


def test_cancel_returns_the_tickets_to_sale(
    client: httpx.Client, conn: psycopg.Connection[Any]
) -> None:
    event = make_event(conn, 10)
    held = allocations.reserve(conn, event_id=event.id, fingerprint="alice", quantity=3)
    response = client.post(f"/allocations/{held.id}/cancel", json={"fingerprint": "alice"})
    assert response.status_code == 200, response.text
    cancelled = Allocation.model_validate(response.json())
    assert cancelled.status is AllocationStatus.CANCELLED
    assert cancelled == allocations.get_allocation(conn, held.id)
    assert events.get_availability(conn, event.id).available == 10
    again = client.post(f"/allocations/{held.id}/cancel", json={"fingerprint": "alice"})
    assert (again.status_code, again.json()) == (200, response.json())


def test_database_url_defaults_to_the_environment_and_shutdown_closes_the_pool(
    dsn: str, admin_conn: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", dsn)
    with serving(create_app(pool_kwargs={"min_size": 3, "max_size": 3})) as url:
        response = httpx.get(f"{url}/health", timeout=HTTP_TIMEOUT)
        assert response.status_code == 200
        wait_for(lambda: app_backends(admin_conn) == 3)  # the pool's min_size
    # The pool closed with the server: none of its sessions remain.
    wait_for(lambda: app_backends(admin_conn) == 0)


def test_without_a_database_url_the_app_does_not_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    app = create_app()

    async def start() -> None:
        async with app.router.lifespan_context(app):
            pass  # pragma: no cover

    with pytest.raises(RuntimeError, match="DATABASE_URL"):
        asyncio.run(start())


def test_openapi_lists_every_endpoint(client: httpx.Client) -> None:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    paths = {path: sorted(ops) for path, ops in response.json()["paths"].items()}
    assert paths == {
        "/health": ["get"],
        "/events": ["get", "post"],
        "/events/{event_id}": ["get"],
        "/events/{event_id}/availability": ["get"],
        "/events/{event_id}/reservations": ["post"],
        "/allocations": ["get"],
        "/allocations/{allocation_id}": ["get"],
        "/allocations/{allocation_id}/purchase": ["post"],
        "/allocations/{allocation_id}/cancel": ["post"],
        "/allocations/{allocation_id}/tickets": ["get"],
        "/tickets/{code}": ["get"],
    }
