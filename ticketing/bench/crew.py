"""The parent's side: a crew of buyer processes started once per run, a sweeper, the bars."""

from __future__ import annotations

import multiprocessing
import queue
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from multiprocessing.context import SpawnProcess
from multiprocessing.queues import Queue

from rich.progress import Progress, TaskID

from ticketing.bench.buyers import Failure, Shared, Tally, Task, buyer_process, sweeper_process
from ticketing.bench.config import READY_TIMEOUT, BenchError


class Bar:
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


class Crew:
    """`workers` buyer processes that run the same task together, started by a barrier."""

    def __init__(self, url: str, workers: int) -> None:
        self.url = url
        self.workers = workers
        self.ctx = multiprocessing.get_context("spawn")
        self.shared = Shared(
            barrier=self.ctx.Barrier(workers),
            attempts=self.ctx.Value("q", 0),
            started=self.ctx.Value("d", 0.0),
            ready=self.ctx.Value("q", 0),
        )
        self.results: Queue[Tally | Failure] = self.ctx.Queue()
        self.inboxes: list[Queue[Task | None]] = [self.ctx.Queue() for _ in range(workers)]
        self.processes: list[SpawnProcess] = [
            self.ctx.Process(
                target=buyer_process,
                args=(i, url, self.inboxes[i], self.results, self.shared),
                name=f"bench-buyer-{i}",
                daemon=True,
            )
            for i in range(workers)
        ]

    def start(self, bar: Bar) -> Crew:
        """Start the processes; return when every one of them is ready for tasks."""
        with sigint_ignored():
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

    def __enter__(self) -> Crew:
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

    def run(self, task: Task, bar: Bar, done: Callable[[float], float]) -> list[Tally]:
        """Every process runs `task`; `done(elapsed)` says how far along it is for the bar."""
        self.shared.attempts.value = 0
        self.shared.started.value = 0.0
        for inbox in self.inboxes:
            inbox.put(task)
        sent = time.monotonic()
        tallies: list[Tally] = []
        while len(tallies) < self.workers:
            try:
                item = self.results.get(timeout=0.1)
            except queue.Empty:
                item = None
            if isinstance(item, Failure):
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
def sigint_ignored() -> Iterator[None]:
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
def sweeper(url: str) -> Iterator[Callable[[], tuple[int, int]]]:
    """A sweeper process for the duration of the block; yields a stop() -> (expired, rounds)."""
    ctx = multiprocessing.get_context("spawn")
    stop, ready = ctx.Event(), ctx.Event()
    report: Queue[tuple[int, int, str | None]] = ctx.Queue()
    process = ctx.Process(
        target=sweeper_process, args=(url, stop, ready, report), name="bench-sweeper", daemon=True
    )
    with sigint_ignored():
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
