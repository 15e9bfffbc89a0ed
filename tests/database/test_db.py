"""Connections and pools from ticketing.db, and their errors."""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import parse_qsl

import psycopg
import pytest
from psycopg import conninfo
from psycopg_pool import ConnectionPool

from tests.support import MIGRATION_IDS, STARTS_AT, free_port
from ticketing import allocations, db, events, tickets
from ticketing.errors import ConnectionLost, Forbidden, InvalidInput, TicketingError


def _show(conn: psycopg.Connection[Any], setting: str) -> str:
    row = conn.execute("SELECT current_setting(%s)", (setting,)).fetchone()
    assert row is not None
    return str(row[0])


def _sell_one(conn: psycopg.Connection[Any], name: str) -> int:
    """Create an event and buy one ticket of it through the API; return the event id."""
    event = events.create_event(conn, name=name, starts_at=STARTS_AT, total_tickets=3)
    hold = allocations.reserve(conn, event_id=event.id, fingerprint="alice", quantity=1)
    bought = allocations.purchase(conn, allocation_id=hold.id, fingerprint="alice")
    assert [t.number for t in tickets.list_for_allocation(conn, bought.id)] == [1]
    return event.id


# --- connect -------------------------------------------------------------------------------


def test_connect_is_autocommit_by_default(dsn: str) -> None:
    conn = db.connect(dsn)
    try:
        assert isinstance(conn, psycopg.Connection)
        assert conn.autocommit is True
        assert not conn.closed
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        event_id = _sell_one(conn, "direct")
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    finally:
        conn.close()
    with db.connect(dsn) as other:
        assert events.get_availability(other, event_id).purchased == 1


def test_connect_honours_autocommit_false(dsn: str) -> None:
    conn = db.connect(dsn, autocommit=False)
    try:
        assert conn.autocommit is False
        with conn.transaction():
            event = events.create_event(conn, name="tx", starts_at=STARTS_AT, total_tickets=1)
        assert events.get_event(conn, event.id) == event
    finally:
        conn.close()


def test_connect_passes_connection_options(dsn: str) -> None:
    with db.connect(dsn, application_name="ticketing-tests") as conn:
        assert _show(conn, "application_name") == "ticketing-tests"
        assert conn.autocommit is True


def test_connect_accepts_key_value_and_yoyo_style_dsns(dsn: str) -> None:
    key_value = conninfo.make_conninfo(**conninfo.conninfo_to_dict(dsn))
    assert "://" not in key_value
    yoyo_style = "postgresql+psycopg://" + dsn.removeprefix("postgresql://")
    dbname = conninfo.conninfo_to_dict(dsn)["dbname"]
    for form in (key_value, yoyo_style):
        with db.connect(form) as conn:
            assert conn.info.dbname == dbname
            assert conn.autocommit is True
            assert events.list_events(conn) == []


def test_connect_to_a_closed_port_raises_connection_lost() -> None:
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/ticketing"
    with pytest.raises(ConnectionLost) as info:
        db.connect(url, connect_timeout=3)
    assert not isinstance(info.value, psycopg.Error)
    assert isinstance(info.value.__cause__, psycopg.OperationalError)


def test_connect_to_a_missing_database_raises_connection_lost(dsn: str) -> None:
    url = dsn.rsplit("/", 1)[0] + "/no_such_database_for_ticketing"
    with pytest.raises(ConnectionLost):
        db.connect(url, connect_timeout=3)


@pytest.mark.parametrize(
    "bad",
    [
        "this is not a dsn",
        "postgresql://[bad",
        "host=127.0.0.1 port='unterminated",
        "mysql://user@localhost/db",
    ],
)
def test_connect_with_a_malformed_dsn_raises_a_ticketing_error(bad: str) -> None:
    with pytest.raises(TicketingError) as info:
        db.connect(bad, connect_timeout=3)
    assert isinstance(info.value, InvalidInput)
    assert isinstance(info.value, ValueError)
    assert not isinstance(info.value, psycopg.Error)


def test_connect_with_an_invalid_option_value_raises_a_ticketing_error() -> None:
    with pytest.raises(TicketingError) as info:
        db.connect("host=127.0.0.1 port=notaport dbname=x", connect_timeout=3)
    assert not isinstance(info.value, psycopg.Error)


def test_connect_with_wrong_credentials_raises_a_ticketing_error(dsn: str) -> None:
    params = conninfo.conninfo_to_dict(dsn)
    params["user"] = "no_such_role_for_ticketing"
    with pytest.raises(TicketingError) as info:
        db.connect(conninfo.make_conninfo(**params), connect_timeout=3)
    assert isinstance(info.value, ConnectionLost)


# --- create_pool ---------------------------------------------------------------------------


def test_create_pool_returns_a_working_autocommit_pool(dsn: str) -> None:
    pool = db.create_pool(dsn)
    try:
        assert isinstance(pool, ConnectionPool)
        assert pool.min_size == db.POOL_MIN_SIZE == 2
        assert pool.max_size == db.POOL_MAX_SIZE == 4 * (os.cpu_count() or 2)
        assert not pool.closed
        pool.wait(timeout=10)
        with pool.connection() as first, pool.connection() as second:
            assert first is not second
            assert first.autocommit is True
            assert second.autocommit is True
            event_id = _sell_one(first, "pooled")
            # The first connection's work is committed: the second sees it at once.
            assert events.get_availability(second, event_id).purchased == 1
            hold = allocations.reserve(second, event_id=event_id, fingerprint="bob", quantity=2)
            assert allocations.get_allocation(first, hold.id) == hold
        with pool.connection() as again:
            assert again.autocommit is True
            assert again.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
            assert events.get_availability(again, event_id).available == 0
    finally:
        pool.close()
    assert pool.closed


def test_create_pool_passes_sizes_and_connection_options(dsn: str) -> None:
    pool = db.create_pool(
        dsn, min_size=1, max_size=3, kwargs={"application_name": "ticketing-pool"}
    )
    try:
        assert (pool.min_size, pool.max_size) == (1, 3)
        with pool.connection() as conn:
            assert conn.autocommit is True
            assert _show(conn, "application_name") == "ticketing-pool"
    finally:
        pool.close()


def test_create_pool_max_size_is_at_least_min_size(dsn: str) -> None:
    pool = db.create_pool(dsn, min_size=20, open=False)
    try:
        assert (pool.min_size, pool.max_size) == (20, 20)
        assert pool.closed
    finally:
        pool.close()


def test_create_pool_honours_autocommit_false(dsn: str) -> None:
    pool = db.create_pool(dsn, min_size=1, max_size=1, kwargs={"autocommit": False})
    try:
        with pool.connection() as conn:
            assert conn.autocommit is False
            event = events.create_event(
                conn, name="pooled tx", starts_at=STARTS_AT, total_tickets=1
            )
        # The pool committed the connection's transaction when it was returned.
        with db.connect(dsn) as other:
            assert events.get_event(other, event.id) == event
    finally:
        pool.close()


# --- migrations helpers on an up-to-date database ------------------------------------------


def test_migrate_on_an_up_to_date_database_applies_nothing(admin_dsn: str) -> None:
    assert db.migration_ids() == MIGRATION_IDS
    assert db.pending_migrations(admin_dsn) == []
    assert db.migrate(admin_dsn) == []
    assert db.pending_migrations(admin_dsn) == []
    assert (db.migrations_dir() / "0001_events.sql").is_file()


def test_the_application_role_sees_pending_migrations_but_cannot_migrate(dsn: str) -> None:
    assert db.pending_migrations(dsn) == []
    with pytest.raises(Forbidden, match="may not apply or roll back migrations"):
        db.migrate(dsn)
    with pytest.raises(Forbidden, match="may not apply or roll back migrations"):
        db.rollback_last(dsn)
    assert db.pending_migrations(dsn) == []


def test_yoyo_url_forms() -> None:
    def params(url: str) -> dict[str, str]:
        assert url.startswith("postgresql+psycopg:///?")
        return dict(parse_qsl(url.split("?", 1)[1]))

    assert params(db.yoyo_url("postgresql://u@h:5/d")) == {
        "user": "u",
        "host": "h",
        "port": "5",
        "dbname": "d",
    }
    assert params(db.yoyo_url("postgres://u@h/d")) == {"user": "u", "host": "h", "dbname": "d"}
    assert params(db.yoyo_url("postgresql+psycopg://u@h/d")) == {
        "user": "u",
        "host": "h",
        "dbname": "d",
    }
    assert params(
        db.yoyo_url("host=h port=5 user=u password=p@ss dbname='d x' sslmode=disable")
    ) == {
        "host": "h",
        "port": "5",
        "user": "u",
        "password": "p@ss",
        "dbname": "d x",
        "sslmode": "disable",
    }
    with pytest.raises(InvalidInput):
        db.yoyo_url("not a dsn")
    with pytest.raises(InvalidInput):
        db.yoyo_url("dbname=x\x00y")


def test_migrate_to_a_closed_port_raises_connection_lost() -> None:
    with pytest.raises(ConnectionLost):
        db.migrate(f"postgresql://postgres@127.0.0.1:{free_port()}/ticketing")


@pytest.mark.parametrize("bad", ["this is not a dsn", "postgresql://[bad"])
def test_migrate_with_a_malformed_dsn_raises_a_ticketing_error(bad: str) -> None:
    with pytest.raises(TicketingError) as info:
        db.migrate(bad)
    assert isinstance(info.value, InvalidInput)
