"""`ticketing bench`: the benchmark's command line (the work is in ticketing.bench).

ticketing.cli registers `bench` as a command, after the others.
"""

from __future__ import annotations

import contextlib
from datetime import timedelta
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from ticketing._cli_app import Settings, database, err, out, parse_duration
from ticketing.bench import (
    BenchConfig,
    Workload,
    check_writable,
    default_json_path,
    run_bench,
    summary,
    write_json,
)
from ticketing.bench.config import LOADED_ALLOCATIONS


def bench(
    ctx: typer.Context,
    workers: Annotated[
        int,
        typer.Option(
            min=1, max=256, metavar="N", help="Concurrent buyer processes (and pgbench clients)."
        ),
    ] = 16,
    seconds: Annotated[
        int,
        typer.Option(
            min=1,
            max=3600,
            metavar="N",
            help="Length of each timed run, the sell-out's and the loaded workload's included "
            "(the preload before the latter is sized by --loaded-allocations).",
        ),
    ] = 5,
    json_path: Annotated[
        Path | None,
        typer.Option(
            "--json",
            metavar="PATH",
            help="Where to write the results (default: bench/results/bench-<UTC timestamp>.json "
            "under the current directory).",
            show_default=False,
        ),
    ] = None,
    only: Annotated[
        list[Workload] | None,
        typer.Option(
            metavar="NAME",
            help="Run only this workload (repeatable): "
            + ", ".join(w.value for w in Workload)
            + ".",
            show_default=False,
        ),
    ] = None,
    sellout_buyers: Annotated[
        int, typer.Option(min=1, max=1_000_000, metavar="N", help="Buyers in the sell-out.")
    ] = 10_000,
    sellout_tickets: Annotated[
        int, typer.Option(min=1, max=1_000_000, metavar="N", help="Tickets in the sell-out.")
    ] = 1000,
    loaded_allocations: Annotated[
        int,
        typer.Option(
            min=100, max=100_000_000, metavar="N", help="Allocations the loaded workload preloads."
        ),
    ] = LOADED_ALLOCATIONS,
    commit_latency: Annotated[
        str | None,
        typer.Option(
            metavar="DURATION",
            help="Only this regime: commits slowed to about this long by a synchronous standby "
            "(e.g. 2ms; 0 for the machine's own commits). Default: both. Not with a database URL.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Reservations per second against two baselines, pgbench and the design's floor.

    Without a database URL: on a throwaway server, at the machine's own commit
    latency and at ~2 ms commits with a synchronous standby, side by side.
    """
    if sellout_buyers < sellout_tickets:
        raise typer.BadParameter(
            "must be at least --sellout-tickets", param_hint="'--sellout-buyers'"
        )
    url = ctx.ensure_object(Settings).database_url
    latencies: tuple[float | None, ...] | None = None
    if commit_latency is not None:
        if url is not None:
            raise typer.BadParameter(
                "needs the throwaway server: not with --database-url / DATABASE_URL",
                param_hint="'--commit-latency'",
            )
        asked = parse_duration(commit_latency) / timedelta(milliseconds=1)
        latencies = (asked if asked > 0 else None,)
    config = BenchConfig(
        workers=workers,
        seconds=seconds,
        only=frozenset(only or Workload),
        sellout_buyers=sellout_buyers,
        sellout_tickets=sellout_tickets,
        loaded_allocations=loaded_allocations,
    )
    path = json_path or default_json_path()
    check_writable(path)  # before the run, not after minutes of it
    with contextlib.ExitStack() as stack:
        if url is not None:
            stack.enter_context(database(ctx, throwaway=False))  # migrated?
            err.print("[dim]measuring the server at DATABASE_URL as it is (regime: as given)[/]")
        else:
            err.print("[dim]no DATABASE_URL: using a throwaway PostgreSQL (and a standby)[/]")
        progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TimeElapsedColumn(),
            console=out,
            transient=False,
        )
        with progress:
            report = run_bench(url, config, commit_latencies=latencies, progress=progress)
    write_json(report, path)  # first: the output may go to a pipe that closes early
    out.print(summary(report))
    out.print(f"results written to {path}", soft_wrap=True, highlight=False)
    for failure in report.failures:
        err.print(f"failed: {failure}", markup=False, highlight=False, soft_wrap=True)
    if not report.ok:
        raise typer.Exit(1)
