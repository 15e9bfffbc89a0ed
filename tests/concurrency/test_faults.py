"""Faults injected into a real server: killed backends, held locks, timeouts, a sweeper, a crash."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from typing import Any, LiteralString

import psycopg
import pytest
from psycopg.pq import TransactionStatus
from psycopg_pool import ConnectionPool

from tests.support import (
    JOIN_TIMEOUT,
    WAIT_TIMEOUT,
    assert_consistent,
    make_event,
    scalar,
    wait_until_blocked,
)
from ticketing import admin, allocations, db, embedded, events
from ticketing.errors import (
    Busy,
    BuyerLimitExceeded,
    ConnectionLost,
    HoldExpired,
    InvalidTransition,
    SoldOut,
    TicketingError,
)
from ticketing.models import Allocation, AllocationStatus

pytestmark = pytest.mark.race

#: The victim of the fault tests: its fingerprint, and the key it reserves with.
VICTIM = "victim"
VICTIM_KEY = "victim-key"

Api = Callable[[psycopg.Connection[Any]], Allocation]


@contextmanager
def locked(dsn: str, query: LiteralString, *params: Any) -> Iterator[list[tuple[Any, ...]]]:
    """Hold the row locks `query` (a SELECT ... FOR UPDATE) takes, in an open transaction."""
    blocker = db.connect(dsn, autocommit=False)
    try:
        rows = blocker.execute(query, params).fetchall()
        assert rows, "the blocker locked nothing"
        yield rows
    finally:
        blocker.rollback()
        blocker.close()


def slots_locked(admin_dsn: str, event_id: int) -> Any:
    """Every inventory slot of the event, locked by another session (an operator's: the
    application may not lock slots, which takes UPDATE privilege)."""
    return locked(
        admin_dsn,
        "SELECT slot FROM inventory_slots WHERE event_id = %s ORDER BY slot FOR UPDATE",
        event_id,
    )


def wait_until_gone(observer: psycopg.Connection[Any], query: LiteralString, *params: Any) -> None:
    """Wait until `query` (a count of backends) says 0."""
    deadline = time.monotonic() + WAIT_TIMEOUT
    while scalar(observer, query, params) != 0:
        assert time.monotonic() < deadline, "backends did not go away"
        time.sleep(0.01)


class Background:
    """One call in a thread of its own; what it returned or raised."""

    def __init__(self, call: Callable[[], Any]) -> None:
        self.result: Any = None
        self.error: BaseException | None = None
        self._call = call
        self.thread = threading.Thread(target=self._run)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.result = self._call()
        except BaseException as exc:
            self.error = exc

    def join(self) -> None:
        self.thread.join(timeout=JOIN_TIMEOUT)
        assert not self.thread.is_alive(), "the call hung"


def victim_calls(event_id: int, held: Allocation) -> dict[str, Api]:
    """The API calls a fault is injected into, by name."""
    return {
        "reserve": lambda c: allocations.reserve(
            c, event_id=event_id, fingerprint=VICTIM, quantity=2
        ),
        "reserve-with-key": lambda c: allocations.reserve(
            c, event_id=event_id, fingerprint=VICTIM, quantity=2, idempotency_key=VICTIM_KEY
        ),
        "purchase": lambda c: allocations.purchase(
            c, allocation_id=held.id, fingerprint=held.fingerprint
        ),
    }


def assert_untouched(
    conn: psycopg.Connection[Any], event_id: int, held: Allocation, before: Any
) -> None:
    """The victim's call left nothing behind: no hold of its own, `held` still a bare hold."""
    assert scalar(conn, "SELECT count(*) FROM allocations WHERE fingerprint = %s", (VICTIM,)) == 0
    assert (
        scalar(conn, "SELECT count(*) FROM buyer_inventory WHERE fingerprint = %s", (VICTIM,)) == 0
    )
    assert scalar(conn, "SELECT count(*) FROM allocations WHERE event_id = %s", (event_id,)) == 1
    assert allocations.get_allocation(conn, held.id) == held
    assert scalar(conn, "SELECT count(*) FROM tickets WHERE event_id = %s", (event_id,)) == 0
    assert events.get_availability(conn, event_id) == before
    assert_consistent(conn)
    assert admin.check_invariants(conn) == []


def assert_retry_succeeds(
    dsn: str, conn: psycopg.Connection[Any], event_id: int, held: Allocation, name: str
) -> None:
    """The same call, repeated on a fresh connection once the fault is gone, succeeds."""
    with db.connect(dsn) as fresh:
        done = victim_calls(event_id, held)[name](fresh)
    if name == "purchase":
        assert done.id == held.id
        assert done.status is AllocationStatus.PURCHASED
        expected = (0, held.quantity)
    else:
        assert (done.fingerprint, done.quantity, done.status) == (
            VICTIM,
            2,
            AllocationStatus.RESERVED,
        )
        expected = (4, 0)
    availability = events.get_availability(conn, event_id)
    assert (availability.reserved, availability.purchased) == expected
    assert_consistent(conn)
    assert admin.check_invariants(conn) == []


CALLS = ["reserve", "reserve-with-key", "purchase"]


@pytest.mark.parametrize("name", CALLS)
def test_backend_terminated_while_waiting_on_a_lock(
    dsn: str,
    conn: psycopg.Connection[Any],
    admin_dsn: str,
    admin_conn: psycopg.Connection[Any],
    name: str,
) -> None:
    event_id = make_event(conn, 300, slots=4).id
    held = allocations.reserve(conn, event_id=event_id, fingerprint="holder", quantity=2)
    before = events.get_availability(conn, event_id)
    victim = db.connect(dsn)
    pid = victim.info.backend_pid
    try:
        with slots_locked(admin_dsn, event_id) as slots:
            assert len(slots) == 4
            call = Background(lambda: victim_calls(event_id, held)[name](victim))
            wait_until_blocked(admin_conn, pid)
            assert scalar(admin_conn, "SELECT pg_terminate_backend(%s)", (pid,)) is True
            wait_until_gone(admin_conn, "SELECT count(*) FROM pg_stat_activity WHERE pid = %s", pid)
        call.join()
    finally:
        victim.close()

    assert call.result is None
    assert type(call.error) is ConnectionLost
    assert isinstance(call.error, TicketingError)
    assert not isinstance(call.error, psycopg.Error)
    assert victim.closed
    assert_untouched(conn, event_id, held, before)
    assert_retry_succeeds(dsn, conn, event_id, held, name)


@pytest.mark.parametrize("name", [*CALLS, "purchase-row-locked"])
def test_lock_held_elsewhere_gives_busy_within_lock_timeout(
    dsn: str, conn: psycopg.Connection[Any], admin_dsn: str, name: str
) -> None:
    event_id = make_event(conn, 300, slots=4).id
    held = allocations.reserve(conn, event_id=event_id, fingerprint="holder", quantity=2)
    before = events.get_availability(conn, event_id)
    if name == "purchase-row-locked":
        blocker = locked(dsn, "SELECT id FROM allocations WHERE id = %s FOR UPDATE", held.id)
        name = "purchase"
    else:
        blocker = slots_locked(admin_dsn, event_id)
    with db.connect(dsn) as victim:
        with blocker:
            started = time.monotonic()
            with pytest.raises(Busy) as raised:
                victim_calls(event_id, held)[name](victim)
            elapsed = time.monotonic() - started
            assert_untouched(conn, event_id, held, before)
        assert isinstance(raised.value.__cause__, psycopg.Error)
        assert raised.value.__cause__.sqlstate == "55P03"  # lock_not_available
        assert 2.5 <= elapsed < 10.0, elapsed
        # The connection is idle and usable: the failed statement left no transaction open.
        assert victim.info.transaction_status == TransactionStatus.IDLE
    assert_untouched(conn, event_id, held, before)
    assert_retry_succeeds(dsn, conn, event_id, held, name)


@pytest.mark.parametrize("name", CALLS)
def test_statement_timeout_is_honoured(
    dsn: str, conn: psycopg.Connection[Any], admin_dsn: str, name: str
) -> None:
    event_id = make_event(conn, 300, slots=4).id
    held = allocations.reserve(conn, event_id=event_id, fingerprint="holder", quantity=2)
    before = events.get_availability(conn, event_id)
    with db.connect(dsn, options="-c statement_timeout=500") as victim:
        assert scalar(victim, "SHOW statement_timeout") == "500ms"
        with slots_locked(admin_dsn, event_id):
            started = time.monotonic()
            with pytest.raises(Busy) as raised:
                victim_calls(event_id, held)[name](victim)
            elapsed = time.monotonic() - started
            assert_untouched(conn, event_id, held, before)
        assert isinstance(raised.value.__cause__, psycopg.Error)
        assert raised.value.__cause__.sqlstate == "57014"  # query_canceled
        assert 0.45 <= elapsed < 2.5, elapsed
        assert victim.info.transaction_status == TransactionStatus.IDLE
    assert_untouched(conn, event_id, held, before)


# --- The sweeper beside buyers ----------------------------------------------------------------

SWEEP_ROUNDS = 3000
SOLD_OUT_ROUNDS = 1500
SWEEP_SECONDS = 20.0
BUYERS = 8
#: Outcomes of a buyer's or the sweeper's calls that are part of normal business.
EXPECTED = (SoldOut, BuyerLimitExceeded, HoldExpired, InvalidTransition)
#: What a buyer does with a hold; "late" ones wait past the hold first.
ACTIONS = ["purchase", "purchase", "late purchase", "cancel", "late cancel", "abandon"]
#: How often a purchase is followed by a refund of one of the thread's purchases.
REFUND_RATE = 0.2


def deadlocks(conn: psycopg.Connection[Any]) -> int:
    """Deadlocks the server detected in this database (the layer retries them unseen)."""
    conn.execute("SELECT pg_stat_clear_snapshot()")
    return int(
        scalar(conn, "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()")
    )


@dataclass
class BuyerLog:
    """What one buyer thread saw."""

    outcomes: Counter[str] = field(default_factory=Counter)
    reserved: list[Allocation] = field(default_factory=list)
    purchased: list[Allocation] = field(default_factory=list)
    owned: dict[int, Allocation] = field(default_factory=dict)  # purchased, not refunded
    unexpected: list[BaseException] = field(default_factory=list)


def buyer(
    dsn: str,
    event_id: int,
    index: int,
    barrier: threading.Barrier,
    stop: threading.Event,
    sold_out: threading.Event,
    log: BuyerLog,
) -> None:
    rng = random.Random(index)
    hold = timedelta(milliseconds=50)
    with db.connect(dsn) as conn:

        def outcome(call: Callable[..., Allocation], target: Allocation) -> Allocation | None:
            """`call` (purchase or cancel) on `target`, as its buyer; None if refused."""
            try:
                done = call(conn, allocation_id=target.id, fingerprint=target.fingerprint)
            except EXPECTED as exc:
                log.outcomes[type(exc).__name__] += 1
                return None
            except Exception as exc:
                log.unexpected.append(exc)
                return None
            log.outcomes["Allocation"] += 1
            return done

        def refund() -> None:
            if log.owned:
                victim = rng.choice(list(log.owned.values()))
                done = outcome(allocations.cancel, victim)
                if done is not None:
                    if done.status is not AllocationStatus.CANCELLED:
                        log.unexpected.append(AssertionError(f"refund gave {done}"))
                    log.owned.pop(victim.id)
                    log.outcomes["refund"] += 1

        barrier.wait(timeout=WAIT_TIMEOUT)
        while not stop.is_set():
            # 10 buyers per thread, 4 tickets each at most: together they can sell the event
            # out, and do, since only some purchases are refunded.
            fingerprint = f"buyer-{index}-{rng.randrange(10)}"
            try:
                hold_ = allocations.reserve(
                    conn,
                    event_id=event_id,
                    fingerprint=fingerprint,
                    quantity=rng.randint(1, 2),
                    hold=hold,
                )
            except SoldOut:
                log.outcomes["SoldOut"] += 1
                sold_out.set()
                refund()
                continue
            except BuyerLimitExceeded:
                log.outcomes["BuyerLimitExceeded"] += 1
                continue
            except Exception as exc:
                log.unexpected.append(exc)
                continue
            log.reserved.append(hold_)
            action = rng.choice(ACTIONS)
            if action.startswith("late"):
                time.sleep(0.06)  # past the hold: the sweeper may expire it meanwhile
            if action.endswith("purchase"):
                done = outcome(allocations.purchase, hold_)
                if done is not None:
                    if done.status is not AllocationStatus.PURCHASED:
                        log.unexpected.append(AssertionError(f"purchase gave {done}"))
                    log.purchased.append(done)
                    log.owned[done.id] = done
                    if rng.random() < REFUND_RATE:
                        refund()
            elif action.endswith("cancel"):
                done = outcome(allocations.cancel, hold_)
                if done is not None:
                    if done.status is not AllocationStatus.CANCELLED:
                        log.unexpected.append(AssertionError(f"cancel gave {done}"))
                    log.outcomes["hold cancelled"] += 1


def test_sweeper_beside_buyers_never_deadlocks(dsn: str, conn: psycopg.Connection[Any]) -> None:
    event_id = make_event(conn, 200, max_per_buyer=4).id
    deadlocks_before = deadlocks(conn)
    barrier = threading.Barrier(BUYERS + 1)
    stop = threading.Event()
    sold_out = threading.Event()
    logs = [BuyerLog() for _ in range(BUYERS)]
    sweeper_errors: list[BaseException] = []
    sweeps = Counter[str]()

    def sweeper() -> None:
        try:
            with db.connect(dsn) as sweeper_conn:
                barrier.wait(timeout=WAIT_TIMEOUT)
                deadline = time.monotonic() + SWEEP_SECONDS
                # Sweep for SWEEP_ROUNDS, and for SOLD_OUT_ROUNDS after the buyers have
                # pushed the event to sell-out, where reservations lock every slot and
                # reclaim lapsed holds themselves.
                while time.monotonic() < deadline and (
                    sweeps["rounds"] < SWEEP_ROUNDS or sweeps["sold out rounds"] < SOLD_OUT_ROUNDS
                ):
                    if sold_out.is_set():
                        sweeps["sold out rounds"] += 1
                    try:
                        sweeps["expired"] += allocations.expire_due(sweeper_conn, limit=50)
                    except Exception as exc:
                        sweeper_errors.append(exc)
                    sweeps["rounds"] += 1
        finally:
            stop.set()

    threads = [
        threading.Thread(target=buyer, args=(dsn, event_id, i, barrier, stop, sold_out, logs[i]))
        for i in range(BUYERS)
    ]
    threads.append(threading.Thread(target=sweeper))
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=JOIN_TIMEOUT)
    assert not any(thread.is_alive() for thread in threads), "a thread hung"
    seconds = time.monotonic() - started

    outcomes = sum((log.outcomes for log in logs), Counter[str]())
    unexpected = [exc for log in logs for exc in log.unexpected] + sweeper_errors
    reserved = [a for log in logs for a in log.reserved]
    owned = [a for log in logs for a in log.owned.values()]
    print(
        f"\nsweeper beside {BUYERS} buyers, {seconds:.1f} s: {sweeps['rounds']} sweeper rounds "
        f"({sweeps['sold out rounds']} after the first sell-out), "
        f"{sweeps['expired']} holds expired by the sweeper, {len(reserved)} reservations, "
        f"{sum(len(log.purchased) for log in logs)} purchases, {outcomes['refund']} refunds, "
        f"{outcomes['hold cancelled']} holds cancelled, {outcomes['HoldExpired']} HoldExpired, "
        f"{outcomes['InvalidTransition']} InvalidTransition, {outcomes['SoldOut']} SoldOut, "
        f"{outcomes['BuyerLimitExceeded']} BuyerLimitExceeded"
    )
    assert unexpected == [], Counter(f"{type(e).__name__}: {e}" for e in unexpected)
    assert sweeps["rounds"] >= 1000
    assert outcomes["SoldOut"] >= 1

    # Every reservation the API returned is one row; nothing else was written.
    assert scalar(conn, "SELECT count(*) FROM allocations WHERE event_id = %s", (event_id,)) == len(
        reserved
    )
    time.sleep(0.06)  # let the last holds lapse, then sweep them
    while allocations.expire_due(conn) > 0:
        pass
    statuses = dict(
        conn.execute(
            "SELECT status, count(*) FROM allocations WHERE event_id = %s GROUP BY status",
            (event_id,),
        ).fetchall()
    )
    assert statuses.get("reserved", 0) == 0
    assert statuses.get("purchased", 0) == len(owned)
    assert statuses.get("cancelled", 0) == outcomes["hold cancelled"] + outcomes["refund"]
    assert statuses.get("expired", 0) >= sweeps["expired"]
    sold = sum(a.quantity for a in owned)
    availability = events.get_availability(conn, event_id)
    assert (availability.reserved, availability.purchased, availability.available) == (
        0,
        sold,
        200 - sold,
    )
    assert_consistent(conn)
    assert admin.check_invariants(conn) == []
    # The layer retries deadlocks silently: ask the server whether it broke any.
    wait_until_gone(
        conn,
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    assert deadlocks(conn) - deadlocks_before == 0


# --- A server crash and restart during a flash sale ------------------------------------------

FLASH_BUYERS = 6
#: Purchases to see before the crash and again after the restart.
PURCHASES_PER_PHASE = 40
POOL_SIZE = FLASH_BUYERS + 4
#: How long the server stays down.
OUTAGE_SECONDS = 1.0


@dataclass
class FlashLog:
    """What one flash-sale buyer got back from the API, and the faults it met."""

    reserved: list[Allocation] = field(default_factory=list)
    purchased: list[Allocation] = field(default_factory=list)
    faults: Counter[str] = field(default_factory=Counter)
    unexpected: list[BaseException] = field(default_factory=list)


def restart_options(server: embedded.EmbeddedPostgres) -> str:
    """The -o options EmbeddedPostgres.start gives the server."""
    assert server.root is not None
    return (
        f"-p {server.port} -c listen_addresses={server.host} "
        f"-c unix_socket_directories={server.root / 'sockets'} -c max_connections=200"
    )


def test_server_restart_during_flash_sale() -> None:
    server = embedded.EmbeddedPostgres()
    assert server.port != 5432
    pool: ConnectionPool[Any] | None = None
    stop = threading.Event()  # buyers finish the purchase they are at, then stop
    abandon = threading.Event()  # the test failed: buyers stop retrying at once
    threads: list[threading.Thread] = []
    logs = [FlashLog() for _ in range(FLASH_BUYERS)]
    try:
        server.start()
        assert server.root is not None
        url = server.url()
        assert db.migrate(url) == db.migration_ids()
        with db.connect(url) as conn:
            event_id = make_event(conn, 100_000).id
        # More connections than buyers: some sit idle in the pool through the crash.
        pool = db.create_pool(url, min_size=POOL_SIZE, max_size=POOL_SIZE, timeout=30)
        pool.wait(timeout=WAIT_TIMEOUT)
        sale_pool = pool

        def attempt(log: FlashLog, call: Api) -> Allocation | None:
            """One call through the pool; None after ConnectionLost or Busy, to be retried."""
            try:
                with sale_pool.connection() as conn:
                    return call(conn)
            except (ConnectionLost, Busy) as exc:
                log.faults[type(exc).__name__] += 1
            except Exception as exc:  # PoolTimeout too: the pool did not reconnect in time
                log.unexpected.append(exc)
                raise
            time.sleep(0.02)
            return None

        barrier = threading.Barrier(FLASH_BUYERS + 1)

        def flash_buyer(index: int) -> None:
            log = logs[index]
            fingerprint = f"flash-{index}"
            rng = random.Random(index)
            barrier.wait(timeout=WAIT_TIMEOUT)
            while not stop.is_set():
                # An idempotency key makes the reservation safe to retry after ConnectionLost.
                reserve = partial(
                    allocations.reserve,
                    event_id=event_id,
                    fingerprint=fingerprint,
                    quantity=rng.randint(1, 2),
                    idempotency_key=f"{fingerprint}-{len(log.reserved)}",
                )
                hold = None
                while hold is None:
                    if abandon.is_set():
                        return
                    hold = attempt(log, reserve)
                log.reserved.append(hold)
                purchase = partial(
                    allocations.purchase, allocation_id=hold.id, fingerprint=fingerprint
                )
                bought = None
                while bought is None:
                    if abandon.is_set():
                        return
                    bought = attempt(log, purchase)
                log.purchased.append(bought)

        def purchases() -> int:
            return sum(len(log.purchased) for log in logs)

        def wait_for_purchases(count: int) -> None:
            deadline = time.monotonic() + 30.0
            while purchases() < count:
                assert time.monotonic() < deadline, "the buyers made no progress"
                assert not any(log.unexpected for log in logs), [log.unexpected for log in logs]
                time.sleep(0.01)

        threads = [threading.Thread(target=flash_buyer, args=(i,)) for i in range(FLASH_BUYERS)]
        for thread in threads:
            thread.start()
        barrier.wait(timeout=WAIT_TIMEOUT)
        wait_for_purchases(PURCHASES_PER_PHASE)

        # The crash: every backend dies without a checkpoint; buyers keep buying.
        before_crash = [(list(log.reserved), list(log.purchased)) for log in logs]
        datadir = str(server.datadir)
        server._run("pg_ctl", "-D", datadir, "-m", "immediate", "-w", "stop")
        time.sleep(OUTAGE_SECONDS)
        faults_during_outage = sum(sum(log.faults.values()) for log in logs)
        server._run(
            "pg_ctl",
            "-D",
            datadir,
            "-o",
            restart_options(server),
            "-l",
            str(server.root / "server.log"),
            "-w",
            "-t",
            "60",
            "start",
        )
        after_restart = purchases()
        wait_for_purchases(after_restart + PURCHASES_PER_PHASE)
        stop.set()
        for thread in threads:
            thread.join(timeout=JOIN_TIMEOUT)
        assert not any(thread.is_alive() for thread in threads), "a buyer hung"

        faults = sum((log.faults for log in logs), Counter[str]())
        unexpected = [exc for log in logs for exc in log.unexpected]
        reserved = {a.id: a for log in logs for a in log.reserved}
        bought = {a.id: a for log in logs for a in log.purchased}
        reserved_before = [a for r, _ in before_crash for a in r]
        bought_before = [a for _, p in before_crash for a in p]
        print(
            f"\nflash sale through a crash: {len(reserved_before)} reservations and "
            f"{len(bought_before)} purchases before the crash, {len(reserved)} and "
            f"{len(bought)} in all; faults met: {dict(faults)} "
            f"({faults_during_outage} by the end of the outage); "
            f"pool: {pool.get_stats().get('returns_bad', 0)} connections returned broken"
        )
        assert unexpected == [], unexpected
        assert set(faults) <= {"ConnectionLost", "Busy"}
        assert faults["ConnectionLost"] >= 1
        assert len(bought_before) >= PURCHASES_PER_PHASE

        # The pool serves again, without being recreated: `check()` replaces the idle
        # connections that still belong to the dead server; then every connection it
        # hands out works.
        pool.check()
        lost_idle = pool.get_stats().get("connections_lost", 0)
        with pool.connection() as conn:
            again = allocations.reserve(conn, event_id=event_id, fingerprint="after", quantity=1)
        with pool.connection() as conn:
            again = allocations.purchase(conn, allocation_id=again.id, fingerprint="after")
        assert again.status is AllocationStatus.PURCHASED
        taken = [pool.getconn(timeout=WAIT_TIMEOUT) for _ in range(POOL_SIZE)]
        try:
            seen = [events.get_availability(c, event_id).purchased for c in taken]
        finally:
            for c in taken:
                pool.putconn(c)
        print(f"pool.check() replaced {lost_idle} idle connections of the dead server")

        with db.connect(url) as conn:
            rows = {
                row[0]: row[1:]
                for row in conn.execute(
                    "SELECT id, fingerprint, quantity, status, idempotency_key,"
                    " (SELECT count(*) FROM tickets AS t"
                    "  WHERE t.allocation_id = a.id AND t.voided_at IS NULL)"
                    " FROM allocations AS a WHERE event_id = %s",
                    (event_id,),
                ).fetchall()
            }
            # Everything the API returned, before the crash or after, is there; every
            # reservation was purchased (the buyers retried), and nothing else exists.
            for hold in reserved_before:
                assert rows[hold.id][:2] == (hold.fingerprint, hold.quantity)
            for done in bought_before:
                assert rows[done.id] == (
                    done.fingerprint,
                    done.quantity,
                    "purchased",
                    done.idempotency_key,
                    done.quantity,
                )
            assert set(rows) == set(reserved) | {again.id}
            assert set(bought) == set(reserved)
            assert {row[2] for row in rows.values()} == {"purchased"}
            sold = sum(a.quantity for a in bought.values()) + 1
            availability = events.get_availability(conn, event_id)
            assert (availability.reserved, availability.purchased) == (0, sold)
            assert seen == [sold] * POOL_SIZE
            assert_consistent(conn)
            assert admin.check_invariants(conn) == []
    finally:
        stop.set()
        abandon.set()
        for thread in threads:
            thread.join(timeout=JOIN_TIMEOUT)
        if pool is not None:
            pool.close()
        server.stop()
