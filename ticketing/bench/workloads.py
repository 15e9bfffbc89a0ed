"""The workloads: what each one sets up, runs on the crew (or pgbench), and reports."""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import psycopg

from ticketing import admin
from ticketing._report import plural
from ticketing.bench.buyers import Tally
from ticketing.bench.config import (
    BASELINE_EVENT_IDS,
    NEVER_SELLS_OUT,
    SHORT_HOLD,
    BenchError,
    Workload,
)
from ticketing.bench.context import Run, as_elapsed, drain, json_key
from ticketing.bench.crew import Crew, sweeper
from ticketing.bench.pgbench import PgbenchRun, find_pgbench, pgbench_script, run_pgbench
from ticketing.bench.sql import Q
from ticketing.bench.stats import error_samples, percentile_ms, summarise
from ticketing.queries import load


def prepare_baselines(conn: psycopg.Connection[Any]) -> None:
    with conn.transaction():
        conn.execute(Q["baseline_schema"])
        conn.execute(Q["baseline_drop"])
        conn.execute(Q["baseline_events_table"])
        conn.execute(Q["baseline_allocations_table"])
        for event_id in BASELINE_EVENT_IDS.values():
            conn.execute(Q["baseline_new_event"], {"id": event_id, "total": NEVER_SELLS_OUT})


def _hot_workload(run: Run, conn: psycopg.Connection[Any], crew: Crew) -> dict[str, Any]:
    event_id = run.event(conn, "hot", NEVER_SELLS_OUT)
    bar = run.bar("hot: one event (layer)")
    tallies = crew.run(run.task(Workload.HOT, (event_id,), "hot"), bar, as_elapsed)
    result = summarise(tallies)
    run.rates.setdefault("reserve layer", result["reservations_per_second"])
    return result | {"event_id": event_id}


def async_spread(workers: int, cpus: int | None) -> tuple[int, ...]:
    """Asyncio tasks per process: `workers` over one process per CPU (at most one per task)."""
    processes = max(1, min(cpus or 1, workers))
    return tuple(workers // processes + (i < workers % processes) for i in range(processes))


def _async_workload(run: Run, conn: psycopg.Connection[Any], crew: Crew) -> dict[str, Any]:
    """The hot load from asyncio: --workers tasks over one process per CPU, a pool in each."""
    event_id = run.event(conn, "async", NEVER_SELLS_OUT)
    tasks = async_spread(run.config.workers, os.cpu_count())
    processes = len(tasks)
    bar = run.bar(f"async: starting {plural(processes, 'process', 'processes')}", processes)
    with Crew(run.url, processes) as async_crew:
        async_crew.start(bar)
        bar = run.bar(
            f"async: one event, {plural(sum(tasks), 'task')} in "
            f"{plural(processes, 'process', 'processes')} (asyncio)"
        )
        task = run.task(Workload.ASYNC, (event_id,), "async", tasks=tasks)
        tallies = async_crew.run(task, bar, as_elapsed)
    return summarise(tallies) | {
        "event_id": event_id,
        "processes": processes,
        "tasks_per_process": list(tasks),
    }


def _baseline_workload(
    kind: Workload,
) -> Callable[[Run, psycopg.Connection[Any], Crew], dict[str, Any]]:
    def workload(run: Run, conn: psycopg.Connection[Any], crew: Crew) -> dict[str, Any]:
        event_id = BASELINE_EVENT_IDS[kind]
        bar = run.bar(f"{kind}: baseline")
        tallies = crew.run(run.task(kind, (event_id,), json_key(kind)), bar, as_elapsed)
        return summarise(tallies) | {"bench_event_id": event_id}

    return workload


def _spread_workload(run: Run, conn: psycopg.Connection[Any], crew: Crew) -> dict[str, Any]:
    count = run.config.spread_events
    bar = run.bar(f"spread: creating {count:,} events", count)
    with conn.transaction():  # one commit for all of them
        event_ids = []
        for n in range(count):
            event_ids.append(run.event(conn, f"spread {n}", NEVER_SELLS_OUT))
            if n % 50 == 0:
                bar.update(n)
    bar.finish()
    bar = run.bar(f"spread: {count:,} events (layer)")
    tallies = crew.run(run.task(Workload.SPREAD, tuple(event_ids), "spread"), bar, as_elapsed)
    return summarise(tallies) | {"events": count}


def _pgbench_workload(run: Run, conn: psycopg.Connection[Any], crew: Crew) -> dict[str, Any]:
    bar = run.bar("pgbench: the layer's reserve SQL")
    pgbench = find_pgbench()
    if pgbench is None:
        bar.finish()
        return {"skipped": "no pgbench binary (PostgreSQL bindir or PATH)"}
    try:
        script = pgbench_script(load("allocations.sql")["reserve"])
    except BenchError as exc:  # reported as a failed workload; the others still run
        bar.finish()
        return {
            "binary": str(pgbench),
            "clients": run.config.workers,
            "tps": None,
            "transactions": None,
            "latency_average_ms": None,
            "failed_transactions": 0,
            "error": str(exc),
        }
    event_id = run.event(conn, "pgbench", NEVER_SELLS_OUT)
    job = PgbenchRun(
        script, run.config.workers, seconds=run.config.seconds, defines={"event_id": event_id}
    )
    result = run_pgbench(pgbench, run.url, job, bar)
    row = conn.execute(Q["count_event_allocations"], {"event_id": event_id}).fetchone()
    assert row is not None
    if result["tps"]:
        run.rates["reserve layer"] = result["tps"]
    return result | {"event_id": event_id, "rows_inserted": int(row[0])}


def sale_outcome(
    name: str,
    run: Run,
    conn: psycopg.Connection[Any],
    event_id: int,
    tallies: list[Tally],
) -> dict[str, Any]:
    """What one sell-out of --sellout-tickets to --sellout-buyers did, and its failures.

    Exact: the tickets all sold, none more, and (when every buyer was served)
    every other buyer answered SoldOut, with no other answer.
    """
    buyers, tickets = run.config.sellout_buyers, run.config.sellout_tickets
    sold = admin.sale_outcome(conn, event_id).sold
    errors: Counter[str] = Counter()
    for tally in tallies:
        errors.update(tally.errors)
    sold_out = errors.pop("SoldOut", 0)
    reserve_errors = sum(n for error, n in errors.items() if not error.startswith("purchase: "))
    reservations = sum(t.done for t in tallies)
    started = min(t.started for t in tallies)
    purchased_at = sorted(t for tally in tallies for t in tally.purchased_at)
    ended = (
        purchased_at[tickets - 1]
        if len(purchased_at) >= tickets
        else max(t.finished for t in tallies)
    )
    latencies = sorted(x for tally in tallies for x in tally.latencies)
    attempts = reservations + sold_out + reserve_errors
    # Every buyer served, or --seconds over: then the sale must at least have sold out (the
    # buyers left would all be told SoldOut).
    finished = attempts >= buyers
    failures = []
    if sold > tickets:
        failures.append(f"{name}: {sold:,} tickets sold, more than {tickets:,}")
    elif not finished and sold < tickets:
        failures.append(
            f"{name}: stopped after --seconds {run.seconds:g} with {attempts:,} of {buyers:,} "
            f"buyers served and {sold:,} of {tickets:,} tickets sold: raise --seconds"
        )
    elif sold != tickets:
        failures.append(f"{name}: {sold:,} tickets sold, not {tickets:,}")
    if finished and sold_out != buyers - tickets:
        failures.append(f"{name}: {sold_out:,} buyers got SoldOut, not {buyers - tickets:,}")
    if errors:
        failures.append(
            f"{name}: answers other than SoldOut: {dict(sorted(errors.items()))}; "
            f"first messages: {error_samples(tallies)}"
        )
    return {
        "event_id": event_id,
        "buyers": buyers,
        "tickets": tickets,
        "attempts": attempts,
        "finished": finished,
        "reservations": reservations,
        "purchases": sum(t.purchases for t in tallies),
        "sold": sold,
        "oversold": max(0, sold - tickets),
        "sold_out_answers": sold_out,
        "other_errors": dict(sorted(errors.items())),
        "error_samples": error_samples(tallies),
        "seconds_to_sell_out": round(ended - started, 3),
        "reserve_p99_ms": percentile_ms(latencies, 99),
        "exact": not failures,
        "failures": failures,
    }


def _sellout_workload(run: Run, conn: psycopg.Connection[Any], crew: Crew) -> dict[str, Any]:
    buyers, tickets = run.config.sellout_buyers, run.config.sellout_tickets
    event_id = run.event(conn, "sellout", tickets)
    bar = run.bar(f"sellout: {plural(buyers, 'buyer')}, {plural(tickets, 'ticket')}", buyers)
    task = run.task(Workload.SELLOUT, (event_id,), "sellout", attempts=buyers)
    tallies = crew.run(task, bar, lambda _elapsed: float(crew.attempts))
    return sale_outcome("sellout", run, conn, event_id, tallies)


def _sweeper_workload(run: Run, conn: psycopg.Connection[Any], crew: Crew) -> dict[str, Any]:
    seconds = run.seconds
    bar = run.bar("sweeper: short holds, no sweeper", 2 * seconds)
    without_event = run.event(conn, "sweeper without", NEVER_SELLS_OUT)
    task = run.task(Workload.SWEEPER, (without_event,), "without", hold=SHORT_HOLD)
    without = summarise(crew.run(task, bar, as_elapsed))
    # The second half starts with nothing lapsed: the sweeper meets only its own run's holds.
    bar.update(seconds, "sweeper: expiring the holds left so far")
    time.sleep(SHORT_HOLD.total_seconds())
    drained = drain(conn)
    with_event = run.event(conn, "sweeper with", NEVER_SELLS_OUT)
    bar.update(seconds, "sweeper: short holds, with a sweeper process")
    with sweeper(run.url) as stop_sweeper:
        task = run.task(Workload.SWEEPER, (with_event,), "with", hold=SHORT_HOLD)
        with_sweeper = summarise(crew.run(task, bar, lambda elapsed: seconds + elapsed))
        expired, rounds = stop_sweeper()
    return {
        "hold_ms": SHORT_HOLD / timedelta(milliseconds=1),
        "without": without | {"event_id": without_event},
        "with": with_sweeper | {"event_id": with_event},
        "drained_between_runs": drained,
        "expired_by_sweeper": expired,
        "sweeper_rounds": rounds,
    }


WORKLOADS: dict[Workload, Callable[[Run, psycopg.Connection[Any], Crew], dict[str, Any]]] = {
    Workload.HOT: _hot_workload,
    Workload.ASYNC: _async_workload,
    Workload.FOR_UPDATE: _baseline_workload(Workload.FOR_UPDATE),
    Workload.SINGLE_UPDATE: _baseline_workload(Workload.SINGLE_UPDATE),
    Workload.PGBENCH: _pgbench_workload,
    Workload.SPREAD: _spread_workload,
    Workload.SELLOUT: _sellout_workload,
    Workload.SWEEPER: _sweeper_workload,
}
