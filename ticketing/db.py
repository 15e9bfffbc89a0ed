"""The public entry points for connections, pools and migrations.

`migrate`, `connect` and `create_pool` are the contract services use; the
work is in ticketing._connections (connections, pools, the one URL parser)
and ticketing._migrations (yoyo and the SQL files of `sql/`).
"""

from __future__ import annotations

from ticketing._connections import (
    POOL_MAX_SIZE,
    POOL_MIN_SIZE,
    PREPARE_THRESHOLD,
    connect,
    create_pool,
    libpq_dsn,
    parse_dsn,
    with_dbname,
)
from ticketing._migrations import (
    migrate,
    migrated_database,
    migration_ids,
    migrations_dir,
    pending_migrations,
    rollback_last,
    yoyo_url,
)

__all__ = [
    "POOL_MAX_SIZE",
    "POOL_MIN_SIZE",
    "PREPARE_THRESHOLD",
    "connect",
    "create_pool",
    "libpq_dsn",
    "migrate",
    "migrated_database",
    "migration_ids",
    "migrations_dir",
    "parse_dsn",
    "pending_migrations",
    "rollback_last",
    "with_dbname",
    "yoyo_url",
]
