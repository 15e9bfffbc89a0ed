-- Least privilege. Two NOLOGIN roles, created if missing (roles belong to
-- the cluster, so other databases may share them):
--   ticketing_owner  owns every object of the schema;
--   ticketing_app    what services log in as (GRANT ticketing_app TO <login>):
--                    it reads everything, inserts events and allocations,
--                    changes an allocation's status, and nothing else. No
--                    DDL, no TRUNCATE, no DELETE, no UPDATE of events, no
--                    write to tickets, inventory counters, slots, the pool
--                    or the ledger: those change only through the trigger
--                    functions below, which run as ticketing_owner
--                    (SECURITY DEFINER) with a pinned search_path.
-- Run as a superuser (or a CREATEROLE role that is a member of
-- ticketing_owner).
-- depends: 0007_ledger

-- Fail fast instead of queueing behind live traffic; retry the deploy later.
SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '5min';

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'ticketing_owner') THEN
        CREATE ROLE ticketing_owner NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'ticketing_app') THEN
        CREATE ROLE ticketing_app NOLOGIN;
    END IF;
EXCEPTION
    -- Another database's migration created it at the same moment. (While
    -- that migration is still running, this one may instead give up on its
    -- lock_timeout: apply it again.)
    WHEN duplicate_object OR unique_violation THEN
        NULL;
END
$$;

-- Roles that existed already must be what this schema expects: neither can
-- log in or bypass privileges, and the application role is not a member of
-- the owner.
DO $$
DECLARE
    bad text;
BEGIN
    SELECT string_agg(rolname, ', ' ORDER BY rolname) INTO bad
    FROM pg_roles
    WHERE rolname IN ('ticketing_owner', 'ticketing_app')
      AND (rolcanlogin OR rolsuper OR rolbypassrls OR rolcreaterole OR rolcreatedb);
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'roles % exist with LOGIN, SUPERUSER, BYPASSRLS, CREATEROLE or CREATEDB',
            bad;
    END IF;
    IF pg_has_role('ticketing_app', 'ticketing_owner', 'MEMBER') THEN
        RAISE EXCEPTION 'ticketing_app is a member of ticketing_owner';
    END IF;
END
$$;

-- Nobody else creates objects in the schema that the functions' pinned
-- search_path names (the default since PostgreSQL 15; older clusters granted
-- CREATE to PUBLIC). The owner needs CREATE to own objects there.
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE, CREATE ON SCHEMA public TO ticketing_owner;
GRANT USAGE ON SCHEMA public TO ticketing_app;

-- A new event's slot count: inventory_slot_count(total_tickets), or the
-- transaction-local setting ticketing.slots (1 .. least(64, total_tickets))
-- when set, which create_event(slots=...) sets in its INSERT. The trigger
-- clears it, so it applies to one event. An application that could call
-- inventory_resplit could race a first reservation on an event it did not
-- just create; this way it needs no function at all.
CREATE OR REPLACE FUNCTION events_open_inventory() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    chosen text := nullif(current_setting('ticketing.slots', true), '');
    slots integer := coalesce(chosen::integer, inventory_slot_count(NEW.total_tickets));
BEGIN
    IF chosen IS NOT NULL THEN
        PERFORM set_config('ticketing.slots', '', true);
        IF slots NOT BETWEEN 1 AND least(64, NEW.total_tickets) THEN
            RAISE EXCEPTION USING
                ERRCODE = 'TK006',
                MESSAGE = format('event %s: slots must be between 1 and %s, not %s', NEW.id,
                                 least(64, NEW.total_tickets), slots);
        END IF;
    END IF;
    INSERT INTO event_inventory (event_id, total_tickets, max_per_buyer, slot_count)
    VALUES (NEW.id, NEW.total_tickets, NEW.max_per_buyer, slots);
    PERFORM inventory_layout(NEW.id, NEW.total_tickets, slots, NEW.max_per_buyer);
    RETURN NULL;
END
$$;

-- inventory_resplit (for the owner: re-split an event that has no
-- allocations yet) locks the event_inventory row first, so that two
-- re-splits take turns, then the event's slots in slot order, as every
-- writer does, before it looks for allocations: a first reservation either
-- committed before (and is seen: TK006) or waits and then finds its slot
-- gone (it never counts into a slot that is deleted). Both functions are
-- replaced before the ALTERs below, which a CREATE OR REPLACE would undo.
CREATE OR REPLACE FUNCTION inventory_resplit(p_event_id bigint, p_slots integer) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    inv event_inventory;
BEGIN
    SELECT * INTO inv FROM event_inventory WHERE event_id = p_event_id FOR UPDATE;
    PERFORM 1 FROM inventory_slots WHERE event_id = p_event_id ORDER BY slot FOR UPDATE;
    IF EXISTS (SELECT 1 FROM allocations WHERE event_id = p_event_id) THEN
        RAISE EXCEPTION USING
            ERRCODE = 'TK006',
            MESSAGE = format('event %s already has allocations: its slots cannot be re-split',
                             p_event_id);
    END IF;
    IF p_slots NOT BETWEEN 1 AND least(64, inv.total_tickets) THEN
        RAISE EXCEPTION USING
            ERRCODE = 'TK006',
            MESSAGE = format('event %s: slots must be between 1 and %s', p_event_id,
                             least(64, inv.total_tickets));
    END IF;
    DELETE FROM inventory_slots WHERE event_id = p_event_id;
    PERFORM inventory_layout(p_event_id, inv.total_tickets, p_slots, inv.max_per_buyer);
    UPDATE event_inventory SET slot_count = p_slots WHERE event_id = p_event_id;
END
$$;

-- Ownership. Identity sequences follow their tables.
ALTER TABLE events OWNER TO ticketing_owner;
ALTER TABLE allocations OWNER TO ticketing_owner;
ALTER TABLE tickets OWNER TO ticketing_owner;
ALTER TABLE ticket_number_pool OWNER TO ticketing_owner;
ALTER TABLE event_inventory OWNER TO ticketing_owner;
ALTER TABLE inventory_slots OWNER TO ticketing_owner;
ALTER TABLE buyer_inventory OWNER TO ticketing_owner;
ALTER TABLE allocation_history OWNER TO ticketing_owner;
ALTER TABLE event_history OWNER TO ticketing_owner;
ALTER VIEW event_counters OWNER TO ticketing_owner;
ALTER TYPE allocation_change OWNER TO ticketing_owner;

ALTER FUNCTION set_updated_at() OWNER TO ticketing_owner;
ALTER FUNCTION allocations_guard_insert() OWNER TO ticketing_owner;
ALTER FUNCTION allocations_guard_transition() OWNER TO ticketing_owner;
ALTER FUNCTION allocations_guard_delete() OWNER TO ticketing_owner;
ALTER FUNCTION ticket_code() OWNER TO ticketing_owner;
ALTER FUNCTION ticket_numbers_take(bigint, integer, integer, integer) OWNER TO ticketing_owner;
ALTER FUNCTION tickets_guard_insert() OWNER TO ticketing_owner;
ALTER FUNCTION tickets_guard_change() OWNER TO ticketing_owner;
ALTER FUNCTION events_check_ticket_numbers() OWNER TO ticketing_owner;
ALTER FUNCTION inventory_slot_count(integer) OWNER TO ticketing_owner;
ALTER FUNCTION inventory_layout(bigint, integer, integer, integer) OWNER TO ticketing_owner;
ALTER FUNCTION events_open_inventory() OWNER TO ticketing_owner;
ALTER FUNCTION inventory_resplit(bigint, integer) OWNER TO ticketing_owner;
ALTER FUNCTION allocations_reclaim_lapsed(bigint, text, bigint[]) OWNER TO ticketing_owner;
ALTER FUNCTION inventory_take(bigint, integer, bigint[]) OWNER TO ticketing_owner;
ALTER FUNCTION inventory_move(bigint, integer, boolean) OWNER TO ticketing_owner;
ALTER FUNCTION events_guard_capacity() OWNER TO ticketing_owner;
ALTER FUNCTION inventory_apply(allocation_change[]) OWNER TO ticketing_owner;
ALTER FUNCTION allocations_count_inserted() OWNER TO ticketing_owner;
ALTER FUNCTION allocations_count_updated() OWNER TO ticketing_owner;
ALTER FUNCTION allocations_record_inserted() OWNER TO ticketing_owner;
ALTER FUNCTION allocations_record_updated() OWNER TO ticketing_owner;
ALTER FUNCTION events_record_capacity() OWNER TO ticketing_owner;
ALTER FUNCTION ledger_guard_append_only() OWNER TO ticketing_owner;

-- Functions are executable by PUBLIC by default: not these. Trigger
-- functions need no EXECUTE privilege to fire; the helpers are called only
-- by functions that already run as the owner.
REVOKE EXECUTE ON FUNCTION
    set_updated_at(),
    allocations_guard_insert(),
    allocations_guard_transition(),
    allocations_guard_delete(),
    ticket_code(),
    ticket_numbers_take(bigint, integer, integer, integer),
    tickets_guard_insert(),
    tickets_guard_change(),
    events_check_ticket_numbers(),
    inventory_slot_count(integer),
    inventory_layout(bigint, integer, integer, integer),
    events_open_inventory(),
    inventory_resplit(bigint, integer),
    allocations_reclaim_lapsed(bigint, text, bigint[]),
    inventory_take(bigint, integer, bigint[]),
    inventory_move(bigint, integer, boolean),
    events_guard_capacity(),
    inventory_apply(allocation_change[]),
    allocations_count_inserted(),
    allocations_count_updated(),
    allocations_record_inserted(),
    allocations_record_updated(),
    events_record_capacity(),
    ledger_guard_append_only()
FROM PUBLIC;

-- Functions the owner creates later are not executable by PUBLIC either.
ALTER DEFAULT PRIVILEGES FOR ROLE ticketing_owner REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;

-- The functions that write what ticketing_app may not: they run as the
-- owner, with a search_path that a caller cannot point elsewhere (pg_temp
-- last, so that temporary tables cannot stand in for ours). The helpers
-- they call (inventory_take, inventory_move, inventory_layout,
-- allocations_reclaim_lapsed, ticket_numbers_take, ticket_code) inherit both.
ALTER FUNCTION events_open_inventory() SECURITY DEFINER SET search_path = public, pg_temp;
ALTER FUNCTION events_guard_capacity() SECURITY DEFINER SET search_path = public, pg_temp;
ALTER FUNCTION allocations_count_inserted() SECURITY DEFINER SET search_path = public, pg_temp;
ALTER FUNCTION allocations_count_updated() SECURITY DEFINER SET search_path = public, pg_temp;
ALTER FUNCTION allocations_record_inserted() SECURITY DEFINER SET search_path = public, pg_temp;
ALTER FUNCTION allocations_record_updated() SECURITY DEFINER SET search_path = public, pg_temp;
ALTER FUNCTION events_record_capacity() SECURITY DEFINER SET search_path = public, pg_temp;

-- What ticketing_app may do. Column lists keep identity, timestamps and
-- status at insert out of its hands (defaults and triggers set them).
REVOKE ALL ON events, allocations, tickets, ticket_number_pool, event_inventory,
    inventory_slots, buyer_inventory, allocation_history, event_history, event_counters
FROM PUBLIC;
GRANT SELECT ON events, allocations, tickets, ticket_number_pool, event_inventory,
    inventory_slots, buyer_inventory, allocation_history, event_history, event_counters
TO ticketing_app;
GRANT INSERT (name, starts_at, total_tickets, max_per_buyer) ON events TO ticketing_app;
GRANT INSERT (event_id, fingerprint, quantity, expires_at, idempotency_key) ON allocations
TO ticketing_app;
GRANT UPDATE (status) ON allocations TO ticketing_app;
-- yoyo's record of applied migrations: the ticketing command refuses a
-- database with pending migrations, whoever it logs in as.
GRANT SELECT ON _yoyo_migration TO ticketing_app;
