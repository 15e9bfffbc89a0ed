"""What every `ticketing` command shares: the Typer app, the consoles, the database option.

`database` yields the URL a command works on: the one given (refused while
migrations are pending) or, where a command allows it, a migrated throwaway
cluster that lives as long as the command.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated

import typer
from rich.console import Console

from ticketing import db, embedded
from ticketing._report import plural
from ticketing.errors import InvalidInput

app = typer.Typer(
    name="ticketing",
    help="Operate the ticketing data layer: migrations, demo flash sale, sweeper, status, checks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


class _Stdout(Console):
    """The console of stdout. When the reader of a pipe goes away (`ticketing bench | head`),
    the rest of the output is dropped and the command runs on to its end (the bench still
    writes its JSON), instead of stopping with status 1 as rich does by default."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


out = _Stdout()
err = Console(stderr=True)
log = logging.getLogger("ticketing")

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(text: str) -> timedelta:
    """'30s', '500ms', '2m', '1h' or a number of seconds."""
    found = _DURATION.match(text)
    if not found:
        raise typer.BadParameter(f"{text!r} is not a duration like 30s, 500ms, 2m or 1h")
    return timedelta(seconds=float(found.group(1)) * _UNITS[found.group(2)])


@dataclass
class Settings:
    database_url: str | None


@app.callback()
def _root(
    ctx: typer.Context,
    database_url: Annotated[
        str | None,
        typer.Option(
            "--database-url",
            envvar="DATABASE_URL",
            help="PostgreSQL URL (postgresql://user:password@host:port/dbname).",
            metavar="URL",
            show_default=False,
        ),
    ] = None,
) -> None:
    ctx.obj = Settings(database_url=database_url or None)


@contextmanager
def database(ctx: typer.Context, *, throwaway: bool) -> Iterator[str]:
    """The database URL to use; with `throwaway`, a migrated temporary cluster when none is set."""
    url = ctx.ensure_object(Settings).database_url
    if url is not None:
        pending = db.pending_migrations(url)
        if pending:
            raise InvalidInput(
                f"the database schema is missing or out of date "
                f"({plural(len(pending), 'migration')} pending): run `ticketing migrate`"
            )
        yield url
        return
    if not throwaway:
        raise InvalidInput("no database: pass --database-url or set DATABASE_URL")
    with embedded.running() as server:
        err.print(f"[dim]no DATABASE_URL: using a throwaway PostgreSQL on port {server.port}[/]")
        db.migrate(server.url())
        yield server.url()
