"""A JSON HTTP service over ticketing.aio: FastAPI on one asyncio connection pool.

    DATABASE_URL=postgresql://shop_app@127.0.0.1/shop uvicorn examples.service.app:app

`create_app(database_url)` builds the app; `app` is one built from the
environment's DATABASE_URL, read when the server starts. The pool opens in
the app's lifespan and closes when the server stops. Every layer error
becomes an HTTP answer in one place, `error_response`, from the table
`ERROR_STATUS`. Endpoints and the table: examples/service/README.md.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Annotated, Any

import psycopg
from fastapi import FastAPI, Header, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ticketing import aio
from ticketing.errors import (
    AllocationNotFound,
    Busy,
    BuyerLimitExceeded,
    ConnectionLost,
    DatabaseError,
    Forbidden,
    HoldExpired,
    IdempotencyConflict,
    InvalidInput,
    InvalidTransition,
    NotFound,
    SoldOut,
    TicketingError,
)
from ticketing.models import Allocation, Availability, Event, Ticket

log = logging.getLogger("examples.service")

#: How long a request waits for a free pooled connection before it answers 503.
POOL_TIMEOUT = 10.0
#: How long /health waits for a connection.
HEALTH_TIMEOUT = 2.0
#: The service's sessions' application_name.
APPLICATION_NAME = "ticketing-service"
#: Seconds a client should wait before retrying a 503.
RETRY_AFTER = "1"

# --- errors: the one place where the layer's errors become HTTP ---------------------------------

#: The HTTP status of each layer error; the most specific class in an error's MRO wins.
ERROR_STATUS: dict[type[TicketingError], int] = {
    InvalidInput: 422,
    NotFound: 404,  # EventNotFound, AllocationNotFound, TicketNotFound
    SoldOut: 409,
    BuyerLimitExceeded: 409,
    InvalidTransition: 409,
    HoldExpired: 410,
    IdempotencyConflict: 422,
    Busy: 503,
    ConnectionLost: 503,
    # The service's own database login lacks a privilege: a deployment fault, not the client's.
    Forbidden: 500,
    DatabaseError: 500,
    TicketingError: 500,
}
#: Statuses that tell the client to retry, with a Retry-After header.
RETRYABLE = frozenset({503})
#: What a 500 says: nothing about the database.
INTERNAL = {"error": "InternalError", "detail": "the service could not complete the request"}


def status_for(exc: TicketingError) -> int:
    """The HTTP status for a layer error (ERROR_STATUS, by the error's most specific class)."""
    for cls in type(exc).__mro__:
        if cls in ERROR_STATUS:
            return ERROR_STATUS[cls]
    return 500  # pragma: no cover - TicketingError itself is in the table


def error_response(exc: TicketingError) -> JSONResponse:
    """The JSON answer for a layer error: {"error": <class name>, "detail": <message>, ...}.

    SoldOut adds "available". 5xx other than 503 hide the message (it may quote SQL) and
    log it instead; 503s carry Retry-After.
    """
    status = status_for(exc)
    headers = {"Retry-After": RETRY_AFTER} if status in RETRYABLE else None
    if status >= 500 and status not in RETRYABLE:
        log.error("request failed: %s: %s", type(exc).__name__, exc, exc_info=exc)
        return JSONResponse(INTERNAL, status_code=status, headers=headers)
    body: dict[str, Any] = {"error": type(exc).__name__, "detail": str(exc)}
    if isinstance(exc, SoldOut):
        body["available"] = exc.available
    return JSONResponse(body, status_code=status, headers=headers)


async def _ticketing_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, TicketingError)
    return error_response(exc)


async def _request_invalid(request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's own 422 for a request its schema rejects, `{"detail": [...]}`, except that an
    echoed input JSON cannot carry (NaN, Infinity: Python's json reads them) is left out."""
    assert isinstance(exc, RequestValidationError)
    try:
        return await request_validation_exception_handler(request, exc)
    except ValueError:
        errors = [{k: v for k, v in e.items() if k != "input"} for e in exc.errors()]
        return JSONResponse({"detail": jsonable_encoder(errors)}, status_code=422)


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    log.error("unexpected error", exc_info=exc)
    return JSONResponse(INTERNAL, status_code=500)


# --- request bodies -----------------------------------------------------------------------------


class _Body(BaseModel):
    # Strict numbers and strings (no "3" for 3, no true for 1); ISO 8601 text for datetimes.
    # The layer checks the bounds (InvalidInput).
    model_config = ConfigDict(extra="forbid")


class EventIn(_Body):
    name: StrictStr
    starts_at: datetime
    total_tickets: StrictInt
    max_per_buyer: StrictInt | None = None
    slots: StrictInt | None = None


class ReservationIn(_Body):
    fingerprint: StrictStr
    quantity: StrictInt
    hold_seconds: Annotated[StrictFloat | None, Field(allow_inf_nan=False)] = None


class BuyerIn(_Body):
    fingerprint: StrictStr


class Health(BaseModel):
    status: str


def _json(record: BaseModel | list[Any], status: int = 200) -> JSONResponse:
    if isinstance(record, list):
        return JSONResponse([r.model_dump(mode="json") for r in record], status_code=status)
    return JSONResponse(record.model_dump(mode="json"), status_code=status)


def _hold(seconds: float | None) -> timedelta:
    if seconds is None:
        return aio.allocations.DEFAULT_HOLD
    try:
        return timedelta(seconds=seconds)
    except OverflowError as exc:
        raise InvalidInput(f"hold_seconds is out of range: {seconds}") from exc


# --- connections --------------------------------------------------------------------------------


@asynccontextmanager
async def _connection(
    request: Request, timeout: float | None = None
) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """A pooled connection for one request; a pool that has none to give is Busy."""
    pool: AsyncConnectionPool[Any] = request.app.state.pool
    try:
        async with pool.connection(timeout=timeout) as conn:
            yield conn
    except PoolTimeout as exc:
        raise Busy("no database connection became free in time") from exc


async def _owned(
    conn: psycopg.AsyncConnection[Any], allocation_id: int, fingerprint: str
) -> Allocation:
    """The buyer's allocation; AllocationNotFound, worded alike, when missing or another's."""
    try:
        found = await aio.allocations.get_allocation(conn, allocation_id)
    except AllocationNotFound:
        found = None
    if found is None or found.fingerprint != fingerprint:
        raise AllocationNotFound(f"allocation {allocation_id} not found for this buyer")
    return found


# --- cancellation on disconnect -----------------------------------------------------------------


class CancelOnDisconnect:
    """ASGI middleware: a request whose client goes away before its answer starts is cancelled.

    The request body is read first; then the server's `receive` is watched for
    `http.disconnect` while the app runs. Cancelling the handler cancels the
    layer's call: its transaction rolls back and a statement still running on
    the server is cancelled there, so nothing of the request is committed
    unless it had committed already (then the client never hears of it; the
    Idempotency-Key of a retried reservation finds it).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body: list[Message] = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # gone before the request was whole: nothing ran
            body.append(message)
            if not message.get("more_body", False):
                break
        disconnected = asyncio.Event()
        started = False

        async def replay() -> Message:
            if body:
                return body.pop(0)
            await disconnected.wait()
            return {"type": "http.disconnect"}

        async def tracked_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            disconnected.set()

        handler = asyncio.ensure_future(self.app(scope, replay, tracked_send))
        watcher = asyncio.ensure_future(watch())
        try:
            await asyncio.wait({handler, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if not handler.done() and not started:
                handler.cancel()
                log.info("client disconnected: %s %s cancelled", scope["method"], scope["path"])
            await asyncio.wait({handler})
        finally:
            watcher.cancel()
            if not handler.done():  # this coroutine itself was cancelled (server shutdown)
                handler.cancel()
        if not handler.cancelled():
            handler.result()  # re-raise what the app raised


# --- the app ------------------------------------------------------------------------------------


def create_app(
    database_url: str | None = None, *, pool_kwargs: Mapping[str, Any] | None = None
) -> FastAPI:
    """The service on `database_url` (DATABASE_URL when None, read at startup).

    `pool_kwargs` go to `ticketing.aio.create_pool` (min_size, max_size, timeout,
    kwargs={"options": "-c statement_timeout=5s"}, ...).
    """
    settings = dict(pool_kwargs or {})
    settings.setdefault("timeout", POOL_TIMEOUT)
    # Named in pg_stat_activity, so that operators can tell the service's sessions apart.
    settings["kwargs"] = {"application_name": APPLICATION_NAME, **settings.get("kwargs", {})}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        url = database_url or os.environ.get("DATABASE_URL")
        if not url:
            raise RuntimeError("set DATABASE_URL (or pass database_url to create_app)")
        # Not waiting for connections: the service starts while the database is away,
        # and /health says 503 until it answers.
        async with aio.create_pool(url, **settings) as pool:
            app.state.pool = pool
            yield

    app = FastAPI(
        title="ticketing service",
        summary="Events, holds, purchases and tickets over ticketing.aio",
        lifespan=lifespan,
    )
    app.add_exception_handler(TicketingError, _ticketing_error)
    app.add_exception_handler(RequestValidationError, _request_invalid)
    app.add_exception_handler(Exception, _unexpected_error)
    app.add_middleware(CancelOnDisconnect)

    @app.get("/health", response_model=Health, responses={503: {"model": Health}})
    async def health(request: Request) -> JSONResponse:
        """200 when a pooled connection answers a query, 503 otherwise."""
        try:
            async with _connection(request, timeout=HEALTH_TIMEOUT) as conn:
                await aio.events.list_events(conn, limit=1)
        except TicketingError as exc:
            log.warning("health check failed: %s: %s", type(exc).__name__, exc)
            return JSONResponse(
                {"status": "unavailable"}, status_code=503, headers={"Retry-After": RETRY_AFTER}
            )
        return JSONResponse({"status": "ok"})

    @app.post("/events", status_code=201, response_model=Event)
    async def create_event(request: Request, event: EventIn) -> JSONResponse:
        async with _connection(request) as conn:
            created = await aio.events.create_event(
                conn,
                name=event.name,
                starts_at=event.starts_at,
                total_tickets=event.total_tickets,
                max_per_buyer=event.max_per_buyer,
                slots=event.slots,
            )
        return _json(created, 201)

    @app.get("/events", response_model=list[Event])
    async def list_events(
        request: Request, starts_after: datetime | None = None, limit: int = 100
    ) -> JSONResponse:
        async with _connection(request) as conn:
            found = await aio.events.list_events(conn, starts_after=starts_after, limit=limit)
        return _json(found)

    @app.get("/events/{event_id}", response_model=Event)
    async def get_event(request: Request, event_id: int) -> JSONResponse:
        async with _connection(request) as conn:
            return _json(await aio.events.get_event(conn, event_id))

    @app.get("/events/{event_id}/availability", response_model=Availability)
    async def get_availability(request: Request, event_id: int) -> JSONResponse:
        async with _connection(request) as conn:
            return _json(await aio.events.get_availability(conn, event_id))

    @app.post("/events/{event_id}/reservations", status_code=201, response_model=Allocation)
    async def reserve(
        request: Request,
        event_id: int,
        reservation: ReservationIn,
        idempotency_key: Annotated[str | None, Header()] = None,
    ) -> JSONResponse:
        hold = _hold(reservation.hold_seconds)
        async with _connection(request) as conn:
            held = await aio.allocations.reserve(
                conn,
                event_id=event_id,
                fingerprint=reservation.fingerprint,
                quantity=reservation.quantity,
                hold=hold,
                idempotency_key=idempotency_key,
            )
        return _json(held, 201)

    @app.get("/allocations", response_model=list[Allocation])
    async def list_for_buyer(
        request: Request, fingerprint: str, event_id: int | None = None
    ) -> JSONResponse:
        async with _connection(request) as conn:
            found = await aio.allocations.list_for_buyer(
                conn, fingerprint=fingerprint, event_id=event_id
            )
        return _json(found)

    @app.get("/allocations/{allocation_id}", response_model=Allocation)
    async def get_allocation(
        request: Request, allocation_id: int, fingerprint: Annotated[str, Query()]
    ) -> JSONResponse:
        async with _connection(request) as conn:
            return _json(await _owned(conn, allocation_id, fingerprint))

    @app.post("/allocations/{allocation_id}/purchase", response_model=Allocation)
    async def purchase(request: Request, allocation_id: int, buyer: BuyerIn) -> JSONResponse:
        async with _connection(request) as conn:
            done = await aio.allocations.purchase(
                conn, allocation_id=allocation_id, fingerprint=buyer.fingerprint
            )
        return _json(done)

    @app.post("/allocations/{allocation_id}/cancel", response_model=Allocation)
    async def cancel(request: Request, allocation_id: int, buyer: BuyerIn) -> JSONResponse:
        async with _connection(request) as conn:
            done = await aio.allocations.cancel(
                conn, allocation_id=allocation_id, fingerprint=buyer.fingerprint
            )
        return _json(done)

    @app.get("/allocations/{allocation_id}/tickets", response_model=list[Ticket])
    async def list_tickets(
        request: Request, allocation_id: int, fingerprint: Annotated[str, Query()]
    ) -> JSONResponse:
        async with _connection(request) as conn:
            await _owned(conn, allocation_id, fingerprint)
            return _json(await aio.tickets.list_for_allocation(conn, allocation_id))

    @app.get("/tickets/{code}", response_model=Ticket)
    async def get_ticket(request: Request, code: str) -> JSONResponse:
        """The ticket with this code: whoever holds the code (e.g. a door scanner) may look."""
        async with _connection(request) as conn:
            return _json(await aio.tickets.get_by_code(conn, code))

    return app


#: The service on DATABASE_URL: `uvicorn examples.service.app:app`.
app = create_app()
