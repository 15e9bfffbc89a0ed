"""The `ticketing` command: migrate, demo, sweep, status, check and bench.

Shared pieces (the app, consoles, --database-url) are in ticketing._cli_app;
the bench command's options in ticketing._cli_bench.

The database comes from --database-url or DATABASE_URL. Without either,
`demo`, `status`, `check` and `bench` run against a throwaway PostgreSQL cluster that
lives as long as the command (see ticketing.embedded). Errors print one line
on stderr and exit non-zero; there are no tracebacks for bad input.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from datetime import UTC, timedelta
from types import FrameType
from typing import Annotated

import typer
from rich import box
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ticketing import _validate as validate
from ticketing import admin, allocations, db
from ticketing._cli_app import Settings, app, database, err, log, out, parse_duration
from ticketing._cli_bench import bench
from ticketing._report import plural
from ticketing.demo import DemoResult, run_demo
from ticketing.errors import InvalidInput, TicketingError
from ticketing.models import Availability

__all__ = ["app", "main", "parse_duration"]


@app.command()
def migrate(
    ctx: typer.Context,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List pending migrations only.")
    ] = False,
    rollback_last: Annotated[
        bool, typer.Option("--rollback-last", help="Undo the most recently applied migration.")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Apply pending migrations (the same ones `yoyo apply` applies)."""
    url = ctx.ensure_object(Settings).database_url
    if url is None:
        raise InvalidInput("no database: pass --database-url or set DATABASE_URL")
    if rollback_last:
        if not yes and not typer.confirm("Roll back the most recently applied migration?"):
            raise typer.Exit(1)
        undone = db.rollback_last(url)
        out.print(f"rolled back {undone[0]}" if undone else "nothing to roll back")
        return
    if dry_run:
        pending = db.pending_migrations(url)
        for mid in pending:
            out.print(f"would apply {mid}")
        out.print(f"{plural(len(pending), 'migration')} pending" if pending else "up to date")
        return
    applied = db.migrate(url)
    for mid in applied:
        out.print(f"applied {mid}")
    out.print(f"{plural(len(applied), 'migration')} applied" if applied else "up to date")


@app.command()
def demo(
    ctx: typer.Context,
    buyers: Annotated[
        int, typer.Option(min=1, max=1_000_000, metavar="N", help="Distinct buyers.")
    ] = 200,
    tickets: Annotated[
        int, typer.Option(min=1, max=10_000_000, metavar="N", help="Tickets on sale.")
    ] = 1000,
    workers: Annotated[
        int, typer.Option(min=1, max=128, metavar="N", help="Concurrent workers.")
    ] = 16,
    hold: Annotated[
        str, typer.Option(metavar="DURATION", help="How long a hold lasts, e.g. 30s.")
    ] = "5s",
    timeout: Annotated[
        str, typer.Option(metavar="DURATION", help="Give up after this long.")
    ] = "5m",
    seed: Annotated[
        int | None, typer.Option(metavar="N", help="Random seed, for a repeatable run.")
    ] = None,
) -> None:
    """Run a flash sale with concurrent buyers; verify nothing is oversold."""
    hold_for = parse_duration(hold)
    if not timedelta(0) < hold_for <= validate.MAX_HOLD:
        raise typer.BadParameter(
            f"must be more than 0 and at most {validate.MAX_HOLD}", param_hint="'--hold'"
        )
    give_up = parse_duration(timeout).total_seconds()
    with database(ctx, throwaway=True) as url:
        progress = Progress(
            TextColumn("[bold]sold"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("held {task.fields[held]:>5}  free {task.fields[free]:>5}"),
            TimeElapsedColumn(),
            console=out,
            transient=False,
        )
        task = progress.add_task("sale", total=tickets, held=0, free=tickets)

        def show(availability: Availability) -> None:
            progress.update(
                task,
                completed=availability.purchased,
                held=availability.reserved,
                free=availability.available,
            )

        with progress:
            result = run_demo(
                url,
                buyers=buyers,
                tickets=tickets,
                workers=workers,
                hold=hold_for,
                timeout=give_up,
                seed=seed,
                on_progress=show,
            )
    _print_demo(result, workers)
    if not result.ok:
        raise typer.Exit(1)


def _print_demo(result: DemoResult, workers: int) -> None:
    table = Table(title=f"Flash sale: event {result.event_id}, {plural(workers, 'worker')}")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("tickets on sale", f"{result.tickets:,}")
    table.add_row("tickets sold", f"{result.sold:,}")
    table.add_row("oversold", f"{result.oversold:,}")
    table.add_row(
        "holds expired and resold", f"{result.holds_expired:,} ({result.tickets_expired:,} tickets)"
    )
    table.add_row("reservations", f"{result.reservations:,}")
    table.add_row(
        "purchases / cancels / abandoned",
        f"{result.purchases:,} / {result.cancels:,} / {result.abandoned:,}",
    )
    for name, count in sorted(result.errors.items()):
        table.add_row(f"answered {name}", f"{count:,}")
    table.add_row(
        "reservations per second (while tickets were free)",
        f"{result.reservations_per_second:,.0f}",
    )
    table.add_row(
        "reserve latency p50 / p99", f"{result.latency_ms(50):.1f} / {result.latency_ms(99):.1f} ms"
    )
    table.add_row(
        "time to sell out", f"{result.seconds:.1f} s" if not result.timed_out else "timed out"
    )
    table.add_row("invariant violations", f"{len(result.violations):,}")
    out.print(table)
    for violation in result.violations:
        err.print(f"[red]violation:[/] {violation}", soft_wrap=True)
    out.print("[green]OK: sold out exactly, nothing oversold[/]" if result.ok else "[red]FAILED[/]")


@app.command()
def sweep(
    ctx: typer.Context,
    every: Annotated[
        str, typer.Option(metavar="DURATION", help="Pause between rounds, e.g. 5s.")
    ] = "5s",
    once: Annotated[bool, typer.Option("--once", help="Run one round and exit.")] = False,
    batch: Annotated[
        int, typer.Option(min=1, max=10_000, metavar="N", help="Holds per batch.")
    ] = 1000,
) -> None:
    """Expire lapsed holds: batches until none are left, every few seconds."""
    pause = parse_duration(every).total_seconds()
    url = ctx.ensure_object(Settings).database_url
    if url is None:
        raise InvalidInput("no database: pass --database-url or set DATABASE_URL")
    logging.basicConfig(
        level=logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=err, show_path=False)],
    )
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("received %s, stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    with database(ctx, throwaway=False) as checked, db.connect(checked) as conn:
        while True:
            total = 0
            while not stop.is_set():
                expired = allocations.expire_due(conn, limit=batch)
                total += expired
                if expired < batch:
                    break
            log.info("expired %s", plural(total, "lapsed hold"))
            if once or stop.wait(pause):
                break


@app.command()
def status(
    ctx: typer.Context,
    event: Annotated[int | None, typer.Option(min=1, metavar="ID", help="Only this event.")] = None,
) -> None:
    """A table of events: total, reserved, purchased, available."""
    with database(ctx, throwaway=True) as url, db.connect(url) as conn:
        rows = admin.event_status(conn, event_id=event)
    if event is not None and not rows:
        raise InvalidInput(f"event {event} does not exist")
    headers = ("id", "name", "starts at (UTC)", "total", "reserved", "purchased", "available")
    cells = [
        (
            str(row.id),
            row.name,
            f"{row.starts_at.astimezone(UTC):%Y-%m-%d %H:%M}",
            f"{row.total_tickets:,}",
            f"{row.reserved:,}",
            f"{row.purchased:,}",
            f"{row.available:,}",
        )
        for row in rows
    ]
    # One line per event: every column keeps its width, but a long name is cut short.
    widths = [
        max([len(header), *(len(line[n]) for line in cells)]) for n, header in enumerate(headers)
    ]
    spacing = 3 * (len(headers) - 1)  # padding and separator between columns
    widths[1] = max(8, min(widths[1], out.width - spacing - sum(widths) + widths[1]))
    table = Table(title="Events", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for n, header in enumerate(headers):
        table.add_column(
            header,
            justify="left" if n in (1, 2) else "right",
            no_wrap=True,
            overflow="ellipsis",
            width=widths[n],
        )
    for line in cells:
        table.add_row(*line)
    out.print(table)


@app.command()
def check(
    ctx: typer.Context,
    event: Annotated[
        int | None,
        typer.Option(min=1, metavar="ID", help="Only this event's rows (time follows its size)."),
    ] = None,
) -> None:
    """Verify every invariant in the database; exit 1 if any is violated."""
    with database(ctx, throwaway=True) as url, db.connect(url) as conn:
        violations = admin.check_invariants(conn, event_id=event)
    for violation in violations:
        out.print(f"[red]violation:[/] {violation}", soft_wrap=True)
    if violations:
        err.print(plural(len(violations), "invariant violation"))
        raise typer.Exit(1)
    scope = "" if event is None else f" for event {event}"
    out.print(f"[green]all {len(admin.CHECKS)} invariant checks passed{scope}[/]")


app.command()(bench)


def _fail(message: str, code: int) -> None:
    line = " ".join(message.split())
    if line:  # an empty message follows the help text that was already printed
        err.print(f"ticketing: error: {line}", markup=False, highlight=False, soft_wrap=True)
    sys.exit(code)


def _quiet_stdout() -> None:
    """Point stdout at /dev/null, so that flushing it at exit raises nothing more."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def main() -> None:
    """Console entry point: run the command, turning every failure into one line on stderr."""
    command = typer.main.get_command(app)
    try:
        code = command.main(prog_name="ticketing", standalone_mode=False)
    except typer.Exit as exc:
        code = exc.exit_code
    except typer.TyperException as exc:  # usage errors: unknown command, bad option value
        _fail(exc.format_message(), 2)
    except typer.Abort:
        _fail("aborted", 130)
    except (KeyboardInterrupt, EOFError):
        _fail("interrupted", 130)
    except TicketingError as exc:
        _fail(str(exc), 1)
    except BrokenPipeError:  # e.g. `ticketing bench | head`: the reader has gone
        _quiet_stdout()
        sys.exit(141)  # 128 + SIGPIPE, as a command killed by the signal reports
    except OSError as exc:  # e.g. a results file that cannot be written
        _fail(str(exc), 1)
    sys.exit(code if isinstance(code, int) else 0)
