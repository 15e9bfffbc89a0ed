"""Test servers and databases.

The schema is built once per run, by applying the real migrations with yoyo,
into a template database (pytest-postgresql's janitor); every test gets its
own clone. The server is the one at TICKETING_TEST_HOST:TICKETING_TEST_PORT
(default 127.0.0.1:5432, user postgres) when it answers, otherwise a
throwaway cluster started by ticketing.embedded, the same code the
`ticketing` command uses (as the postgres OS user when running as root).
Set TICKETING_TEST_SERVER=throwaway to force the latter.

Tests use the API the way a service does: `dsn` and `conn` log in as
APP_LOGIN, a login role that holds only ticketing_app (migration 0008).
`admin_dsn` and `admin_conn` are the superuser that ran the migrations, for
tests that need what the application may not do (DDL, capacity changes,
writes to internal tables, terminating backends).
`shared_admin_dsn` and `shared_admin_conn` are that superuser too, on one
database shared by all the tests of a module, for modules whose tests each
work on events of their own (the raw SQL tests).

Helpers that are not fixtures (constants, factories, the consistency checks)
are in tests/support.py.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
from pytest_postgresql import factories
from pytest_postgresql.executors import NoopExecutor
from pytest_postgresql.janitor import DatabaseJanitor

from tests.support import APP_LOGIN
from ticketing import db, embedded

HOST = os.environ.get("TICKETING_TEST_HOST", "127.0.0.1")
PORT = int(os.environ.get("TICKETING_TEST_PORT", "5432"))
USER = os.environ.get("TICKETING_TEST_USER", "postgres")
# Per run, so that concurrent runs against one server do not share a template.
TEST_DBNAME = f"ticketing_tests_{os.getpid()}"
# APP_LOGIN (tests/support.py) is a login role with ticketing_app's privileges and no
# others; roles belong to the cluster: created once, shared by every test database.
# Role statements are cluster-wide: concurrent runs take turns (a transaction-level
# advisory lock; "tuple concurrently updated" otherwise).
CREATE_APP_LOGIN = f"""
SELECT pg_advisory_xact_lock(hashtext('{APP_LOGIN}'));
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{APP_LOGIN}') THEN
        CREATE ROLE {APP_LOGIN} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END
$$;
ALTER ROLE {APP_LOGIN} INHERIT;
GRANT ticketing_app TO {APP_LOGIN};
"""


def _url(host: str, port: int | str, user: str, dbname: str, password: str | None) -> str:
    auth = f"{user}:{password}" if password else user
    return f"postgresql://{auth}@{host}:{port}/{dbname}"


def apply_migrations(host: str, port: int, user: str, dbname: str, **kwargs: Any) -> None:
    """pytest-postgresql loader: build the template with the real migrations."""
    applied = db.migrate(_url(host, port, user, dbname, kwargs.get("password")))
    assert applied, "the template database got no migrations"


def _server_answers() -> bool:
    if os.environ.get("TICKETING_TEST_SERVER") == "throwaway":
        return False
    try:
        psycopg.connect(_url(HOST, PORT, USER, "postgres", None), connect_timeout=3).close()
    except psycopg.Error:
        return False
    return True


pg_running = factories.postgresql_noproc(
    host=HOST, port=PORT, user=USER, dbname=TEST_DBNAME, load=[apply_migrations]
)


@pytest.fixture(scope="session")
def pg_throwaway() -> Iterator[NoopExecutor]:
    """A throwaway cluster for this run, with the template database built."""
    with embedded.running() as server:
        executor = NoopExecutor(
            host=server.host, port=server.port, user=server.user, options="", dbname=TEST_DBNAME
        )
        janitor = DatabaseJanitor(
            user=executor.user,
            host=executor.host,
            port=executor.port,
            dbname=executor.template_dbname,
            as_template=True,
        )
        with janitor:
            janitor.load(apply_migrations)
            yield executor


@pytest.fixture(scope="session")
def pg_server(request: pytest.FixtureRequest) -> NoopExecutor:
    """The server under test, with the template database built."""
    name = "pg_running" if _server_answers() else "pg_throwaway"
    server: NoopExecutor = request.getfixturevalue(name)
    url = _url(server.host, server.port, server.user, "postgres", server.password)
    with psycopg.connect(url) as admin, admin.transaction():
        admin.execute(CREATE_APP_LOGIN)
    return server


@contextmanager
def _cloned_database(pg_server: NoopExecutor) -> Iterator[str]:
    """A fresh database cloned from the migrated template, dropped on exit; its superuser URL."""
    dbname = f"t_{uuid.uuid4().hex[:16]}"
    janitor = DatabaseJanitor(
        user=pg_server.user,
        host=pg_server.host,
        port=pg_server.port,
        dbname=dbname,
        template_dbname=pg_server.template_dbname,
        password=pg_server.password,
    )
    with janitor:
        yield _url(pg_server.host, pg_server.port, pg_server.user, dbname, pg_server.password)


@pytest.fixture
def admin_dsn(pg_server: NoopExecutor) -> Iterator[str]:
    """A fresh database cloned from the migrated template; its superuser URL."""
    with _cloned_database(pg_server) as url:
        yield url


@pytest.fixture
def dsn(admin_dsn: str) -> str:
    """The same database's URL for APP_LOGIN, which holds only ticketing_app."""
    params = psycopg.conninfo.conninfo_to_dict(admin_dsn)
    return _url(str(params["host"]), str(params["port"]), APP_LOGIN, str(params["dbname"]), None)


@pytest.fixture
def conn(dsn: str) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection as APP_LOGIN, as `ticketing.db.connect` opens it."""
    with db.connect(dsn) as connection:
        yield connection


@pytest.fixture
def admin_conn(admin_dsn: str) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit superuser connection to the same database."""
    with db.connect(admin_dsn) as connection:
        yield connection


@pytest.fixture(scope="module")
def shared_admin_dsn(pg_server: NoopExecutor) -> Iterator[str]:
    """One database cloned from the migrated template for all the tests of a module; its
    superuser URL.

    For tests that each work on events of their own and compare only their rows: sharing
    costs them no isolation, and saves a database clone per test, which is most of a test's
    time. A test that may leave the database inconsistent uses `admin_conn` instead.
    """
    with _cloned_database(pg_server) as url:
        yield url


@pytest.fixture
def shared_admin_conn(shared_admin_dsn: str) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit superuser connection to the module's shared database."""
    with db.connect(shared_admin_dsn) as connection:
        yield connection
