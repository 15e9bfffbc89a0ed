"""What buyer processes do: the operations they time, the sell-out, the sweeper loop.

Everything here runs in a child process (multiprocessing, spawn context), with
its own connection from `ticketing.db.connect`; results go back over queues.
The async workload's processes instead run asyncio tasks on a pool of their
own (`ticketing.aio.create_pool`), one connection per task; the service
workload's run asyncio tasks that buy over HTTP (ticketing.bench.service).
"""

from __future__ import annotations

import asyncio
import random
import signal
import time
from array import array
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from multiprocessing.queues import Queue
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Barrier, Event
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from ticketing import aio, allocations, db
from ticketing.bench.config import (
    QUANTITY_RANGE,
    READY_TIMEOUT,
    SWEEPER_BATCH,
    SWEEPER_PAUSE,
    Workload,
)
from ticketing.bench.sql import Q
from ticketing.errors import SoldOut, TicketingError


@dataclass(frozen=True)
class Task:
    """One workload for every buyer process."""

    kind: Workload
    event_ids: tuple[int, ...]
    seconds: float
    tag: str
    seed: int
    hold: timedelta = allocations.DEFAULT_HOLD
    attempts: int = 0  # sellout: attempts shared by all processes
    tasks: tuple[int, ...] = ()  # async, service: the asyncio tasks of each process, by its index
    service_url: str = ""  # service: the HTTP service's base URL


@dataclass
class Tally:
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
    requests: int = 0  # service: HTTP requests answered
    cpu_seconds: float = 0.0  # service: the process's CPU time during the task

    def error(self, name: str, exc: Exception | str) -> None:
        self.errors[name] += 1
        self.samples.setdefault(name, " ".join(str(exc).split())[:500])


@dataclass(frozen=True)
class Shared:
    """What the parent shares with its buyer processes (handed over when they start)."""

    barrier: Barrier  # of the buyers: they start each task together
    attempts: Synchronized[int]  # sell-out attempts taken so far
    started: Synchronized[float]  # time.monotonic() when the current task started, else 0
    ready: Synchronized[int]  # buyer processes that have imported everything and wait for tasks


@dataclass(frozen=True)
class Failure:
    index: int
    message: str


def reserve_layer(
    conn: psycopg.Connection[Any], task: Task, index: int, rng: random.Random
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


def reserve_for_update(
    conn: psycopg.Connection[Any], task: Task, index: int, rng: random.Random
) -> Callable[[int], None]:
    def reserve(n: int) -> None:
        params = {
            "id": task.event_ids[0],
            "q": rng.randint(*QUANTITY_RANGE),
            "fp": f"{task.tag}-{index}-{n}",
        }
        with conn.transaction():
            row = conn.execute(Q["for_update_lock"], params).fetchone()
            assert row is not None, "the baseline event is missing"
            total, taken = row
            if taken + params["q"] > total:
                raise SoldOut("sold out", available=total - taken)
            conn.execute(Q["for_update_take"], params)
            conn.execute(Q["for_update_insert"], params)

    return reserve


def reserve_single_update(
    conn: psycopg.Connection[Any], task: Task, index: int, rng: random.Random
) -> Callable[[int], None]:
    def reserve(n: int) -> None:
        params = {
            "id": task.event_ids[0],
            "q": rng.randint(*QUANTITY_RANGE),
            "fp": f"{task.tag}-{index}-{n}",
        }
        if conn.execute(Q["single_update"], params).fetchone() is None:
            raise SoldOut("sold out", available=0)

    return reserve


OPERATIONS = {
    Workload.HOT: reserve_layer,
    Workload.SPREAD: reserve_layer,
    Workload.SWEEPER: reserve_layer,
    Workload.FOR_UPDATE: reserve_for_update,
    Workload.SINGLE_UPDATE: reserve_single_update,
}


def timed(index: int, seconds: float, operation: Callable[[int], None]) -> Tally:
    """Call `operation` back to back for `seconds`; count successes, errors and latencies."""
    started = now = time.monotonic()
    deadline = started + seconds
    tally = Tally(index=index, started=started, finished=started)
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


def take_attempt(attempts: Synchronized[int], limit: int) -> int | None:
    """The next attempt's number (from 1) from the counter all buyer processes share, or None
    once `limit` have been taken."""
    with attempts.get_lock():
        if attempts.value >= limit:
            return None
        attempts.value += 1
        return int(attempts.value)


def sellout(
    conn: psycopg.Connection[Any], index: int, task: Task, attempts: Synchronized[int]
) -> Tally:
    """Take attempts from the shared counter until none are left: reserve 1, then purchase.

    Stops early, with attempts left, once `task.seconds` have passed.
    """
    started = time.monotonic()
    deadline = started + task.seconds
    tally = Tally(index=index, started=started, finished=started)
    event_id = task.event_ids[0]
    while time.monotonic() < deadline:
        n = take_attempt(attempts, task.attempts)
        if n is None:
            break
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


async def timed_async(
    pool: AsyncConnectionPool[Any],
    task: Task,
    index: int,
    slot: int,
    deadline: float,
    tally: Tally,
) -> None:
    """One asyncio task of `timed_async_tasks`: reserve back to back until `deadline`.

    Every call takes a connection from the pool and gives it back, as a
    request handler would; the pool has one per task, so none waits for one.
    """
    rng = random.Random(f"{task.seed}-{index}-{slot}")  # noqa: S311 - simulated buyers
    now = time.monotonic()
    n = 0
    while now < deadline:
        n += 1
        try:
            async with pool.connection() as conn:
                await aio.allocations.reserve(
                    conn,
                    event_id=rng.choice(task.event_ids),
                    fingerprint=f"{task.tag}-{index}-{slot}-{n}",
                    quantity=rng.randint(*QUANTITY_RANGE),
                    hold=task.hold,
                )
        except (TicketingError, psycopg.Error) as exc:
            tally.error(type(exc).__name__, exc)
        else:
            tally.done += 1
        end = time.monotonic()
        tally.latencies.append(end - now)
        now = end
    tally.finished = max(tally.finished, now)


async def timed_async_tasks(index: int, url: str, task: Task, shared: Shared) -> Tally:
    """The async workload in one process: its tasks on a pool opened (full) before the barrier."""
    tasks = task.tasks[index]
    async with aio.create_pool(url, min_size=tasks, max_size=tasks) as pool:
        await pool.wait(READY_TIMEOUT)
        await asyncio.to_thread(shared.barrier.wait, READY_TIMEOUT)
        if index == 0:
            shared.started.value = time.monotonic()
        started = time.monotonic()
        tally = Tally(index=index, started=started, finished=started)
        deadline = started + task.seconds
        async with asyncio.TaskGroup() as group:
            for slot in range(tasks):
                group.create_task(timed_async(pool, task, index, slot, deadline, tally))
    return tally


def perform(index: int, url: str, task: Task, shared: Shared) -> Tally:
    if task.kind is Workload.ASYNC:
        return asyncio.run(timed_async_tasks(index, url, task, shared))
    if task.kind is Workload.SERVICE:
        from ticketing.bench.service import http_buyers  # httpx: only where it is used

        return asyncio.run(http_buyers(index, task, shared))
    rng = random.Random(task.seed * 1000 + index)  # noqa: S311 - simulated buyers, not secrets
    with db.connect(url) as conn:
        operation = None if task.kind is Workload.SELLOUT else OPERATIONS[task.kind]
        reserve = None if operation is None else operation(conn, task, index, rng)
        shared.barrier.wait(READY_TIMEOUT)
        if index == 0:
            shared.started.value = time.monotonic()
        if reserve is None:
            return sellout(conn, index, task, shared.attempts)
        return timed(index, task.seconds, reserve)


def buyer_process(
    index: int,
    url: str,
    inbox: Queue[Task | None],
    results: Queue[Tally | Failure],
    shared: Shared,
) -> None:
    """A buyer process: run tasks from `inbox` until None; one connection per task."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops us
    with shared.ready.get_lock():
        shared.ready.value += 1
    while (task := inbox.get()) is not None:
        try:
            tally = perform(index, url, task, shared)
        except BaseException as exc:
            shared.barrier.abort()  # nobody waits for this process any longer
            results.put(Failure(index, f"{type(exc).__name__}: {exc}"))
        else:
            results.put(tally)


def sweeper_process(
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
