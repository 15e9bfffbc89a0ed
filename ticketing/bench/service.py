"""The service workload: the sell-out through the example HTTP service (examples/service).

The service runs under uvicorn in one spawned process of its own ("bench-service": its
own interpreter and GIL, nothing of the benchmark's parent in its way), on a free
127.0.0.1 port, with a pool of --workers connections opened in full before any buyer
starts. The buyers are --workers asyncio tasks spread over one client process per CPU
(as the async workload's), each process with one httpx.AsyncClient keeping a
connection per task: --workers requests in flight. Each buyer takes an attempt from
the shared counter, reserves one ticket (POST /events/{id}/reservations) and, when
it got a hold, purchases it (POST /allocations/{id}/purchase); a loser is answered
409 {"error": "SoldOut"}. The counts are judged as the sellout's.

fastapi, uvicorn, httpx and the `examples` package (a checkout, not an installed
wheel) are imported only here, and only when the workload runs: without them it is
skipped.
"""

from __future__ import annotations

import asyncio
import importlib
import multiprocessing
import os
import queue
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from multiprocessing.queues import Queue
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Event
from typing import TYPE_CHECKING, Any

import psycopg

from ticketing import admin
from ticketing._report import plural
from ticketing.bench.buyers import Shared, Tally, Task, take_attempt
from ticketing.bench.config import HTTP_TIMEOUT, READY_TIMEOUT, BenchError, Workload
from ticketing.bench.context import Run
from ticketing.bench.crew import Crew, sigint_ignored
from ticketing.bench.stats import percentile_ms
from ticketing.bench.workloads import async_spread, sale_outcome

if TYPE_CHECKING:
    import httpx

#: Longest wait for the service to stop (it finishes the requests in flight first).
STOP_TIMEOUT = 30.0


# --- the server's process -----------------------------------------------------------------------


def service_process(
    url: str, pool_size: int, stop: Event, report: Queue[tuple[str, float | str]]
) -> None:
    """Serve the example app until `stop`; report ("ready", port), then ("done", CPU seconds).

    CPU seconds: this process's, from ready to stop. ("error", message) when it fails.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops us
    try:
        import uvicorn

        from examples.service.app import create_app

        # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say TCP. Without it
        # every answer after a connection's first waits ~40 ms for a delayed ACK (the server
        # writes its headers and its body separately: Nagle holds the body back).
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
        app = create_app(url, pool_kwargs={"min_size": pool_size, "max_size": pool_size})
        config = uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=5,
            backlog=2048,
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        deadline = time.monotonic() + READY_TIMEOUT
        # Started (lifespan done, socket listening), then every pooled connection open.
        while not server.started or app.state.pool.get_stats()["pool_available"] < pool_size:
            if not thread.is_alive():
                raise BenchError("the server stopped while starting")
            if time.monotonic() > deadline:
                raise BenchError(f"the server did not start within {READY_TIMEOUT:g} s")
            time.sleep(0.01)
        cpu = time.process_time()
        report.put(("ready", float(port)))
        while not stop.wait(0.1):
            if not thread.is_alive():
                raise BenchError("the server stopped while serving")
        cpu = time.process_time() - cpu
        server.should_exit = True
        thread.join(STOP_TIMEOUT)
        sock.close()
        if thread.is_alive():
            raise BenchError("the server did not stop")
        report.put(("done", cpu))
    except BaseException as exc:
        report.put(("error", f"{type(exc).__name__}: {exc}"))


@contextmanager
def serving(url: str, pool_size: int) -> Iterator[tuple[str, Callable[[], float]]]:
    """The service in a process of its own for the block; yields (base URL, stop() -> CPU s)."""
    ctx = multiprocessing.get_context("spawn")
    stop = ctx.Event()
    report: Queue[tuple[str, float | str]] = ctx.Queue()
    process = ctx.Process(
        target=service_process,
        args=(url, pool_size, stop, report),
        name="bench-service",
        daemon=True,
    )
    with sigint_ignored():
        process.start()

    def answer(what: str, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        while True:
            try:
                kind, value = report.get(timeout=0.1)
            except queue.Empty:
                if not process.is_alive():
                    raise BenchError(f"service: the server process died ({what})") from None
                if time.monotonic() > deadline:
                    raise BenchError(f"service: the server did not report back ({what})") from None
                continue
            if kind == "error":
                raise BenchError(f"service: the server failed: {value}")
            assert isinstance(value, float)
            return value

    outcome: list[float] = []

    def finish() -> float:
        if not outcome:
            stop.set()
            outcome.append(answer("stopping", STOP_TIMEOUT + 10))
        return outcome[0]

    try:
        port = int(answer("starting", READY_TIMEOUT + 10))
        yield f"http://127.0.0.1:{port}", finish
        finish()
    finally:
        stop.set()
        process.join(STOP_TIMEOUT + 10)
        if process.is_alive():
            process.terminate()
            process.join(5)


# --- the buyers' processes ----------------------------------------------------------------------


def _answer_name(answer: httpx.Response) -> str:
    """SoldOut for the losers' 409; else the status and the service's error name."""
    try:
        body = answer.json()
    except ValueError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if answer.status_code == 409 and error == "SoldOut":
        return "SoldOut"
    return f"HTTP {answer.status_code}" + (f" {error}" if isinstance(error, str) else "")


async def _http_buyer(
    client: httpx.AsyncClient,
    task: Task,
    attempts: Synchronized[int],
    deadline: float,
    tally: Tally,
) -> None:
    """One asyncio task: attempts from the shared counter until none are left or `deadline`."""
    import httpx

    reservations = f"/events/{task.event_ids[0]}/reservations"
    while time.monotonic() < deadline:
        n = take_attempt(attempts, task.attempts)
        if n is None:
            break
        fingerprint = f"{task.tag}-{n}"
        begun = time.monotonic()
        try:
            answer = await client.post(
                reservations, json={"fingerprint": fingerprint, "quantity": 1}
            )
        except httpx.HTTPError as exc:  # no answer: a transport error or a timeout
            tally.error(type(exc).__name__, exc)
            tally.latencies.append(time.monotonic() - begun)
            continue
        tally.latencies.append(time.monotonic() - begun)
        tally.requests += 1
        if answer.status_code != 201:
            tally.error(_answer_name(answer), answer.text)
            continue
        tally.done += 1
        purchase = f"/allocations/{answer.json()['id']}/purchase"
        try:
            answer = await client.post(purchase, json={"fingerprint": fingerprint})
        except httpx.HTTPError as exc:
            tally.error(f"purchase: {type(exc).__name__}", exc)
            continue
        tally.requests += 1
        if answer.status_code != 200:
            tally.error(f"purchase: {_answer_name(answer)}", answer.text)
            continue
        tally.purchases += 1
        tally.purchased_at.append(time.monotonic())


async def http_buyers(index: int, task: Task, shared: Shared) -> Tally:
    """The service workload in one client process: its tasks on one httpx.AsyncClient.

    Before the barrier, one GET /health per task opens the client's connections.
    """
    import httpx

    tasks = task.tasks[index]
    limits = httpx.Limits(max_connections=tasks, max_keepalive_connections=tasks)
    async with httpx.AsyncClient(
        base_url=task.service_url, limits=limits, timeout=HTTP_TIMEOUT
    ) as client:
        for health in await asyncio.gather(*(client.get("/health") for _ in range(tasks))):
            health.raise_for_status()
        await asyncio.to_thread(shared.barrier.wait, READY_TIMEOUT)
        if index == 0:
            shared.started.value = time.monotonic()
        cpu = time.process_time()
        started = time.monotonic()
        tally = Tally(index=index, started=started, finished=started)
        deadline = started + task.seconds
        async with asyncio.TaskGroup() as group:
            for _ in range(tasks):
                group.create_task(_http_buyer(client, task, shared.attempts, deadline, tally))
        tally.finished = time.monotonic()
        tally.cpu_seconds = time.process_time() - cpu
    return tally


# --- the workload -------------------------------------------------------------------------------


def missing() -> str | None:
    """Why the service workload cannot run here (None: it can)."""
    try:
        for module in ("fastapi", "uvicorn", "httpx", "examples.service.app"):
            importlib.import_module(module)
    except ImportError as exc:
        return (
            f"cannot import {exc.name or exc}: the service workload needs a checkout's "
            "examples/service, with fastapi, uvicorn and httpx installed"
        )
    return None


def service_workload(run: Run, conn: psycopg.Connection[Any], crew: Crew) -> dict[str, Any]:
    """The sell-out over HTTP: what `sale_outcome` says, plus the HTTP figures."""
    bar = run.bar("service: starting the HTTP service")
    reason = missing()
    if reason is not None:
        bar.finish()
        return {"skipped": reason}
    buyers, tickets = run.config.sellout_buyers, run.config.sellout_tickets
    event_id = run.event(conn, "service", tickets)
    pool_size = run.config.workers
    tasks = async_spread(run.config.workers, os.cpu_count())
    processes = len(tasks)
    with serving(run.url, pool_size) as (base_url, stop_server):
        bar.finish()
        bar = run.bar(
            f"service: starting {plural(processes, 'client process', 'client processes')}",
            processes,
        )
        with Crew(run.url, processes) as clients:
            clients.start(bar)
            bar = run.bar(
                f"service: {plural(buyers, 'buyer')} over HTTP, {plural(tickets, 'ticket')}",
                buyers,
            )
            task = run.task(
                Workload.SERVICE,
                (event_id,),
                "service",
                attempts=buyers,
                tasks=tasks,
                service_url=base_url,
            )
            tallies = clients.run(task, bar, lambda _elapsed: float(clients.attempts))
        server_cpu = stop_server()
    outcome = sale_outcome("service", run, conn, event_id, tallies)
    violations = admin.check_invariants(conn, event_id=event_id)
    if violations:
        outcome["failures"].append(
            f"service: check_invariants found {plural(len(violations), 'violation')}: "
            f"{violations[:3]}"
        )
        outcome["exact"] = False
    seconds = max(t.finished for t in tallies) - min(t.started for t in tallies)
    requests = sum(t.requests for t in tallies)
    latencies = sorted(x for tally in tallies for x in tally.latencies)
    failures = outcome.pop("failures")
    exact = outcome.pop("exact")
    return outcome | {
        "client_processes": processes,
        "tasks_per_process": list(tasks),
        "pool_max_size": pool_size,
        "requests": requests,
        "seconds": round(seconds, 3),
        "requests_per_second": round(requests / seconds, 1) if seconds > 0 else 0.0,
        "reserve_p50_ms": percentile_ms(latencies, 50),
        "server_cpu_seconds": round(server_cpu, 3),
        "client_cpu_seconds": round(sum(t.cpu_seconds for t in tallies), 3),
        "violations": len(violations),
        "exact": exact,
        "failures": failures,
    }
