"""The migration files, and applying and rolling them back with migrate, yoyo's API and its CLI."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import pytest
from psycopg import conninfo
from pytest_postgresql.executors import NoopExecutor
from yoyo import get_backend, read_migrations

from tests.support import MIGRATION_IDS, REPO, free_port
from ticketing import admin as operator
from ticketing import allocations, db, events
from ticketing.errors import ConnectionLost, DatabaseError, InvalidInput, TicketingError

SQL_DIR = REPO / "sql"
YOYO = Path(sys.executable).parent / "yoyo"

OUR_TABLES = {
    "events",
    "allocations",
    "tickets",
    "event_inventory",
    "inventory_slots",
    "buyer_inventory",
    "ticket_number_pool",
    "event_counters",
    "allocation_history",
    "event_history",
}
OUR_FUNCTIONS = {
    "set_updated_at",
    "allocations_guard_transition",
    "allocations_guard_delete",
    "events_open_inventory",
    "inventory_slot_count",
    "inventory_layout",
    "inventory_resplit",
    "inventory_take",
    "inventory_move",
    "allocations_reclaim_lapsed",
    "events_guard_capacity",
    "inventory_apply",
    "allocations_apply_insert",
    "allocations_apply_updates",
    "inventory_count_buyers",
    "inventory_count_late",
    "events_guard_delete",
    "events_guard_id",
    "ticket_code",
    "ticket_numbers_take",
    "tickets_guard_insert",
    "tickets_guard_change",
    "events_check_ticket_numbers",
    "events_record_capacity",
    "ledger_guard_append_only",
}
OUR_TYPES = {"allocation_change"}
OUR_SEQUENCES = {  # identity columns
    "events_id_seq",
    "allocations_id_seq",
    "tickets_id_seq",
    "allocation_history_id_seq",
    "event_history_id_seq",
}
NOTHING: dict[str, set[str]] = {
    "tables": set(),
    "sequences": set(),
    "functions": set(),
    "types": set(),
}
EVERYTHING = {
    "tables": OUR_TABLES,
    "sequences": OUR_SEQUENCES,
    "functions": OUR_FUNCTIONS,
    "types": OUR_TYPES,
}

FILE_NAME = re.compile(
    r"^(?P<number>[0-9]{4})_(?P<slug>[a-z0-9]+(?:_[a-z0-9]+)*)(?P<rollback>\.rollback)?\.sql$"
)
DEPENDS = re.compile(r"^--\s*depends:(?P<names>.*)$")

# The public schema's objects, without yoyo's bookkeeping tables and without
# what extensions (btree_gist, which the rollback leaves in place) own.
_NOT_EXTENSION_MEMBER = """
    NOT EXISTS (SELECT 1 FROM pg_depend AS d
                WHERE d.classid = %(catalog)s::regclass AND d.objid = {oid} AND d.deptype = 'e')
"""
_RELATIONS = (
    "SELECT c.relname FROM pg_class AS c "
    "WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ({kinds}) "
    "AND c.relname NOT LIKE '\\_yoyo\\_%%' AND c.relname NOT LIKE 'yoyo\\_%%' AND "
    + _NOT_EXTENSION_MEMBER.format(oid="c.oid")
)
_TABLES = _RELATIONS.replace("{kinds}", "'r', 'p', 'v', 'm', 'f'")
_SEQUENCES = _RELATIONS.replace("{kinds}", "'S'")
_FUNCTIONS = (
    "SELECT p.proname FROM pg_proc AS p WHERE p.pronamespace = 'public'::regnamespace AND "
    + _NOT_EXTENSION_MEMBER.format(oid="p.oid")
)
_TYPES = (
    "SELECT t.typname FROM pg_type AS t "
    "LEFT JOIN pg_class AS c ON c.oid = t.typrelid "
    "WHERE t.typnamespace = 'public'::regnamespace "
    "AND (t.typtype IN ('e', 'd', 'r', 'm') OR (t.typtype = 'c' AND c.relkind = 'c')) AND "
    + _NOT_EXTENSION_MEMBER.format(oid="t.oid")
)


@dataclass(frozen=True)
class FreshDb:
    """An empty database of its own on the test server."""

    host: str
    port: int
    user: str
    password: str | None
    name: str

    def params(self, **overrides: Any) -> dict[str, Any]:
        params: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "dbname": self.name,
        }
        if self.password:
            params["password"] = self.password
        params.update(overrides)
        return params

    @property
    def url(self) -> str:
        auth = f"{self.user}:{self.password}" if self.password else self.user
        return f"postgresql://{auth}@{self.host}:{self.port}/{self.name}"

    @property
    def keyvalue(self) -> str:
        return conninfo.make_conninfo(**self.params())


def _admin(pg_server: NoopExecutor) -> psycopg.Connection[Any]:
    return psycopg.connect(
        host=pg_server.host,
        port=pg_server.port,
        user=pg_server.user,
        password=pg_server.password or None,
        dbname=pg_server.maintenance_dbname,
        autocommit=True,
    )


@pytest.fixture
def admin(pg_server: NoopExecutor) -> Iterator[psycopg.Connection[Any]]:
    """A connection to the server's maintenance database, for watching other databases."""
    connection = _admin(pg_server)
    try:
        yield connection
    finally:
        connection.close()


def _create_database(pg_server: NoopExecutor, name: str) -> Iterator[FreshDb]:
    with _admin(pg_server) as connection:
        connection.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
    try:
        yield FreshDb(
            host=pg_server.host,
            port=int(pg_server.port),
            user=pg_server.user,
            password=pg_server.password or None,
            name=name,
        )
    finally:
        with _admin(pg_server) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def fresh_db(pg_server: NoopExecutor) -> Iterator[FreshDb]:
    """A new, empty database (not cloned from the migrated template), dropped afterwards."""
    yield from _create_database(pg_server, f"mig_{uuid.uuid4().hex[:16]}")


@pytest.fixture
def spaced_db(pg_server: NoopExecutor) -> Iterator[FreshDb]:
    """A new, empty database whose name needs quoting in a DSN and escaping in a URL."""
    yield from _create_database(pg_server, f"mig {uuid.uuid4().hex[:12]}%x")


def _schema(fresh: FreshDb) -> dict[str, set[str]]:
    with psycopg.connect(**fresh.params(), autocommit=True) as connection:
        return {
            kind: {row[0] for row in connection.execute(sql, {"catalog": catalog}).fetchall()}
            for kind, sql, catalog in (
                ("tables", _TABLES, "pg_class"),
                ("sequences", _SEQUENCES, "pg_class"),
                ("functions", _FUNCTIONS, "pg_proc"),
                ("types", _TYPES, "pg_type"),
            )
        }


def _client_connections(admin: psycopg.Connection[Any], dbname: str) -> int:
    row = admin.execute(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = %s AND backend_type = 'client backend'",
        [dbname],
    ).fetchone()
    assert row is not None
    return int(row[0])


def _settled_connections(admin: psycopg.Connection[Any], dbname: str) -> int:
    """Client connections to `dbname` once closed ones have left (a backend exits just after
    its client hangs up); gives up after 15 s and returns the count it last saw."""
    deadline = time.monotonic() + 15
    count = _client_connections(admin, dbname)
    while count and time.monotonic() < deadline:
        time.sleep(0.05)
        count = _client_connections(admin, dbname)
    return count


def _yoyo(url: str, step: Callable[[Any, Any], Any], last: str = "9999") -> list[str]:
    """Run `step(backend, migrations)` with yoyo's API, under its lock, on the migrations
    up to `last`; return the ids of the migrations `step` returns."""
    backend = get_backend(db.yoyo_url(url))
    try:
        migrations = read_migrations(str(db.migrations_dir())).filter(lambda m: m.id <= last)
        with backend.lock():
            return [m.id for m in step(backend, migrations)]
    finally:
        backend.connection.close()


def _yoyo_rollback_all(url: str) -> list[str]:
    def step(backend: Any, migrations: Any) -> Any:
        applied = backend.to_rollback(migrations)
        backend.rollback_migrations(applied)
        return applied

    return _yoyo(url, step)


def _leading_comments(path: Path) -> list[str]:
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("--"):
            break
        lines.append(line)
    return lines


def _sql_files() -> list[Path]:
    return sorted(SQL_DIR.glob("*.sql"))


# --- the files ---------------------------------------------------------------------------


def test_migrate_uses_the_same_files_as_the_repositorys_sql_directory() -> None:
    # Installed from a wheel, migrations_dir() is the packaged copy: it must hold the same files.
    def contents(directory: Path) -> dict[str, bytes]:
        return {path.name: path.read_bytes() for path in directory.glob("*.sql")}

    assert contents(db.migrations_dir()) == contents(SQL_DIR)


def test_every_sql_file_is_a_migration_or_a_rollback() -> None:
    names = [path.name for path in _sql_files()]
    assert len(names) == 2 * len(MIGRATION_IDS)
    assert [name for name in names if not FILE_NAME.fullmatch(name)] == []


def test_migration_numbers_are_consecutive_from_0001() -> None:
    migrations = [
        match
        for path in _sql_files()
        if (match := FILE_NAME.fullmatch(path.name)) and not match["rollback"]
    ]
    assert [int(match["number"]) for match in migrations] == list(range(1, len(migrations) + 1))
    assert [f"{match['number']}_{match['slug']}" for match in migrations] == MIGRATION_IDS


def test_every_migration_has_a_rollback_and_every_rollback_a_migration() -> None:
    stems = {path.name.removesuffix(".sql") for path in _sql_files()}
    migrations = {stem for stem in stems if not stem.endswith(".rollback")}
    rollbacks = {stem.removesuffix(".rollback") for stem in stems if stem.endswith(".rollback")}
    assert migrations == set(MIGRATION_IDS)
    assert rollbacks == migrations


def test_each_migration_depends_on_the_previous_one() -> None:
    for position, migration_id in enumerate(MIGRATION_IDS):
        header = _leading_comments(SQL_DIR / f"{migration_id}.sql")
        depends = [
            m["names"].replace(",", " ").split() for line in header if (m := DEPENDS.match(line))
        ]
        if position == 0:
            assert depends in ([], [[]]), migration_id
        else:
            assert depends == [[MIGRATION_IDS[position - 1]]], migration_id


def test_rollback_files_declare_no_dependencies() -> None:
    for migration_id in MIGRATION_IDS:
        text = (SQL_DIR / f"{migration_id}.rollback.sql").read_text(encoding="utf-8")
        assert [line for line in text.splitlines() if DEPENDS.match(line)] == [], migration_id


def test_yoyo_reads_the_migrations_in_order_with_the_same_dependencies() -> None:
    migrations = read_migrations(str(db.migrations_dir()))
    assert [m.id for m in migrations] == MIGRATION_IDS
    for position, migration in enumerate(migrations):
        migration.load()
        expected = set() if position == 0 else {MIGRATION_IDS[position - 1]}
        assert {dep.id for dep in migration.depends} == expected, migration.id


# --- applying and rolling back -----------------------------------------------------------


def test_migrate_applies_all_then_nothing_then_again_after_a_rollback(fresh_db: FreshDb) -> None:
    assert _schema(fresh_db) == NOTHING

    assert db.migrate(fresh_db.url) == MIGRATION_IDS
    assert _schema(fresh_db) == EVERYTHING
    assert db.migrate(fresh_db.url) == []

    assert _yoyo_rollback_all(fresh_db.url) == list(reversed(MIGRATION_IDS))
    assert _schema(fresh_db) == NOTHING

    assert db.migrate(fresh_db.url) == MIGRATION_IDS
    assert _schema(fresh_db) == EVERYTHING
    assert db.migrate(fresh_db.url) == []


def test_yoyo_command_line_applies_rolls_back_and_reapplies(fresh_db: FreshDb) -> None:
    env = {**os.environ, "DATABASE_URL": db.yoyo_url(fresh_db.url)}

    def yoyo(*args: str) -> None:
        done = subprocess.run(
            [str(YOYO), *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, (args, done.stdout, done.stderr)

    yoyo("apply")
    assert _schema(fresh_db) == EVERYTHING
    yoyo("rollback", "--all")
    assert _schema(fresh_db) == NOTHING
    yoyo("apply")
    assert _schema(fresh_db) == EVERYTHING
    # The command line and migrate keep the same books.
    assert db.migrate(fresh_db.url) == []


def test_yoyo_takes_the_url_form_the_docs_show_and_refuses_plain_postgresql(
    fresh_db: FreshDb,
) -> None:
    # docs/operations.md: yoyo picks its driver from the scheme; postgresql:// means psycopg2,
    # which is not installed, and postgresql+psycopg:// means psycopg 3.
    plain = fresh_db.url
    shown = "postgresql+psycopg://" + plain.removeprefix("postgresql://")

    def yoyo(url: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "DATABASE_URL": url}
        return subprocess.run(
            [str(YOYO), "apply"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
        )

    refused = yoyo(plain)
    assert refused.returncode != 0
    assert "No module named 'psycopg2'" in refused.stderr
    assert _schema(fresh_db) == NOTHING
    applied = yoyo(shown)
    assert applied.returncode == 0, applied.stderr
    assert _schema(fresh_db) == EVERYTHING
    assert db.pending_migrations(plain) == []


@pytest.mark.parametrize(
    "form",
    ["postgresql_url", "postgres_url", "yoyo_url", "keyvalue", "keyvalue_with_options"],
)
def test_migrate_accepts_each_dsn_form_and_closes_its_connection(
    form: str, fresh_db: FreshDb, admin: psycopg.Connection[Any]
) -> None:
    dsn = {
        "postgresql_url": fresh_db.url,
        "postgres_url": "postgres://" + fresh_db.url.removeprefix("postgresql://"),
        "yoyo_url": db.yoyo_url(fresh_db.url),
        "keyvalue": fresh_db.keyvalue,
        "keyvalue_with_options": conninfo.make_conninfo(
            **fresh_db.params(application_name="ticketing migrate", connect_timeout=10)
        ),
    }[form]
    assert _client_connections(admin, fresh_db.name) == 0

    assert db.migrate(dsn) == MIGRATION_IDS
    assert _settled_connections(admin, fresh_db.name) == 0
    assert db.migrate(dsn) == []
    assert _settled_connections(admin, fresh_db.name) == 0
    assert _schema(fresh_db) == EVERYTHING


@pytest.mark.parametrize("form", ["keyvalue", "url"])
def test_migrate_reaches_a_database_whose_name_needs_escaping(
    form: str, spaced_db: FreshDb, admin: psycopg.Connection[Any]
) -> None:
    dsn = {
        "keyvalue": spaced_db.keyvalue,
        "url": spaced_db.url.rsplit("/", 1)[0] + "/" + quote(spaced_db.name, safe=""),
    }[form]
    # libpq (and so ticketing.db.connect) reads both as this database.
    with db.connect(dsn) as connection:
        assert connection.info.dbname == spaced_db.name
    assert db.migrate(dsn) == MIGRATION_IDS
    assert _schema(spaced_db) == EVERYTHING
    assert _settled_connections(admin, spaced_db.name) == 0


def test_migrate_reaches_the_server_over_its_unix_socket(
    fresh_db: FreshDb, admin: psycopg.Connection[Any]
) -> None:
    row = admin.execute("SHOW unix_socket_directories").fetchone()
    assert row is not None
    socket_dir = str(row[0]).split(",")[0].strip()
    assert socket_dir.startswith("/")
    dsn = conninfo.make_conninfo(**fresh_db.params(host=socket_dir))
    with db.connect(dsn) as connection:
        assert connection.info.dbname == fresh_db.name
    assert db.migrate(dsn) == MIGRATION_IDS
    assert _schema(fresh_db) == EVERYTHING


def test_a_failing_migration_raises_a_ticketing_error_and_closes_the_connection(
    fresh_db: FreshDb, admin: psycopg.Connection[Any]
) -> None:
    with psycopg.connect(**fresh_db.params(), autocommit=True) as connection:
        connection.execute("CREATE TABLE events (id integer)")
    assert _settled_connections(admin, fresh_db.name) == 0

    with pytest.raises(DatabaseError) as raised:
        db.migrate(fresh_db.url)
    assert type(raised.value) is DatabaseError
    assert isinstance(raised.value.__cause__, psycopg.errors.DuplicateTable)
    assert _settled_connections(admin, fresh_db.name) == 0
    # 0001 ran in one transaction: its function went with it.
    assert _schema(fresh_db) == {**NOTHING, "tables": {"events"}}


# --- bad connection strings --------------------------------------------------------------

GARBAGE = {
    "prose": "not a connection string",
    "mysql_url": "mysql://root@{host}/{dbname}",
    "sqlite_url": "sqlite:///{dbname}.db",
    "unknown_keyword": "host={host} flavour=vanilla",
    "dangling_keyword": "x=",
    "unknown_url_option": "postgresql://{user}@{host}:{port}/{dbname}?flavour=vanilla",
    "bad_sslmode": "postgresql://{user}@{host}:{port}/{dbname}?sslmode=bogus",
    "url_port_not_a_number": "postgresql://{user}@{host}:notaport/{dbname}",
    "url_port_out_of_range": "postgresql://{user}@{host}:99999/{dbname}",
    "keyvalue_port_not_a_number": "host={host} port=abc user={user} dbname={dbname}",
    "unclosed_ipv6_bracket": "postgresql://{user}@[::1:{port}/{dbname}",
    "keyvalue_with_nul": "host={host} port={port} user={user} dbname={dbname}\x00junk",
    "url_with_nul": "postgresql://{user}@{host}:{port}/{dbname}\x00junk",
}


@pytest.mark.parametrize("case", sorted(GARBAGE))
def test_migrate_of_a_bad_connection_string_raises_invalid_input_or_connection_lost(
    case: str, fresh_db: FreshDb, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Whatever libpq falls back to is this test's own empty database, so a
    # string that is wrongly accepted migrates nothing else.
    for var in ("PGSERVICE", "PGSERVICEFILE", "PGHOSTADDR", "PGOPTIONS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PGHOST", fresh_db.host)
    monkeypatch.setenv("PGPORT", str(fresh_db.port))
    monkeypatch.setenv("PGUSER", fresh_db.user)
    monkeypatch.setenv("PGDATABASE", fresh_db.name)
    dsn = GARBAGE[case].format(
        host=fresh_db.host, port=fresh_db.port, user=fresh_db.user, dbname=fresh_db.name
    )

    with pytest.raises((InvalidInput, ConnectionLost)) as raised:
        db.migrate(dsn)
    assert isinstance(raised.value, TicketingError)
    assert _schema(fresh_db) == NOTHING


@pytest.mark.parametrize("form", ["url", "keyvalue"])
def test_migrate_of_an_unreachable_port_raises_connection_lost(
    form: str, pg_server: NoopExecutor
) -> None:
    port = free_port()
    dsn = {
        "url": f"postgresql://{pg_server.user}@127.0.0.1:{port}/ticketing",
        "keyvalue": f"host=127.0.0.1 port={port} user={pg_server.user} dbname=ticketing",
    }[form]
    with pytest.raises(ConnectionLost) as raised:
        db.migrate(dsn)
    assert isinstance(raised.value.__cause__, psycopg.OperationalError)


def _apply_up_to(url: str, last: str) -> list[str]:
    def step(backend: Any, migrations: Any) -> Any:
        pending = backend.to_apply(migrations)
        backend.apply_migrations(pending)
        return pending

    return _yoyo(url, step, last)


def test_the_ledger_opens_with_the_rows_that_existed_before_it(fresh_db: FreshDb) -> None:
    assert _apply_up_to(fresh_db.url, "0006_events_starts_at_validate") == MIGRATION_IDS[:6]
    with db.connect(fresh_db.url) as conn:
        event = events.create_event(
            conn,
            name="before",
            starts_at=datetime(2030, 1, 1, tzinfo=UTC),
            total_tickets=10,
            max_per_buyer=4,
        )
        held = allocations.reserve(conn, event_id=event.id, fingerprint="ann", quantity=2)
        bought = allocations.reserve(conn, event_id=event.id, fingerprint="bob", quantity=3)
        allocations.purchase(conn, allocation_id=bought.id, fingerprint="bob")
    assert db.migrate(fresh_db.url) == [
        "0007_ledger",
        "0008_roles",
        "0009_lean_write_path",
        "0010_counters_for_limits",
        "0011_comments",
    ]
    with db.connect(fresh_db.url) as conn:
        assert operator.check_invariants(conn) == []
        entries = conn.execute(
            "SELECT allocation_id, old_status, new_status, new_quantity "
            "FROM allocation_history ORDER BY id"
        ).fetchall()
        assert entries == [(held.id, None, "reserved", 2), (bought.id, None, "purchased", 3)]
        assert conn.execute(
            "SELECT event_id, created, new_total_tickets, new_max_per_buyer FROM event_history"
        ).fetchall() == [(event.id, True, 10, 4)]
        allocations.cancel(conn, allocation_id=bought.id, fingerprint="bob")
        assert operator.check_invariants(conn) == []


def test_rolling_back_the_roles_returns_every_object_and_revokes_every_grant(
    fresh_db: FreshDb,
) -> None:
    counts = (
        "SELECT (SELECT count(*) FROM pg_class WHERE relowner = 'ticketing_owner'::regrole"
        "        AND relkind IN ('r', 'v', 'S')"
        "        AND relnamespace = 'public'::regnamespace),"
        " (SELECT count(*) FROM pg_proc WHERE proowner = 'ticketing_owner'::regrole"
        "        AND pronamespace = 'public'::regnamespace),"
        " (SELECT count(*) FROM pg_proc WHERE prosecdef AND pronamespace = 'public'::regnamespace),"
        " has_table_privilege('ticketing_app', 'public.allocations', 'SELECT'),"
        " (SELECT count(*) > 0 FROM pg_namespace AS n, aclexplode(n.nspacl) AS a"
        "  WHERE n.nspname = 'public' AND a.grantee = 'ticketing_app'::regrole)"
    )
    assert db.migrate(fresh_db.url) == MIGRATION_IDS
    with psycopg.connect(**fresh_db.params(), autocommit=True) as conn:
        # 9 tables, 1 view and 5 identity sequences; 25 functions, 6 of them SECURITY DEFINER
        # (0009 replaced four trigger functions and the insert guard with two, and added the
        # two event guards; 0010 added the two buyer-counting helpers).
        assert conn.execute(counts).fetchone() == (15, 25, 6, True, True)
    assert db.rollback_last(fresh_db.url) == ["0011_comments"]
    assert db.rollback_last(fresh_db.url) == ["0010_counters_for_limits"]
    with psycopg.connect(**fresh_db.params(), autocommit=True) as conn:
        assert conn.execute(counts).fetchone() == (15, 23, 6, True, True)
    assert db.rollback_last(fresh_db.url) == ["0009_lean_write_path"]
    with psycopg.connect(**fresh_db.params(), autocommit=True) as conn:
        # 0008's state: 24 functions, 7 of them SECURITY DEFINER.
        assert conn.execute(counts).fetchone() == (15, 24, 7, True, True)
    assert db.rollback_last(fresh_db.url) == ["0008_roles"]
    with psycopg.connect(**fresh_db.params(), autocommit=True) as conn:
        assert conn.execute(counts).fetchone() == (0, 0, 0, False, False)
    assert db.migrate(fresh_db.url) == [
        "0008_roles",
        "0009_lean_write_path",
        "0010_counters_for_limits",
        "0011_comments",
    ]
    with psycopg.connect(**fresh_db.params(), autocommit=True) as conn:
        assert conn.execute(counts).fetchone() == (15, 25, 6, True, True)
