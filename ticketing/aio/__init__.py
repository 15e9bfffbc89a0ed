"""The layer for asyncio: the same functions as the sync modules, as coroutines.

`ticketing.aio.events`, `.allocations`, `.tickets` and `.admin` hold every
public function of their sync namesakes with the same names, arguments,
results, errors, validation, retries and lock timeouts, taking a
`psycopg.AsyncConnection` first. They are the source: the sync modules are
generated from them (`make sync-api`, ticketing.aio._unasync), so the two
cannot drift.

    from ticketing import aio
    conn = await aio.connect(url)
    hold = await aio.allocations.reserve(conn, event_id=1, fingerprint="b-1", quantity=2)
"""

from __future__ import annotations

from ticketing.aio import admin, allocations, events, tickets
from ticketing.aio._connections import connect, create_pool

__all__ = ["admin", "allocations", "connect", "create_pool", "events", "tickets"]
