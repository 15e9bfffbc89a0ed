"""A flash sale: concurrent buyers fight over one event until it sells out exactly.

Each worker thread has its own pooled connection and plays buyers: reserve 1-4
tickets, then mostly purchase, sometimes cancel, sometimes walk away (the hold
lapses and its tickets return to sale). A sweeper thread expires lapsed holds
meanwhile. The result carries the counts the summary prints.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from ticketing import admin, allocations, db, events
from ticketing._report import percentile_ms
from ticketing.errors import SoldOut, TicketingError
from ticketing.models import Availability

PURCHASE_SHARE = 0.8
CANCEL_SHARE = 0.1  # the rest of the holds are abandoned and lapse


@dataclass
class DemoResult:
    """What happened in one demo run."""

    event_id: int
    tickets: int
    sold: int = 0
    oversold: int = 0
    holds_expired: int = 0
    tickets_expired: int = 0
    reservations: int = 0
    purchases: int = 0
    cancels: int = 0
    abandoned: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    reserve_latencies: list[float] = field(default_factory=list)
    seconds: float = 0.0
    timed_out: bool = False
    violations: list[str] = field(default_factory=list)

    open_seconds: float = 0.0
    open_reservations: int = 0

    @property
    def reservations_per_second(self) -> float:
        """Holds granted per second while tickets were still free (until the first SoldOut)."""
        return self.open_reservations / self.open_seconds if self.open_seconds else 0.0

    def latency_ms(self, quantile: int) -> float:
        """The quantile-th percentile of reserve latency, in milliseconds."""
        return percentile_ms(sorted(self.reserve_latencies), quantile) or 0.0

    @property
    def ok(self) -> bool:
        return (
            not self.timed_out
            and self.sold == self.tickets
            and self.oversold == 0
            and not self.violations
        )


class _Sale:
    def __init__(self, event_id: int, tickets: int, hold: timedelta, deadline: float) -> None:
        self.event_id = event_id
        self.tickets = tickets
        self.hold = hold
        self.deadline = deadline
        self.done = threading.Event()
        self.lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.latencies: list[float] = []
        self.started = time.perf_counter()
        self.first_sold_out: float | None = None
        self.open_reservations = 0

    def buyer(self, conn: psycopg.Connection[Any], fingerprint: str, rng: random.Random) -> None:
        started = time.perf_counter()
        try:
            hold = allocations.reserve(
                conn,
                event_id=self.event_id,
                fingerprint=fingerprint,
                quantity=rng.randint(1, 4),
                hold=self.hold,
            )
        except SoldOut:
            self._record(started, "SoldOut")
            self._wait_or_finish(conn)
            return
        except TicketingError as exc:
            self._record(started, type(exc).__name__)
            return
        self._record(started, None)
        roll = rng.random()
        try:
            if roll < PURCHASE_SHARE:
                allocations.purchase(conn, allocation_id=hold.id, fingerprint=fingerprint)
                self._count("purchases")
            elif roll < PURCHASE_SHARE + CANCEL_SHARE:
                allocations.cancel(conn, allocation_id=hold.id, fingerprint=fingerprint)
                self._count("cancels")
            else:
                self._count("abandoned")
        except TicketingError as exc:
            with self.lock:
                self.errors[type(exc).__name__] += 1

    def _record(self, started: float, error: str | None) -> None:
        elapsed = time.perf_counter() - started
        with self.lock:
            self.latencies.append(elapsed)
            if error is None:
                self.counts["reservations"] += 1
                if self.first_sold_out is None:
                    self.open_reservations += 1
            else:
                self.errors[error] += 1
                if error == "SoldOut" and self.first_sold_out is None:
                    self.first_sold_out = time.perf_counter()

    def _count(self, what: str) -> None:
        with self.lock:
            self.counts[what] += 1

    def _wait_or_finish(self, conn: psycopg.Connection[Any]) -> None:
        """Sold out: finished when every ticket is purchased, else wait for holds to resolve."""
        if events.get_availability(conn, self.event_id).purchased >= self.tickets:
            self.done.set()
        else:
            self.done.wait(0.1)


def run_demo(
    url: str,
    *,
    buyers: int,
    tickets: int,
    workers: int,
    hold: timedelta,
    timeout: float = 300.0,
    seed: int | None = None,
    on_progress: Callable[[Availability], None] | None = None,
) -> DemoResult:
    """Sell `tickets` to `buyers` with `workers` concurrent threads; check the result."""
    max_per_buyer = min(10_000, max(4, 2 * -(-tickets // buyers)))
    with db.connect(url) as conn:
        event = events.create_event(
            conn,
            name=f"Flash sale {datetime.now(UTC):%Y-%m-%d %H:%M:%S}",
            starts_at=datetime.now(UTC) + timedelta(days=30),
            total_tickets=tickets,
            max_per_buyer=max_per_buyer,
        )
    sale = _Sale(event.id, tickets, hold, time.monotonic() + timeout)
    fingerprints = [f"buyer-{n:05d}" for n in range(buyers)]
    master = random.Random(seed)  # noqa: S311 - simulated buyers, not secrets

    with db.create_pool(url, min_size=workers + 2, max_size=workers + 2) as pool:

        def worker(index: int) -> None:
            rng = random.Random(master.random() + index)  # noqa: S311
            with pool.connection() as conn:
                while not sale.done.is_set() and time.monotonic() < sale.deadline:
                    sale.buyer(conn, rng.choice(fingerprints), rng)

        def sweeper() -> None:
            with pool.connection() as conn:
                while not sale.done.wait(0.2):
                    allocations.expire_due(conn)

        threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(workers)]
        threads.append(threading.Thread(target=sweeper, daemon=True))
        started = sale.started = time.perf_counter()
        for thread in threads:
            thread.start()
        with pool.connection() as conn:
            try:
                while any(t.is_alive() for t in threads[:-1]):
                    if on_progress is not None:
                        on_progress(events.get_availability(conn, event.id))
                    time.sleep(0.1)
            finally:  # also on Ctrl-C: stop the workers before the pool closes
                sale.done.set()
                sale.deadline = 0.0
                for thread in threads:
                    thread.join()
            seconds = time.perf_counter() - started
            if on_progress is not None:
                on_progress(events.get_availability(conn, event.id))
            result = _summarise(conn, sale, seconds)
    return result


def _summarise(conn: psycopg.Connection[Any], sale: _Sale, seconds: float) -> DemoResult:
    outcome = admin.sale_outcome(conn, sale.event_id)
    sold = outcome.sold
    open_until = sale.first_sold_out or (sale.started + seconds)
    return DemoResult(
        event_id=sale.event_id,
        tickets=sale.tickets,
        sold=sold,
        oversold=max(0, sold - sale.tickets),
        holds_expired=outcome.holds_expired,
        tickets_expired=outcome.tickets_expired,
        reservations=sale.counts["reservations"],
        purchases=sale.counts["purchases"],
        cancels=sale.counts["cancels"],
        abandoned=sale.counts["abandoned"],
        errors=sale.errors,
        reserve_latencies=sale.latencies,
        seconds=seconds,
        timed_out=sold < sale.tickets,
        violations=admin.check_invariants(conn),
        open_seconds=open_until - sale.started,
        open_reservations=sale.open_reservations,
    )
