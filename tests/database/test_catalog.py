"""The migrated schema's catalog: constraints, indexes, triggers, query plans, and the models."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, LiteralString

import psycopg
import pytest
from pydantic import BaseModel, TypeAdapter, ValidationError
from pytest_postgresql.executors import NoopExecutor
from pytest_postgresql.janitor import DatabaseJanitor

from ticketing import db, events
from ticketing.models import Allocation, AllocationStatus, Availability, Event, Ticket
from ticketing.queries import load

OUR_TABLES = [
    "events",
    "allocations",
    "tickets",
    "event_inventory",
    "inventory_slots",
    "buyer_inventory",
    "ticket_number_pool",
    "allocation_history",
    "event_history",
]

# name -> (table, contype): p primary key, f foreign key, u unique, c check, x exclusion.
CONSTRAINTS = {
    "events_pkey": ("events", "p"),
    "events_name_length": ("events", "c"),
    "events_total_tickets_range": ("events", "c"),
    "events_max_per_buyer_range": ("events", "c"),
    "events_updated_after_created": ("events", "c"),
    "events_starts_at_range": ("events", "c"),
    "allocations_pkey": ("allocations", "p"),
    "allocations_fingerprint_length": ("allocations", "c"),
    "allocations_quantity_range": ("allocations", "c"),
    "allocations_status_valid": ("allocations", "c"),
    "allocations_expires_after_created": ("allocations", "c"),
    "allocations_hold_at_most_7_days": ("allocations", "c"),
    "allocations_idempotency_key_length": ("allocations", "c"),
    "allocations_updated_after_created": ("allocations", "c"),
    "allocations_id_event_id_key": ("allocations", "u"),
    "event_inventory_pkey": ("event_inventory", "p"),
    "event_inventory_event_id_fkey": ("event_inventory", "f"),
    "event_inventory_slot_count_range": ("event_inventory", "c"),
    "inventory_slots_pkey": ("inventory_slots", "p"),
    "inventory_slots_event_id_fkey": ("inventory_slots", "f"),
    "inventory_slots_slot_range": ("inventory_slots", "c"),
    "inventory_slots_first_number_positive": ("inventory_slots", "c"),
    "inventory_slots_counts_nonnegative": ("inventory_slots", "c"),
    "inventory_slots_within_capacity": ("inventory_slots", "c"),
    "buyer_inventory_pkey": ("buyer_inventory", "p"),
    "buyer_inventory_quantity_nonnegative": ("buyer_inventory", "c"),
    "tickets_pkey": ("tickets", "p"),
    "tickets_allocation_fkey": ("tickets", "f"),
    "tickets_number_positive": ("tickets", "c"),
    "tickets_code_length": ("tickets", "c"),
    "tickets_voided_after_created": ("tickets", "c"),
    "tickets_code_key": ("tickets", "u"),
    "tickets_number_excl": ("tickets", "x"),
    "ticket_number_pool_pkey": ("ticket_number_pool", "p"),
    "ticket_number_pool_number_positive": ("ticket_number_pool", "c"),
    "allocation_history_pkey": ("allocation_history", "p"),
    "allocation_history_old_both_or_neither": ("allocation_history", "c"),
    "allocation_history_status_valid": ("allocation_history", "c"),
    "allocation_history_opening_has_no_old": ("allocation_history", "c"),
    "event_history_pkey": ("event_history", "p"),
    "event_history_old_total_unless_created": ("event_history", "c"),
}

# name -> (table, columns, referenced table, referenced columns, ON DELETE action):
# a = no action, c = cascade.
FOREIGN_KEYS = {
    "event_inventory_event_id_fkey": ("event_inventory", ["event_id"], "events", ["id"], "c"),
    "inventory_slots_event_id_fkey": ("inventory_slots", ["event_id"], "events", ["id"], "c"),
    "tickets_allocation_fkey": (
        "tickets",
        ["allocation_id", "event_id"],
        "allocations",
        ["id", "event_id"],
        "a",
    ),
}

# For each foreign key, the whole-table (not partial) indexes that lead with its first column.
FOREIGN_KEY_INDEXES = {
    "event_inventory_event_id_fkey": {"event_inventory_pkey"},
    "inventory_slots_event_id_fkey": {"inventory_slots_pkey"},
    "tickets_allocation_fkey": {"tickets_allocation_id_idx"},
}

INDEXES = {
    "events_pkey": "CREATE UNIQUE INDEX events_pkey ON public.events USING btree (id)",
    "events_starts_at_idx": (
        "CREATE INDEX events_starts_at_idx ON public.events USING btree (starts_at, id)"
    ),
    "allocations_pkey": (
        "CREATE UNIQUE INDEX allocations_pkey ON public.allocations USING btree (id)"
    ),
    "allocations_id_event_id_key": (
        "CREATE UNIQUE INDEX allocations_id_event_id_key ON public.allocations"
        " USING btree (id, event_id)"
    ),
    "allocations_event_id_idx": (
        "CREATE INDEX allocations_event_id_idx ON public.allocations USING btree (event_id, status)"
    ),
    "allocations_hold_expiry_idx": (
        "CREATE INDEX allocations_hold_expiry_idx ON public.allocations USING btree (expires_at)"
        " WHERE (status = 'reserved'::text)"
    ),
    "allocations_event_hold_expiry_idx": (
        "CREATE INDEX allocations_event_hold_expiry_idx ON public.allocations"
        " USING btree (event_id, expires_at) WHERE (status = 'reserved'::text)"
    ),
    "allocations_buyer_live_idx": (
        "CREATE INDEX allocations_buyer_live_idx ON public.allocations"
        " USING btree (event_id, fingerprint)"
        " WHERE (status = ANY (ARRAY['reserved'::text, 'purchased'::text]))"
    ),
    "allocations_fingerprint_idx": (
        "CREATE INDEX allocations_fingerprint_idx ON public.allocations"
        " USING btree (fingerprint, created_at DESC, id DESC)"
    ),
    "allocations_idempotency_key_uniq": (
        "CREATE UNIQUE INDEX allocations_idempotency_key_uniq ON public.allocations"
        " USING btree (idempotency_key) WHERE (idempotency_key IS NOT NULL)"
    ),
    "event_inventory_pkey": (
        "CREATE UNIQUE INDEX event_inventory_pkey ON public.event_inventory USING btree (event_id)"
    ),
    "inventory_slots_pkey": (
        "CREATE UNIQUE INDEX inventory_slots_pkey ON public.inventory_slots"
        " USING btree (event_id, slot)"
    ),
    "buyer_inventory_pkey": (
        "CREATE UNIQUE INDEX buyer_inventory_pkey ON public.buyer_inventory"
        " USING btree (event_id, fingerprint)"
    ),
    "tickets_pkey": "CREATE UNIQUE INDEX tickets_pkey ON public.tickets USING btree (id)",
    "tickets_code_key": "CREATE UNIQUE INDEX tickets_code_key ON public.tickets USING btree (code)",
    "tickets_number_excl": (
        "CREATE INDEX tickets_number_excl ON public.tickets USING gist (event_id, number)"
        " WHERE (voided_at IS NULL)"
    ),
    "tickets_allocation_id_idx": (
        "CREATE INDEX tickets_allocation_id_idx ON public.tickets"
        " USING btree (allocation_id, number)"
    ),
    "tickets_event_number_idx": (
        "CREATE INDEX tickets_event_number_idx ON public.tickets USING btree (event_id, number)"
    ),
    "ticket_number_pool_pkey": (
        "CREATE UNIQUE INDEX ticket_number_pool_pkey ON public.ticket_number_pool"
        " USING btree (event_id, number)"
    ),
    "allocation_history_pkey": (
        "CREATE UNIQUE INDEX allocation_history_pkey ON public.allocation_history USING btree (id)"
    ),
    "allocation_history_allocation_id_idx": (
        "CREATE INDEX allocation_history_allocation_id_idx ON public.allocation_history"
        " USING btree (allocation_id, id)"
    ),
    "event_history_pkey": (
        "CREATE UNIQUE INDEX event_history_pkey ON public.event_history USING btree (id)"
    ),
    "event_history_event_id_idx": (
        "CREATE INDEX event_history_event_id_idx ON public.event_history USING btree (event_id, id)"
    ),
}

# name -> (table, unique, predicate): every partial index, and nothing else is partial.
PARTIAL_INDEXES = {
    "allocations_hold_expiry_idx": ("allocations", False, "(status = 'reserved'::text)"),
    "allocations_event_hold_expiry_idx": ("allocations", False, "(status = 'reserved'::text)"),
    "allocations_buyer_live_idx": (
        "allocations",
        False,
        "(status = ANY (ARRAY['reserved'::text, 'purchased'::text]))",
    ),
    "allocations_idempotency_key_uniq": ("allocations", True, "(idempotency_key IS NOT NULL)"),
    "tickets_number_excl": ("tickets", False, "(voided_at IS NULL)"),
}

TRIGGERS = {
    "events_set_updated_at": (
        "events",
        "BEFORE UPDATE ON public.events FOR EACH ROW EXECUTE FUNCTION set_updated_at()",
    ),
    "events_open_inventory": (
        "events",
        "AFTER INSERT ON public.events FOR EACH ROW EXECUTE FUNCTION events_open_inventory()",
    ),
    "events_guard_capacity": (
        "events",
        "AFTER UPDATE OF total_tickets, max_per_buyer ON public.events"
        " FOR EACH ROW EXECUTE FUNCTION events_guard_capacity()",
    ),
    "events_check_ticket_numbers": (
        "events",
        "BEFORE UPDATE OF total_tickets ON public.events"
        " FOR EACH ROW EXECUTE FUNCTION events_check_ticket_numbers()",
    ),
    "allocations_set_updated_at": (
        "allocations",
        "BEFORE UPDATE ON public.allocations FOR EACH ROW EXECUTE FUNCTION set_updated_at()",
    ),
    "allocations_guard_transition": (
        "allocations",
        "BEFORE UPDATE ON public.allocations"
        " FOR EACH ROW EXECUTE FUNCTION allocations_guard_transition()",
    ),
    "allocations_guard_delete": (
        "allocations",
        "BEFORE DELETE ON public.allocations"
        " FOR EACH ROW EXECUTE FUNCTION allocations_guard_delete()",
    ),
    "allocations_apply_insert": (
        "allocations",
        "AFTER INSERT ON public.allocations FOR EACH ROW"
        " EXECUTE FUNCTION allocations_apply_insert()",
    ),
    "allocations_apply_updates": (
        "allocations",
        "AFTER UPDATE ON public.allocations REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows"
        " FOR EACH STATEMENT EXECUTE FUNCTION allocations_apply_updates()",
    ),
    "events_guard_delete": (
        "events",
        "BEFORE DELETE ON public.events FOR EACH ROW EXECUTE FUNCTION events_guard_delete()",
    ),
    "events_guard_id": (
        "events",
        "BEFORE UPDATE OF id ON public.events FOR EACH ROW"
        " WHEN ((old.id IS DISTINCT FROM new.id)) EXECUTE FUNCTION events_guard_id()",
    ),
    "tickets_guard_insert": (
        "tickets",
        "AFTER INSERT ON public.tickets REFERENCING NEW TABLE AS new_tickets"
        " FOR EACH STATEMENT EXECUTE FUNCTION tickets_guard_insert()",
    ),
    "tickets_guard_change": (
        "tickets",
        "BEFORE DELETE OR UPDATE ON public.tickets"
        " FOR EACH ROW EXECUTE FUNCTION tickets_guard_change()",
    ),
    "events_record_created": (
        "events",
        "AFTER INSERT ON public.events FOR EACH ROW EXECUTE FUNCTION events_record_capacity()",
    ),
    "events_record_deleted": (
        "events",
        "AFTER DELETE ON public.events FOR EACH ROW EXECUTE FUNCTION events_record_capacity()",
    ),
    "events_record_capacity": (
        "events",
        "AFTER UPDATE OF total_tickets, max_per_buyer ON public.events FOR EACH ROW"
        " WHEN (((old.total_tickets IS DISTINCT FROM new.total_tickets)"
        " OR (old.max_per_buyer IS DISTINCT FROM new.max_per_buyer)))"
        " EXECUTE FUNCTION events_record_capacity()",
    ),
    "allocation_history_append_only": (
        "allocation_history",
        "BEFORE DELETE OR UPDATE OR TRUNCATE ON public.allocation_history"
        " FOR EACH STATEMENT EXECUTE FUNCTION ledger_guard_append_only()",
    ),
    "event_history_append_only": (
        "event_history",
        "BEFORE DELETE OR UPDATE OR TRUNCATE ON public.event_history"
        " FOR EACH STATEMENT EXECUTE FUNCTION ledger_guard_append_only()",
    ),
}

MODELS: dict[str, type[BaseModel]] = {"events": Event, "allocations": Allocation, "tickets": Ticket}


def _rows(conn: psycopg.Connection[Any], query: LiteralString, *params: Any) -> list[Any]:
    return conn.execute(query, params or None).fetchall()


# --- constraints -------------------------------------------------------------------------


def test_every_constraint_exists_with_its_name_and_type(conn: psycopg.Connection[Any]) -> None:
    rows = _rows(
        conn,
        "SELECT c.conname, t.relname, c.contype::text FROM pg_constraint AS c "
        "JOIN pg_class AS t ON t.oid = c.conrelid "
        "WHERE t.relnamespace = 'public'::regnamespace AND t.relname = ANY(%s) "
        "AND c.contype IN ('c', 'f', 'p', 'u', 'x')",
        OUR_TABLES,
    )
    assert {name: (table, kind) for name, table, kind in rows} == CONSTRAINTS
    assert len(rows) == len(CONSTRAINTS)


def test_every_constraint_is_validated_and_checked_at_once(conn: psycopg.Connection[Any]) -> None:
    rows = _rows(
        conn,
        "SELECT c.conname, c.convalidated, c.condeferrable, c.condeferred FROM pg_constraint AS c "
        "WHERE c.conname = ANY(%s)",
        list(CONSTRAINTS),
    )
    assert sorted(rows) == sorted((name, True, False, False) for name in CONSTRAINTS)


def test_allocation_status_check_allows_exactly_the_model_statuses(
    conn: psycopg.Connection[Any],
) -> None:
    row = conn.execute(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE conname = 'allocations_status_valid'"
    ).fetchone()
    assert row is not None
    allowed = re.findall(r"'(\w+)'::text", row[0])
    assert sorted(allowed) == sorted(status.value for status in AllocationStatus)


def test_tickets_number_exclusion_is_gist_on_event_and_number_among_valid_tickets(
    conn: psycopg.Connection[Any],
) -> None:
    row = conn.execute(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'tickets_number_excl'"
    ).fetchone()
    assert row == (
        "EXCLUDE USING gist (event_id WITH =, number WITH =) WHERE ((voided_at IS NULL))",
    )


def test_foreign_keys_point_where_they_should(conn: psycopg.Connection[Any]) -> None:
    rows = _rows(
        conn,
        """
        SELECT c.conname, t.relname,
               ARRAY(SELECT a.attname::text FROM unnest(c.conkey) WITH ORDINALITY AS k(num, pos)
                     JOIN pg_attribute AS a ON a.attrelid = c.conrelid AND a.attnum = k.num
                     ORDER BY k.pos),
               r.relname,
               ARRAY(SELECT a.attname::text FROM unnest(c.confkey) WITH ORDINALITY AS k(num, pos)
                     JOIN pg_attribute AS a ON a.attrelid = c.confrelid AND a.attnum = k.num
                     ORDER BY k.pos),
               c.confdeltype::text, c.confupdtype::text, c.confmatchtype::text
        FROM pg_constraint AS c
        JOIN pg_class AS t ON t.oid = c.conrelid
        JOIN pg_class AS r ON r.oid = c.confrelid
        WHERE c.contype = 'f' AND t.relnamespace = 'public'::regnamespace
          AND t.relname = ANY(%s)
        """,
        OUR_TABLES,
    )
    found = {
        name: (table, cols, ref, ref_cols, on_delete)
        for name, table, cols, ref, ref_cols, on_delete, *_ in rows
    }
    assert found == FOREIGN_KEYS
    # ON UPDATE is no action everywhere (ids never change), and matching is simple.
    assert {(row[6], row[7]) for row in rows} == {("a", "s")}


def test_every_foreign_key_leads_an_index_on_its_table(conn: psycopg.Connection[Any]) -> None:
    rows = _rows(
        conn,
        """
        SELECT c.conname,
               ARRAY(SELECT i.indexrelid::regclass::text FROM pg_index AS i
                     WHERE i.indrelid = c.conrelid AND i.indkey[0] = c.conkey[1]
                       AND i.indpred IS NULL
                     ORDER BY 1)
        FROM pg_constraint AS c
        JOIN pg_class AS t ON t.oid = c.conrelid
        WHERE c.contype = 'f' AND t.relnamespace = 'public'::regnamespace
          AND t.relname = ANY(%s)
        """,
        OUR_TABLES,
    )
    assert {name: set(indexes) for name, indexes in rows} == FOREIGN_KEY_INDEXES


# --- indexes and triggers ----------------------------------------------------------------


def test_every_index_exists_exactly_as_defined(conn: psycopg.Connection[Any]) -> None:
    rows = _rows(
        conn,
        "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' "
        "AND tablename = ANY(%s)",
        OUR_TABLES,
    )
    assert dict(rows) == INDEXES
    assert len(rows) == len(INDEXES)


def test_partial_indexes_have_their_predicates(conn: psycopg.Connection[Any]) -> None:
    rows = _rows(
        conn,
        "SELECT x.relname, t.relname, i.indisunique, pg_get_expr(i.indpred, i.indrelid) "
        "FROM pg_index AS i "
        "JOIN pg_class AS x ON x.oid = i.indexrelid "
        "JOIN pg_class AS t ON t.oid = i.indrelid "
        "WHERE t.relnamespace = 'public'::regnamespace AND t.relname = ANY(%s) "
        "AND i.indpred IS NOT NULL",
        OUR_TABLES,
    )
    assert {name: (table, unique, pred) for name, table, unique, pred in rows} == PARTIAL_INDEXES


def test_every_index_is_valid_and_ready(conn: psycopg.Connection[Any]) -> None:
    rows = _rows(
        conn,
        "SELECT x.relname, i.indisvalid, i.indisready, i.indislive FROM pg_index AS i "
        "JOIN pg_class AS x ON x.oid = i.indexrelid "
        "JOIN pg_class AS t ON t.oid = i.indrelid "
        "WHERE t.relnamespace = 'public'::regnamespace AND t.relname = ANY(%s)",
        OUR_TABLES,
    )
    assert sorted(rows) == sorted((name, True, True, True) for name in INDEXES)


def test_triggers_exist_by_name_on_the_right_tables(conn: psycopg.Connection[Any]) -> None:
    rows = _rows(
        conn,
        "SELECT g.tgname, t.relname, pg_get_triggerdef(g.oid), g.tgenabled::text "
        "FROM pg_trigger AS g JOIN pg_class AS t ON t.oid = g.tgrelid "
        "WHERE NOT g.tgisinternal AND t.relnamespace = 'public'::regnamespace",
    )
    found = {
        name: (table, definition.removeprefix(f"CREATE TRIGGER {name} "))
        for name, table, definition, _ in rows
    }
    assert found == TRIGGERS
    assert {enabled for *_, enabled in rows} == {"O"}
    # One statement trigger moves counters, limits and tickets for all of an UPDATE's
    # rows together and records them in the ledger, in one call.
    after_update_statement = sorted(
        name
        for name, (table, definition) in TRIGGERS.items()
        if table == "allocations" and definition.startswith("AFTER UPDATE ON")
    )
    assert after_update_statement == ["allocations_apply_updates"]


# --- query plans -------------------------------------------------------------------------


@dataclass(frozen=True)
class Loaded:
    """A database with a realistic amount of data, and values that exist in it."""

    conn: psycopg.Connection[Any]
    event_id: int
    fingerprint: str
    idempotency_key: str
    code: str
    allocation_id: int


SEED: list[LiteralString] = [
    "INSERT INTO events (name, starts_at, total_tickets) "
    "SELECT 'event ' || g, now() + g * interval '1 day', 100000 FROM generate_series(1, 200) AS g",
    # 20,000 allocations, 100 per event, 2,000 buyers with 10 each; a quarter of them holds
    # that lapsed an hour ago. hashint4 spreads the kinds evenly (and the same way every run).
    """
    INSERT INTO allocations (event_id, fingerprint, quantity, expires_at, idempotency_key,
                             created_at)
    SELECT e.id, 'buyer-' || ((e.id * 100 + g) % 2000), 1 + g % 4,
           CASE WHEN h.lapsed THEN now() - interval '1 hour' - g * interval '1 second'
                ELSE now() + interval '1 hour' END,
           CASE WHEN g % 3 = 0 THEN format('key-%s-%s', e.id, g) END,
           CASE WHEN h.lapsed THEN now() - interval '2 hours' - g * interval '1 second'
                ELSE now() - g * interval '1 second' END
    FROM events AS e
    CROSS JOIN generate_series(1, 100) AS g
    CROSS JOIN LATERAL (SELECT abs(hashint4(e.id::integer * 100 + g)) % 4 = 0 AS lapsed) AS h
    """,
    # Most of the history is finished: purchases (with tickets), cancellations (some of
    # them of purchases), expiries; the rest are live holds and lapsed ones not yet expired.
    "UPDATE allocations SET status = 'purchased' "
    "WHERE abs(hashint4(id::integer)) % 10 = 0 AND expires_at > now()",
    "UPDATE allocations SET status = 'cancelled' "
    "WHERE abs(hashint4(id::integer)) % 10 BETWEEN 1 AND 5 AND expires_at > now()",
    "UPDATE allocations SET status = 'cancelled' "
    "WHERE abs(hashint4(id::integer + 7)) % 3 = 0 AND status = 'purchased'",
    "UPDATE allocations SET status = 'expired' "
    "WHERE abs(hashint4(id::integer)) % 2 = 0 AND expires_at <= now()",
    "ANALYZE",
]


@pytest.fixture(scope="module")
def loaded(pg_server: NoopExecutor) -> Iterator[Loaded]:
    """One database per module (cloned from the template), loaded once and only read."""
    dbname = f"cat_{uuid.uuid4().hex[:16]}"
    janitor = DatabaseJanitor(
        user=pg_server.user,
        host=pg_server.host,
        port=pg_server.port,
        dbname=dbname,
        template_dbname=pg_server.template_dbname,
        password=pg_server.password,
    )
    auth = f"{pg_server.user}:{pg_server.password}" if pg_server.password else pg_server.user
    with (
        janitor,
        db.connect(f"postgresql://{auth}@{pg_server.host}:{pg_server.port}/{dbname}") as conn,
    ):
        for statement in SEED:
            conn.execute(statement)
        counts = dict(_rows(conn, "SELECT status, count(*) FROM allocations GROUP BY status"))
        assert sum(counts.values()) == 20000
        assert set(counts) == {status.value for status in AllocationStatus}
        row = conn.execute(
            "SELECT t.event_id, t.code, t.allocation_id, a.fingerprint FROM tickets AS t "
            "JOIN allocations AS a ON a.id = t.allocation_id ORDER BY t.id LIMIT 1"
        ).fetchone()
        key = conn.execute(
            "SELECT idempotency_key FROM allocations WHERE idempotency_key IS NOT NULL "
            "ORDER BY id DESC LIMIT 1"
        ).fetchone()
        assert row is not None
        assert key is not None
        yield Loaded(
            conn=conn,
            event_id=row[0],
            code=row[1],
            allocation_id=row[2],
            fingerprint=row[3],
            idempotency_key=key[0],
        )


@dataclass(frozen=True)
class HotQuery:
    file: str
    name: str
    params: dict[str, str]  # parameter -> attribute of Loaded, or a literal "=value"
    index: str
    table: str
    may_seq_scan: bool = False  # expire_due joins its batch back by a hash join


HOT_QUERIES = {
    "expire_due": HotQuery(
        "allocations.sql",
        "expire_due",
        {"limit": "=1000", "lock_timeout": "=3s"},
        "allocations_hold_expiry_idx",
        "allocations",
        may_seq_scan=True,
    ),
    "get_by_idempotency_key": HotQuery(
        "allocations.sql",
        "get_by_idempotency_key",
        {"idempotency_key": "idempotency_key"},
        "allocations_idempotency_key_uniq",
        "allocations",
    ),
    "list_for_buyer": HotQuery(
        "allocations.sql",
        "list_for_buyer",
        {"fingerprint": "fingerprint", "event_id": "=None"},
        "allocations_fingerprint_idx",
        "allocations",
    ),
    "list_for_buyer_one_event": HotQuery(
        "allocations.sql",
        "list_for_buyer",
        {"fingerprint": "fingerprint", "event_id": "event_id"},
        "allocations_fingerprint_idx",
        "allocations",
    ),
    "get_availability": HotQuery(
        "events.sql",
        "get_availability",
        {"event_id": "event_id"},
        "allocations_event_hold_expiry_idx",
        "allocations",
    ),
    "get_by_code": HotQuery(
        "tickets.sql", "get_by_code", {"code": "code"}, "tickets_code_key", "tickets"
    ),
    "list_for_allocation": HotQuery(
        "tickets.sql",
        "list_for_allocation",
        {"allocation_id": "allocation_id"},
        "tickets_allocation_id_idx",
        "tickets",
    ),
}


def _plan_nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", []):
        yield from _plan_nodes(child)


def _param(loaded: Loaded, source: str) -> Any:
    if source == "=None":
        return None
    if source.startswith("="):
        literal = source[1:]
        return int(literal) if literal.isdigit() else literal
    return getattr(loaded, source)


@pytest.mark.parametrize("case", list(HOT_QUERIES))
def test_hot_query_uses_its_index(case: str, loaded: Loaded) -> None:
    hot = HOT_QUERIES[case]
    query = load(hot.file)[hot.name]
    params = {name: _param(loaded, source) for name, source in hot.params.items()}
    with loaded.conn.transaction(force_rollback=True):
        row = loaded.conn.execute("EXPLAIN (FORMAT JSON) " + query, params).fetchone()
    assert row is not None
    nodes = list(_plan_nodes(row[0][0]["Plan"]))
    used = {node["Index Name"] for node in nodes if "Index Name" in node}
    assert hot.index in used, nodes
    index_scans = [
        node
        for node in nodes
        if node.get("Index Name") == hot.index and node["Node Type"].endswith("Index Scan")
    ]
    assert index_scans, nodes
    seq_scanned = {node.get("Relation Name") for node in nodes if node["Node Type"] == "Seq Scan"}
    if not hot.may_seq_scan:
        assert hot.table not in seq_scanned, nodes


def test_expire_due_finds_its_batch_in_expiry_order_from_the_index(loaded: Loaded) -> None:
    query = load("allocations.sql")["expire_due"]
    with loaded.conn.transaction(force_rollback=True):
        row = loaded.conn.execute(
            "EXPLAIN (FORMAT JSON) " + query, {"limit": 1000, "lock_timeout": "3s"}
        ).fetchone()
    assert row is not None
    nodes = list(_plan_nodes(row[0][0]["Plan"]))
    # The batch is picked by walking the index in order: no sort of all lapsed holds.
    limit = next(node for node in nodes if node["Node Type"] == "Limit")
    below = list(_plan_nodes(limit))
    assert [node["Node Type"] for node in below] == ["Limit", "LockRows", "Index Scan"]
    assert below[2]["Index Name"] == "allocations_hold_expiry_idx"


# --- models ------------------------------------------------------------------------------


def _allows_none(model: type[BaseModel], field: str) -> bool:
    try:
        TypeAdapter(model.model_fields[field].annotation).validate_python(None)
    except ValidationError:
        return False
    return True


@pytest.mark.parametrize("table", list(MODELS))
def test_model_fields_match_the_table_columns(table: str, conn: psycopg.Connection[Any]) -> None:
    model = MODELS[table]
    rows = _rows(
        conn,
        "SELECT column_name::text, is_nullable::text FROM information_schema.columns "
        "WHERE table_schema = 'public' AND table_name = %s",
        table,
    )
    columns = {name: nullable == "YES" for name, nullable in rows}
    assert set(model.model_fields) == set(columns)
    assert {field: _allows_none(model, field) for field in model.model_fields} == columns


def test_availability_fields_match_the_get_availability_columns(
    conn: psycopg.Connection[Any],
) -> None:
    event = events.create_event(
        conn, name="Catalog", starts_at=datetime.now(UTC) + timedelta(days=1), total_tickets=5
    )
    with conn.cursor() as cur:
        cur.execute(load("events.sql")["get_availability"], {"event_id": event.id})
        assert cur.description is not None
        columns = [column.name for column in cur.description]
        assert cur.fetchall() == [(event.id, 5, 0, 0, 5)]
    assert sorted(Availability.model_fields) == sorted(columns)
    assert len(columns) == len(Availability.model_fields)
    assert not any(_allows_none(Availability, field) for field in Availability.model_fields)


# The statements whose rows become a model, and parameters that make each run (and match
# nothing, or change nothing that survives the rolled-back transaction).
_NONE = {"allocation_id": 1, "fingerprint": "nobody"}
_NONE_LOCKING = {**_NONE, "lock_timeout": "3s"}
ROW_QUERIES: dict[tuple[str, str], tuple[type[BaseModel], dict[str, Any]]] = {
    ("events.sql", "create_event"): (
        Event,
        {
            "name": "Rolled back",
            "starts_at": datetime(2030, 1, 1, tzinfo=UTC),
            "total_tickets": 5,
            "max_per_buyer": None,
            "slots": "",
        },
    ),
    ("events.sql", "get_event"): (Event, {"event_id": 1}),
    ("events.sql", "list_events"): (Event, {"starts_after": None, "limit": 10}),
    ("allocations.sql", "reserve"): (
        Allocation,
        {
            "event_id": "<event>",
            "fingerprint": "buyer",
            "quantity": 1,
            "hold": timedelta(minutes=5),
            "idempotency_key": None,
            "lock_timeout": "3s",
        },
    ),
    ("allocations.sql", "get_by_idempotency_key"): (Allocation, {"idempotency_key": "none"}),
    ("allocations.sql", "purchase"): (Allocation, _NONE_LOCKING),
    ("allocations.sql", "cancel"): (Allocation, _NONE_LOCKING),
    ("allocations.sql", "get_buyer_allocation"): (Allocation, _NONE),
    ("allocations.sql", "get_allocation"): (Allocation, {"allocation_id": 1}),
    ("allocations.sql", "list_for_buyer"): (
        Allocation,
        {"fingerprint": "nobody", "event_id": None},
    ),
    ("tickets.sql", "list_for_allocation"): (Ticket, {"allocation_id": 1}),
    ("tickets.sql", "get_by_code"): (Ticket, {"code": "none"}),
}


def test_every_row_query_of_the_core_files_is_listed() -> None:
    # Those not listed return no model rows: expire_due returns ids, get_availability its own.
    named = {
        (file, name)
        for file in ("events.sql", "allocations.sql", "tickets.sql")
        for name in load(file)
    }
    assert named - set(ROW_QUERIES) == {
        ("allocations.sql", "expire_due"),
        ("events.sql", "get_availability"),
    }
    assert set(ROW_QUERIES) <= named


@pytest.mark.parametrize("key", list(ROW_QUERIES), ids=lambda key: f"{key[0]}:{key[1]}")
def test_row_query_returns_exactly_its_model_fields(
    key: tuple[str, str], conn: psycopg.Connection[Any]
) -> None:
    model, params = ROW_QUERIES[key]
    if params.get("event_id") == "<event>":
        event = events.create_event(
            conn, name="Catalog", starts_at=datetime.now(UTC) + timedelta(days=1), total_tickets=5
        )
        params = {**params, "event_id": event.id}
    with conn.transaction(force_rollback=True), conn.cursor() as cur:
        cur.execute(load(key[0])[key[1]], params)
        assert cur.description is not None
        columns = [column.name for column in cur.description]
    assert sorted(columns) == sorted(model.model_fields)
    assert len(columns) == len(model.model_fields)
