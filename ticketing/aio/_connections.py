"""Async connections and pools, set up exactly like ticketing.db's."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from ticketing._atx import guarded
from ticketing._connections import (
    POOL_MAX_SIZE,
    POOL_MIN_SIZE,
    PREPARE_THRESHOLD,
    libpq_dsn,
    parse_dsn,
)
from ticketing.errors import InvalidInput, TicketingError


async def connect(dsn: str, **kwargs: Any) -> psycopg.AsyncConnection[Any]:
    """Open an async connection (autocommit by default, like `ticketing.db.connect`)."""
    parse_dsn(dsn)  # a malformed URL is InvalidInput, not a connection failure
    kwargs.setdefault("autocommit", True)
    kwargs.setdefault("prepare_threshold", PREPARE_THRESHOLD)
    try:
        return await guarded(lambda: psycopg.AsyncConnection.connect(libpq_dsn(dsn), **kwargs))
    except InvalidInput:
        raise
    except TicketingError as exc:
        if isinstance(exc.__cause__, psycopg.ProgrammingError):  # e.g. a bad keyword argument
            raise InvalidInput(f"invalid database URL: {exc}") from exc.__cause__
        raise


def create_pool(dsn: str, **kwargs: Any) -> AsyncConnectionPool[Any]:
    """An `AsyncConnectionPool` whose connections are set up like `connect`'s.

    Not opened: `async with create_pool(url) as pool:` (or `await pool.open()`)
    opens it inside the caller's event loop, e.g. in a web app's lifespan.
    """
    parse_dsn(dsn)  # fail now, not at the first pool.connection()
    connection_kwargs = dict(kwargs.pop("kwargs", None) or {})
    connection_kwargs.setdefault("autocommit", True)
    connection_kwargs.setdefault("prepare_threshold", PREPARE_THRESHOLD)
    kwargs.setdefault("min_size", POOL_MIN_SIZE)
    kwargs.setdefault("max_size", max(POOL_MAX_SIZE, kwargs["min_size"]))
    kwargs.setdefault("open", False)
    return AsyncConnectionPool(libpq_dsn(dsn), kwargs=connection_kwargs, **kwargs)
