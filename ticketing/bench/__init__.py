"""The benchmark behind `ticketing bench`: how fast the layer reserves, against baselines.

Buyers are separate processes (multiprocessing, spawn context, so the GIL caps
nothing), each with its own connection from `ticketing.db.connect`; they pass
a barrier together, work for the same number of seconds and send back their
counts and latencies. The workloads:

- hot: every buyer reserves 1-4 tickets of ONE event (capacity never runs out);
- async: the same load through ticketing.aio: --workers asyncio tasks spread
  over one process per CPU, each process with a pool of one connection per task;
- for-update, single-update: the same load on two baselines that live only
  here, in the `bench` schema: the textbook SELECT ... FOR UPDATE transaction,
  and one conditional UPDATE statement;
- pgbench: the layer's own reserve statement, turned into a pgbench script;
- spread: the same buyers over many events;
- sellout: N buyers, one ticket each, for fewer tickets; exact counts;
- service: the same sell-out over HTTP, through examples/service under uvicorn
  (service.py; skipped without it, fastapi, uvicorn or httpx);
- sweeper: short holds that lapse during the run, without and with a sweeper
  process expiring them;
- purchase, cancel, expire, floor: pgbench on the layer's statements against
  the design's floor (server.py);
- client: client CPU per reserve against a bare psycopg execute (client.py);
- loaded: each hot call's median on an empty database and after a preload
  of 1,000,000 allocations (loaded.py).

Speeds are reported, never asserted; only wrong counts (a sell-out that is not
exact, an answer other than SoldOut) make a run fail.

Modules: config (what to run, constants, targets, the report), sql and
baselines.sql (the benchmark's own statements), buyers (what buyer processes
do), crew (the parent's side of them), stats, pgbench, workloads, server,
service, client, loaded, regimes (the servers and their commit latency), verdicts,
run (one run), tables (the printed summary).
"""

from __future__ import annotations

from ticketing.bench.config import (
    LOADED_ALLOCATIONS,
    NEVER_SELLS_OUT,
    SPREAD_EVENTS,
    BenchConfig,
    BenchError,
    BenchReport,
    Workload,
    check_writable,
    default_json_path,
    write_json,
)
from ticketing.bench.loaded import OPERATIONS as LOADED_OPERATIONS
from ticketing.bench.pgbench import find_pgbench, pgbench_connection, pgbench_script
from ticketing.bench.run import run_bench
from ticketing.bench.tables import summary

__all__ = [
    "LOADED_ALLOCATIONS",
    "LOADED_OPERATIONS",
    "NEVER_SELLS_OUT",
    "SPREAD_EVENTS",
    "BenchConfig",
    "BenchError",
    "BenchReport",
    "Workload",
    "check_writable",
    "default_json_path",
    "find_pgbench",
    "pgbench_connection",
    "pgbench_script",
    "run_bench",
    "summary",
    "write_json",
]
