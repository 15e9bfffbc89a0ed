"""check_invariants for one event: the same findings as the whole-database check, for that
event only, read in a number of buffers that does not grow with the other events."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from tests.support import make_event
from ticketing import admin, allocations
from ticketing.errors import EventNotFound, InvalidInput
from ticketing.models import Event

# Rows per INSERT of the bulk load (docs/design.md, 4.3).
CHUNK = 200


def _sell(conn: psycopg.Connection[Any], event: Event) -> tuple[int, int]:
    """A purchase of 2 by alice and a hold of 1 by bob: (alice's id, bob's id)."""
    alice = allocations.reserve(conn, event_id=event.id, fingerprint="alice", quantity=2)
    allocations.purchase(conn, allocation_id=alice.id, fingerprint="alice")
    bob = allocations.reserve(conn, event_id=event.id, fingerprint="bob", quantity=1)
    return alice.id, bob.id


def _plant(admin_conn: psycopg.Connection[Any], event: Event, alice: int, bob: int) -> int:
    """As superuser, with the guards off: violations of each kind in `event`.

    Returns the id of the intruder's allocation."""
    with admin_conn.transaction():
        admin_conn.execute("SET LOCAL session_replication_role = replica")
        # An oversold purchase, with no tickets and no ledger entry, over the buyer limit.
        row = admin_conn.execute(
            "INSERT INTO allocations (event_id, fingerprint, quantity, status)"
            " VALUES (%s, 'intruder', 9, 'purchased') RETURNING id",
            (event.id,),
        ).fetchone()
        assert row is not None
        # A third valid ticket for alice, numbered past the event's capacity.
        admin_conn.execute(
            "INSERT INTO tickets (allocation_id, event_id, number, code)"
            " SELECT allocation_id, event_id, 50, code || 'x' FROM tickets"
            " WHERE allocation_id = %s ORDER BY number LIMIT 1",
            (alice,),
        )
        # bob's counter, a slot's counter and its first number off by one; bob's ledger gone.
        admin_conn.execute(
            "UPDATE buyer_inventory SET quantity = quantity + 1"
            " WHERE event_id = %s AND fingerprint = 'bob'",
            (event.id,),
        )
        admin_conn.execute(
            "UPDATE inventory_slots SET reserved = reserved + 1, first_number = first_number + 1"
            " WHERE event_id = %s AND slot = (SELECT min(slot) FROM inventory_slots"
            " WHERE event_id = %s)",
            (event.id, event.id),
        )
        admin_conn.execute(
            "DELETE FROM allocation_history WHERE id = (SELECT max(id) FROM allocation_history"
            " WHERE allocation_id = %s)",
            (bob,),
        )
        admin_conn.execute(
            "UPDATE event_history SET new_total_tickets = new_total_tickets + 1"
            " WHERE id = (SELECT max(id) FROM event_history WHERE event_id = %s)",
            (event.id,),
        )
    return int(row[0])


@pytest.fixture
def planted(
    conn: psycopg.Connection[Any], admin_conn: psycopg.Connection[Any]
) -> tuple[tuple[Event, Event, Event], dict[int, tuple[int, int, int]]]:
    """Three events with sales, the first two with planted violations, the third sound;
    and for each planted event the ids of alice, bob and the intruder."""
    made = []
    ids = {}
    for n in range(3):
        event = make_event(conn, 10, max_per_buyer=6, name=f"Event {n}")
        alice, bob = _sell(conn, event)
        if n < 2:
            ids[event.id] = (alice, bob, _plant(admin_conn, event, alice, bob))
        made.append(event)
    return (made[0], made[1], made[2]), ids


def test_one_event_finds_its_own_violations_and_no_others(
    conn: psycopg.Connection[Any],
    planted: tuple[tuple[Event, Event, Event], dict[int, tuple[int, int, int]]],
) -> None:
    (first, second, sound), ids = planted
    whole = admin.check_invariants(conn)
    per_event = {e.id: admin.check_invariants(conn, event_id=e.id) for e in (first, second, sound)}
    assert per_event[sound.id] == []
    for event, (alice, bob, intruder) in ((first, ids[first.id]), (second, ids[second.id])):
        e = event.id
        assert per_event[e] == [
            f"event {e}: 12 tickets live (11 purchased, 1 held) but total_tickets is 10",
            f"event {e}: buyer intruder holds 9 live tickets, max_per_buyer is 6",
            f"allocation {alice} (purchased, quantity 2) has 3 valid tickets",
            f"allocation {intruder} (purchased, quantity 9) has 0 valid tickets",
            f"event {e}: valid ticket number 50 is outside 1..10",
            f"event {e}: slots say 2 reserved, 2 purchased, total 10, max 6;"
            f" allocations say 1 reserved, 11 purchased; event says total 10, max 6",
            f"event {e} slot 0: numbers 2..11 (expected to start at 1), purchased 2,"
            " valid tickets in range 1, pooled 0, highest issued 2",
            f"event {e}: buyer bob counted 2, allocations say 1",
            f"event {e}: buyer intruder counted 0, allocations say 9",
            f"event {e}: availability reports 2 reserved, live holds add up to 1",
            f"allocation {bob} is reserved x1 (event {e}, buyer bob),"
            " its ledger replays to nothing",
            f"allocation {intruder} is purchased x9 (event {e}, buyer intruder),"
            " its ledger replays to nothing",
            f"event {e} has total 10, max 6, its ledger replays to total 11, max 6",
        ]
    assert Counter(whole) == Counter(per_event[first.id] + per_event[second.id])


def test_one_event_of_a_sound_database(conn: psycopg.Connection[Any]) -> None:
    event = make_event(conn, 10, max_per_buyer=None, name="Sound")
    _sell(conn, event)
    assert admin.check_invariants(conn, event_id=event.id) == []
    assert admin.check_invariants(conn) == []


def test_a_missing_or_bad_event_is_refused(conn: psycopg.Connection[Any]) -> None:
    with pytest.raises(EventNotFound, match="event 999999 does not exist"):
        admin.check_invariants(conn, event_id=999_999)
    with pytest.raises(InvalidInput):
        admin.check_invariants(conn, event_id=0)


def _buffers(conn: psycopg.Connection[Any], event_id: int | None) -> dict[str, int]:
    """Shared buffers (hit + read) of each check, run with EXPLAIN ANALYZE."""
    counts = {}
    for name in admin.CHECKS:
        row = conn.execute(
            "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + admin.Q[name],
            {"event_id": event_id},
            prepare=False,
        ).fetchone()
        assert row is not None
        plan = (row[0] if isinstance(row[0], list) else json.loads(row[0]))[0]["Plan"]
        counts[name] = plan["Shared Hit Blocks"] + plan["Shared Read Blocks"]
    return counts


def _load(conn: psycopg.Connection[Any], event: Event, holds: int) -> None:
    """`holds` holds of 1 on `event`, half of them purchased (in bulk statements)."""
    expires = datetime.now(UTC) + timedelta(hours=1)
    for first in range(0, holds, CHUNK):
        with conn.transaction():
            conn.execute(
                "INSERT INTO allocations (event_id, fingerprint, quantity, expires_at)"
                " SELECT %s, 'load-' || k, 1, %s"
                " FROM generate_series(%s::integer, %s::integer) AS k",
                (event.id, expires, first, min(first + CHUNK, holds) - 1),
            )
            conn.execute(
                "UPDATE allocations SET status = 'purchased'"
                " WHERE event_id = %s AND fingerprint = ANY(%s)",
                (event.id, [f"load-{k}" for k in range(first, min(first + CHUNK, holds), 2)]),
            )


def test_one_event_reads_the_same_buffers_however_big_the_others_grow(
    conn: psycopg.Connection[Any],
) -> None:
    small = make_event(conn, 10, max_per_buyer=6, name="Small")
    _sell(conn, small)
    big = make_event(conn, 100_000, max_per_buyer=None, name="Big")
    _sell(conn, big)
    before = _buffers(conn, small.id)
    whole_before = sum(_buffers(conn, None).values())
    _load(conn, big, 4000)
    after = _buffers(conn, small.id)
    whole_after = sum(_buffers(conn, None).values())
    # The whole-database check reads the big event's rows (the test can fail) ...
    assert whole_after > whole_before + 200
    # ... one event's check reads its own, through indexes one level deeper at most.
    grown = {name: after[name] - before[name] for name in admin.CHECKS}
    assert all(extra <= 8 for extra in grown.values()), grown
    assert admin.check_invariants(conn, event_id=small.id) == []
    assert admin.check_invariants(conn, event_id=big.id) == []
