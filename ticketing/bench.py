"""The benchmark behind `ticketing bench`: how fast the layer reserves, against baselines.

Buyers are separate processes (multiprocessing, spawn context, so the GIL caps
nothing), each with its own connection from `ticketing.db.connect`; they pass
a barrier together, work for the same number of seconds and send back their
counts and latencies. The workloads:

- hot: every buyer reserves 1-4 tickets of ONE event (capacity never runs out);
- for-update, single-update: the same load on two baselines that live only
  here, in the `bench` schema: the textbook SELECT ... FOR UPDATE transaction,
  and one conditional UPDATE statement;
- pgbench: the layer's own reserve statement, turned into a pgbench script;
- spread: the same buyers over many events;
- sellout: N buyers, one ticket each, for fewer tickets; exact counts;
- sweeper: short holds that lapse during the run, without and with a sweeper
  process expiring them.

Speeds are reported, never asserted; only wrong counts (a sell-out that is not
exact, an answer other than SoldOut) make a run fail.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import platform
import queue
import random
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from array import array
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from multiprocessing.context import SpawnProcess
from multiprocessing.queues import Queue
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Barrier, Event
from pathlib import Path
from typing import Any

import psycopg
from psycopg import conninfo
from rich.console import Group
from rich.progress import Progress, TaskID
from rich.table import Table

from ticketing import allocations, db, embedded, events
from ticketing._tx import LOCK_TIMEOUT
from ticketing.errors import InvalidInput, SoldOut, TicketingError
from ticketing.queries import load


class Workload(StrEnum):
    """The workloads `--only` can pick, in the order they run."""

    HOT = "hot"
    FOR_UPDATE = "for-update"
    SINGLE_UPDATE = "single-update"
    PGBENCH = "pgbench"
    SPREAD = "spread"
    SELLOUT = "sellout"
    SWEEPER = "sweeper"


#: Capacity of the events of the timed workloads: never sells out during a run.
NEVER_SELLS_OUT = 2_000_000_000
#: Events the spread workload reserves on.
SPREAD_EVENTS = 1000
#: Hold of the sweeper workload: short enough to lapse during the run.
SHORT_HOLD = timedelta(milliseconds=500)
#: The sweeper process pauses this long after a batch that was not full.
SWEEPER_PAUSE = 0.1
#: Holds per expire_due call of the sweeper (and when draining before the run).
SWEEPER_BATCH = 1000
#: Longest wait for every buyer process to be connected and ready.
READY_TIMEOUT = 120.0
#: Reserve quantities, as in the issue: 1-4 tickets, chosen at random.
QUANTITY_RANGE = (1, 4)

# Targets, reported (never asserted): the layer's throughput against each reference.
TARGET_VS_FOR_UPDATE = 4.0
TARGET_VS_SINGLE_UPDATE = 2.0
TARGET_VS_PGBENCH = 0.7
TARGET_SWEEPER = 0.9

# ---------------------------------------------------------------------------
# The baselines: two textbook implementations that live only in the benchmark.

BASELINE_SCHEMA = "CREATE SCHEMA IF NOT EXISTS bench"
BASELINE_DROP = "DROP TABLE IF EXISTS bench.allocations, bench.events"
BASELINE_EVENTS_TABLE = """
CREATE TABLE bench.events (
    id bigint PRIMARY KEY,
    total integer NOT NULL,
    taken integer NOT NULL DEFAULT 0,
    CHECK (taken <= total)
)
"""
BASELINE_ALLOCATIONS_TABLE = """
CREATE TABLE bench.allocations (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id bigint NOT NULL REFERENCES bench.events (id),
    fingerprint text NOT NULL,
    quantity integer NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
)
"""
BASELINE_NEW_EVENT = "INSERT INTO bench.events (id, total, taken) VALUES (%(id)s, %(total)s, 0)"

# (a) Three round trips inside BEGIN ... COMMIT: lock and read, update, insert.
FOR_UPDATE_LOCK = "SELECT total, taken FROM bench.events WHERE id = %(id)s FOR UPDATE"
FOR_UPDATE_TAKE = "UPDATE bench.events SET taken = taken + %(q)s WHERE id = %(id)s"
FOR_UPDATE_INSERT = """
INSERT INTO bench.allocations (event_id, fingerprint, quantity)
VALUES (%(id)s, %(fp)s, %(q)s)
RETURNING id
"""

# (b) One statement: a conditional UPDATE that feeds the INSERT.
SINGLE_UPDATE = """
WITH e AS (
    UPDATE bench.events SET taken = taken + %(q)s
    WHERE id = %(id)s AND taken + %(q)s <= total
    RETURNING id
)
INSERT INTO bench.allocations (event_id, fingerprint, quantity)
SELECT id, %(fp)s, %(q)s FROM e
RETURNING id
"""

BASELINE_EVENT_IDS = {Workload.FOR_UPDATE: 1, Workload.SINGLE_UPDATE: 2}

# ---------------------------------------------------------------------------
# Reading the results back from the layer's tables.

COUNT_VALID_TICKETS = """
SELECT count(*) FROM tickets WHERE event_id = %(event_id)s AND voided_at IS NULL
"""
COUNT_EVENT_ALLOCATIONS = "SELECT count(*) FROM allocations WHERE event_id = %(event_id)s"
SERVER_FACTS = """
SELECT current_setting('server_version'),
       current_setting('synchronous_commit'),
       current_setting('max_connections')::integer
"""

# ---------------------------------------------------------------------------
# pgbench: the layer's reserve statement with pgbench variables for its parameters.

#: What each named parameter of the reserve statement becomes in the pgbench script.
PGBENCH_PARAMETERS = {
    "event_id": "CAST(:event_id AS bigint)",
    "fingerprint": "('pgbench-' || CAST(:client_id AS text) || '-' || CAST(:nonce AS text))",
    "quantity": "CAST(:quantity AS integer)",
    "hold": "interval '10 minutes'",
    "idempotency_key": "CAST(NULL AS text)",
    "lock_timeout": f"CAST('{LOCK_TIMEOUT}' AS text)",
}
PGBENCH_PREAMBLE = (
    f"\\set quantity random({QUANTITY_RANGE[0]}, {QUANTITY_RANGE[1]})\n"
    "\\set nonce random(1, 2000000000)\n"
)
_PSYCOPG_PARAMETER = re.compile(r"%\((\w+)\)s|%%|%s")
_PGBENCH_TPS = re.compile(r"^tps = ([0-9.]+) \(without initial connection time\)", re.MULTILINE)
_PGBENCH_TRANSACTIONS = re.compile(r"number of transactions actually processed: (\d+)")
_PGBENCH_LATENCY = re.compile(r"latency average = ([0-9.]+) ms")
_PGBENCH_FAILED = re.compile(r"number of failed transactions: (\d+)")


class BenchError(TicketingError):
    """The benchmark could not run (a buyer process died, pgbench is unusable, ...)."""


@dataclass(frozen=True)
class BenchConfig:
    """What to run, and how hard."""

    workers: int = 16
    seconds: int = 10
    only: frozenset[Workload] = frozenset(Workload)
    sellout_buyers: int = 10_000
    sellout_tickets: int = 1000
    spread_events: int = SPREAD_EVENTS

    def runs(self, workload: Workload) -> bool:
        return workload in self.only


@dataclass
class BenchReport:
    """One run's numbers (`data`, written as JSON) and its correctness failures."""

    data: dict[str, Any]
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


def default_json_path(now: datetime | None = None) -> Path:
    """bench/results/bench-<UTC timestamp>.json, under the current directory."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    return Path("bench") / "results" / f"bench-{stamp}.json"


def write_json(report: BenchReport, path: Path) -> None:
    """Write the report's data (creating the directory)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report.data, indent=2, sort_keys=False) + "\n", encoding="utf-8")


# ---------------------------------------------------------------------------
# What buyer processes do and send back.


@dataclass(frozen=True)
class _Task:
    """One workload for every buyer process."""

    kind: Workload
    event_ids: tuple[int, ...]
    seconds: float
    tag: str
    seed: int
    hold: timedelta = allocations.DEFAULT_HOLD
    attempts: int = 0  # sellout: attempts shared by all processes


@dataclass
class _Tally:
    """What one buyer process did during one task."""

    index: int
    started: float  # time.monotonic(): one clock for every process of the machine
    finished: float
    done: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    latencies: array[float] = field(default_factory=lambda: array("d"))
    purchased_at: array[float] = field(default_factory=lambda: array("d"))  # sellout
    purchases: int = 0
    samples: dict[str, str] = field(default_factory=dict)  # the first message of each error

    def error(self, name: str, exc: Exception) -> None:
        self.errors[name] += 1
        self.samples.setdefault(name, " ".join(str(exc).split())[:500])


@dataclass(frozen=True)
class _Shared:
    """What the parent shares with its buyer processes (handed over when they start)."""

    barrier: Barrier  # of the buyers: they start each task together
    attempts: Synchronized[int]  # sell-out attempts taken so far
    started: Synchronized[float]  # time.monotonic() when the current task started, else 0
    ready: Synchronized[int]  # buyer processes that have imported everything and wait for tasks


@dataclass(frozen=True)
class _Failure:
    index: int
    message: str


def _reserve_layer(
    conn: psycopg.Connection[Any], task: _Task, index: int, rng: random.Random
) -> Callable[[int], None]:
    def reserve(n: int) -> None:
        allocations.reserve(
            conn,
            event_id=rng.choice(task.event_ids),
            fingerprint=f"{task.tag}-{index}-{n}",
            quantity=rng.randint(*QUANTITY_RANGE),
            hold=task.hold,
        )

    return reserve


def _reserve_for_update(
    conn: psycopg.Connection[Any], task: _Task, index: int, rng: random.Random
) -> Callable[[int], None]:
    def reserve(n: int) -> None:
        params = {
            "id": task.event_ids[0],
            "q": rng.randint(*QUANTITY_RANGE),
            "fp": f"{task.tag}-{index}-{n}",
        }
        with conn.transaction():
            row = conn.execute(FOR_UPDATE_LOCK, params).fetchone()
            assert row is not None, "the baseline event is missing"
            total, taken = row
            if taken + params["q"] > total:
                raise SoldOut("sold out", available=total - taken)
            conn.execute(FOR_UPDATE_TAKE, params)
            conn.execute(FOR_UPDATE_INSERT, params)

    return reserve


def _reserve_single_update(
    conn: psycopg.Connection[Any], task: _Task, index: int, rng: random.Random
) -> Callable[[int], None]:
    def reserve(n: int) -> None:
        params = {
            "id": task.event_ids[0],
            "q": rng.randint(*QUANTITY_RANGE),
            "fp": f"{task.tag}-{index}-{n}",
        }
        if conn.execute(SINGLE_UPDATE, params).fetchone() is None:
            raise SoldOut("sold out", available=0)

    return reserve


_OPERATIONS = {
    Workload.HOT: _reserve_layer,
    Workload.SPREAD: _reserve_layer,
    Workload.SWEEPER: _reserve_layer,
    Workload.FOR_UPDATE: _reserve_for_update,
    Workload.SINGLE_UPDATE: _reserve_single_update,
}


def _timed(index: int, seconds: float, operation: Callable[[int], None]) -> _Tally:
    """Call `operation` back to back for `seconds`; count successes, errors and latencies."""
    started = now = time.monotonic()
    deadline = started + seconds
    tally = _Tally(index=index, started=started, finished=started)
    n = 0
    while now < deadline:
        n += 1
        try:
            operation(n)
        except (TicketingError, psycopg.Error) as exc:
            tally.error(type(exc).__name__, exc)
        else:
            tally.done += 1
        end = time.monotonic()
        tally.latencies.append(end - now)
        now = end
    tally.finished = now
    return tally


def _sellout(
    conn: psycopg.Connection[Any], index: int, task: _Task, attempts: Synchronized[int]
) -> _Tally:
    """Take attempts from the shared counter until none are left: reserve 1, then purchase."""
    started = time.monotonic()
    tally = _Tally(index=index, started=started, finished=started)
    event_id = task.event_ids[0]
    while True:
        with attempts.get_lock():
            if attempts.value >= task.attempts:
                break
            attempts.value += 1
            n = attempts.value
        fingerprint = f"{task.tag}-{n}"
        begun = time.monotonic()
        try:
            hold = allocations.reserve(
                conn, event_id=event_id, fingerprint=fingerprint, quantity=1, hold=task.hold
            )
        except TicketingError as exc:
            tally.error(type(exc).__name__, exc)
            tally.latencies.append(time.monotonic() - begun)
            continue
        tally.done += 1
        tally.latencies.append(time.monotonic() - begun)
        try:
            allocations.purchase(conn, allocation_id=hold.id, fingerprint=fingerprint)
        except TicketingError as exc:
            tally.error(f"purchase: {type(exc).__name__}", exc)
            continue
        tally.purchases += 1
        tally.purchased_at.append(time.monotonic())
    tally.finished = time.monotonic()
    return tally


def _perform(index: int, url: str, task: _Task, shared: _Shared) -> _Tally:
    rng = random.Random(task.seed * 1000 + index)  # noqa: S311 - simulated buyers, not secrets
    with db.connect(url) as conn:
        operation = None if task.kind is Workload.SELLOUT else _OPERATIONS[task.kind]
        reserve = None if operation is None else operation(conn, task, index, rng)
        shared.barrier.wait(READY_TIMEOUT)
        if index == 0:
            shared.started.value = time.monotonic()
        if reserve is None:
            return _sellout(conn, index, task, shared.attempts)
        return _timed(index, task.seconds, reserve)


def _buyer_process(
    index: int,
    url: str,
    inbox: Queue[_Task | None],
    results: Queue[_Tally | _Failure],
    shared: _Shared,
) -> None:
    """A buyer process: run tasks from `inbox` until None; one connection per task."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops us
    with shared.ready.get_lock():
        shared.ready.value += 1
    while (task := inbox.get()) is not None:
        try:
            tally = _perform(index, url, task, shared)
        except BaseException as exc:
            shared.barrier.abort()  # nobody waits for this process any longer
            results.put(_Failure(index, f"{type(exc).__name__}: {exc}"))
        else:
            results.put(tally)


def _sweeper_process(
    url: str, stop: Event, ready: Event, report: Queue[tuple[int, int, str | None]]
) -> None:
    """Expire lapsed holds in a loop until `stop`; report (expired, rounds, error)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    expired = rounds = 0
    error: str | None = None
    try:
        with db.connect(url) as conn:
            ready.set()
            while not stop.is_set():
                batch = allocations.expire_due(conn, limit=SWEEPER_BATCH)
                expired += batch
                rounds += 1
                if batch < SWEEPER_BATCH:
                    stop.wait(SWEEPER_PAUSE)
    except BaseException as exc:
        error = f"{type(exc).__name__}: {exc}"
    finally:
        ready.set()
        report.put((expired, rounds, error))


# ---------------------------------------------------------------------------
# The parent: a crew of buyer processes, started once for the whole run.


class _Bar:
    """One line of the progress display (nothing without one)."""

    def __init__(self, progress: Progress | None, description: str, total: float) -> None:
        self.progress = progress
        self.total = total
        self.task: TaskID | None = (
            progress.add_task(description, total=total) if progress is not None else None
        )

    def update(self, completed: float, description: str | None = None) -> None:
        if self.progress is not None and self.task is not None:
            self.progress.update(
                self.task, completed=min(completed, self.total), description=description
            )

    def finish(self) -> None:
        self.update(self.total)


class _Crew:
    """`workers` buyer processes that run the same task together, started by a barrier."""

    def __init__(self, url: str, workers: int) -> None:
        self.url = url
        self.workers = workers
        self.ctx = multiprocessing.get_context("spawn")
        self.shared = _Shared(
            barrier=self.ctx.Barrier(workers),
            attempts=self.ctx.Value("q", 0),
            started=self.ctx.Value("d", 0.0),
            ready=self.ctx.Value("q", 0),
        )
        self.results: Queue[_Tally | _Failure] = self.ctx.Queue()
        self.inboxes: list[Queue[_Task | None]] = [self.ctx.Queue() for _ in range(workers)]
        self.processes: list[SpawnProcess] = [
            self.ctx.Process(
                target=_buyer_process,
                args=(i, url, self.inboxes[i], self.results, self.shared),
                name=f"bench-buyer-{i}",
                daemon=True,
            )
            for i in range(workers)
        ]

    def start(self, bar: _Bar) -> _Crew:
        """Start the processes; return when every one of them is ready for tasks."""
        with _sigint_ignored():
            for process in self.processes:
                process.start()
        deadline = time.monotonic() + READY_TIMEOUT
        while (ready := self.shared.ready.value) < self.workers:
            bar.update(ready)
            dead = [p.name for p in self.processes if not p.is_alive()]
            if dead:
                raise BenchError(f"buyer processes failed to start: {', '.join(dead)}")
            if time.monotonic() > deadline:
                raise BenchError(f"only {ready} of {self.workers} buyer processes started")
            time.sleep(0.05)
        bar.finish()
        return self

    def __enter__(self) -> _Crew:
        return self

    def __exit__(self, kind: type[BaseException] | None, *exc: object) -> None:
        """Let the processes finish; after an error (or Ctrl-C), stop them at once."""
        started = [p for p in self.processes if p.pid is not None]
        for inbox in self.inboxes:
            inbox.put(None)
        deadline = time.monotonic() + (10 if kind is None else 0)
        for process in started:
            process.join(max(0.0, deadline - time.monotonic()))
        for process in started:
            if process.is_alive():
                process.terminate()
                process.join(5)

    def run(self, task: _Task, bar: _Bar, done: Callable[[float], float]) -> list[_Tally]:
        """Every process runs `task`; `done(elapsed)` says how far along it is for the bar."""
        self.shared.attempts.value = 0
        self.shared.started.value = 0.0
        for inbox in self.inboxes:
            inbox.put(task)
        sent = time.monotonic()
        tallies: list[_Tally] = []
        while len(tallies) < self.workers:
            try:
                item = self.results.get(timeout=0.1)
            except queue.Empty:
                item = None
            if isinstance(item, _Failure):
                raise BenchError(f"{task.kind}: buyer {item.index} failed: {item.message}")
            if item is not None:
                tallies.append(item)
                continue
            started = self.shared.started.value
            if started:
                bar.update(done(time.monotonic() - started))
            elif time.monotonic() - sent > READY_TIMEOUT:
                self.shared.barrier.abort()
                raise BenchError(f"{task.kind}: the buyer processes did not get ready")
            dead = [p.name for p in self.processes if not p.is_alive()]
            if dead:
                self.shared.barrier.abort()
                raise BenchError(f"{task.kind}: buyer processes died: {', '.join(dead)}")
        bar.finish()
        return tallies

    @property
    def attempts(self) -> int:
        """Sell-out attempts taken so far."""
        return int(self.shared.attempts.value)


@contextmanager
def _sigint_ignored() -> Iterator[None]:
    """Children started in this block ignore Ctrl-C from birth; the parent stops them."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@contextmanager
def _sweeper(url: str) -> Iterator[Callable[[], tuple[int, int]]]:
    """A sweeper process for the duration of the block; yields a stop() -> (expired, rounds)."""
    ctx = multiprocessing.get_context("spawn")
    stop, ready = ctx.Event(), ctx.Event()
    report: Queue[tuple[int, int, str | None]] = ctx.Queue()
    process = ctx.Process(
        target=_sweeper_process, args=(url, stop, ready, report), name="bench-sweeper", daemon=True
    )
    with _sigint_ignored():
        process.start()
    outcome: list[tuple[int, int]] = []

    def finish() -> tuple[int, int]:
        if not outcome:
            stop.set()
            try:
                expired, rounds, error = report.get(timeout=60)
            except queue.Empty:
                raise BenchError("the sweeper process did not report back") from None
            if error is not None:
                raise BenchError(f"sweeper failed: {error}")
            outcome.append((expired, rounds))
        return outcome[0]

    try:
        if not ready.wait(READY_TIMEOUT) or not process.is_alive():
            finish()  # raises the sweeper's error
        yield finish
        finish()
    finally:
        stop.set()
        process.join(10)
        if process.is_alive():
            process.terminate()
            process.join(5)


# ---------------------------------------------------------------------------
# Summaries.


def _percentile_ms(ordered: list[float], p: float) -> float | None:
    """Nearest-rank percentile of sorted seconds, in milliseconds."""
    if not ordered:
        return None
    rank = max(1, -(-len(ordered) * p // 100))
    return round(1000 * ordered[int(rank) - 1], 3)


def _summarise(tallies: list[_Tally]) -> dict[str, Any]:
    started = min(t.started for t in tallies)
    finished = max(t.finished for t in tallies)
    seconds = finished - started
    done = sum(t.done for t in tallies)
    errors: Counter[str] = Counter()
    latencies: list[float] = []
    for tally in tallies:
        errors.update(tally.errors)
        latencies.extend(tally.latencies)
    latencies.sort()
    return {
        "reservations": done,
        "seconds": round(seconds, 3),
        "reservations_per_second": round(done / seconds, 1) if seconds > 0 else 0.0,
        "p50_ms": _percentile_ms(latencies, 50),
        "p95_ms": _percentile_ms(latencies, 95),
        "p99_ms": _percentile_ms(latencies, 99),
        "errors": dict(sorted(errors.items())),
        "error_samples": _samples(tallies),
    }


def _samples(tallies: list[_Tally]) -> dict[str, str]:
    """The first message seen of each kind of error, SoldOut excepted (it is expected)."""
    samples: dict[str, str] = {}
    for tally in tallies:
        for name, message in tally.samples.items():
            samples.setdefault(name, message)
    samples.pop("SoldOut", None)
    return dict(sorted(samples.items()))


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return round(numerator / denominator, 3)


def _at_least(value: float | None, target: float) -> bool | None:
    return None if value is None else value >= target


# ---------------------------------------------------------------------------
# pgbench.


def pgbench_script(reserve_sql: str) -> str:
    """A pgbench script that runs `reserve_sql` with pgbench variables for its parameters.

    Comment lines are dropped; every %(name)s must be one of PGBENCH_PARAMETERS.
    """
    body = "\n".join(
        line for line in reserve_sql.splitlines() if not line.lstrip().startswith("--")
    )

    def replace(found: re.Match[str]) -> str:
        name = found.group(1)
        if found.group(0) == "%%":
            return "%"
        if name is None or name not in PGBENCH_PARAMETERS:
            raise BenchError(
                f"the reserve statement has a parameter pgbench cannot fill: {found[0]}"
            )
        return PGBENCH_PARAMETERS[name]

    statement = _PSYCOPG_PARAMETER.sub(replace, body).strip().rstrip(";").strip()
    return f"{PGBENCH_PREAMBLE}{statement};\n"


def find_pgbench() -> Path | None:
    """pgbench from the PostgreSQL bindir, else from PATH; None when there is none."""
    try:
        candidate = embedded.find_bindir() / "pgbench"
    except embedded.ServerBinariesMissing:
        candidate = None
    if candidate is not None and candidate.is_file():
        return candidate
    found = shutil.which("pgbench")
    return Path(found) if found else None


def pgbench_connection(url: str) -> tuple[list[str], dict[str, str]]:
    """pgbench arguments (-h -p -U dbname) and environment (PGPASSWORD, ...) for a URL."""
    if url.startswith("postgresql+psycopg://"):
        url = "postgresql://" + url[len("postgresql+psycopg://") :]
    params = conninfo.conninfo_to_dict(url)
    args: list[str] = []
    for key, flag in (("host", "-h"), ("port", "-p"), ("user", "-U")):
        if params.get(key):
            args += [flag, str(params[key])]
    env: dict[str, str] = {}
    for key, variable in (
        ("password", "PGPASSWORD"),
        ("sslmode", "PGSSLMODE"),
        ("options", "PGOPTIONS"),
        ("connect_timeout", "PGCONNECT_TIMEOUT"),
    ):
        if params.get(key):
            env[variable] = str(params[key])
    if params.get("dbname"):
        args.append(str(params["dbname"]))
    return args, env


def _run_pgbench(
    pgbench: Path, url: str, script: str, event_id: int, config: BenchConfig, bar: _Bar
) -> dict[str, Any]:
    connection, env = pgbench_connection(url)
    with tempfile.TemporaryDirectory(prefix="ticketing-bench-") as tmp:
        path = Path(tmp) / "reserve.sql"
        path.write_text(script, encoding="utf-8")
        command = [
            str(pgbench),
            "-n",
            "-c",
            str(config.workers),
            "-j",
            str(min(2, config.workers)),
            "-T",
            str(config.seconds),
            "-M",
            "prepared",
            "-D",
            f"event_id={event_id}",
            "-f",
            str(path),
            *connection,
        ]
        environ = {k: v for k, v in os.environ.items() if k != "PGPASSWORD"} | env
        started = time.monotonic()
        with subprocess.Popen(  # noqa: S603 - the machine's pgbench, our own arguments
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environ
        ) as proc:
            try:
                while proc.poll() is None:
                    bar.update(time.monotonic() - started)
                    time.sleep(0.1)
            finally:
                if proc.poll() is None:
                    proc.kill()
            stdout, stderr = proc.communicate()
    bar.finish()
    tps = _PGBENCH_TPS.search(stdout)
    transactions = _PGBENCH_TRANSACTIONS.search(stdout)
    latency = _PGBENCH_LATENCY.search(stdout)
    failed = _PGBENCH_FAILED.search(stdout)
    result: dict[str, Any] = {
        "binary": str(pgbench),
        "clients": config.workers,
        "exit_code": proc.returncode,
        "tps": float(tps.group(1)) if tps else None,
        "transactions": int(transactions.group(1)) if transactions else None,
        "latency_average_ms": float(latency.group(1)) if latency else None,
        "failed_transactions": int(failed.group(1)) if failed else 0,
        "script": script,
    }
    if proc.returncode != 0 or tps is None:
        lines = [line for line in (stderr or stdout).strip().splitlines() if line.strip()]
        result["error"] = lines[-1] if lines else f"pgbench exited with {proc.returncode}"
    return result


# ---------------------------------------------------------------------------
# The run.


def _drain(conn: psycopg.Connection[Any]) -> int:
    """Expire every lapsed hold in the database; return how many."""
    total = 0
    while True:
        batch = allocations.expire_due(conn, limit=10 * SWEEPER_BATCH)
        total += batch
        if batch < 10 * SWEEPER_BATCH:
            return total


def _prepare_baselines(conn: psycopg.Connection[Any]) -> None:
    with conn.transaction():
        conn.execute(BASELINE_SCHEMA)
        conn.execute(BASELINE_DROP)
        conn.execute(BASELINE_EVENTS_TABLE)
        conn.execute(BASELINE_ALLOCATIONS_TABLE)
        for event_id in BASELINE_EVENT_IDS.values():
            conn.execute(BASELINE_NEW_EVENT, {"id": event_id, "total": NEVER_SELLS_OUT})


def _machine(conn: psycopg.Connection[Any]) -> tuple[dict[str, Any], int]:
    row = conn.execute(SERVER_FACTS).fetchone()
    assert row is not None
    version, synchronous_commit, max_connections = row
    facts = {
        "cpu_count": os.cpu_count(),
        "server_version": version,
        "synchronous_commit": synchronous_commit,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    return facts, int(max_connections)


def run_bench(url: str, config: BenchConfig, *, progress: Progress | None = None) -> BenchReport:
    """Run the chosen workloads against the migrated database at `url`."""
    if config.runs(Workload.SELLOUT) and config.sellout_buyers < config.sellout_tickets:
        raise InvalidInput(
            f"a sell-out needs at least as many buyers ({config.sellout_buyers:,}) "
            f"as tickets ({config.sellout_tickets:,})"
        )
    started_at = datetime.now(UTC)
    run = _Run(
        url=url,
        config=config,
        progress=progress,
        tag=f"b{started_at:%H%M%S}{random.randrange(1000):03d}",  # noqa: S311 - a label
        seed=int(started_at.timestamp()),
    )
    with db.connect(url) as conn:
        machine, max_connections = _machine(conn)
        # Buyers (or pgbench's clients), one sweeper, this connection and a spare.
        if config.workers + 3 > max_connections:
            raise BenchError(
                f"{config.workers} workers need {config.workers + 3} connections; "
                f"the server allows {max_connections} (max_connections)"
            )
        data: dict[str, Any] = {
            "machine": machine | {"workers": config.workers, "seconds": config.seconds},
            "settings": {
                "workers": config.workers,
                "seconds": config.seconds,
                "workloads": [w.value for w in Workload if config.runs(w)],
                "sellout_buyers": config.sellout_buyers,
                "sellout_tickets": config.sellout_tickets,
                "spread_events": config.spread_events,
                "short_hold_ms": SHORT_HOLD / timedelta(milliseconds=1),
                "sweeper_pause_s": SWEEPER_PAUSE,
                "started_at": started_at.isoformat(),
            },
        }
        data |= {_key(workload): None for workload in Workload}
        report = BenchReport(data)
        bar = _Bar(progress, f"starting {config.workers} buyer processes", config.workers)
        with _Crew(url, config.workers) as crew:
            crew.start(bar)
            if config.runs(Workload.FOR_UPDATE) or config.runs(Workload.SINGLE_UPDATE):
                _prepare_baselines(conn)
            for workload in Workload:
                if config.runs(workload):
                    data[_key(workload)] = _WORKLOADS[workload](run, conn, crew)
            report.failures += data["sellout"].pop("failures") if data["sellout"] else []
    _collect_failures(report)
    _add_ratios(data, report)
    return report


def _key(workload: Workload) -> str:
    """The workload's key in the JSON: for-update -> for_update."""
    return workload.value.replace("-", "_")


@dataclass(frozen=True)
class _Run:
    """What every workload of one run shares."""

    url: str
    config: BenchConfig
    progress: Progress | None
    tag: str  # in event names and fingerprints
    seed: int

    @property
    def seconds(self) -> float:
        return float(self.config.seconds)

    def bar(self, description: str, total: float | None = None) -> _Bar:
        return _Bar(self.progress, description, self.seconds if total is None else total)

    def task(self, kind: Workload, event_ids: tuple[int, ...], label: str, **extra: Any) -> _Task:
        return _Task(
            kind=kind,
            event_ids=event_ids,
            seconds=self.seconds,
            tag=f"{self.tag}-{label}",
            seed=self.seed,
            **extra,
        )

    def event(self, conn: psycopg.Connection[Any], label: str, total: int) -> int:
        return events.create_event(
            conn,
            name=f"bench {self.tag} {label}",
            starts_at=datetime.now(UTC) + timedelta(days=30),
            total_tickets=total,
            max_per_buyer=None,
        ).id


def _elapsed(elapsed: float) -> float:
    return elapsed


def _hot_workload(run: _Run, conn: psycopg.Connection[Any], crew: _Crew) -> dict[str, Any]:
    event_id = run.event(conn, "hot", NEVER_SELLS_OUT)
    bar = run.bar("hot: one event (layer)")
    tallies = crew.run(run.task(Workload.HOT, (event_id,), "hot"), bar, _elapsed)
    return _summarise(tallies) | {"event_id": event_id}


def _baseline_workload(
    kind: Workload,
) -> Callable[[_Run, psycopg.Connection[Any], _Crew], dict[str, Any]]:
    def workload(run: _Run, conn: psycopg.Connection[Any], crew: _Crew) -> dict[str, Any]:
        event_id = BASELINE_EVENT_IDS[kind]
        bar = run.bar(f"{kind}: baseline")
        tallies = crew.run(run.task(kind, (event_id,), _key(kind)), bar, _elapsed)
        return _summarise(tallies) | {"bench_event_id": event_id}

    return workload


def _spread_workload(run: _Run, conn: psycopg.Connection[Any], crew: _Crew) -> dict[str, Any]:
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
    tallies = crew.run(run.task(Workload.SPREAD, tuple(event_ids), "spread"), bar, _elapsed)
    return _summarise(tallies) | {"events": count}


def _pgbench_workload(run: _Run, conn: psycopg.Connection[Any], crew: _Crew) -> dict[str, Any]:
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
    result = _run_pgbench(pgbench, run.url, script, event_id, run.config, bar)
    row = conn.execute(COUNT_EVENT_ALLOCATIONS, {"event_id": event_id}).fetchone()
    assert row is not None
    return result | {"event_id": event_id, "rows_inserted": int(row[0])}


def _sellout_workload(run: _Run, conn: psycopg.Connection[Any], crew: _Crew) -> dict[str, Any]:
    buyers, tickets = run.config.sellout_buyers, run.config.sellout_tickets
    event_id = run.event(conn, "sellout", tickets)
    bar = run.bar(f"sellout: {buyers:,} buyers, {tickets:,} tickets", buyers)
    task = run.task(Workload.SELLOUT, (event_id,), "sellout", attempts=buyers)
    tallies = crew.run(task, bar, lambda _elapsed: float(crew.attempts))
    row = conn.execute(COUNT_VALID_TICKETS, {"event_id": event_id}).fetchone()
    assert row is not None
    sold = int(row[0])
    errors: Counter[str] = Counter()
    for tally in tallies:
        errors.update(tally.errors)
    sold_out = errors.pop("SoldOut", 0)
    reserve_errors = sum(n for name, n in errors.items() if not name.startswith("purchase: "))
    reservations = sum(t.done for t in tallies)
    started = min(t.started for t in tallies)
    purchased_at = sorted(t for tally in tallies for t in tally.purchased_at)
    ended = (
        purchased_at[tickets - 1]
        if len(purchased_at) >= tickets
        else max(t.finished for t in tallies)
    )
    latencies = sorted(x for tally in tallies for x in tally.latencies)
    failures = []
    if sold != tickets:
        failures.append(f"sellout: {sold:,} tickets sold, not {tickets:,}")
    if sold_out != buyers - tickets:
        failures.append(f"sellout: {sold_out:,} buyers got SoldOut, not {buyers - tickets:,}")
    if errors:
        failures.append(
            f"sellout: answers other than SoldOut: {dict(sorted(errors.items()))}; "
            f"first messages: {_samples(tallies)}"
        )
    return {
        "event_id": event_id,
        "buyers": buyers,
        "tickets": tickets,
        "attempts": reservations + sold_out + reserve_errors,
        "reservations": reservations,
        "purchases": sum(t.purchases for t in tallies),
        "sold": sold,
        "oversold": max(0, sold - tickets),
        "sold_out_answers": sold_out,
        "other_errors": dict(sorted(errors.items())),
        "error_samples": _samples(tallies),
        "seconds_to_sell_out": round(ended - started, 3),
        "reserve_p99_ms": _percentile_ms(latencies, 99),
        "exact": not failures,
        "failures": failures,
    }


def _sweeper_workload(run: _Run, conn: psycopg.Connection[Any], crew: _Crew) -> dict[str, Any]:
    seconds = run.seconds
    bar = run.bar("sweeper: short holds, no sweeper", 2 * seconds)
    without_event = run.event(conn, "sweeper without", NEVER_SELLS_OUT)
    task = run.task(Workload.SWEEPER, (without_event,), "without", hold=SHORT_HOLD)
    without = _summarise(crew.run(task, bar, _elapsed))
    # The second half starts with nothing lapsed: the sweeper meets only its own run's holds.
    bar.update(seconds, "sweeper: expiring the holds left so far")
    time.sleep(SHORT_HOLD.total_seconds())
    drained = _drain(conn)
    with_event = run.event(conn, "sweeper with", NEVER_SELLS_OUT)
    bar.update(seconds, "sweeper: short holds, with a sweeper process")
    with _sweeper(run.url) as stop_sweeper:
        task = run.task(Workload.SWEEPER, (with_event,), "with", hold=SHORT_HOLD)
        with_sweeper = _summarise(crew.run(task, bar, lambda elapsed: seconds + elapsed))
        expired, rounds = stop_sweeper()
    return {
        "hold_ms": SHORT_HOLD / timedelta(milliseconds=1),
        "without": without | {"event_id": without_event},
        "with": with_sweeper | {"event_id": with_event},
        "drained_between_runs": drained,
        "expired_by_sweeper": expired,
        "sweeper_rounds": rounds,
    }


_WORKLOADS: dict[Workload, Callable[[_Run, psycopg.Connection[Any], _Crew], dict[str, Any]]] = {
    Workload.HOT: _hot_workload,
    Workload.FOR_UPDATE: _baseline_workload(Workload.FOR_UPDATE),
    Workload.SINGLE_UPDATE: _baseline_workload(Workload.SINGLE_UPDATE),
    Workload.PGBENCH: _pgbench_workload,
    Workload.SPREAD: _spread_workload,
    Workload.SELLOUT: _sellout_workload,
    Workload.SWEEPER: _sweeper_workload,
}


def _collect_failures(report: BenchReport) -> None:
    """Timed workloads never sell out, so any error answer is a failure."""
    data = report.data
    timed_results: dict[str, dict[str, Any] | None] = {
        "hot": data["hot"],
        "for-update": data["for_update"],
        "single-update": data["single_update"],
        "spread": data["spread"],
    }
    if data["sweeper"] is not None:
        timed_results["sweeper without"] = data["sweeper"]["without"]
        timed_results["sweeper with"] = data["sweeper"]["with"]
    for name, result in timed_results.items():
        if result is not None and result["errors"]:
            report.failures.append(
                f"{name}: error answers {result['errors']}; "
                f"first messages: {result['error_samples']}"
            )
    pgbench = data["pgbench"]
    if pgbench is not None and "error" in pgbench:
        report.failures.append(f"pgbench: {pgbench['error']}")
    elif pgbench is not None and pgbench.get("failed_transactions"):
        report.failures.append(f"pgbench: {pgbench['failed_transactions']} failed transactions")


def _add_ratios(data: dict[str, Any], report: BenchReport) -> None:
    def rate(name: str) -> float | None:
        result = data[name]
        return None if result is None else float(result["reservations_per_second"])

    def p99(name: str) -> float | None:
        result = data[name]
        return None if result is None else result["p99_ms"]

    pgbench = data["pgbench"]
    pgbench_tps = None if pgbench is None else pgbench.get("tps")
    sweeper = data["sweeper"]
    ratios = {
        "layer_vs_for_update": _ratio(rate("hot"), rate("for_update")),
        "layer_vs_single_update": _ratio(rate("hot"), rate("single_update")),
        "layer_vs_pgbench": _ratio(rate("hot"), pgbench_tps),
        "sweeper_with_vs_without": None
        if sweeper is None
        else _ratio(
            sweeper["with"]["reservations_per_second"],
            sweeper["without"]["reservations_per_second"],
        ),
        "p99_layer_ms": p99("hot"),
        "p99_single_update_ms": p99("single_update"),
    }
    layer_p99, single_p99 = ratios["p99_layer_ms"], ratios["p99_single_update_ms"]
    data["ratios"] = ratios
    data["targets"] = {
        "layer_vs_for_update": _at_least(ratios["layer_vs_for_update"], TARGET_VS_FOR_UPDATE),
        "layer_vs_single_update": _at_least(
            ratios["layer_vs_single_update"], TARGET_VS_SINGLE_UPDATE
        ),
        "layer_vs_pgbench": _at_least(ratios["layer_vs_pgbench"], TARGET_VS_PGBENCH),
        "p99_no_worse": None
        if layer_p99 is None or single_p99 is None
        else layer_p99 <= single_p99,
        "sellout_exact": None if data["sellout"] is None else data["sellout"]["exact"],
        "sweeper_with_vs_without": _at_least(ratios["sweeper_with_vs_without"], TARGET_SWEEPER),
    }
    data["failures"] = list(report.failures)
    data["ok"] = report.ok


# ---------------------------------------------------------------------------
# The table.


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _verdict(value: bool | None, missed: str = "[yellow]missed[/]") -> str:
    if value is None:
        return "[dim]not run[/]"
    return "[green]met[/]" if value else missed


def summary(report: BenchReport) -> Group:
    """The run as tables: the workloads (machine facts in the title), the sell-out, the targets."""
    data = report.data
    machine = data["machine"]
    title = (
        f"ticketing bench: {machine['cpu_count']} CPUs, "
        f"PostgreSQL {str(machine['server_version']).split()[0]}, "
        f"synchronous_commit={machine['synchronous_commit']}, "
        f"{machine['workers']} workers, {machine['seconds']} s runs"
    )
    tables = [_workloads_table(data, title)]
    if data["sellout"] is not None:
        tables.append(_sellout_table(data["sellout"]))
    tables.append(_targets_table(data))
    return Group(*tables)


def _workloads_table(data: dict[str, Any], title: str) -> Table:
    table = Table(title=title, caption="reservations per second; latency in ms")
    table.add_column("workload", no_wrap=True)
    for name in ("per s", "p50", "p95", "p99", "count", "errors"):
        table.add_column(name, justify="right")

    def timed_row(label: str, result: dict[str, Any] | None) -> None:
        if result is None:
            return
        errors = sum(result["errors"].values())
        table.add_row(
            label,
            f"{result['reservations_per_second']:,.0f}",
            _ms(result["p50_ms"]),
            _ms(result["p95_ms"]),
            _ms(result["p99_ms"]),
            f"{result['reservations']:,}",
            f"[red]{errors:,}[/]" if errors else "0",
        )

    timed_row("hot: layer", data["hot"])
    timed_row("hot: SELECT FOR UPDATE", data["for_update"])
    timed_row("hot: single UPDATE", data["single_update"])
    pgbench = data["pgbench"]
    if pgbench is not None:
        if "skipped" in pgbench:
            table.add_row("hot: pgbench, layer SQL", "skipped", "", "", "", "", "")
        else:
            failed = pgbench["failed_transactions"] + (1 if "error" in pgbench else 0)
            table.add_row(
                "hot: pgbench, layer SQL",
                "-" if pgbench["tps"] is None else f"{pgbench['tps']:,.0f}",
                "",
                "",
                "",
                f"{pgbench['transactions'] or 0:,}",
                f"[red]{failed:,}[/]" if failed else "0",
            )
    spread = data["spread"]
    timed_row(f"spread: {spread['events']:,} events" if spread else "", spread)
    sweeper = data["sweeper"]
    if sweeper is not None:
        timed_row("short holds, no sweeper", sweeper["without"])
        timed_row("short holds + sweeper", sweeper["with"])
    return table


def _sellout_table(sellout: dict[str, Any]) -> Table:
    table = Table(
        title=f"sell-out: {sellout['buyers']:,} buyers, one ticket each, "
        f"{sellout['tickets']:,} tickets"
    )
    table.add_column("measure")
    table.add_column("value", justify="right")
    wrong = "[red]{}[/]"
    losers = sellout["buyers"] - sellout["tickets"]
    other = sum(sellout["other_errors"].values())
    table.add_row(
        "tickets sold",
        (wrong if sellout["sold"] != sellout["tickets"] else "{}").format(f"{sellout['sold']:,}"),
    )
    table.add_row(
        "oversold", (wrong if sellout["oversold"] else "{}").format(f"{sellout['oversold']:,}")
    )
    table.add_row(
        f"answered SoldOut (of {losers:,} losers)",
        (wrong if sellout["sold_out_answers"] != losers else "{}").format(
            f"{sellout['sold_out_answers']:,}"
        ),
    )
    table.add_row("other answers", (wrong if other else "{}").format(f"{other:,}"))
    table.add_row("time to sell out", f"{sellout['seconds_to_sell_out']:.2f} s")
    table.add_row("reserve p99", f"{_ms(sellout['reserve_p99_ms'])} ms")
    table.add_row("exact", _verdict(sellout["exact"], "[red]NO[/]"))
    return table


def _targets_table(data: dict[str, Any]) -> Table:
    ratios, targets = data["ratios"], data["targets"]
    table = Table(title="targets (reported, not asserted)")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_column("target", justify="right")
    table.add_column("")
    for label, key, target in (
        ("layer / SELECT FOR UPDATE", "layer_vs_for_update", TARGET_VS_FOR_UPDATE),
        ("layer / single UPDATE", "layer_vs_single_update", TARGET_VS_SINGLE_UPDATE),
        ("layer / pgbench", "layer_vs_pgbench", TARGET_VS_PGBENCH),
        ("with sweeper / without", "sweeper_with_vs_without", TARGET_SWEEPER),
    ):
        table.add_row(label, _x(ratios[key]), f">= {target:g}x", _verdict(targets[key]))
    table.add_row(
        "p99 ms: layer / single UPDATE",
        f"{_ms(ratios['p99_layer_ms'])} / {_ms(ratios['p99_single_update_ms'])}",
        "no worse",
        _verdict(targets["p99_no_worse"]),
    )
    table.add_row(
        "sell-out exact", "", "required", _verdict(targets["sellout_exact"], "[red]FAILED[/]")
    )
    return table
