"""Property tests: a stateful model of the layer against PostgreSQL; fuzzed API inputs."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from functools import partial
from typing import Any, LiteralString

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from tests.support import STARTS_AT, TABLES, assert_consistent
from ticketing import admin, allocations, events, tickets
from ticketing.errors import (
    AllocationNotFound,
    BuyerLimitExceeded,
    HoldExpired,
    IdempotencyConflict,
    InvalidTransition,
    SoldOut,
    TicketingError,
    translate,
)
from ticketing.models import Allocation

HOLD = timedelta(hours=1)  # never lapses while a test runs: only raw-inserted holds lapse
QUANTITY = st.one_of(st.integers(1, 2), st.integers(1, 5))  # mostly within buyer limits

# Operations executed by this module, by kind and outcome (printed at the end of each test).
OPS: Counter[str] = Counter()

RESERVED, PURCHASED, CANCELLED, EXPIRED = "reserved", "purchased", "cancelled", "expired"
STATUSES = (RESERVED, PURCHASED, CANCELLED, EXPIRED)
LEGAL = {(RESERVED, PURCHASED), (RESERVED, CANCELLED), (RESERVED, EXPIRED), (PURCHASED, CANCELLED)}

# A hold that lapsed an hour ago: counted by the triggers like any hold until reclaimed.
# Run as the superuser: the application role may not set created_at.
INSERT_LAPSED: LiteralString = """
    INSERT INTO allocations (event_id, fingerprint, quantity, created_at, expires_at)
    VALUES (%(event_id)s, %(fingerprint)s, %(quantity)s,
            now() - interval '2 hours', now() - interval '1 hour')
    RETURNING id
"""
# Several lapsed holds on one event in one statement, ids in list order. Each expires a
# microsecond after the one before, so expire_due takes them in that order too.
INSERT_LAPSED_MANY: LiteralString = """
    INSERT INTO allocations (event_id, fingerprint, quantity, created_at, expires_at)
    SELECT %(event_id)s, h.fingerprint, h.quantity, now() - interval '2 hours',
           now() - interval '1 hour' + h.n * interval '1 microsecond'
    FROM unnest(%(fingerprints)s::text[], %(quantities)s::integer[])
         WITH ORDINALITY AS h (fingerprint, quantity, n)
    ORDER BY h.n
    RETURNING id
"""
# Several status changes in one statement.
UPDATE_STATUSES: LiteralString = """
    UPDATE allocations AS a SET status = c.status
    FROM unnest(%(ids)s::bigint[], %(statuses)s::text[]) AS c (id, status)
    WHERE a.id = c.id
"""

# Everything the layer stores about some events, as one text: equal texts, equal data.
SNAPSHOT: LiteralString = """
    SELECT concat_ws(' / ',
        (SELECT string_agg(e::text, '|' ORDER BY e.id) FROM events AS e
         WHERE e.id = ANY(%(ids)s)),
        (SELECT string_agg(i::text, '|' ORDER BY i.event_id) FROM event_inventory AS i
         WHERE i.event_id = ANY(%(ids)s)),
        (SELECT string_agg(s::text, '|' ORDER BY s.event_id, s.slot) FROM inventory_slots AS s
         WHERE s.event_id = ANY(%(ids)s)),
        (SELECT string_agg(b::text, '|' ORDER BY b.event_id, b.fingerprint)
         FROM buyer_inventory AS b WHERE b.event_id = ANY(%(ids)s)),
        (SELECT string_agg(a::text, '|' ORDER BY a.id) FROM allocations AS a
         WHERE a.event_id = ANY(%(ids)s)),
        (SELECT string_agg(t::text, '|' ORDER BY t.id) FROM tickets AS t
         WHERE t.event_id = ANY(%(ids)s)),
        (SELECT string_agg(p::text, '|' ORDER BY p.event_id, p.number)
         FROM ticket_number_pool AS p WHERE p.event_id = ANY(%(ids)s)),
        (SELECT string_agg(h::text, '|' ORDER BY h.id) FROM allocation_history AS h
         WHERE h.event_id = ANY(%(ids)s)),
        (SELECT string_agg(h::text, '|' ORDER BY h.id) FROM event_history AS h
         WHERE h.event_id = ANY(%(ids)s)))
"""

COUNTS: LiteralString = "SELECT " + ", ".join(f"(SELECT count(*) FROM {t})" for t in TABLES)
# The whole content of every table, for "nothing was written" after a refusal.
DIGEST: LiteralString = (
    "SELECT concat_ws(' / ', "
    + ", ".join(
        f"(SELECT md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), '')) FROM {t} AS x)"
        for t in TABLES
    )
    + ")"
)


def run_sql(
    conn: psycopg.Connection[Any], sql: LiteralString, params: Any
) -> tuple[list[tuple[Any, ...]], psycopg.Error | None]:
    """Run one raw statement (its own transaction): its rows, or the error that refused it."""
    try:
        cur = conn.execute(sql, params)
    except psycopg.Error as exc:
        return [], exc
    return (cur.fetchall() if cur.description else []), None


def summary(title: str) -> str:
    return f"{title}: {OPS.total()} operations: " + ", ".join(
        f"{k}={v}" for k, v in sorted(OPS.items())
    )


# ---------------------------------------------------------------------------
# 1. The stateful model.
# ---------------------------------------------------------------------------


@dataclass
class ModelEvent:
    id: int
    total: int
    max_per_buyer: int | None
    slots: int


@dataclass
class ModelAllocation:
    id: int
    event_id: int
    fingerprint: str
    quantity: int
    status: str
    lapsed: bool  # expires_at is in the past (only raw-inserted holds)
    key: str | None
    ticketed: bool = False  # it was purchased once: it has (valid or voided) tickets


@dataclass
class Prediction:
    """What a new hold does: ok (reclaiming some lapsed holds), limit or sold_out."""

    kind: str
    reclaimed: list[ModelAllocation]
    available: int = 0


class Model:
    """The layer's state, in plain Python, for the events one example created."""

    def __init__(self) -> None:
        self.events: dict[int, ModelEvent] = {}
        self.allocs: dict[int, ModelAllocation] = {}
        self.keys: dict[str, int] = {}

    def of_event(self, event_id: int) -> list[ModelAllocation]:
        return [a for a in self.allocs.values() if a.event_id == event_id]

    def lapsed_holds(self, event_id: int) -> list[ModelAllocation]:
        return [a for a in self.of_event(event_id) if a.status == RESERVED and a.lapsed]

    def counted_reserved(self, event_id: int) -> int:
        """Reserved in the slots: holds past expires_at included until marked expired."""
        return sum(a.quantity for a in self.of_event(event_id) if a.status == RESERVED)

    def purchased(self, event_id: int) -> int:
        return sum(a.quantity for a in self.of_event(event_id) if a.status == PURCHASED)

    def availability(self, event_id: int) -> tuple[int, int, int, int]:
        """total, reserved, purchased, available as get_availability reports them."""
        total = self.events[event_id].total
        live = sum(
            a.quantity for a in self.of_event(event_id) if a.status == RESERVED and not a.lapsed
        )
        purchased = self.purchased(event_id)
        return total, live, purchased, total - live - purchased

    def held(self, event_id: int, fingerprint: str) -> int:
        return sum(
            a.quantity
            for a in self.of_event(event_id)
            if a.fingerprint == fingerprint and a.status in (RESERVED, PURCHASED)
        )

    def predict_holds(self, event_id: int, holds: list[tuple[str, int]]) -> Prediction:
        """The insert trigger's rule (allocations_apply_insert, inventory_apply, inventory_take)
        for the new holds (fingerprint, quantity) of one statement on one event.

        Row by row, in insertion order, each row counting the rows before it: a buyer
        going over max_per_buyer first gets their own lapsed holds reclaimed, then
        TK002. Then, if the event's free capacity (lapsed holds counted as taken) is
        short of the row's quantity, every lapsed hold of the event is reclaimed, then
        TK001 with what is free. Rows of the statement itself are never reclaimed. A
        refusal of any row rolls the whole statement back, reclaims included.
        """
        ev = self.events[event_id]
        reclaimed: list[ModelAllocation] = []
        added: Counter[str] = Counter()
        taken = 0
        for fp, quantity in holds:
            if ev.max_per_buyer is not None:
                gone = sum(a.quantity for a in reclaimed if a.fingerprint == fp)
                held = self.held(event_id, fp) - gone + added[fp] + quantity
                if held > ev.max_per_buyer:
                    mine = [
                        a
                        for a in self.lapsed_holds(event_id)
                        if a.fingerprint == fp and a not in reclaimed
                    ]
                    if held - sum(a.quantity for a in mine) > ev.max_per_buyer:
                        return Prediction("limit", [])
                    reclaimed += mine
            free = (
                ev.total
                - self.purchased(event_id)
                - self.counted_reserved(event_id)
                + sum(a.quantity for a in reclaimed)
                - taken
            )
            if free < quantity:
                others = [a for a in self.lapsed_holds(event_id) if a not in reclaimed]
                free += sum(a.quantity for a in others)
                if free < quantity:
                    return Prediction("sold_out", [], free)
                reclaimed += others
            added[fp] += quantity
            taken += quantity
        return Prediction("ok", reclaimed)

    def predict_hold(self, event_id: int, fingerprint: str, quantity: int) -> Prediction:
        return self.predict_holds(event_id, [(fingerprint, quantity)])

    def transition_refusal(self, alloc: ModelAllocation, new_status: str) -> str | None:
        """The SQLSTATE allocations_guard_transition raises for a status change, or None."""
        if new_status == alloc.status:
            return None
        if (alloc.status, new_status) not in LEGAL:
            return "TK003"
        if new_status == PURCHASED and alloc.lapsed:
            return "TK004"
        if new_status == EXPIRED and not alloc.lapsed:
            return "TK003"
        return None

    def set_status(self, alloc: ModelAllocation, new_status: str) -> None:
        if new_status == PURCHASED and alloc.status != PURCHASED:
            alloc.ticketed = True  # the trigger issued its tickets
        alloc.status = new_status


def outcome_name(result: object) -> str:
    return type(result).__name__ if isinstance(result, BaseException) else "ok"


ForbiddenAttempt = tuple[LiteralString, dict[str, Any], str]  # sql, params, expected SQLSTATE


class LayerMachine(RuleBasedStateMachine):
    """Random sequences of layer calls and raw SQL, each step compared with the model.

    `conn` is the application role: every API call, every read and the raw status
    changes (which it may make) run there. `admin_conn` is the superuser, for what the
    application may not do: backdated holds, capacity changes, and the statements
    only the guards stop (after the application role was refused them).
    """

    def __init__(self, conn: psycopg.Connection[Any], admin_conn: psycopg.Connection[Any]) -> None:
        super().__init__()
        self.conn = conn
        self.admin_conn = admin_conn
        token = uuid.uuid4().hex[:10]
        self.fingerprints = [f"{token}-buyer-{i}" for i in range(4)]
        self.key_pool = [f"{token}-key-{i}" for i in range(3)]
        self.model = Model()
        # Only this example's raw holds may be lapsed, so that expire_due's count is exact.
        allocations.expire_due(self.conn, limit=10_000)
        # The slot a hold or purchase takes is picked with random(): seeded, a failing
        # example replays the same picks, so that Hypothesis can shrink and report it.
        for session in (self.conn, self.admin_conn):
            session.execute("SELECT setseed(0.5)")
        OPS["examples"] += 1

    # -- helpers -------------------------------------------------------

    def count(self, op: str, result: object) -> None:
        OPS["steps"] += 1
        OPS[f"{op}:{outcome_name(result)}"] += 1

    def pick_allocation(
        self, data: st.DataObject, prefer: Callable[[ModelAllocation], bool]
    ) -> ModelAllocation:
        """Any allocation, more often one that `prefer` picks."""
        allocs = self.model.allocs
        return allocs[self.pick(data, sorted(allocs), lambda i: prefer(allocs[i]), "allocation")]

    def pick(
        self, data: st.DataObject, values: list[Any], prefer: Callable[[Any], Any], label: str
    ) -> Any:
        """Any of the values, more often one that `prefer` picks."""
        preferred = [v for v in values if prefer(v)] or values
        return data.draw(st.one_of(st.sampled_from(preferred), st.sampled_from(values)), label)

    def pick_fingerprint(self, data: st.DataObject, owner: str) -> str:
        """Mostly the owner, sometimes any buyer of the pool (maybe the owner too)."""
        return data.draw(
            st.one_of(st.just(owner), st.just(owner), st.sampled_from(self.fingerprints)),
            label="fingerprint",
        )

    def snapshot(self) -> str:
        row = self.conn.execute(SNAPSHOT, {"ids": sorted(self.model.events)}).fetchone()
        assert row is not None
        return str(row[0])

    def assert_refused_like(self, result: object, prediction: Prediction) -> None:
        if prediction.kind == "limit":
            assert type(result) is BuyerLimitExceeded, result
        else:
            assert type(result) is SoldOut, (result, prediction)
            assert result.available == prediction.available

    def add_hold(self, prediction: Prediction, alloc: ModelAllocation, op: str) -> ModelAllocation:
        assert alloc.id not in self.model.allocs
        for a in prediction.reclaimed:
            a.status = EXPIRED
        OPS[f"{op}:reclaimed_lapsed"] += len(prediction.reclaimed)
        self.model.allocs[alloc.id] = alloc
        return alloc

    def check_allocation(self, alloc: ModelAllocation) -> None:
        """get_allocation and the tickets of one allocation, by the API."""
        got = allocations.get_allocation(self.conn, alloc.id)
        assert (got.event_id, got.fingerprint, got.quantity, got.status) == (
            alloc.event_id,
            alloc.fingerprint,
            alloc.quantity,
            alloc.status,
        )
        issued = tickets.list_for_allocation(self.conn, alloc.id)
        assert len(issued) == (alloc.quantity if alloc.ticketed else 0)
        valid = [t for t in issued if t.voided_at is None]
        assert len(valid) == (alloc.quantity if alloc.status == PURCHASED else 0)
        total = self.model.events[alloc.event_id].total
        assert all(1 <= t.number <= total for t in valid)
        assert len({t.number for t in issued}) == len(issued)
        assert [t.number for t in issued] == sorted(t.number for t in issued)
        for t in issued[:1]:
            assert tickets.get_by_code(self.conn, t.code) == t

    def call_reserve(
        self, data: st.DataObject, quantity: int | None, key: str | None = None
    ) -> None:
        """reserve(); quantity None: about what get_availability says is left.

        Events and buyers with lapsed holds are picked more often, so that the
        reclaiming paths run.
        """
        event_id = self.pick(data, sorted(self.model.events), self.model.lapsed_holds, "event")
        fp = self.pick(
            data,
            self.fingerprints,
            lambda fp: [a for a in self.model.lapsed_holds(event_id) if a.fingerprint == fp],
            "buyer",
        )
        if quantity is None:
            left = self.model.availability(event_id)[3]
            quantity = max(1, left + data.draw(st.integers(-1, 1), label="more or less"))
        result: Allocation | TicketingError
        try:
            result = allocations.reserve(
                self.conn,
                event_id=event_id,
                fingerprint=fp,
                quantity=quantity,
                hold=HOLD,
                idempotency_key=key,
            )
        except TicketingError as exc:
            result = exc
        self.count("reserve", result)

        if key is not None and key in self.model.keys:
            existing = self.model.allocs[self.model.keys[key]]
            same = (existing.event_id, existing.fingerprint, existing.quantity)
            if same != (event_id, fp, quantity):
                assert type(result) is IdempotencyConflict, result
                return
            OPS["reserve:replayed"] += 1
            assert isinstance(result, Allocation), result
            assert (result.id, result.status, result.idempotency_key) == (
                existing.id,
                existing.status,
                key,
            )
            return

        prediction = self.model.predict_hold(event_id, fp, quantity)
        if prediction.kind != "ok":
            self.assert_refused_like(result, prediction)
            return
        assert isinstance(result, Allocation), (result, prediction)
        assert (result.event_id, result.fingerprint, result.quantity, result.status) == (
            event_id,
            fp,
            quantity,
            RESERVED,
        )
        assert result.idempotency_key == key
        assert result.expires_at - result.created_at == HOLD
        self.add_hold(
            prediction,
            ModelAllocation(result.id, event_id, fp, quantity, RESERVED, False, key),
            "reserve",
        )
        if key is not None:
            self.model.keys[key] = result.id

    # -- rules ---------------------------------------------------------

    def add_event(self, total: int, max_per_buyer: int | None, data: st.DataObject) -> None:
        slots = data.draw(st.one_of(st.none(), st.integers(1, min(4, total))), label="slots")
        ev = events.create_event(
            self.conn,
            name=f"event of {total}",
            starts_at=STARTS_AT,
            total_tickets=total,
            max_per_buyer=max_per_buyer,
            slots=slots,
        )
        self.count("create_event", ev)
        assert (ev.total_tickets, ev.max_per_buyer, ev.starts_at) == (
            total,
            max_per_buyer,
            STARTS_AT,
        )
        assert events.get_event(self.conn, ev.id) == ev
        # inventory_slot_count gives events under 128 tickets one slot.
        self.model.events[ev.id] = ModelEvent(ev.id, total, max_per_buyer, slots or 1)

    @initialize(
        total=st.integers(1, 12),
        max_per_buyer=st.one_of(st.none(), st.integers(1, 4)),
        data=st.data(),
    )
    def first_event(self, total: int, max_per_buyer: int | None, data: st.DataObject) -> None:
        """Every example starts with an event, most with lapsed holds on it to reclaim."""
        self.add_event(total, max_per_buyer, data)
        lapsed = data.draw(st.lists(st.integers(1, 3), max_size=3), label="lapsed holds")
        for i, quantity in enumerate(lapsed):
            self.add_lapsed_hold(max(self.model.events), self.fingerprints[i % 2], quantity)

    @precondition(lambda self: len(self.model.events) < 4)
    @rule(
        total=st.integers(1, 12),
        max_per_buyer=st.one_of(st.none(), st.integers(1, 4)),
        data=st.data(),
    )
    def create_event(self, total: int, max_per_buyer: int | None, data: st.DataObject) -> None:
        self.add_event(total, max_per_buyer, data)

    @precondition(lambda self: self.model.events)
    @rule(data=st.data(), quantity=QUANTITY)
    def reserve(self, data: st.DataObject, quantity: int) -> None:
        self.call_reserve(data, quantity, None)

    @precondition(lambda self: self.model.events)
    @rule(data=st.data())
    def reserve_what_is_left(self, data: st.DataObject) -> None:
        """Near sell-out: takes from several slots, reclaims lapsed holds, or is sold out."""
        self.call_reserve(data, None)

    @precondition(lambda self: self.model.events)
    @rule(data=st.data(), quantity=QUANTITY)
    def reserve_with_key(self, data: st.DataObject, quantity: int) -> None:
        self.call_reserve(data, quantity, data.draw(st.sampled_from(self.key_pool)))

    @precondition(lambda self: self.model.events)
    @rule(data=st.data(), quantity=QUANTITY)
    def insert_lapsed_hold(self, data: st.DataObject, quantity: int) -> None:
        event_id = data.draw(st.sampled_from(sorted(self.model.events)), label="event")
        fp = data.draw(st.sampled_from(self.fingerprints), label="buyer")
        self.add_lapsed_hold(event_id, fp, quantity)

    @precondition(lambda self: self.model.events)
    @rule(
        data=st.data(),
        holds=st.lists(st.tuples(st.integers(0, 3), st.integers(1, 3)), min_size=2, max_size=3),
    )
    def insert_lapsed_holds(self, data: st.DataObject, holds: list[tuple[int, int]]) -> None:
        """Several lapsed holds of one event in one INSERT: the row trigger counts them
        one by one and never reclaims a row of the statement while counting it."""
        event_id = self.pick(data, sorted(self.model.events), self.model.lapsed_holds, "event")
        items = [(self.fingerprints[b], q) for b, q in holds]
        prediction = self.model.predict_holds(event_id, items)
        params = {
            "event_id": event_id,
            "fingerprints": [fp for fp, _ in items],
            "quantities": [q for _, q in items],
        }
        rows, refusal = run_sql(self.admin_conn, INSERT_LAPSED_MANY, params)
        self.count("insert_lapsed_holds", translate(refusal) if refusal else None)
        if prediction.kind != "ok":
            assert refusal is not None, prediction
            assert refusal.sqlstate == ("TK002" if prediction.kind == "limit" else "TK001")
            self.assert_refused_like(translate(refusal), prediction)
            return
        assert refusal is None, (refusal, prediction)
        ids = sorted(int(r[0]) for r in rows)
        assert len(ids) == len(items)
        for a in prediction.reclaimed:
            a.status = EXPIRED
        OPS["insert_lapsed_holds:reclaimed_lapsed"] += len(prediction.reclaimed)
        for alloc_id, (fp, q) in zip(ids, items, strict=True):
            assert alloc_id not in self.model.allocs
            self.model.allocs[alloc_id] = ModelAllocation(
                alloc_id, event_id, fp, q, RESERVED, True, None
            )

    def add_lapsed_hold(self, event_id: int, fp: str, quantity: int) -> None:
        """A hold inserted by raw SQL that lapsed an hour ago: the triggers count it."""
        prediction = self.model.predict_hold(event_id, fp, quantity)
        rows, refusal = run_sql(
            self.admin_conn,
            INSERT_LAPSED,
            {"event_id": event_id, "fingerprint": fp, "quantity": quantity},
        )
        result = translate(refusal) if refusal is not None else int(rows[0][0])
        self.count("insert_lapsed_hold", result)
        if prediction.kind != "ok":
            assert refusal is not None, prediction
            assert refusal.sqlstate == ("TK002" if prediction.kind == "limit" else "TK001")
            self.assert_refused_like(result, prediction)
            return
        assert isinstance(result, int), (result, prediction)
        self.add_hold(
            prediction,
            ModelAllocation(result, event_id, fp, quantity, RESERVED, True, None),
            "insert_lapsed_hold",
        )

    @precondition(lambda self: self.model.allocs)
    @rule(data=st.data())
    def purchase(self, data: st.DataObject) -> None:
        alloc = self.pick_allocation(data, lambda a: a.status == RESERVED and not a.lapsed)
        fp = self.pick_fingerprint(data, alloc.fingerprint)
        result: Allocation | TicketingError
        try:
            result = allocations.purchase(self.conn, allocation_id=alloc.id, fingerprint=fp)
        except TicketingError as exc:
            result = exc
        self.count("purchase", result)
        if fp != alloc.fingerprint:
            assert type(result) is AllocationNotFound, result
        elif alloc.status == RESERVED and not alloc.lapsed:
            assert isinstance(result, Allocation), result
            assert (result.id, result.status) == (alloc.id, PURCHASED)
            alloc.status, alloc.ticketed = PURCHASED, True
        elif alloc.status == PURCHASED:  # unchanged, no new tickets
            assert isinstance(result, Allocation), result
            assert (result.id, result.status) == (alloc.id, PURCHASED)
        elif alloc.status in (RESERVED, EXPIRED):  # a lapsed hold, marked expired or not
            assert type(result) is HoldExpired, result
        else:
            assert type(result) is InvalidTransition, result
        self.check_allocation(alloc)

    @precondition(lambda self: self.model.allocs)
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        alloc = self.pick_allocation(data, lambda a: a.status in (RESERVED, PURCHASED))
        fp = self.pick_fingerprint(data, alloc.fingerprint)
        result: Allocation | TicketingError
        try:
            result = allocations.cancel(self.conn, allocation_id=alloc.id, fingerprint=fp)
        except TicketingError as exc:
            result = exc
        self.count("cancel", result)
        if fp != alloc.fingerprint:
            assert type(result) is AllocationNotFound, result
        elif alloc.status in (RESERVED, PURCHASED, CANCELLED):  # lapsed holds too
            assert isinstance(result, Allocation), result
            assert (result.id, result.status) == (alloc.id, CANCELLED)
            alloc.status = CANCELLED
        else:
            assert type(result) is InvalidTransition, result
        self.check_allocation(alloc)

    @precondition(lambda self: self.model.allocs)
    @rule(data=st.data(), call=st.sampled_from(["purchase", "cancel", "get_allocation"]))
    def missing_allocation(self, data: st.DataObject, call: str) -> None:
        missing = 2**62 + data.draw(st.integers(0, 10), label="offset")
        attempt: Callable[[], Allocation] = {
            "purchase": partial(
                allocations.purchase,
                self.conn,
                allocation_id=missing,
                fingerprint=self.fingerprints[0],
            ),
            "cancel": partial(
                allocations.cancel,
                self.conn,
                allocation_id=missing,
                fingerprint=self.fingerprints[0],
            ),
            "get_allocation": partial(allocations.get_allocation, self.conn, missing),
        }[call]
        with pytest.raises(AllocationNotFound) as refused:
            attempt()
        self.count(f"missing_allocation_{call}", refused.value)

    @precondition(lambda self: self.model.allocs)
    @rule(limit=st.one_of(st.integers(1, 3), st.just(1000)))
    def expire_due(self, limit: int) -> None:
        # Only this example's raw holds are lapsed; expire_due takes them by expires_at,
        # which is their insertion order (now() - 1 hour at each insert).
        due = sorted(
            (a for a in self.model.allocs.values() if a.status == RESERVED and a.lapsed),
            key=lambda a: a.id,
        )[:limit]
        expired = allocations.expire_due(self.conn, limit=limit)
        self.count("expire_due", expired)
        OPS["expire_due:expired_holds"] += expired
        assert expired == len(due)
        for a in due:
            a.status = EXPIRED

    @precondition(lambda self: self.model.allocs)
    @rule(data=st.data(), new_status=st.sampled_from(STATUSES))
    def raw_status_change(self, data: st.DataObject, new_status: str) -> None:
        """UPDATE allocations SET status by raw SQL: the guard allows the state machine only."""
        alloc = self.pick_allocation(data, lambda a: a.status in (RESERVED, PURCHASED))
        before = self.snapshot()
        expected = self.model.transition_refusal(alloc, new_status)
        _, refusal = run_sql(
            self.conn, "UPDATE allocations SET status = %s WHERE id = %s", (new_status, alloc.id)
        )
        self.count("raw_status_change", translate(refusal) if refusal else None)
        if refusal is not None:
            assert refusal.sqlstate == expected, (alloc, new_status, refusal)
            assert self.snapshot() == before
            return
        assert expected is None, (alloc, new_status)
        self.model.set_status(alloc, new_status)
        self.check_allocation(alloc)

    @precondition(lambda self: len(self.model.allocs) >= 2)
    @rule(data=st.data())
    def raw_status_changes(self, data: st.DataObject) -> None:
        """Several status changes in one UPDATE: all allowed, or refused as a whole."""
        ids = data.draw(
            st.lists(
                st.sampled_from(sorted(self.model.allocs)), min_size=2, max_size=4, unique=True
            ),
            label="allocations",
        )
        changes = []
        for alloc_id in ids:  # mostly allowed changes, so that some statements succeed
            a = self.model.allocs[alloc_id]
            allowed = [s for s in STATUSES if self.model.transition_refusal(a, s) is None]
            new_status = data.draw(
                st.one_of(st.sampled_from(allowed), st.sampled_from(STATUSES)),
                label=f"status of {alloc_id}",
            )
            changes.append((a, new_status))
        refusals = {self.model.transition_refusal(a, s) for a, s in changes} - {None}
        before = self.snapshot()
        _, refusal = run_sql(
            self.conn, UPDATE_STATUSES, {"ids": ids, "statuses": [s for _, s in changes]}
        )
        self.count("raw_status_changes", translate(refusal) if refusal else None)
        if refusals:
            # The first row refused stops the statement; which one comes first is the
            # executor's choice.
            assert refusal is not None, changes
            assert refusal.sqlstate in refusals, (changes, refusal)
            assert self.snapshot() == before
            return
        assert refusal is None, (changes, refusal)
        for a, s in changes:
            self.model.set_status(a, s)
        for a, _ in changes:
            self.check_allocation(a)

    @precondition(lambda self: self.model.events)
    @rule(data=st.data())
    def change_capacity(self, data: st.DataObject) -> None:
        """Raw UPDATE of an event's total_tickets and max_per_buyer (events_guard_capacity),
        by the superuser: capacity changes are an operator's, never the application's.

        Lowering either first reclaims the event's lapsed holds; then it is refused
        (TK006) below a valid ticket's number, below what is live, or below a buyer's
        live quantity. Which numbers purchases got depends on the slot each took (at
        random), so the highest valid number is read from the database.
        """
        ev = self.model.events[
            self.pick(data, sorted(self.model.events), self.model.lapsed_holds, "event")
        ]
        total = data.draw(st.one_of(st.just(ev.total), st.integers(1, 14)), label="total")
        limit = data.draw(
            st.one_of(st.just(ev.max_per_buyer), st.none(), st.integers(1, 5)), label="max"
        )
        row = self.conn.execute(
            "SELECT max(number) FROM tickets WHERE event_id = %s AND voided_at IS NULL",
            (ev.id,),
        ).fetchone()
        high = row[0] if row is not None and row[0] is not None else 0
        lowering = total < ev.total or (
            limit is not None
            and limit < (ev.max_per_buyer if ev.max_per_buyer is not None else 2**31 - 1)
        )
        reclaimed = self.model.lapsed_holds(ev.id) if lowering else []
        gone = sum(a.quantity for a in reclaimed)
        live = self.model.counted_reserved(ev.id) + self.model.purchased(ev.id) - gone
        top = max(
            self.model.held(ev.id, fp) - sum(a.quantity for a in reclaimed if a.fingerprint == fp)
            for fp in self.fingerprints
        )
        refused = (
            (total < ev.total and high > total)
            or live > total
            or (limit is not None and top > limit)
        )
        before = self.snapshot()
        _, refusal = run_sql(
            self.admin_conn,
            "UPDATE events SET total_tickets = %(total)s, max_per_buyer = %(max)s"
            " WHERE id = %(id)s",
            {"total": total, "max": limit, "id": ev.id},
        )
        self.count("change_capacity", translate(refusal) if refusal else None)
        if refused:
            assert refusal is not None, (ev, total, limit)
            assert refusal.sqlstate == "TK006", refusal
            assert self.snapshot() == before
            return
        assert refusal is None, (ev, total, limit, refusal)
        for a in reclaimed:
            a.status = EXPIRED
        OPS["change_capacity:reclaimed_lapsed"] += len(reclaimed)
        ev.total, ev.max_per_buyer = total, limit

    def forbidden_attempts(self) -> dict[str, list[ForbiddenAttempt]]:
        """Raw statements the guards must refuse, by kind, with the SQLSTATE expected."""
        kinds: dict[str, list[ForbiddenAttempt]] = {}

        def add(kind: str, sql: LiteralString, params: dict[str, Any], state: str) -> None:
            kinds.setdefault(kind, []).append((sql, params, state))

        for a in self.model.allocs.values():
            p: dict[str, Any] = {"id": a.id, "event_id": a.event_id}
            add("delete_allocation", "DELETE FROM allocations WHERE id = %(id)s", p, "TK005")
            add(
                "change_created_at",
                "UPDATE allocations SET created_at = created_at - interval '1 hour'"
                " WHERE id = %(id)s",
                p,
                "TK005",
            )
            add(
                "change_fingerprint",
                "UPDATE allocations SET fingerprint = fingerprint || 'x' WHERE id = %(id)s",
                p,
                "TK005",
            )
            # Valid-ticket count and status are checked after the insert: number 1000 is
            # above every total here but free, so the exclusion constraint passes first.
            add(
                "insert_ticket",
                "INSERT INTO tickets (event_id, allocation_id, number)"
                " VALUES (%(event_id)s, %(id)s, 1000)",
                p,
                "TK005",
            )
            if a.status != RESERVED:
                add(
                    "change_quantity_of_non_hold",
                    "UPDATE allocations SET quantity = quantity + 1 WHERE id = %(id)s",
                    p,
                    "TK005",
                )
                add(
                    "change_expiry_of_non_hold",
                    "UPDATE allocations SET expires_at = expires_at + interval '1 minute'"
                    " WHERE id = %(id)s",
                    p,
                    "TK005",
                )
            if a.status == RESERVED and a.lapsed:
                add(
                    "extend_lapsed_hold",
                    "UPDATE allocations SET expires_at = now() + interval '1 hour'"
                    " WHERE id = %(id)s",
                    p,
                    "TK004",
                )
            if a.ticketed:
                add(
                    "renumber_tickets",
                    "UPDATE tickets SET number = number + 100 WHERE allocation_id = %(id)s",
                    p,
                    "TK005",
                )
                add(
                    "recode_tickets",
                    "UPDATE tickets SET code = code || 'x' WHERE allocation_id = %(id)s",
                    p,
                    "TK005",
                )
                add(
                    "delete_tickets",
                    "DELETE FROM tickets WHERE allocation_id = %(id)s",
                    p,
                    "TK005",
                )
            if a.status == PURCHASED:
                add(
                    "void_tickets_of_purchase",
                    "UPDATE tickets SET voided_at = now() WHERE allocation_id = %(id)s",
                    p,
                    "TK005",
                )
        for ev in self.model.events.values():
            p = {"event_id": ev.id, "fp": self.fingerprints[0]}
            add(
                "insert_purchased",
                "INSERT INTO allocations (event_id, fingerprint, quantity, status)"
                " VALUES (%(event_id)s, %(fp)s, 1, 'purchased')",
                p,
                "TK003",
            )
            if self.model.of_event(ev.id):
                add("delete_event", "DELETE FROM events WHERE id = %(event_id)s", p, "23503")
            _, live, purchased, _ = self.model.availability(ev.id)
            if live + purchased >= 2:
                add(
                    "total_below_live",
                    "UPDATE events SET total_tickets = %(n)s WHERE id = %(event_id)s",
                    {**p, "n": live + purchased - 1},
                    "TK006",
                )
            top = max(
                sum(
                    a.quantity
                    for a in self.model.of_event(ev.id)
                    if a.fingerprint == fp
                    and (a.status == PURCHASED or (a.status == RESERVED and not a.lapsed))
                )
                for fp in self.fingerprints
            )
            if top >= 2:
                add(
                    "max_per_buyer_below_live",
                    "UPDATE events SET max_per_buyer = %(n)s WHERE id = %(event_id)s",
                    {**p, "n": top - 1},
                    "TK006",
                )
        return kinds

    @precondition(lambda self: self.model.allocs)
    @rule(data=st.data())
    def raw_forbidden(self, data: st.DataObject) -> None:
        """Raw SQL the guards must refuse, leaving every row as it was.

        The application role lacks the privilege for every one of them (42501); the
        superuser has it, and the guards refuse it.
        """
        kinds = self.forbidden_attempts()
        kind = data.draw(st.sampled_from(sorted(kinds)), label="kind")
        sql, params, sqlstate = data.draw(st.sampled_from(kinds[kind]), label="attempt")
        before = self.snapshot()
        _, denied = run_sql(self.conn, sql, params)
        assert denied is not None, (kind, params)
        self.count(f"raw_forbidden_{kind}_as_app", translate(denied))
        assert isinstance(denied, psycopg.errors.InsufficientPrivilege), (kind, denied)
        assert self.snapshot() == before
        _, refusal = run_sql(self.admin_conn, sql, params)
        assert refusal is not None, (kind, params)
        self.count(f"raw_forbidden_{kind}", translate(refusal))
        assert refusal.sqlstate == sqlstate, (kind, refusal)
        assert self.snapshot() == before

    # -- the comparison after every step -------------------------------

    @invariant()
    def database_equals_model(self) -> None:
        model = self.model
        ids = sorted(model.events)
        for ev in model.events.values():
            av = events.get_availability(self.conn, ev.id)
            assert (av.total_tickets, av.reserved, av.purchased, av.available) == (
                model.availability(ev.id)
            ), ev
        counters = {
            r[0]: tuple(r[1:])
            for r in self.conn.execute(
                "SELECT event_id, total_tickets, max_per_buyer, slot_count, reserved, purchased"
                " FROM event_counters WHERE event_id = ANY(%s)",
                (ids,),
            )
        }
        assert counters == {
            ev.id: (
                ev.total,
                ev.max_per_buyer,
                ev.slots,
                model.counted_reserved(ev.id),
                model.purchased(ev.id),
            )
            for ev in model.events.values()
        }
        # Buyer counters are kept for events with a limit only.
        limited = [e for e in ids if model.events[e].max_per_buyer is not None]
        buyers = {
            (r[0], r[1]): r[2]
            for r in self.conn.execute(
                "SELECT event_id, fingerprint, quantity FROM buyer_inventory"
                " WHERE event_id = ANY(%s) AND quantity > 0",
                (limited,),
            )
        }
        assert buyers == {
            (e, fp): model.held(e, fp)
            for e in limited
            for fp in self.fingerprints
            if model.held(e, fp) > 0
        }
        for fp in self.fingerprints:
            listed = allocations.list_for_buyer(self.conn, fingerprint=fp)
            # Newest first: raw lapsed holds were created two hours ago, before the rest.
            assert [a.id for a in listed] == [
                a.id
                for a in sorted(
                    (a for a in model.allocs.values() if a.fingerprint == fp),
                    key=lambda a: (not a.lapsed, a.id),
                    reverse=True,
                )
            ]
            for a in listed:
                m = model.allocs[a.id]
                assert (a.event_id, a.quantity, a.status, a.idempotency_key) == (
                    m.event_id,
                    m.quantity,
                    m.status,
                    m.key,
                ), m
        issued = {
            r[0]: (r[1], r[2])
            for r in self.conn.execute(
                "SELECT allocation_id, count(*) FILTER (WHERE voided_at IS NULL), count(*)"
                " FROM tickets WHERE event_id = ANY(%s) GROUP BY allocation_id",
                (ids,),
            )
        }
        assert issued == {
            a.id: (a.quantity if a.status == PURCHASED else 0, a.quantity)
            for a in model.allocs.values()
            if a.ticketed
        }
        assert admin.check_invariants(self.conn) == []
        assert_consistent(self.conn)


def run_properties_machine(
    conn: psycopg.Connection[Any], admin_conn: psycopg.Connection[Any], examples: int = 40
) -> None:
    """Run LayerMachine on `conn` and `admin_conn` for `examples` examples."""
    run_state_machine_as_test(
        lambda: LayerMachine(conn, admin_conn),
        settings=settings(
            max_examples=examples,
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        ),
    )


def test_stateful_model_matches_database(
    conn: psycopg.Connection[Any], admin_conn: psycopg.Connection[Any]
) -> None:
    OPS.clear()
    run_properties_machine(conn, admin_conn)
    print(summary("stateful"))
    assert OPS["examples"] >= 40
    assert OPS["steps"] > OPS["examples"]


# ---------------------------------------------------------------------------
# 2. Fuzzing every public function's inputs.
# ---------------------------------------------------------------------------

TZINFOS = [
    UTC,
    timezone(timedelta(hours=14)),
    timezone(-timedelta(hours=23, minutes=59)),
    timezone(timedelta(hours=23, minutes=59, seconds=59, microseconds=999_999)),
    timezone(timedelta(microseconds=1)),
    timezone(-timedelta(seconds=1)),
]
ANY_CHARACTER = st.characters(exclude_categories=())  # NUL and lone surrogates included

WILD_TEXT = st.one_of(
    st.text(alphabet=ANY_CHARACTER, max_size=260),
    st.text(alphabet=ANY_CHARACTER, min_size=199, max_size=202),
    st.sampled_from(["", "\x00", "a\x00b", "\ud800", "x\udfffy", "\U0010ffff", "e\u0301" * 100]),
    st.builds(lambda c: c * 100_000, ANY_CHARACTER),  # 100 KB strings
    st.just("x" * 100_001),
)
EDGE_INTS = [0, -1, 1, 63, 64, 65, 10_000, 10_001, 2**31 - 1, 2**31, 2_000_000_000]
EDGE_INTS += [2_000_000_001, 2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 2**64, 2**70, -(2**70)]
WILD_INT = st.one_of(st.integers(-(2**70), 2**70), st.sampled_from(EDGE_INTS))
ANY_TZ = st.one_of(st.none(), st.sampled_from(TZINFOS), st.timezones())
WILD_DATETIME = st.one_of(
    st.builds(
        lambda d, tz: d.replace(tzinfo=tz), st.sampled_from([datetime.min, datetime.max]), ANY_TZ
    ),
    st.datetimes(timezones=ANY_TZ),
)
WILD_TIMEDELTA = st.one_of(
    st.timedeltas(min_value=timedelta(days=-10), max_value=timedelta(days=10)),
    st.sampled_from(
        [
            timedelta.max,
            timedelta.min,
            timedelta(0),
            timedelta(microseconds=1),
            timedelta(days=7),
            timedelta(days=7, microseconds=1),
            -timedelta(microseconds=1),
        ]
    ),
)
WILD = st.one_of(
    WILD_TEXT,
    WILD_INT,
    st.floats(),
    st.booleans(),
    st.none(),
    WILD_DATETIME,
    WILD_TIMEDELTA,
    st.sampled_from([b"abc", bytearray(b"1"), Decimal(1), Decimal("NaN"), [1], {"a": 1}, 1j]),
)


@dataclass
class World:
    """Rows for the fuzzed calls to find: events, allocations in every state, tickets."""

    event_ids: list[int]
    allocation_ids: list[int]
    fingerprints: list[str]
    keys: list[str]
    codes: list[str]


@pytest.fixture
def world(conn: psycopg.Connection[Any], admin_conn: psycopg.Connection[Any]) -> World:
    big = events.create_event(
        conn, name="big", starts_at=STARTS_AT, total_tickets=2_000_000_000, max_per_buyer=10_000
    ).id
    small = events.create_event(
        conn, name="small", starts_at=STARTS_AT, total_tickets=4, max_per_buyer=2, slots=2
    ).id
    held = allocations.reserve(
        conn, event_id=small, fingerprint="alice", quantity=1, idempotency_key="key-1"
    )
    bought = allocations.reserve(conn, event_id=big, fingerprint="alice", quantity=3)
    allocations.purchase(conn, allocation_id=bought.id, fingerprint="alice")
    refunded = allocations.reserve(conn, event_id=big, fingerprint="bob", quantity=2)
    allocations.purchase(conn, allocation_id=refunded.id, fingerprint="bob")
    allocations.cancel(conn, allocation_id=refunded.id, fingerprint="bob")
    rows, refusal = run_sql(
        admin_conn, INSERT_LAPSED, {"event_id": small, "fingerprint": "bob", "quantity": 2}
    )
    assert refusal is None
    lapsed = int(rows[0][0])
    codes = [t.code for t in tickets.list_for_allocation(conn, bought.id)]
    codes += [t.code for t in tickets.list_for_allocation(conn, refunded.id)]
    assert admin.check_invariants(conn) == []
    return World(
        event_ids=[big, small],
        allocation_ids=[held.id, bought.id, refunded.id, lapsed],
        fingerprints=["alice", "bob", "carol"],
        keys=["key-1", "key-2"],
        codes=codes,
    )


Param = tuple[str, st.SearchStrategy[Any], bool]  # name, in-bounds values, optional?


def fuzz_targets(w: World) -> dict[str, tuple[Callable[..., Any], list[Param], bool]]:
    """name -> (function, its parameters, writes?)."""
    event_id = st.one_of(st.sampled_from(w.event_ids), st.integers(1, 2**63 - 1))
    alloc_id = st.one_of(st.sampled_from(w.allocation_ids), st.integers(1, 2**63 - 1))
    fingerprint = st.one_of(
        st.sampled_from(w.fingerprints),
        st.text(min_size=1, max_size=200).filter(lambda s: "\x00" not in s),
    )
    aware = st.one_of(
        st.datetimes(timezones=st.timezones()),
        st.datetimes(timezones=st.sampled_from(TZINFOS)),
        st.builds(
            lambda d, tz: d.replace(tzinfo=tz),
            st.sampled_from([datetime.min, datetime.max]),
            st.sampled_from(TZINFOS),
        ),
    )
    return {
        "create_event": (
            events.create_event,
            [
                (
                    "name",
                    st.text(min_size=1, max_size=200).filter(lambda s: "\x00" not in s),
                    False,
                ),
                ("starts_at", aware, False),
                ("total_tickets", st.integers(1, 2_000_000_000), False),
                ("max_per_buyer", st.one_of(st.none(), st.integers(1, 10_000)), True),
                ("slots", st.one_of(st.none(), st.integers(1, 64)), True),
            ],
            True,
        ),
        "get_event": (events.get_event, [("event_id", event_id, False)], False),
        "list_events": (
            events.list_events,
            [
                ("starts_after", st.one_of(st.none(), aware), True),
                ("limit", st.integers(1, 10_000), True),
            ],
            False,
        ),
        "get_availability": (events.get_availability, [("event_id", event_id, False)], False),
        "reserve": (
            allocations.reserve,
            [
                ("event_id", event_id, False),
                ("fingerprint", fingerprint, False),
                ("quantity", st.integers(1, 10_000), False),
                ("hold", st.timedeltas(timedelta(microseconds=1), timedelta(days=7)), True),
                ("idempotency_key", st.one_of(st.none(), st.sampled_from(w.keys)), True),
            ],
            True,
        ),
        "purchase": (
            allocations.purchase,
            [("allocation_id", alloc_id, False), ("fingerprint", fingerprint, False)],
            True,
        ),
        "cancel": (
            allocations.cancel,
            [("allocation_id", alloc_id, False), ("fingerprint", fingerprint, False)],
            True,
        ),
        "get_allocation": (
            allocations.get_allocation,
            [("allocation_id", alloc_id, False)],
            False,
        ),
        "list_for_buyer": (
            allocations.list_for_buyer,
            [
                ("fingerprint", fingerprint, False),
                ("event_id", st.one_of(st.none(), event_id), True),
            ],
            False,
        ),
        "expire_due": (allocations.expire_due, [("limit", st.integers(1, 10_000), True)], True),
        "list_for_allocation": (
            tickets.list_for_allocation,
            [("allocation_id", alloc_id, False)],
            False,
        ),
        "get_by_code": (
            tickets.get_by_code,
            [
                (
                    "code",
                    st.one_of(st.sampled_from(w.codes), st.text(min_size=1, max_size=200)),
                    False,
                )
            ],
            False,
        ),
    }


def table_state(conn: psycopg.Connection[Any]) -> tuple[tuple[int, ...], str]:
    """Row counts of every table, and a digest of their content."""
    counts = conn.execute(COUNTS).fetchone()
    digest = conn.execute(DIGEST).fetchone()
    assert counts is not None
    assert digest is not None
    return tuple(int(c) for c in counts), str(digest[0])


FUZZED = [
    "create_event",
    "get_event",
    "list_events",
    "get_availability",
    "reserve",
    "purchase",
    "cancel",
    "get_allocation",
    "list_for_buyer",
    "expire_due",
    "list_for_allocation",
    "get_by_code",
]


@pytest.mark.parametrize("name", FUZZED)
def test_fuzzed_inputs_raise_only_ticketing_errors(
    conn: psycopg.Connection[Any], world: World, name: str
) -> None:
    """Each call gets in-bounds values with some parameters (maybe none) replaced by wild
    ones; only TicketingError may come out, and a refused call writes nothing."""
    function, params, writes = fuzz_targets(world)[name]
    names = [p[0] for p in params]
    outcomes: Counter[str] = Counter()

    @settings(
        max_examples=200,
        deadline=None,
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
        ],
    )
    @given(data=st.data())
    def fuzz(data: st.DataObject) -> None:
        wild = data.draw(st.sets(st.sampled_from(names)), label="wild parameters")
        kwargs: dict[str, Any] = {}
        for param, in_bounds, optional in params:
            if optional and param not in wild and data.draw(st.booleans(), label=f"omit {param}"):
                continue
            kwargs[param] = data.draw(WILD if param in wild else in_bounds, label=param)
        before = table_state(conn)
        error: TicketingError | None = None
        try:
            function(conn, **kwargs)
        except TicketingError as exc:
            error = exc
        # Anything else (a psycopg error, TypeError, OverflowError...) fails the test as raised.
        outcomes[type(error).__name__ if error else "ok"] += 1
        if error is not None or not writes:
            assert table_state(conn) == before, (name, kwargs, error)

    fuzz()
    OPS.update({f"fuzz_{name}:{k}": v for k, v in outcomes.items()})
    print(f"fuzz {name}: {outcomes.total()} calls: {dict(sorted(outcomes.items()))}")
    assert outcomes.total() >= 100
    assert admin.check_invariants(conn) == []
    assert_consistent(conn)
