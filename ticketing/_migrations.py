"""Migrations: the SQL files of `sql/` (shipped in the wheel as `ticketing/sql`), applied by yoyo.

`migrate` applies the same files `yoyo apply` applies, and takes any URL form
`parse_dsn` reads; yoyo itself needs postgresql+psycopg:// (`yoyo_url`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from psycopg import sql
from yoyo import get_backend, read_migrations
from yoyo.connections import BadConnectionURI
from yoyo.exceptions import LockTimeout

from ticketing._connections import connect, parse_dsn, with_dbname
from ticketing._tx import guarded
from ticketing.errors import Busy, Forbidden, InvalidInput
from ticketing.queries import load

_Q = load("migrations.sql")


def migrations_dir() -> Path:
    """Where the migration files are: inside the package when installed, else the repo's sql/."""
    packaged = Path(str(resources.files("ticketing"))) / "sql"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent / "sql"


def yoyo_url(dsn: str) -> str:
    """The yoyo URL (postgresql+psycopg://...) for a libpq URL or key=value DSN.

    The string is parsed by libpq's rules first (so a malformed one is
    `InvalidInput` here, not an error deep in yoyo), and every parameter goes
    into the query string, which yoyo decodes and hands to psycopg unchanged:
    database names that need escaping and socket directories survive.
    """
    return "postgresql+psycopg:///?" + urlencode(parse_dsn(dsn))


def _check_may_migrate(dsn: str) -> None:
    with connect(dsn) as conn:
        row = guarded(lambda: conn.execute(_Q["may_take_migration_lock"]).fetchone())
    if row is None or not row[0]:
        raise Forbidden(
            "this login may not apply or roll back migrations (no INSERT on yoyo_lock):"
            " run them as a superuser"
        )


def _with_backend(dsn: str, step: Callable[[Any, Any], list[str]]) -> list[str]:
    """Run `step(backend, migrations)` under yoyo's lock; always close yoyo's connection."""

    def run() -> list[str]:
        try:
            backend = get_backend(yoyo_url(dsn))
        except (BadConnectionURI, ValueError) as exc:  # urlsplit rejects some URLs outright
            raise InvalidInput(f"not a PostgreSQL URL: {exc}") from exc
        try:
            _check_may_migrate(dsn)
            migrations = read_migrations(str(migrations_dir()))
            try:
                with backend.lock():
                    return step(backend, migrations)
            except LockTimeout as exc:
                raise Busy(f"another process holds the migration lock: {exc}") from exc
        finally:
            backend.connection.close()

    return guarded(run)


def migrate(dsn: str) -> list[str]:
    """Apply pending migrations; return the ids applied ([] when up to date)."""

    def step(backend: Any, migrations: Any) -> list[str]:
        pending = backend.to_apply(migrations)
        backend.apply_migrations(pending)
        return [m.id for m in pending]

    return _with_backend(dsn, step)


def rollback_last(dsn: str) -> list[str]:
    """Roll back the most recently applied migration; return its id ([] when none applied)."""

    def step(backend: Any, migrations: Any) -> list[str]:
        applied = backend.to_rollback(migrations)
        last = applied[:1]
        backend.rollback_migrations(last)
        return [m.id for m in last]

    return _with_backend(dsn, step)


def migration_ids() -> list[str]:
    """The ids of the migration files, in order."""
    return sorted(
        path.name.removesuffix(".sql")
        for path in migrations_dir().glob("[0-9]*.sql")
        if not path.name.endswith(".rollback.sql")
    )


def pending_migrations(dsn: str) -> list[str]:
    """Migrations not yet applied to the database, without changing anything in it."""
    with connect(dsn) as conn:
        exists = guarded(lambda: conn.execute(_Q["migrations_table"]).fetchone())
        applied: set[str] = set()
        if exists is not None and exists[0] is not None:
            rows = guarded(lambda: conn.execute(_Q["applied_migrations"]).fetchall())
            applied = {row[0] for row in rows}
    return [mid for mid in migration_ids() if mid not in applied]


@contextmanager
def migrated_database(server_url: str, dbname: str) -> Iterator[str]:
    """A new empty database `dbname` on the server of `server_url`, migrated; its URL.

    Dropped on exit. The login needs CREATEDB (or to be a superuser).
    """
    name = sql.Identifier(dbname)
    with connect(server_url) as conn:
        guarded(lambda: conn.execute(sql.SQL(_Q["create_empty_database"]).format(name=name)))
    try:
        url = with_dbname(server_url, dbname)
        migrate(url)
        yield url
    finally:
        with connect(server_url) as conn:
            guarded(lambda: conn.execute(sql.SQL(_Q["drop_database"]).format(name=name)))
