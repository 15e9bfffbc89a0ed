"""Input bounds of every API function (InvalidInput, nothing written) and error translation."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import psycopg
import pytest
from pytest_postgresql.executors import NoopExecutor, PostgreSQLExecutor
from pytest_postgresql.janitor import DatabaseJanitor

from tests.support import MISSING_ID, STARTS_AT, table_rows
from ticketing import allocations, db, events, tickets
from ticketing.errors import (
    AllocationNotFound,
    ConnectionLost,
    DatabaseError,
    EventNotFound,
    InvalidInput,
    TicketingError,
    TicketNotFound,
)
from ticketing.models import AllocationStatus

NAIVE = datetime(2030, 6, 1, 20, 0)  # naive on purpose


@dataclass(frozen=True)
class World:
    """What exists before each bad call: one event, one hold, one purchase."""

    event_id: int
    hold_id: int
    bought_id: int


Call = Callable[[psycopg.Connection[Any], World], object]


def _populate(conn: psycopg.Connection[Any]) -> World:
    event = events.create_event(conn, name="show", starts_at=STARTS_AT, total_tickets=100)
    hold = allocations.reserve(conn, event_id=event.id, fingerprint="alice", quantity=2)
    bought = allocations.reserve(conn, event_id=event.id, fingerprint="bob", quantity=3)
    allocations.purchase(conn, allocation_id=bought.id, fingerprint="bob")
    return World(event_id=event.id, hold_id=hold.id, bought_id=bought.id)


@pytest.fixture
def world(conn: psycopg.Connection[Any]) -> World:
    return _populate(conn)


@pytest.fixture(scope="module")
def shared(
    pg_server: NoopExecutor | PostgreSQLExecutor,
) -> Iterator[tuple[psycopg.Connection[Any], World]]:
    """One database for all the bad-input cases: they must write nothing, which each checks."""
    dbname = f"t_{uuid.uuid4().hex[:16]}"
    janitor = DatabaseJanitor(
        user=pg_server.user,
        host=pg_server.host,
        port=pg_server.port,
        dbname=dbname,
        template_dbname=pg_server.template_dbname,
        password=pg_server.password,
    )
    auth = f"{pg_server.user}:{pg_server.password}" if pg_server.password else pg_server.user
    with (
        janitor,
        db.connect(f"postgresql://{auth}@{pg_server.host}:{pg_server.port}/{dbname}") as c,
    ):
        yield c, _populate(c)


def _create(**bad: object) -> Call:
    def call(conn: psycopg.Connection[Any], w: World) -> object:
        kwargs: dict[str, Any] = {"name": "ok", "starts_at": STARTS_AT, "total_tickets": 10}
        return events.create_event(conn, **(kwargs | bad))

    return call


def _reserve(**bad: object) -> Call:
    def call(conn: psycopg.Connection[Any], w: World) -> object:
        kwargs: dict[str, Any] = {"event_id": w.event_id, "fingerprint": "carol", "quantity": 1}
        return allocations.reserve(conn, **(kwargs | bad))

    return call


def _purchase(**bad: object) -> Call:
    def call(conn: psycopg.Connection[Any], w: World) -> object:
        kwargs: dict[str, Any] = {"allocation_id": w.hold_id, "fingerprint": "alice"}
        return allocations.purchase(conn, **(kwargs | bad))

    return call


def _cancel(**bad: object) -> Call:
    def call(conn: psycopg.Connection[Any], w: World) -> object:
        kwargs: dict[str, Any] = {"allocation_id": w.bought_id, "fingerprint": "bob"}
        return allocations.cancel(conn, **(kwargs | bad))

    return call


def _list_for_buyer(**bad: object) -> Call:
    def call(conn: psycopg.Connection[Any], w: World) -> object:
        kwargs: dict[str, Any] = {"fingerprint": "alice"}
        return allocations.list_for_buyer(conn, **(kwargs | bad))

    return call


def _list_events(**bad: object) -> Call:
    def call(conn: psycopg.Connection[Any], w: World) -> object:
        return events.list_events(conn, **bad)

    return call


def _expire_due(**bad: object) -> Call:
    def call(conn: psycopg.Connection[Any], w: World) -> object:
        return allocations.expire_due(conn, **bad)

    return call


def _positional(function: Callable[[psycopg.Connection[Any], Any], object], value: object) -> Call:
    def call(conn: psycopg.Connection[Any], w: World) -> object:
        return function(conn, value)

    return call


BAD_TEXT: list[tuple[str, object]] = [
    ("empty", ""),
    ("201 chars", "x" * 201),
    ("NUL", "a\x00b"),
    ("only NUL", "\x00"),
    ("lone surrogate", "a\ud800b"),
    ("int", 123),
    ("bytes", b"abc"),
    ("None", None),
]
BAD_IDS: list[tuple[str, object]] = [
    ("0", 0),
    ("-1", -1),
    ("2**63", 2**63),
    ("True", True),
    ("str", "1"),
    ("float", 1.0),
    ("None", None),
]
BAD_LIMITS: list[tuple[str, object]] = [
    ("0", 0),
    ("-1", -1),
    ("10001", 10_001),
    ("True", True),
    ("str", "10"),
    ("None", None),
]
BAD_QUANTITIES: list[tuple[str, object]] = [
    ("0", 0),
    ("-1", -1),
    ("10001", 10_001),
    ("True", True),
    ("float", 1.5),
    ("str", "1"),
]
BAD_TOTALS: list[tuple[str, object]] = [
    ("0", 0),
    ("-1", -1),
    ("2_000_000_001", 2_000_000_001),
    ("2**31", 2**31),
    ("True", True),
    ("1.5", 1.5),
    ("3.0", 3.0),
    ("'3'", "3"),
    ("None", None),
]
BAD_MAX_PER_BUYER: list[tuple[str, object]] = [
    ("0", 0),
    ("-1", -1),
    ("10001", 10_001),
    ("False", False),
    ("2.0", 2.0),
]
BAD_HOLDS: list[tuple[str, object]] = [
    ("0", timedelta(0)),
    ("negative", timedelta(seconds=-1)),
    ("-1 us", timedelta(microseconds=-1)),
    ("7 days + 1 us", timedelta(days=7, microseconds=1)),
    ("8 days", timedelta(days=8)),
    ("int seconds", 600),
    ("None", None),
]
BAD_TIMES: list[tuple[str, object]] = [
    ("naive", NAIVE),
    ("date", date(2030, 6, 1)),
    ("string", "2030-06-01T20:00:00+00:00"),
    ("epoch", 1_900_000_000),
]


def _cases() -> list[Any]:
    cases: list[Any] = []

    def add(label: str, call: Call) -> None:
        cases.append(pytest.param(call, id=label))

    for what, value in BAD_TEXT:
        add(f"create_event name {what}", _create(name=value))
        add(f"reserve fingerprint {what}", _reserve(fingerprint=value))
        add(f"purchase fingerprint {what}", _purchase(fingerprint=value))
        add(f"cancel fingerprint {what}", _cancel(fingerprint=value))
        add(f"list_for_buyer fingerprint {what}", _list_for_buyer(fingerprint=value))
        add(f"get_by_code {what}", _positional(tickets.get_by_code, value))
        if value is not None:  # None means "no key"
            add(f"reserve idempotency_key {what}", _reserve(idempotency_key=value))
    for what, value in BAD_TOTALS:
        add(f"create_event total_tickets {what}", _create(total_tickets=value))
    for what, value in BAD_MAX_PER_BUYER:
        add(f"create_event max_per_buyer {what}", _create(max_per_buyer=value))
    for what, value in BAD_TIMES:
        add(f"create_event starts_at {what}", _create(starts_at=value))
        add(f"list_events starts_after {what}", _list_events(starts_after=value))
    for what, value in BAD_QUANTITIES:
        add(f"reserve quantity {what}", _reserve(quantity=value))
    for what, value in BAD_HOLDS:
        add(f"reserve hold {what}", _reserve(hold=value))
    for what, value in BAD_LIMITS:
        add(f"list_events limit {what}", _list_events(limit=value))
        add(f"expire_due limit {what}", _expire_due(limit=value))
    for what, value in BAD_IDS:
        add(f"get_event id {what}", _positional(events.get_event, value))
        add(f"get_availability id {what}", _positional(events.get_availability, value))
        add(f"reserve event_id {what}", _reserve(event_id=value))
        add(f"purchase allocation_id {what}", _purchase(allocation_id=value))
        add(f"cancel allocation_id {what}", _cancel(allocation_id=value))
        add(f"get_allocation id {what}", _positional(allocations.get_allocation, value))
        add(f"list_for_allocation id {what}", _positional(tickets.list_for_allocation, value))
        if value is not None:  # None means "every event"
            add(f"list_for_buyer event_id {what}", _list_for_buyer(event_id=value))
    # Bounds are checked before the database: a bad value wins over a missing event.
    add("reserve missing event, quantity 0", _reserve(event_id=MISSING_ID, quantity=0))
    add("reserve missing event, bad fingerprint", _reserve(event_id=MISSING_ID, fingerprint=""))
    add(
        "purchase missing allocation, bad fingerprint",
        _purchase(allocation_id=MISSING_ID, fingerprint=""),
    )
    return cases


@pytest.mark.parametrize("call", _cases())
def test_out_of_bounds_input_raises_invalid_input_and_writes_nothing(
    shared: tuple[psycopg.Connection[Any], World], call: Call
) -> None:
    conn, world = shared
    before = table_rows(conn)
    with pytest.raises(InvalidInput) as info:
        call(conn, world)
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, TicketingError)
    assert not isinstance(info.value.__cause__, psycopg.Error)
    assert table_rows(conn) == before
    assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


# --- values at the bounds are accepted -------------------------------------------------------


def test_bounds_of_create_event_are_accepted(conn: psycopg.Connection[Any]) -> None:
    low = events.create_event(conn, name="x", starts_at=STARTS_AT, total_tickets=1, max_per_buyer=1)
    high = events.create_event(
        conn, name="y" * 200, starts_at=STARTS_AT, total_tickets=2_000_000_000, max_per_buyer=10_000
    )
    assert (low.name, low.total_tickets, low.max_per_buyer) == ("x", 1, 1)
    assert (high.name, high.total_tickets, high.max_per_buyer) == ("y" * 200, 2_000_000_000, 10_000)
    assert events.get_availability(conn, high.id).available == 2_000_000_000


def test_hold_of_exactly_seven_days_is_accepted(conn: psycopg.Connection[Any]) -> None:
    event = events.create_event(conn, name="show", starts_at=STARTS_AT, total_tickets=5)
    hold = allocations.reserve(
        conn, event_id=event.id, fingerprint="alice", quantity=1, hold=timedelta(days=7)
    )
    assert hold.status is AllocationStatus.RESERVED
    assert hold.expires_at - hold.created_at == timedelta(days=7)


def test_hold_of_one_microsecond_is_accepted(conn: psycopg.Connection[Any]) -> None:
    event = events.create_event(conn, name="show", starts_at=STARTS_AT, total_tickets=5)
    hold = allocations.reserve(
        conn, event_id=event.id, fingerprint="alice", quantity=1, hold=timedelta(microseconds=1)
    )
    assert hold.expires_at - hold.created_at == timedelta(microseconds=1)


def test_largest_quantity_and_longest_texts_are_accepted(conn: psycopg.Connection[Any]) -> None:
    event = events.create_event(conn, name="arena", starts_at=STARTS_AT, total_tickets=10_000)
    hold = allocations.reserve(
        conn,
        event_id=event.id,
        fingerprint="f" * 200,
        quantity=10_000,
        idempotency_key="k" * 200,
    )
    assert (hold.quantity, hold.fingerprint, hold.idempotency_key) == (
        10_000,
        "f" * 200,
        "k" * 200,
    )
    assert events.get_availability(conn, event.id).available == 0


def test_largest_limit_is_accepted(conn: psycopg.Connection[Any]) -> None:
    events.create_event(conn, name="show", starts_at=STARTS_AT, total_tickets=5)
    assert len(events.list_events(conn, limit=10_000)) == 1
    assert allocations.expire_due(conn, limit=10_000) == 0
    assert len(events.list_events(conn, limit=1)) == 1
    assert allocations.expire_due(conn, limit=1) == 0


def test_largest_id_is_valid_and_not_found(conn: psycopg.Connection[Any]) -> None:
    top = 2**63 - 1
    with pytest.raises(EventNotFound):
        events.get_event(conn, top)
    with pytest.raises(EventNotFound):
        events.get_availability(conn, top)
    with pytest.raises(EventNotFound):
        allocations.reserve(conn, event_id=top, fingerprint="alice", quantity=1)
    with pytest.raises(AllocationNotFound):
        allocations.get_allocation(conn, top)
    with pytest.raises(AllocationNotFound):
        allocations.purchase(conn, allocation_id=top, fingerprint="alice")
    with pytest.raises(AllocationNotFound):
        allocations.cancel(conn, allocation_id=top, fingerprint="alice")
    assert tickets.list_for_allocation(conn, top) == []
    assert allocations.list_for_buyer(conn, fingerprint="alice", event_id=top) == []
    with pytest.raises(TicketNotFound):
        tickets.get_by_code(conn, "c" * 200)


UNICODE_NAMES = [
    pytest.param("🎟️ Gala 🎶🎉", id="emoji"),
    pytest.param("票" * 200, id="200 CJK"),
    pytest.param("🎉" * 200, id="200 astral emoji"),
    pytest.param("Café Zoë — naïve façade", id="accents"),
    pytest.param("e\u0301" * 100, id="combining marks"),
    pytest.param("עברית العربية", id="right to left"),
]


@pytest.mark.parametrize("name", UNICODE_NAMES)
def test_unicode_names_round_trip(conn: psycopg.Connection[Any], name: str) -> None:
    event = events.create_event(conn, name=name, starts_at=STARTS_AT, total_tickets=3)
    assert event.name == name
    assert events.get_event(conn, event.id).name == name
    assert [e.name for e in events.list_events(conn)] == [name]


@pytest.mark.parametrize("fingerprint", UNICODE_NAMES)
def test_unicode_fingerprints_and_keys_round_trip(
    conn: psycopg.Connection[Any], fingerprint: str
) -> None:
    event = events.create_event(conn, name="show", starts_at=STARTS_AT, total_tickets=3)
    hold = allocations.reserve(
        conn, event_id=event.id, fingerprint=fingerprint, quantity=1, idempotency_key=fingerprint
    )
    assert hold.fingerprint == fingerprint
    assert hold.idempotency_key == fingerprint
    assert allocations.list_for_buyer(conn, fingerprint=fingerprint) == [hold]
    bought = allocations.purchase(conn, allocation_id=hold.id, fingerprint=fingerprint)
    assert bought.status is AllocationStatus.PURCHASED
    again = allocations.reserve(
        conn, event_id=event.id, fingerprint=fingerprint, quantity=1, idempotency_key=fingerprint
    )
    assert again == bought


# --- raw psycopg errors never escape ---------------------------------------------------------


def _every_function(w: World) -> list[Callable[[psycopg.Connection[Any]], object]]:
    return [
        lambda c: events.create_event(c, name="n", starts_at=STARTS_AT, total_tickets=1),
        lambda c: events.get_event(c, w.event_id),
        lambda c: events.list_events(c),
        lambda c: events.get_availability(c, w.event_id),
        lambda c: allocations.reserve(c, event_id=w.event_id, fingerprint="carol", quantity=1),
        lambda c: allocations.purchase(c, allocation_id=w.hold_id, fingerprint="alice"),
        lambda c: allocations.cancel(c, allocation_id=w.bought_id, fingerprint="bob"),
        lambda c: allocations.get_allocation(c, w.hold_id),
        lambda c: allocations.list_for_buyer(c, fingerprint="alice"),
        lambda c: allocations.expire_due(c),
        lambda c: tickets.list_for_allocation(c, w.bought_id),
        lambda c: tickets.get_by_code(c, "c" * 22),
    ]


FUNCTION_NAMES = [
    "create_event",
    "get_event",
    "list_events",
    "get_availability",
    "reserve",
    "purchase",
    "cancel",
    "get_allocation",
    "list_for_buyer",
    "expire_due",
    "list_for_allocation",
    "get_by_code",
]


@pytest.mark.parametrize("index", range(len(FUNCTION_NAMES)), ids=FUNCTION_NAMES)
def test_closed_connection_raises_connection_lost(
    conn: psycopg.Connection[Any], dsn: str, world: World, index: int
) -> None:
    closed = db.connect(dsn)
    closed.close()
    with pytest.raises(TicketingError) as info:
        _every_function(world)[index](closed)
    assert isinstance(info.value, ConnectionLost)
    assert isinstance(info.value, DatabaseError)
    assert not isinstance(info.value, psycopg.Error)
    assert isinstance(info.value.__cause__, psycopg.Error)


def test_validation_comes_before_the_connection(dsn: str) -> None:
    closed = db.connect(dsn)
    closed.close()
    with pytest.raises(InvalidInput):
        events.get_event(closed, 0)


def test_terminated_backend_raises_connection_lost(
    conn: psycopg.Connection[Any], dsn: str, world: World
) -> None:
    victim = db.connect(dsn)
    try:
        assert events.get_event(victim, world.event_id).id == world.event_id
        row = conn.execute("SELECT pg_terminate_backend(%s)", (victim.info.backend_pid,)).fetchone()
        assert row == (True,)
        with pytest.raises(ConnectionLost) as info:
            events.get_event(victim, world.event_id)
        assert not isinstance(info.value, psycopg.Error)
    finally:
        victim.close()
    # Nothing else was hurt.
    assert events.get_event(conn, world.event_id).id == world.event_id


def test_aborted_caller_transaction_raises_database_error(dsn: str, world: World) -> None:
    with db.connect(dsn, autocommit=False) as tx_conn:
        with pytest.raises(psycopg.errors.UndefinedTable):
            tx_conn.execute("SELECT * FROM no_such_table")
        assert tx_conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR
        with pytest.raises(DatabaseError) as info:
            allocations.reserve(tx_conn, event_id=world.event_id, fingerprint="carol", quantity=1)
        assert not isinstance(info.value, psycopg.Error)
        assert not isinstance(info.value, ConnectionLost)
        tx_conn.rollback()
        assert events.get_event(tx_conn, world.event_id).id == world.event_id
