"""A client that goes away mid-request: the handler is cancelled, the layer's statement is
cancelled on the server and its transaction rolled back, and nothing of the request is kept."""

from __future__ import annotations

import json
import socket
import time
from typing import Any

import httpx
import psycopg

from examples.service.app import create_app
from tests.service.conftest import APP_SESSIONS, HTTP_TIMEOUT, serving, wait_for
from tests.support import make_event, scalar
from ticketing import allocations, db, events
from ticketing._tx import LOCK_TIMEOUT


def _waiting_pid(observer: psycopg.Connection[Any]) -> int | None:
    row = observer.execute(
        f"SELECT pid FROM pg_stat_activity WHERE {APP_SESSIONS} AND wait_event_type = 'Lock'"
    ).fetchone()
    return None if row is None else int(row[0])


def _state(observer: psycopg.Connection[Any], pid: int) -> tuple[str | None, str | None]:
    row = observer.execute(
        "SELECT state, wait_event_type FROM pg_stat_activity WHERE pid = %s", (pid,)
    ).fetchone()
    assert row is not None, f"backend {pid} went away"
    return row[0], row[1]


def test_a_client_that_disconnects_mid_request_leaves_nothing_committed(
    dsn: str, conn: psycopg.Connection[Any], admin_dsn: str, admin_conn: psycopg.Connection[Any]
) -> None:
    assert LOCK_TIMEOUT == "3s"  # the bound below is well inside it
    event = make_event(conn, 10)
    before = events.get_availability(conn, event.id)
    body = json.dumps({"fingerprint": "gone", "quantity": 2}).encode()
    request = (
        f"POST /events/{event.id}/reservations HTTP/1.1\r\n"
        "Host: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    with serving(create_app(dsn, pool_kwargs={"min_size": 1, "max_size": 1})) as url:
        port = int(url.rsplit(":", 1)[1])
        with db.connect(admin_dsn, autocommit=False) as blocker:
            blocker.execute(
                "SELECT slot FROM inventory_slots WHERE event_id = %s FOR UPDATE", (event.id,)
            )
            with socket.create_connection(("127.0.0.1", port), timeout=HTTP_TIMEOUT) as client:
                client.sendall(request)
                wait_for(lambda: _waiting_pid(admin_conn) is not None, "the reservation waiting")
                pid = _waiting_pid(admin_conn)
                assert pid is not None
            # The client is gone; the lock is still held. The reservation's statement stops
            # waiting long before the lock timeout would have ended it: it was cancelled.
            gone = time.monotonic()
            wait_for(lambda: _state(admin_conn, pid) == ("idle", "Client"), "the session idle")
            assert time.monotonic() - gone < 2.0
            blocker.rollback()
        # Nothing of the request was committed, and the lock's release changed nothing.
        assert allocations.list_for_buyer(conn, fingerprint="gone") == []
        assert events.get_availability(conn, event.id) == before
        reserved = scalar(
            admin_conn, "SELECT count(*) FROM allocation_history WHERE event_id = %s", (event.id,)
        )
        assert reserved == 0
        # The service goes on, on the same pooled connection.
        with httpx.Client(base_url=url, timeout=HTTP_TIMEOUT) as http:
            retried = http.post(
                f"/events/{event.id}/reservations", json={"fingerprint": "gone", "quantity": 2}
            )
        assert retried.status_code == 201, retried.text
        assert events.get_availability(conn, event.id).reserved == 2
        assert scalar(admin_conn, f"SELECT pid FROM pg_stat_activity WHERE {APP_SESSIONS}") == pid
