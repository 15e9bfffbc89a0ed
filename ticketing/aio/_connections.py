"""Async connections and pools, set up exactly like ticketing.db's."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from ticketing._atx import guarded
from ticketing._connections import connection_kwargs, invalid_url, libpq_dsn, pool_kwargs
from ticketing.errors import InvalidInput, TicketingError


async def connect(dsn: str, **kwargs: Any) -> psycopg.AsyncConnection[Any]:
    """Open an async connection (autocommit by default, like `ticketing.db.connect`)."""
    kwargs = connection_kwargs(dsn, kwargs)
    try:
        return await guarded(lambda: psycopg.AsyncConnection.connect(libpq_dsn(dsn), **kwargs))
    except InvalidInput:
        raise
    except TicketingError as exc:
        raise invalid_url(exc) from exc.__cause__


def create_pool(dsn: str, **kwargs: Any) -> AsyncConnectionPool[Any]:
    """An `AsyncConnectionPool` whose connections are set up like `connect`'s.

    Not opened: `async with create_pool(url) as pool:` (or `await pool.open()`)
    opens it inside the caller's event loop, e.g. in a web app's lifespan.
    """
    return AsyncConnectionPool(libpq_dsn(dsn), **pool_kwargs(dsn, kwargs, open_now=False))
