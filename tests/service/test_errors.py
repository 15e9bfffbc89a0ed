"""Every layer error as the HTTP answer the service gives for it, provoked over real HTTP, and
the mapping table itself (examples.service.app.error_response)."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import psycopg
import pytest

from examples.service.app import INTERNAL, RETRY_AFTER, create_app, error_response
from tests.service.conftest import APP_SESSIONS, HTTP_TIMEOUT, app_backends, serving, wait_for
from tests.support import APP_LOGIN, INSERT_LAPSED, MISSING_ID, STARTS_AT, make_event, scalar
from ticketing import allocations, db, events
from ticketing.errors import (
    AllocationNotFound,
    Busy,
    BuyerLimitExceeded,
    ConnectionLost,
    DatabaseError,
    EventNotFound,
    Forbidden,
    HoldExpired,
    IdempotencyConflict,
    InvalidInput,
    InvalidTransition,
    SoldOut,
    TicketingError,
    TicketNotFound,
)

# --- the table ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "status", "body", "retry_after"),
    [
        (InvalidInput("quantity must be..."), 422, {"detail": "quantity must be..."}, False),
        (EventNotFound("event 7 does not exist"), 404, {"detail": "event 7 does not exist"}, False),
        (AllocationNotFound("no"), 404, {"detail": "no"}, False),
        (TicketNotFound("no ticket"), 404, {"detail": "no ticket"}, False),
        (SoldOut("sold out", available=3), 409, {"detail": "sold out", "available": 3}, False),
        (BuyerLimitExceeded("limit"), 409, {"detail": "limit"}, False),
        (InvalidTransition("cancelled"), 409, {"detail": "cancelled"}, False),
        (HoldExpired("lapsed"), 410, {"detail": "lapsed"}, False),
        (IdempotencyConflict("key reused"), 422, {"detail": "key reused"}, False),
        (Busy("gave up waiting"), 503, {"detail": "gave up waiting"}, True),
        (ConnectionLost("server closed"), 503, {"detail": "server closed"}, True),
        (Forbidden('permission denied for table "events"'), 500, None, False),
        (DatabaseError('relation "tickets" does not exist'), 500, None, False),
        (TicketingError("anything else"), 500, None, False),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, Exception) else None,
)
def test_error_response_maps_each_error_once(
    error: TicketingError, status: int, body: dict[str, Any] | None, retry_after: bool
) -> None:
    response = error_response(error)
    assert response.status_code == status
    expected = INTERNAL if body is None else {"error": type(error).__name__, **body}
    assert json.loads(bytes(response.body)) == expected
    assert response.headers.get("Retry-After") == (RETRY_AFTER if retry_after else None)


# --- provoked over HTTP ------------------------------------------------------------------------


def _error(response: httpx.Response, status: int, name: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["error"] == name, body
    assert isinstance(body["detail"], str)
    assert body["detail"]
    return body


def test_sold_out_is_409_with_what_is_available(
    client: httpx.Client, conn: psycopg.Connection[Any]
) -> None:
    event = make_event(conn, 3)
    allocations.reserve(conn, event_id=event.id, fingerprint="a", quantity=2)
    response = client.post(
        f"/events/{event.id}/reservations", json={"fingerprint": "b", "quantity": 2}
    )
    body = _error(response, 409, "SoldOut")
    assert body["available"] == 1
    assert set(body) == {"error", "detail", "available"}


def test_buyer_limit_is_409(client: httpx.Client, conn: psycopg.Connection[Any]) -> None:
    event = make_event(conn, 10, max_per_buyer=2)
    allocations.reserve(conn, event_id=event.id, fingerprint="a", quantity=2)
    response = client.post(
        f"/events/{event.id}/reservations", json={"fingerprint": "a", "quantity": 1}
    )
    _error(response, 409, "BuyerLimitExceeded")
    assert events.get_availability(conn, event.id).reserved == 2


def test_purchase_of_a_lapsed_hold_is_410(
    client: httpx.Client, conn: psycopg.Connection[Any], admin_conn: psycopg.Connection[Any]
) -> None:
    event = make_event(conn, 10)
    lapsed = int(scalar(admin_conn, INSERT_LAPSED, (event.id, "alice", 2)))
    response = client.post(f"/allocations/{lapsed}/purchase", json={"fingerprint": "alice"})
    _error(response, 410, "HoldExpired")


def test_invalid_transition_is_409(client: httpx.Client, conn: psycopg.Connection[Any]) -> None:
    event = make_event(conn, 10)
    held = allocations.reserve(conn, event_id=event.id, fingerprint="alice", quantity=1)
    allocations.cancel(conn, allocation_id=held.id, fingerprint="alice")
    response = client.post(f"/allocations/{held.id}/purchase", json={"fingerprint": "alice"})
    _error(response, 409, "InvalidTransition")


def test_idempotency_conflict_is_422(client: httpx.Client, conn: psycopg.Connection[Any]) -> None:
    event = make_event(conn, 10)
    path, key = f"/events/{event.id}/reservations", {"Idempotency-Key": "k-1"}
    first = client.post(path, json={"fingerprint": "a", "quantity": 1}, headers=key)
    assert first.status_code == 201
    response = client.post(path, json={"fingerprint": "a", "quantity": 2}, headers=key)
    _error(response, 422, "IdempotencyConflict")
    assert events.get_availability(conn, event.id).reserved == 1


def test_not_found_is_404(client: httpx.Client, conn: psycopg.Connection[Any]) -> None:
    buyer = {"fingerprint": "a"}
    _error(client.get(f"/events/{MISSING_ID}"), 404, "EventNotFound")
    _error(client.get(f"/events/{MISSING_ID}/availability"), 404, "EventNotFound")
    reserve = client.post(f"/events/{MISSING_ID}/reservations", json={**buyer, "quantity": 1})
    _error(reserve, 404, "EventNotFound")
    for action in ("purchase", "cancel"):
        response = client.post(f"/allocations/{MISSING_ID}/{action}", json=buyer)
        _error(response, 404, "AllocationNotFound")
    _error(client.get(f"/allocations/{MISSING_ID}", params=buyer), 404, "AllocationNotFound")
    _error(client.get("/tickets/no-such-code"), 404, "TicketNotFound")
    # Another buyer's allocation is not found either.
    event = make_event(conn, 10)
    held = allocations.reserve(conn, event_id=event.id, fingerprint="alice", quantity=1)
    response = client.post(f"/allocations/{held.id}/purchase", json={"fingerprint": "mallory"})
    _error(response, 404, "AllocationNotFound")
    assert allocations.get_allocation(conn, held.id).status == "reserved"


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/events", {"name": "x", "starts_at": STARTS_AT.isoformat(), "total_tickets": 0}),
        ("/events", {"name": "", "starts_at": STARTS_AT.isoformat(), "total_tickets": 5}),
        ("/events", {"name": "naive", "starts_at": "2030-06-01T20:00:00", "total_tickets": 5}),
        (
            "/events",
            {"name": "x", "starts_at": STARTS_AT.isoformat(), "total_tickets": 5, "slots": 9},
        ),
        ("/events/{event}/reservations", {"fingerprint": "a", "quantity": 0}),
        ("/events/{event}/reservations", {"fingerprint": "a", "quantity": 1, "hold_seconds": 0}),
        ("/events/{event}/reservations", {"fingerprint": "a", "quantity": 1, "hold_seconds": 1e9}),
        (
            "/events/{event}/reservations",
            {"fingerprint": "a", "quantity": 1, "hold_seconds": 1e300},
        ),
        ("/events/{event}/reservations", {"fingerprint": "x" * 201, "quantity": 1}),
        ("/events/0/reservations", {"fingerprint": "a", "quantity": 1}),
        ("/allocations/0/purchase", {"fingerprint": "a"}),
        ("/allocations/1/cancel", {"fingerprint": ""}),
    ],
)
def test_invalid_input_is_422(
    client: httpx.Client, conn: psycopg.Connection[Any], path: str, body: dict[str, Any]
) -> None:
    event = make_event(conn, 5)
    response = client.post(path.format(event=event.id), json=body)
    _error(response, 422, "InvalidInput")
    assert events.list_events(conn) == [event]
    assert events.get_availability(conn, event.id).reserved == 0


def test_invalid_input_in_paths_and_queries_is_422(client: httpx.Client) -> None:
    _error(client.get("/events/0"), 422, "InvalidInput")
    _error(client.get(f"/events/{2**63}/availability"), 422, "InvalidInput")
    _error(client.get("/events", params={"limit": 0}), 422, "InvalidInput")
    _error(client.get("/events", params={"starts_after": "2030-01-01T00:00"}), 422, "InvalidInput")
    _error(client.get("/allocations", params={"fingerprint": ""}), 422, "InvalidInput")


@pytest.mark.parametrize(
    ("method", "path", "content"),
    [
        ("POST", "/events/{event}/reservations", b'{"quantity": 1}'),  # no fingerprint
        ("POST", "/events/{event}/reservations", b'{"fingerprint": "a", "quantity": "1"}'),
        ("POST", "/events/{event}/reservations", b'{"fingerprint": "a", "quantity": true}'),
        ("POST", "/events/{event}/reservations", b'{"fingerprint": "a", "quantity": 1, "x": 1}'),
        (
            "POST",
            "/events/{event}/reservations",
            b'{"fingerprint": "a", "quantity": 1, "hold_seconds": NaN}',
        ),
        ("POST", "/events/{event}/reservations", b"not json"),
        ("POST", "/events", b'{"name": "x", "starts_at": "soon", "total_tickets": 1}'),
        ("POST", "/allocations/abc/purchase", b'{"fingerprint": "a"}'),
        ("GET", "/events/abc", b""),
        ("GET", "/allocations/1/tickets", b""),  # no fingerprint
    ],
)
def test_request_validation_stays_fastapis_422(
    client: httpx.Client, conn: psycopg.Connection[Any], method: str, path: str, content: bytes
) -> None:
    event = make_event(conn, 5)
    response = client.request(
        method,
        path.format(event=event.id),
        content=content,
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, list)
    assert detail
    assert events.get_availability(conn, event.id).reserved == 0


@contextmanager
def _slots_locked(admin_dsn: str, event_id: int) -> Iterator[None]:
    """Every inventory slot of the event locked by an operator's open transaction."""
    with db.connect(admin_dsn, autocommit=False) as blocker:
        rows = blocker.execute(
            "SELECT slot FROM inventory_slots WHERE event_id = %s FOR UPDATE", (event_id,)
        ).fetchall()
        assert rows
        try:
            yield
        finally:
            blocker.rollback()


def test_a_lock_held_past_the_lock_timeout_is_503_busy_with_retry_after(
    client: httpx.Client, conn: psycopg.Connection[Any], admin_dsn: str
) -> None:
    event = make_event(conn, 10)
    with _slots_locked(admin_dsn, event.id):
        started = time.monotonic()
        response = client.post(
            f"/events/{event.id}/reservations", json={"fingerprint": "a", "quantity": 1}
        )
        elapsed = time.monotonic() - started
    _error(response, 503, "Busy")
    assert response.headers["Retry-After"] == RETRY_AFTER
    assert 2.5 <= elapsed < 10.0, elapsed  # the layer's lock_timeout is 3 s
    assert events.get_availability(conn, event.id).reserved == 0
    # Retried once the lock is gone, the same request succeeds.
    retried = client.post(
        f"/events/{event.id}/reservations", json={"fingerprint": "a", "quantity": 1}
    )
    assert retried.status_code == 201


def test_a_statement_timeout_is_503_busy(
    dsn: str, conn: psycopg.Connection[Any], admin_dsn: str
) -> None:
    event = make_event(conn, 10)
    settings = {"kwargs": {"options": "-c statement_timeout=300"}}
    with (
        serving(create_app(dsn, pool_kwargs=settings)) as url,
        httpx.Client(base_url=url, timeout=HTTP_TIMEOUT) as http,
        _slots_locked(admin_dsn, event.id),
    ):
        started = time.monotonic()
        response = http.post(
            f"/events/{event.id}/reservations", json={"fingerprint": "a", "quantity": 1}
        )
        elapsed = time.monotonic() - started
    _error(response, 503, "Busy")
    assert response.headers["Retry-After"] == RETRY_AFTER
    assert elapsed < 2.5, elapsed


def test_no_free_connection_is_503_busy(
    dsn: str, conn: psycopg.Connection[Any], admin_dsn: str
) -> None:
    event = make_event(conn, 10)
    # One connection, which a reservation stuck on a lock occupies.
    settings = {"min_size": 1, "max_size": 1, "timeout": 0.5}
    with serving(create_app(dsn, pool_kwargs=settings)) as url:
        with (
            _slots_locked(admin_dsn, event.id),
            httpx.Client(base_url=url, timeout=HTTP_TIMEOUT) as http,
        ):
            stuck: list[httpx.Response] = []
            blocked = threading.Thread(
                target=lambda: stuck.append(
                    httpx.post(
                        f"{url}/events/{event.id}/reservations",
                        json={"fingerprint": "a", "quantity": 1},
                        timeout=HTTP_TIMEOUT,
                    )
                )
            )
            blocked.start()
            with db.connect(admin_dsn) as observer:
                wait_for(lambda: _lock_waiters(observer) == 1, "a reservation waiting on a lock")
            response = http.get(f"/events/{event.id}")
            _error(response, 503, "Busy")
            assert response.headers["Retry-After"] == RETRY_AFTER
        blocked.join(HTTP_TIMEOUT)
        assert [r.status_code for r in stuck] == [201]  # it got the lock when it was released


def _lock_waiters(observer: psycopg.Connection[Any]) -> int:
    return int(
        scalar(
            observer,
            f"SELECT count(*) FROM pg_stat_activity WHERE {APP_SESSIONS}"
            " AND wait_event_type = 'Lock'",
        )
    )


def test_a_broken_connection_is_503_connection_lost_and_the_pool_recovers(
    dsn: str, conn: psycopg.Connection[Any], admin_conn: psycopg.Connection[Any]
) -> None:
    event = make_event(conn, 10)
    with (
        serving(create_app(dsn, pool_kwargs={"min_size": 1, "max_size": 1})) as url,
        httpx.Client(base_url=url, timeout=HTTP_TIMEOUT) as http,
    ):
        assert http.get("/health").status_code == 200
        killed = scalar(
            admin_conn,
            f"SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE {APP_SESSIONS}",
        )
        assert killed == 1
        wait_for(lambda: app_backends(admin_conn) == 0, "the app's session gone")
        response = http.get(f"/events/{event.id}")
        _error(response, 503, "ConnectionLost")
        assert response.headers["Retry-After"] == RETRY_AFTER
        # The pool dropped the broken connection and opened a new one.
        retried = http.get(f"/events/{event.id}")
        assert (retried.status_code, retried.json()["id"]) == (200, event.id)


def test_a_database_that_does_not_answer_is_503(dsn: str) -> None:
    with socket_nobody_listens_on() as port:
        url = f"postgresql://{APP_LOGIN}@127.0.0.1:{port}/nowhere?connect_timeout=1"
        with (
            serving(create_app(url, pool_kwargs={"timeout": 0.5})) as base,
            httpx.Client(base_url=base, timeout=HTTP_TIMEOUT) as http,
        ):
            health = http.get("/health")
            assert (health.status_code, health.json()) == (503, {"status": "unavailable"})
            assert health.headers["Retry-After"] == RETRY_AFTER
            response = http.get("/events")
            _error(response, 503, "Busy")
            assert response.headers["Retry-After"] == RETRY_AFTER


@contextmanager
def socket_nobody_listens_on() -> Iterator[int]:
    """A port bound (so nothing else takes it) but not listening: connections are refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


def test_a_login_without_the_privilege_is_500_without_internals(
    client: httpx.Client, admin_conn: psycopg.Connection[Any], caplog: pytest.LogCaptureFixture
) -> None:
    admin_conn.execute("REVOKE INSERT ON events FROM ticketing_app")
    with caplog.at_level(logging.ERROR, logger="examples.service"):
        response = client.post(
            "/events", json={"name": "x", "starts_at": STARTS_AT.isoformat(), "total_tickets": 5}
        )
    assert (response.status_code, response.json()) == (500, INTERNAL)
    assert "permission" not in response.text
    assert "events" not in response.text
    assert any("Forbidden" in record.getMessage() for record in caplog.records)


def test_an_unexpected_database_error_is_500_without_internals(
    client: httpx.Client,
    conn: psycopg.Connection[Any],
    admin_conn: psycopg.Connection[Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    event = make_event(conn, 5)
    held = allocations.reserve(conn, event_id=event.id, fingerprint="a", quantity=1)
    admin_conn.execute("ALTER TABLE tickets RENAME TO tickets_elsewhere")
    with caplog.at_level(logging.ERROR, logger="examples.service"):
        response = client.get(f"/allocations/{held.id}/tickets", params={"fingerprint": "a"})
    assert (response.status_code, response.json()) == (500, INTERNAL)
    assert "tickets" not in response.text
    assert "relation" not in response.text
    assert any("DatabaseError" in record.getMessage() for record in caplog.records)
