"""Connections and pools, and the one parser of database URLs.

Every URL or DSN the package is given goes through `parse_dsn`: libpq's
rules (URLs and key=value strings), plus the `postgresql+psycopg://` form
that yoyo needs, so any of them can be passed anywhere.
"""

from __future__ import annotations

import os
from typing import Any

import psycopg
from psycopg import conninfo
from psycopg_pool import ConnectionPool

from ticketing._tx import guarded
from ticketing.errors import InvalidInput, TicketingError

#: Default size of a pool from `create_pool`: four connections per core keep
#: the cores busy while some connections wait on commits and the network;
#: more only queue inside the server.
POOL_MIN_SIZE = 2
POOL_MAX_SIZE = 4 * (os.cpu_count() or 2)
#: The layer runs a fixed set of named statements: prepare each on first use.
PREPARE_THRESHOLD = 0

_YOYO_SCHEME = "postgresql+psycopg://"


def libpq_dsn(dsn: str) -> str:
    """The string libpq reads: yoyo-style postgresql+psycopg:// URLs become postgresql://."""
    if dsn.startswith(_YOYO_SCHEME):
        return "postgresql://" + dsn[len(_YOYO_SCHEME) :]
    return dsn


def parse_dsn(dsn: str) -> dict[str, str]:
    """The connection parameters of a URL or key=value DSN; `InvalidInput` when malformed."""
    if "\x00" in dsn:
        raise InvalidInput("the database URL must not contain NUL characters")
    try:
        params = conninfo.conninfo_to_dict(libpq_dsn(dsn))
    except psycopg.ProgrammingError as exc:
        raise InvalidInput(f"invalid database URL: {exc}") from exc
    return {key: str(value) for key, value in params.items() if value is not None}


def with_dbname(dsn: str, dbname: str) -> str:
    """The same server and login, another database (a key=value DSN)."""
    return conninfo.make_conninfo("", **(parse_dsn(dsn) | {"dbname": dbname}))


def connection_kwargs(dsn: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Check `dsn` (a malformed one is `InvalidInput`, not a connection failure) and give
    the keyword arguments of a connection as the layer sets it up: autocommit (each query
    function is its own transaction) and statements prepared on first use."""
    parse_dsn(dsn)
    return {"autocommit": True, "prepare_threshold": PREPARE_THRESHOLD} | kwargs


def pool_kwargs(dsn: str, kwargs: dict[str, Any], *, open_now: bool) -> dict[str, Any]:
    """The keyword arguments of a pool whose connections are set up like `connect`'s."""
    kwargs = dict(kwargs)
    kwargs["kwargs"] = connection_kwargs(dsn, dict(kwargs.pop("kwargs", None) or {}))
    kwargs.setdefault("min_size", POOL_MIN_SIZE)
    kwargs.setdefault("max_size", max(POOL_MAX_SIZE, kwargs["min_size"]))
    kwargs.setdefault("open", open_now)
    return kwargs


def invalid_url(exc: TicketingError) -> TicketingError:
    """What a failed connect raises: `InvalidInput` when libpq refused the arguments."""
    if isinstance(exc.__cause__, psycopg.ProgrammingError):  # e.g. a bad keyword argument
        invalid = InvalidInput(f"invalid database URL: {exc}")
        invalid.__cause__ = exc.__cause__
        return invalid
    return exc


def connect(dsn: str, **kwargs: Any) -> psycopg.Connection[Any]:
    """Open a connection (autocommit by default: each query function is its own transaction)."""
    kwargs = connection_kwargs(dsn, kwargs)
    try:
        return guarded(lambda: psycopg.connect(libpq_dsn(dsn), **kwargs))
    except InvalidInput:
        raise
    except TicketingError as exc:
        raise invalid_url(exc) from exc.__cause__


def create_pool(dsn: str, **kwargs: Any) -> ConnectionPool[Any]:
    """Open a pool whose connections are set up like `connect`'s."""
    kwargs = pool_kwargs(dsn, kwargs, open_now=True)
    return guarded(lambda: ConnectionPool(libpq_dsn(dsn), **kwargs))
