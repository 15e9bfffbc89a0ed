"""Cost as the tables grow: each hot call's median, on an empty database and a loaded one.

Two databases of the run's server, created, migrated and dropped by the
workload: one stays empty, the other gets `loaded_allocations` allocations
(with their tickets) over LOADED_EVENTS events, the measured one among them,
through the layer's triggers in statements of LOAD_BATCH rows: 60% purchased,
10% purchased then cancelled (tickets voided), 10% cancelled holds, 20% live
holds. Then VACUUM ANALYZE of both, as autovacuum would have done by then.

One connection to each then runs, in alternating blocks of BLOCK calls (so
that a noisy machine slows both sides alike), reserves (2 tickets, one buyer
per call), purchases of those holds, cancels of those purchases and
get_availability on the measured event; then check_invariants for the event
and for the whole database. loaded / empty is the growth of each call's
median. It runs once per benchmark, in the first regime that runs it: the
cost of bigger tables is measured best where commits are cheap.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import psycopg

from ticketing import admin, allocations, db, events
from ticketing.bench.config import NEVER_SELLS_OUT
from ticketing.bench.context import Run
from ticketing.bench.crew import Crew
from ticketing.bench.sql import Q
from ticketing.bench.stats import ratio

#: Events the preload spreads its allocations over (the measured one is the first).
LOADED_EVENTS = 100
#: Allocations per preload statement (docs/design.md, 4.3: row triggers in big
#: statements cost more per row).
LOAD_BATCH = 200
#: The preload's live holds last longer than the run.
PRELOAD_HOLD = timedelta(days=1)
#: Connections that preload at once (one per core of a small machine).
PRELOAD_CONNECTIONS = 2
#: Timed calls of each operation on each side, in blocks that alternate between
#: the sides; untimed calls on each side before the first block.
CALLS = 300
BLOCK = 50
WARMUP_CALLS = 50
SIDES = ("empty", "loaded")
#: The operations whose loaded / empty median is a target.
OPERATIONS = ("reserve", "purchase", "cancel", "get_availability")


def _seconds(call: Callable[[], object]) -> tuple[float, Any]:
    begun = time.perf_counter()
    value = call()
    return round(time.perf_counter() - begun, 3), value


@dataclass
class _Side:
    """One database's connection, measured event and call times (seconds, by operation)."""

    conn: psycopg.Connection[Any]
    event_id: int
    made: int = 0
    times: dict[str, list[float]] = field(default_factory=lambda: {op: [] for op in OPERATIONS})

    def block(self, calls: int, timed: bool = True) -> None:
        """`calls` of each operation, in order: reserve, purchase, cancel, get_availability."""
        conn, event_id = self.conn, self.event_id
        buyers = [f"probe-{self.made + n}" for n in range(calls)]
        self.made += calls
        held: list[int] = []

        def time_each(op: str, call: Callable[[str, int], object]) -> None:
            for n, fingerprint in enumerate(buyers):
                begun = time.perf_counter()
                call(fingerprint, n)
                if timed:
                    self.times[op].append(time.perf_counter() - begun)

        time_each(
            "reserve",
            lambda f, n: held.append(
                allocations.reserve(conn, event_id=event_id, fingerprint=f, quantity=2).id
            ),
        )
        time_each(
            "purchase",
            lambda f, n: allocations.purchase(conn, allocation_id=held[n], fingerprint=f),
        )
        time_each(
            "cancel", lambda f, n: allocations.cancel(conn, allocation_id=held[n], fingerprint=f)
        )
        time_each("get_availability", lambda f, n: events.get_availability(conn, event_id))

    def report(self) -> dict[str, Any]:
        """The medians (ms), the checks' times (s) and the database's size."""
        check_event_s, event_problems = _seconds(
            lambda: admin.check_invariants(self.conn, event_id=self.event_id)
        )
        check_all_s, all_problems = _seconds(lambda: admin.check_invariants(self.conn))
        row = self.conn.execute(Q["load_sizes"]).fetchone()
        assert row is not None
        return {
            "allocations": int(row[0]),
            "tickets": int(row[1]),
            "median_ms": {
                op: round(1000 * statistics.median(times), 3) for op, times in self.times.items()
            },
            "check_event_s": check_event_s,
            "check_all_s": check_all_s,
            "violations": len(event_problems) + len(all_problems),
        }


def _load_event(conn: psycopg.Connection[Any], event_id: int, count: int, done: Any) -> None:
    """`count` allocations on one event (make_holds), then some purchased or cancelled;
    `done(n)` after each batch."""
    for first in range(0, count, LOAD_BATCH):
        batch = min(LOAD_BATCH, count - first)
        with conn.transaction():
            params = {"event_id": event_id, "first": first, "count": batch, "hold": PRELOAD_HOLD}
            ids = enumerate((r[0] for r in conn.execute(Q["make_holds"], params)), first)
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


def _database(run: Run, side: str) -> AbstractContextManager[str]:
    """A migrated database of the run's server for one side; dropped afterwards."""
    return db.migrated_database(run.url, f"ticketing_bench_{run.tag}_{side}".lower())


def loaded_workload(run: Run, conn: psycopg.Connection[Any], crew: Crew) -> dict[str, Any]:
    row = conn.execute(Q["may_create_databases"]).fetchone()
    if row is None or not row[0]:
        return {"skipped": "needs a login with CREATEDB (it makes two databases of its own)"}
    total = run.config.loaded_allocations
    with ExitStack() as stack:
        urls = {side: stack.enter_context(_database(run, side)) for side in SIDES}
        sides: dict[str, _Side] = {}
        loaded_ids: list[int] = []
        for name, url in urls.items():
            side_conn = stack.enter_context(db.connect(url))
            ids = [
                run.event(side_conn, f"{name} {n}", NEVER_SELLS_OUT) for n in range(LOADED_EVENTS)
            ]
            sides[name] = _Side(side_conn, ids[0])
            if name == "loaded":
                loaded_ids = ids
        preload_s, _ = _seconds(lambda: _preload(run, urls["loaded"], loaded_ids, total))
        bar = run.bar("loaded: VACUUM ANALYZE", 1)
        vacuum_s, _ = _seconds(
            lambda: [s.conn.execute(Q["vacuum_analyze"]) for s in sides.values()]
        )
        bar.finish()
        bar = run.bar("loaded: the hot calls, empty and loaded in turn", CALLS)
        for side in sides.values():
            side.block(WARMUP_CALLS, timed=False)  # prepared statements, caches
        measured_from, calls = time.monotonic(), 0
        while calls < CALLS:  # CALLS per side, or fewer when --seconds runs out first
            for side in sides.values():
                side.block(BLOCK)
            calls += BLOCK
            bar.update(calls)
            if time.monotonic() - measured_from >= run.seconds:
                break
        bar.finish()
        empty, full = sides["empty"].report(), sides["loaded"].report()
    growth = {op: ratio(full["median_ms"][op], empty["median_ms"][op]) for op in OPERATIONS}
    growth["check_event"] = ratio(full["check_event_s"], empty["check_event_s"])
    return {
        "events": LOADED_EVENTS,
        "preloaded_allocations": total,
        "preload_s": preload_s,
        "vacuum_analyze_s": vacuum_s,
        "calls": calls,
        "block": BLOCK,
        "empty": empty,
        "loaded": full,
        "loaded_vs_empty": growth,
    }
