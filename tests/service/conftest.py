"""The example service (examples/service) under a real uvicorn server, and HTTP clients for it.

`serving(app)` runs an app in uvicorn.Server on a thread of its own (with its own
event loop) on a socket bound to a free 127.0.0.1 port, returns once the server
has started (lifespan done, socket listening) and stops it cleanly on exit.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import psycopg
import pytest
import uvicorn
from fastapi import FastAPI

from examples.service.app import APPLICATION_NAME, create_app
from tests.support import APP_LOGIN, JOIN_TIMEOUT, WAIT_TIMEOUT, scalar

#: The service's sessions in pg_stat_activity.
APP_SESSIONS = (
    f"datname = current_database() AND usename = '{APP_LOGIN}'"
    f" AND application_name = '{APPLICATION_NAME}'"
)
#: Bound on one HTTP call of a test (a hung server fails the test, not the run).
HTTP_TIMEOUT = 30.0


@contextmanager
def serving(app: FastAPI) -> Iterator[str]:
    """Run `app` under uvicorn on 127.0.0.1; yield its base URL."""
    # IPPROTO_TCP, so that asyncio sets TCP_NODELAY on the connections (no delayed-ACK waits).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app, log_level="warning", lifespan="on", timeout_graceful_shutdown=5, backlog=1024
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + WAIT_TIMEOUT
        while not server.started:
            assert thread.is_alive(), "the server stopped while starting"
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(JOIN_TIMEOUT)
        sock.close()
    assert not thread.is_alive(), "the server did not stop"


def wait_for(condition: Callable[[], bool], what: str = "the condition") -> None:
    """Return once `condition()` holds; fail after WAIT_TIMEOUT."""
    deadline = time.monotonic() + WAIT_TIMEOUT
    while not condition():
        assert time.monotonic() < deadline, f"{what} never held"
        time.sleep(0.01)


def app_backends(observer: psycopg.Connection[Any]) -> int:
    """How many sessions of the service are connected to the observer's database."""
    return int(scalar(observer, f"SELECT count(*) FROM pg_stat_activity WHERE {APP_SESSIONS}"))


@pytest.fixture
def service(dsn: str) -> Iterator[str]:
    """The service on the test's database (as the least-privilege app login); its base URL."""
    with serving(create_app(dsn)) as url:
        yield url


@pytest.fixture
def client(service: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=service, timeout=HTTP_TIMEOUT) as http:
        yield http
