"""Connections, pools and migrations.

`migrate` applies the SQL files of `sql/` (shipped in the wheel as
`ticketing/sql`) with yoyo, the same migrations `yoyo apply` applies.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import psycopg
from psycopg import conninfo
from psycopg_pool import ConnectionPool
from yoyo import get_backend, read_migrations
from yoyo.connections import BadConnectionURI
from yoyo.exceptions import LockTimeout

from ticketing._tx import guarded
from ticketing.errors import Busy, Forbidden, InvalidInput, TicketingError

#: Default size of a pool from `create_pool`: four connections per core keep
#: the cores busy while some connections wait on commits and the network;
#: more only queue inside the server.
POOL_MIN_SIZE = 2
POOL_MAX_SIZE = 4 * (os.cpu_count() or 2)
#: The layer runs a fixed set of named statements: prepare each on first use.
PREPARE_THRESHOLD = 0


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
    if "\x00" in dsn:
        raise InvalidInput("the database URL must not contain NUL characters")
    try:
        params = conninfo.conninfo_to_dict(_libpq_dsn(dsn))
    except psycopg.ProgrammingError as exc:
        raise InvalidInput(f"invalid database URL: {exc}") from exc
    return "postgresql+psycopg:///?" + urlencode({k: str(v) for k, v in params.items()})


def _libpq_dsn(dsn: str) -> str:
    """Accept yoyo-style URLs too: postgresql+psycopg:// is postgresql:// to libpq."""
    if dsn.startswith("postgresql+psycopg://"):
        return "postgresql://" + dsn[len("postgresql+psycopg://") :]
    return dsn


# yoyo retries a refused lock insert for 10 s, as if another process held the
# lock: a login without the privilege (ticketing_app) is told at once instead.
_MAY_LOCK = "SELECT to_regclass('yoyo_lock') IS NULL OR has_table_privilege('yoyo_lock', 'INSERT')"


def _check_may_migrate(dsn: str) -> None:
    with connect(dsn) as conn:
        row = guarded(lambda: conn.execute(_MAY_LOCK).fetchone())
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


_YOYO_TABLE = "SELECT to_regclass('public._yoyo_migration')"
_APPLIED = "SELECT migration_id FROM _yoyo_migration"


def pending_migrations(dsn: str) -> list[str]:
    """Migrations not yet applied to the database, without changing anything in it."""
    with connect(dsn) as conn:
        exists = guarded(lambda: conn.execute(_YOYO_TABLE).fetchone())
        applied: set[str] = set()
        if exists is not None and exists[0] is not None:
            applied = {row[0] for row in guarded(lambda: conn.execute(_APPLIED).fetchall())}
    return [mid for mid in migration_ids() if mid not in applied]


def connect(dsn: str, **kwargs: Any) -> psycopg.Connection[Any]:
    """Open a connection (autocommit by default: each query function is its own transaction)."""
    kwargs.setdefault("autocommit", True)
    kwargs.setdefault("prepare_threshold", PREPARE_THRESHOLD)
    try:
        return guarded(lambda: psycopg.connect(_libpq_dsn(dsn), **kwargs))
    except InvalidInput:
        raise
    except TicketingError as exc:
        if isinstance(exc.__cause__, psycopg.ProgrammingError):  # the DSN did not parse
            raise InvalidInput(f"invalid database URL: {exc}") from exc.__cause__
        raise


def create_pool(dsn: str, **kwargs: Any) -> ConnectionPool[Any]:
    """Open a pool whose connections are set up like `connect`'s."""
    try:
        conninfo.conninfo_to_dict(_libpq_dsn(dsn))
    except psycopg.ProgrammingError as exc:  # fail now, not at the first pool.connection()
        raise InvalidInput(f"invalid database URL: {exc}") from exc
    connection_kwargs = dict(kwargs.pop("kwargs", None) or {})
    connection_kwargs.setdefault("autocommit", True)
    connection_kwargs.setdefault("prepare_threshold", PREPARE_THRESHOLD)
    kwargs.setdefault("min_size", POOL_MIN_SIZE)
    kwargs.setdefault("max_size", max(POOL_MAX_SIZE, kwargs["min_size"]))
    kwargs.setdefault("open", True)
    return guarded(lambda: ConnectionPool(_libpq_dsn(dsn), kwargs=connection_kwargs, **kwargs))
