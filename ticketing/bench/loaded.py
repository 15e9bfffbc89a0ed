"""Cost as the tables grow: each hot call's median, on an empty database and a loaded one.

One connection, one measured event. First the calls run on a freshly
migrated database: CALLS reserves (2 tickets each, one buyer per call),
purchases of those holds, cancels of those purchases (tickets voided), and
get_availability; then check_invariants for the event and for the whole
database. Then the preload: `loaded_allocations` allocations (with their
tickets) over LOADED_EVENTS events, the measured one among them, through the
layer's triggers in statements of LOAD_BATCH rows: 60% purchased, 10%
purchased then cancelled (tickets voided), 10% cancelled holds, 20% live
holds. Then VACUUM
ANALYZE, as autovacuum would have done by then, and the same calls again.
loaded / empty is the growth of each call's median.

The workload runs in a database of its own (created and dropped on the
server, when the login may), so the rest of the run never sees its rows;
otherwise in the given database. It runs once per benchmark, in the first
regime that runs it: the cost of bigger tables is measured best where
commits are cheap.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import conninfo, sql

from ticketing import admin, allocations, db, events
from ticketing.bench.config import NEVER_SELLS_OUT
from ticketing.bench.context import Run
from ticketing.bench.crew import Crew
from ticketing.bench.sql import Q
from ticketing.bench.stats import ratio

#: Events the preload spreads its allocations over (the measured one is the first).
LOADED_EVENTS = 100
#: Allocations per preload statement (schema.md, section 13.3: row triggers in big
#: statements cost more per row).
LOAD_BATCH = 200
#: Connections that preload at once (one per core of a small machine).
PRELOAD_CONNECTIONS = 2
#: Timed calls of each operation, per phase; untimed calls before the first.
CALLS = 300
WARMUP_CALLS = 50
#: The operations whose loaded / empty median is a target.
OPERATIONS = ("reserve", "purchase", "cancel", "get_availability")


def _median_ms(calls: list[Callable[[], object]]) -> float:
    times = []
    for call in calls:
        begun = time.perf_counter()
        call()
        times.append(time.perf_counter() - begun)
    return round(1000 * statistics.median(times), 3)


def _seconds(call: Callable[[], object]) -> tuple[float, Any]:
    begun = time.perf_counter()
    value = call()
    return round(time.perf_counter() - begun, 3), value


def _phase(
    conn: psycopg.Connection[Any], event_id: int, label: str, calls: int = CALLS
) -> dict[str, Any]:
    """Each operation's median (ms) on the measured event, and the checks' times (s)."""
    fingerprints = [f"probe-{label}-{n}" for n in range(calls)]
    held: list[int] = []

    def reserve(fingerprint: str) -> Callable[[], object]:
        def call() -> None:
            held.append(
                allocations.reserve(conn, event_id=event_id, fingerprint=fingerprint, quantity=2).id
            )

        return call

    medians = {"reserve": _median_ms([reserve(f) for f in fingerprints])}
    pairs = list(zip(held, fingerprints, strict=True))

    def purchase(allocation_id: int, fingerprint: str) -> Callable[[], object]:
        return lambda: allocations.purchase(
            conn, allocation_id=allocation_id, fingerprint=fingerprint
        )

    def cancel(allocation_id: int, fingerprint: str) -> Callable[[], object]:
        return lambda: allocations.cancel(
            conn, allocation_id=allocation_id, fingerprint=fingerprint
        )

    medians["purchase"] = _median_ms([purchase(a, f) for a, f in pairs])
    medians["cancel"] = _median_ms([cancel(a, f) for a, f in pairs])
    medians["get_availability"] = _median_ms(
        [lambda: events.get_availability(conn, event_id)] * calls
    )
    check_event_s, event_problems = _seconds(
        lambda: admin.check_invariants(conn, event_id=event_id)
    )
    check_all_s, all_problems = _seconds(lambda: admin.check_invariants(conn))
    row = conn.execute(Q["load_sizes"]).fetchone()
    assert row is not None
    return {
        "allocations": int(row[0]),
        "tickets": int(row[1]),
        "median_ms": medians,
        "check_event_s": check_event_s,
        "check_all_s": check_all_s,
        "violations": len(event_problems) + len(all_problems),
    }


def _load_event(conn: psycopg.Connection[Any], event_id: int, count: int, done: Any) -> None:
    """`count` allocations on one event, load-k the k-th; `done(n)` after each batch."""
    for first in range(0, count, LOAD_BATCH):
        batch = min(LOAD_BATCH, count - first)
        with conn.transaction():
            params = {"event_id": event_id, "first": first, "count": batch}
            ids = enumerate((r[0] for r in conn.execute(Q["load_holds"], params)), first)
            by_k = [(k % 10, i) for k, i in ids]
            # k % 10: 0-6 purchased, 6 then cancelled; 7 a cancelled hold; 8-9 held.
            bought = [i for m, i in by_k if m < 7]
            cancelled = [i for m, i in by_k if m in (6, 7)]
            conn.execute(Q["load_set_status"], {"status": "purchased", "ids": bought})
            conn.execute(Q["load_set_status"], {"status": "cancelled", "ids": cancelled})
        done(batch)


def _preload(run: Run, url: str, event_ids: list[int], total: int) -> None:
    """`total` allocations spread evenly over the events, by PRELOAD_CONNECTIONS at once."""
    bar = run.bar(f"loaded: preloading {total:,} allocations", total)
    counted = [0]
    lock = threading.Lock()

    def done(batch: int) -> None:
        with lock:
            counted[0] += batch
            bar.update(counted[0])

    def share(part: int) -> None:
        with db.connect(url) as conn:
            for n in range(part, len(event_ids), PRELOAD_CONNECTIONS):
                mine = total // len(event_ids) + (n < total % len(event_ids))
                _load_event(conn, event_ids[n], mine, done)

    with ThreadPoolExecutor(PRELOAD_CONNECTIONS) as pool:
        for future in [pool.submit(share, part) for part in range(PRELOAD_CONNECTIONS)]:
            future.result()
    bar.finish()


@contextmanager
def _own_database(run: Run, conn: psycopg.Connection[Any]) -> Iterator[tuple[str, str | None]]:
    """(URL, name of the database made for the workload, or None: the given one)."""
    name = f"ticketing_bench_loaded_{run.tag}".lower()
    statement = sql.SQL(Q["create_database"]).format(name=sql.Identifier(name))
    try:
        conn.execute(statement)
    except psycopg.Error:  # no CREATEDB: the given database it is
        yield run.url, None
        return
    try:
        params = conninfo.conninfo_to_dict(db._libpq_dsn(run.url))
        params["dbname"] = name
        yield conninfo.make_conninfo("", **params), name
    finally:
        conn.execute(sql.SQL(Q["drop_database"]).format(name=sql.Identifier(name)))


def loaded_workload(run: Run, conn: psycopg.Connection[Any], crew: Crew) -> dict[str, Any]:
    total = run.config.loaded_allocations
    with _own_database(run, conn) as (url, own):
        if own is not None:
            db.migrate(url)
        with db.connect(url) as loaded:
            event_ids = [
                run.event(loaded, f"loaded {n}", NEVER_SELLS_OUT) for n in range(LOADED_EVENTS)
            ]
            bar = run.bar("loaded: the hot calls on an empty database", 1)
            _phase(loaded, event_ids[0], "warm", WARMUP_CALLS)  # prepared statements, caches
            empty = _phase(loaded, event_ids[0], "empty")
            bar.finish()
            preload_s, _ = _seconds(lambda: _preload(run, url, event_ids, total))
            bar = run.bar("loaded: VACUUM ANALYZE", 1)
            try:
                vacuum_s, _ = _seconds(lambda: loaded.execute("VACUUM (ANALYZE)"))
            except psycopg.Error:  # e.g. not the tables' owner
                vacuum_s = None
            bar.finish()
            bar = run.bar("loaded: the hot calls on the loaded database", 1)
            full = _phase(loaded, event_ids[0], "loaded")
            bar.finish()
    growth = {op: ratio(full["median_ms"][op], empty["median_ms"][op]) for op in OPERATIONS}
    growth["check_event"] = ratio(full["check_event_s"], empty["check_event_s"])
    return {
        "database": "own (dropped afterwards)" if own is not None else "the given one",
        "events": LOADED_EVENTS,
        "preloaded_allocations": total,
        "preload_s": preload_s,
        "vacuum_analyze_s": vacuum_s,
        "calls": CALLS,
        "empty": empty,
        "loaded": full,
        "loaded_vs_empty": growth,
    }
