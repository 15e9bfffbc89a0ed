-- The ledger: an append-only history of every allocation state change and
-- every capacity change of an event, written by triggers in the same
-- transaction as the change. Replaying it gives the current state
-- (ticketing check verifies that); only the table owner may rewrite it.
-- depends: 0006_events_starts_at_validate

-- Fail fast instead of queueing behind live traffic; retry the deploy later.
SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '5min';

-- One row per allocation inserted (old_* NULL) and per UPDATE that changed
-- its status or quantity. No foreign key to allocations: allocations are
-- never deleted, the replay check finds orphans, and a row-level RI trigger
-- would cost every reservation a second trigger call.
CREATE TABLE allocation_history (
    id bigint GENERATED ALWAYS AS IDENTITY CONSTRAINT allocation_history_pkey PRIMARY KEY,
    allocation_id bigint NOT NULL,
    event_id bigint NOT NULL,
    fingerprint text NOT NULL,
    old_status text,
    new_status text NOT NULL,
    old_quantity integer,
    new_quantity integer NOT NULL,
    -- An opening entry: the state of an allocation older than the ledger,
    -- written once by this migration (its first entry, whatever its status).
    opening boolean NOT NULL DEFAULT false,
    -- When the change was written, by which login (session_user, not the
    -- trigger's owner), in which transaction.
    recorded_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    recorded_by text NOT NULL DEFAULT session_user,
    transaction_id xid8 NOT NULL DEFAULT pg_current_xact_id(),
    CONSTRAINT allocation_history_old_both_or_neither
        CHECK ((old_status IS NULL) = (old_quantity IS NULL)),
    CONSTRAINT allocation_history_opening_has_no_old CHECK (NOT opening OR old_status IS NULL),
    CONSTRAINT allocation_history_status_valid
        CHECK (new_status IN ('reserved', 'purchased', 'expired', 'cancelled')
               AND old_status IN ('reserved', 'purchased', 'expired', 'cancelled'))
);

-- Replay reads an allocation's entries in order.
CREATE INDEX allocation_history_allocation_id_idx ON allocation_history (allocation_id, id);

-- One row per event inserted (old_* NULL), per UPDATE that changed
-- total_tickets or max_per_buyer, and per event deleted (new_total_tickets
-- 0, which no live event can have: events_total_tickets_range).
CREATE TABLE event_history (
    id bigint GENERATED ALWAYS AS IDENTITY CONSTRAINT event_history_pkey PRIMARY KEY,
    event_id bigint NOT NULL,
    created boolean NOT NULL,
    old_total_tickets integer,
    new_total_tickets integer NOT NULL,
    old_max_per_buyer integer,
    new_max_per_buyer integer,
    recorded_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    recorded_by text NOT NULL DEFAULT session_user,
    transaction_id xid8 NOT NULL DEFAULT pg_current_xact_id(),
    CONSTRAINT event_history_old_total_unless_created
        CHECK (created = (old_total_tickets IS NULL))
);

CREATE INDEX event_history_event_id_idx ON event_history (event_id, id);

-- Statement-level, with transition tables like the counting triggers of
-- 0004: one call per statement, however many rows it changed.
CREATE FUNCTION allocations_record_inserted() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO allocation_history (allocation_id, event_id, fingerprint, new_status, new_quantity)
    SELECT n.id, n.event_id, n.fingerprint, n.status, n.quantity
    FROM new_rows AS n
    ORDER BY n.id;
    RETURN NULL;
END
$$;

CREATE FUNCTION allocations_record_updated() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO allocation_history (allocation_id, event_id, fingerprint, old_status, new_status,
                                    old_quantity, new_quantity)
    SELECT n.id, n.event_id, n.fingerprint, o.status, n.status, o.quantity, n.quantity
    FROM new_rows AS n
    JOIN old_rows AS o ON o.id = n.id
    WHERE o.status <> n.status OR o.quantity <> n.quantity
    ORDER BY n.id;
    RETURN NULL;
END
$$;

CREATE TRIGGER allocations_record_inserted
    AFTER INSERT ON allocations
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION allocations_record_inserted();

CREATE TRIGGER allocations_record_updated
    AFTER UPDATE ON allocations
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION allocations_record_updated();

CREATE FUNCTION events_record_capacity() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO event_history (event_id, created, new_total_tickets, new_max_per_buyer)
        VALUES (NEW.id, true, NEW.total_tickets, NEW.max_per_buyer);
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO event_history (event_id, created, old_total_tickets, new_total_tickets,
                                   old_max_per_buyer, new_max_per_buyer)
        VALUES (OLD.id, false, OLD.total_tickets, 0, OLD.max_per_buyer, NULL);
    ELSE
        INSERT INTO event_history (event_id, created, old_total_tickets, new_total_tickets,
                                   old_max_per_buyer, new_max_per_buyer)
        VALUES (NEW.id, false, OLD.total_tickets, NEW.total_tickets,
                OLD.max_per_buyer, NEW.max_per_buyer);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER events_record_created
    AFTER INSERT ON events
    FOR EACH ROW EXECUTE FUNCTION events_record_capacity();

-- An event can be deleted only before its first allocation (foreign keys).
CREATE TRIGGER events_record_deleted
    AFTER DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_record_capacity();

CREATE TRIGGER events_record_capacity
    AFTER UPDATE OF total_tickets, max_per_buyer ON events
    FOR EACH ROW
    WHEN (OLD.total_tickets IS DISTINCT FROM NEW.total_tickets
          OR OLD.max_per_buyer IS DISTINCT FROM NEW.max_per_buyer)
    EXECUTE FUNCTION events_record_capacity();

-- UPDATE, DELETE and TRUNCATE of a ledger table are refused unless the
-- current role is the table's owner itself (a superuser must SET ROLE to
-- it first). Privileges refuse them to ticketing_app already (0008); this
-- holds for every other role too. Runs as the caller: never SECURITY DEFINER.
CREATE FUNCTION ledger_guard_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF current_user::regrole <> (SELECT relowner::regrole FROM pg_class WHERE oid = TG_RELID) THEN
        RAISE EXCEPTION USING
            ERRCODE = 'TK008',
            MESSAGE = format('%s is append-only: %s refused for role %s',
                             TG_TABLE_NAME, TG_OP, current_user),
            HINT = 'only the table owner may correct the ledger';
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER allocation_history_append_only
    BEFORE UPDATE OR DELETE OR TRUNCATE ON allocation_history
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_guard_append_only();

CREATE TRIGGER event_history_append_only
    BEFORE UPDATE OR DELETE OR TRUNCATE ON event_history
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_guard_append_only();

-- Opening entries: the state of the rows that existed before the ledger.
INSERT INTO event_history (event_id, created, new_total_tickets, new_max_per_buyer)
SELECT id, true, total_tickets, max_per_buyer
FROM events
ORDER BY id;

INSERT INTO allocation_history (allocation_id, event_id, fingerprint, new_status, new_quantity,
                                opening)
SELECT id, event_id, fingerprint, status, quantity, true
FROM allocations
ORDER BY id;
