"""The client micro-benchmark: client CPU per reserve, the layer against bare psycopg.

One connection (from `ticketing.db.connect`), one event that never sells out.
Blocks of CLIENT_BLOCK calls alternate between `allocations.reserve(...)` and
a bare `conn.execute` of the same statement (the same SQL text, the same
parameters, `prepare=True`, one fetchone), until --seconds have passed (at
most CLIENT_MAX_SECONDS). Each side's client CPU is `time.process_time()`
summed over its blocks: microseconds per call, and layer / bare.
"""

from __future__ import annotations

import time
from typing import Any

import psycopg

from ticketing import allocations, db
from ticketing._tx import LOCK_TIMEOUT
from ticketing.bench.config import NEVER_SELLS_OUT
from ticketing.bench.context import Run
from ticketing.bench.crew import Crew
from ticketing.bench.stats import ratio
from ticketing.queries import load

RESERVE = load("allocations.sql")["reserve"]
CLIENT_BLOCK = 100
CLIENT_MAX_SECONDS = 5.0
CLIENT_WARMUP = 50


def client_workload(run: Run, conn: psycopg.Connection[Any], crew: Crew) -> dict[str, Any]:
    event_id = run.event(conn, "client", NEVER_SELLS_OUT)
    seconds = min(run.seconds, CLIENT_MAX_SECONDS)
    bar = run.bar("client: CPU per reserve, layer vs bare psycopg", seconds)
    hold = allocations.DEFAULT_HOLD
    cpu = {"layer": 0.0, "bare": 0.0}
    calls = {"layer": 0, "bare": 0}
    with db.connect(run.url) as client:
        n = 0

        def layer() -> None:
            allocations.reserve(
                client, event_id=event_id, fingerprint=f"{run.tag}-c-{n}", quantity=1, hold=hold
            )

        def bare() -> None:
            params = {
                "event_id": event_id,
                "fingerprint": f"{run.tag}-c-{n}",
                "quantity": 1,
                "hold": hold,
                "idempotency_key": None,
                "lock_timeout": LOCK_TIMEOUT,
            }
            client.execute(RESERVE, params, prepare=True).fetchone()

        sides = {"layer": layer, "bare": bare}
        for call in sides.values():  # warm up: prepared statements, caches
            for _ in range(CLIENT_WARMUP):
                n += 1
                call()
        started = time.monotonic()
        while time.monotonic() - started < seconds or not calls["bare"]:
            for name, call in sides.items():
                begun = time.process_time()
                for _ in range(CLIENT_BLOCK):
                    n += 1
                    call()
                cpu[name] += time.process_time() - begun
                calls[name] += CLIENT_BLOCK
            bar.update(time.monotonic() - started)
    bar.finish()
    per_call = {name: round(1e6 * cpu[name] / calls[name], 1) for name in sides}
    return {
        "event_id": event_id,
        "calls": calls,
        "layer_us_per_call": per_call["layer"],
        "bare_us_per_call": per_call["bare"],
        "layer_vs_bare": ratio(per_call["layer"], per_call["bare"]),
    }
