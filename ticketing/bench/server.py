"""The server's work per operation: pgbench on the layer's SQL against the design's floor.

For reserve, purchase, cancel and the sweeper's expire_due, pgbench runs the
layer's own statement (ticketing/queries/allocations.sql, through the
triggers) and the floor (floors.sql: the least work on the same tables, with
session_replication_role = replica so no trigger fires). layer / floor is how
close the layer comes to its own design's floor.

Purchases, cancels and expiries need holds: one bulk INSERT through the
layer's triggers makes them before the timed run (hold k of an event is
`base + k`, fingerprint bench-h-k); each pgbench client takes its own range
with `:client_id` and a counter, and runs exactly as many transactions as it
has holds (-t), sized from the rates seen so far to last about --seconds.
A floor event ran without the triggers, so its rows break the layer's
invariants: afterwards it is removed completely (every row with its
event_id or its allocations' ids, then the event), again as replica.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import psycopg
from psycopg import sql

from ticketing._tx import LOCK_TIMEOUT
from ticketing.bench.config import NEVER_SELLS_OUT, Workload
from ticketing.bench.context import Run, drain
from ticketing.bench.crew import Crew
from ticketing.bench.pgbench import PgbenchRun, find_pgbench, pgbench_script, run_pgbench
from ticketing.bench.sql import FLOORS, Q
from ticketing.bench.stats import ratio
from ticketing.queries import load

LAYER = load("allocations.sql")
#: The floors' sessions: no trigger (and no foreign key check) fires.
REPLICA = "-c session_replication_role=replica"
FLOOR_UNAVAILABLE = "needs a superuser (session_replication_role = replica)"
#: Per-client pgbench counter and hold ids, before the layer's purchase or cancel.
HOLD_PREAMBLE = "\\set k :client_id * :per_client + :n\n\\set n :n + 1\n\\set aid :base + :k\n"
HOLD_PARAMETERS = {
    "allocation_id": "CAST(:aid AS bigint)",
    "fingerprint": "('bench-h-' || CAST(:k AS text))",
    "lock_timeout": f"CAST('{LOCK_TIMEOUT}' AS text)",
}
EXPIRE_PARAMETERS = {
    "limit": "CAST(:limit AS integer)",
    "lock_timeout": f"CAST('{LOCK_TIMEOUT}' AS text)",
}
#: Holds of the timed purchase and cancel runs: per client, at least; in all, at most.
HOLDS_PER_CLIENT = 20
MAX_HOLDS = 30_000
#: Holds per INSERT when making them (the layer's statement triggers cost more per row
#: in bigger statements).
HOLDS_BATCH = 200
#: Expire: sweeper processes (pgbench clients), holds per expire_due call, holds per
#: second of --seconds and at most.
EXPIRE_CLIENTS = 2
EXPIRE_BATCH = 200
EXPIRE_HOLDS_PER_SECOND = 2000
EXPIRE_MAX_HOLDS = 20_000
#: A rate to size the holds by when nothing was measured yet in this run.
FALLBACK_RATE = 2000.0
LAPSED_HOLD = timedelta(seconds=1)
LIVE_HOLD = timedelta(hours=1)


def _floor_script(name: str) -> str:
    return FLOORS[name] + ";\n"


def _count(conn: psycopg.Connection[Any], name: str, **params: Any) -> int:
    row = conn.execute(Q[name], params).fetchone()
    return 0 if row is None else int(row[0])


def make_holds(
    conn: psycopg.Connection[Any], event_id: int, count: int, hold: timedelta
) -> tuple[int, bool]:
    """`count` holds on the event, in batches; (base id, every hold k is base + k)."""
    for first in range(0, count, HOLDS_BATCH):
        params = {"event_id": event_id, "first": first, "count": min(HOLDS_BATCH, count - first)}
        conn.execute(Q["make_holds"], params | {"hold": hold})
    row = conn.execute(Q["hold_range"], {"event_id": event_id}).fetchone()
    assert row is not None, "the holds were not made"
    base, made, in_place = row
    return int(base), int(made) == int(in_place) == count


def remove_events(conn: psycopg.Connection[Any], event_ids: list[int]) -> None:
    """Remove events and every row that refers to them, without firing any trigger."""
    with conn.transaction():
        conn.execute(Q["skip_triggers"])
        tables = conn.execute(Q["event_tables"]).fetchall()
        ids = {"ids": event_ids}
        for name, by_event in tables:
            if not by_event:
                query = sql.SQL(Q["delete_by_allocation"]).format(table=sql.Identifier(name))
                conn.execute(query, ids)
        for name, by_event in tables:
            if by_event:
                query = sql.SQL(Q["delete_by_event"]).format(table=sql.Identifier(name))
                conn.execute(query, ids)
        conn.execute(Q["delete_events"], ids)


def _rate(result: dict[str, Any]) -> float | None:
    """Rows changed per second: pgbench's tps, less the transactions that changed nothing."""
    tps, transactions = result.get("tps"), result.get("transactions")
    if tps is None or not transactions:
        return None
    return round(float(tps) * float(result["rows_changed"]) / float(transactions), 1)


def _side(
    run: Run,
    conn: psycopg.Connection[Any],
    floor: bool,
    job: Callable[[int], tuple[PgbenchRun, dict[str, Any]]],
    label: str,
    count: Callable[[int], int],
    slots: int | None = None,
) -> dict[str, Any]:
    """One pgbench run on a new event (the layer's SQL, or the floor as replica)."""
    if floor and not run.superuser:
        return {"unavailable": FLOOR_UNAVAILABLE}
    pgbench = find_pgbench()
    if pgbench is None:
        return {"skipped": "no pgbench binary (PostgreSQL bindir or PATH)"}
    side = "floor" if floor else "layer"
    event_id = run.event(conn, f"{label} {side}", NEVER_SELLS_OUT, slots=slots)
    try:
        pgrun, facts = job(event_id)
        if floor:
            pgrun = PgbenchRun(**{**pgrun.__dict__, "options": REPLICA})
        bar = run.bar(f"{label}: pgbench, {'the floor' if floor else 'layer SQL'}")
        result = run_pgbench(pgbench, run.url, pgrun, bar)
        result |= facts | {"event_id": event_id, "rows_changed": count(event_id)}
    finally:
        if floor:
            remove_events(conn, [event_id])
    result["rows_per_second"] = _rate(result)
    return result


def _pair(layer: dict[str, Any], floor: dict[str, Any]) -> dict[str, Any]:
    return {
        "layer": layer,
        "floor": floor,
        "layer_vs_floor": ratio(layer.get("rows_per_second"), floor.get("rows_per_second")),
    }


def floor_workload(run: Run, conn: psycopg.Connection[Any], crew: Crew) -> dict[str, Any]:
    """The reserve floor, --seconds long (the layer's side is the pgbench workload)."""

    def job(event_id: int) -> tuple[PgbenchRun, dict[str, Any]]:
        script = _floor_script("reserve_floor")
        pgrun = PgbenchRun(
            script, run.config.workers, seconds=run.config.seconds, defines={"event_id": event_id}
        )
        return pgrun, {}

    def inserted(event_id: int) -> int:
        return _count(conn, "count_event_allocations", event_id=event_id)

    result = _side(run, conn, True, job, "reserve", inserted)
    if result.get("rows_per_second"):
        run.rates["reserve floor"] = result["rows_per_second"]
    return result


def _hold_workload(op: str, status: str) -> Callable[[Run, psycopg.Connection[Any], Crew], Any]:
    """purchase or cancel: pre-made holds, then the layer's statement and the floor."""

    def workload(run: Run, conn: psycopg.Connection[Any], crew: Crew) -> dict[str, Any]:
        clients = run.config.workers
        seen = run.rates.get("reserve layer", FALLBACK_RATE)
        wanted = min(MAX_HOLDS, math.ceil(seen * run.seconds))
        per_client = max(HOLDS_PER_CLIENT, wanted // clients)

        def job_for(floor: bool) -> Callable[[int], tuple[PgbenchRun, dict[str, Any]]]:
            def job(event_id: int) -> tuple[PgbenchRun, dict[str, Any]]:
                base, in_place = make_holds(conn, event_id, clients * per_client, LIVE_HOLD)
                script = (
                    _floor_script(f"{op}_floor")
                    if floor
                    else pgbench_script(LAYER[op], HOLD_PARAMETERS, HOLD_PREAMBLE)
                )
                defines = {"base": base, "per_client": per_client, "n": 0}
                pgrun = PgbenchRun(script, clients, transactions=per_client, defines=defines)
                return pgrun, {"holds": clients * per_client, "holds_in_place": in_place}

            return job

        def changed(event_id: int) -> int:
            return _count(conn, "count_event_status", event_id=event_id, status=status)

        layer = _side(run, conn, False, job_for(False), op, changed)
        floor = _side(run, conn, True, job_for(True), op, changed)
        return _pair(layer, floor)

    return workload


def expire_workload(run: Run, conn: psycopg.Connection[Any], crew: Crew) -> dict[str, Any]:
    """expire_due: lapsed holds on a one-slot event, swept in batches by two clients."""
    per_call = EXPIRE_CLIENTS * EXPIRE_BATCH
    holds = max(per_call, min(EXPIRE_MAX_HOLDS, int(EXPIRE_HOLDS_PER_SECOND * run.seconds)))
    calls = math.ceil(holds / per_call)
    holds = calls * per_call

    def job_for(floor: bool) -> Callable[[int], tuple[PgbenchRun, dict[str, Any]]]:
        def job(event_id: int) -> tuple[PgbenchRun, dict[str, Any]]:
            drained = drain(conn)  # only this event's holds lapse during the run
            make_holds(conn, event_id, holds, LAPSED_HOLD)
            time.sleep(LAPSED_HOLD.total_seconds() + 0.1)
            script = (
                _floor_script("expire_floor")
                if floor
                else pgbench_script(LAYER["expire_due"], EXPIRE_PARAMETERS, "")
            )
            pgrun = PgbenchRun(
                script, EXPIRE_CLIENTS, transactions=calls, defines={"limit": EXPIRE_BATCH}
            )
            return pgrun, {"holds": holds, "batch": EXPIRE_BATCH, "drained_before": drained}

        return job

    def expired(event_id: int) -> int:
        return _count(conn, "count_event_status", event_id=event_id, status="expired")

    layer = _side(run, conn, False, job_for(False), "expire", expired, slots=1)
    floor = _side(run, conn, True, job_for(True), "expire", expired, slots=1)
    return _pair(layer, floor)


SERVER_WORKLOADS: dict[Workload, Callable[[Run, psycopg.Connection[Any], Crew], Any]] = {
    Workload.FLOOR: floor_workload,
    Workload.PURCHASE: _hold_workload("purchase", "purchased"),
    Workload.CANCEL: _hold_workload("cancel", "cancelled"),
    Workload.EXPIRE: expire_workload,
}
