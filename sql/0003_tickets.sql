-- Tickets: one row per purchased unit, numbered 1..total_tickets and carrying
-- an unguessable code, and the guards that keep them honest. They are issued
-- and voided by the inventory triggers on allocations (0004_inventory).
-- depends: 0002_allocations

-- Fail fast instead of queueing behind live traffic; retry the deploy later.
SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '5min';

CREATE EXTENSION IF NOT EXISTS btree_gist;

-- 16 random bytes of a version 4 UUID (122 random bits), base64url without padding: 22 characters.
CREATE FUNCTION ticket_code() RETURNS text
LANGUAGE sql VOLATILE AS $$
    SELECT rtrim(translate(encode(uuid_send(gen_random_uuid()), 'base64'), '+/', '-_'), '=')
$$;

CREATE TABLE tickets (
    id bigint GENERATED ALWAYS AS IDENTITY CONSTRAINT tickets_pkey PRIMARY KEY,
    event_id bigint NOT NULL CONSTRAINT tickets_event_id_fkey REFERENCES events (id),
    allocation_id bigint NOT NULL,
    number integer NOT NULL,
    code text NOT NULL DEFAULT ticket_code(),
    voided_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    -- A ticket belongs to an allocation of the same event.
    CONSTRAINT tickets_allocation_fkey FOREIGN KEY (allocation_id, event_id)
        REFERENCES allocations (id, event_id),
    CONSTRAINT tickets_number_positive CHECK (number >= 1),
    CONSTRAINT tickets_code_length CHECK (char_length(code) BETWEEN 22 AND 200),
    CONSTRAINT tickets_voided_after_created CHECK (voided_at >= created_at),
    CONSTRAINT tickets_code_key UNIQUE (code),
    -- No two valid tickets of an event share a number.
    CONSTRAINT tickets_number_excl EXCLUDE USING gist (event_id WITH =, number WITH =)
        WHERE (voided_at IS NULL)
);

-- list_for_allocation, and the foreign key from allocations.
CREATE INDEX tickets_allocation_id_idx ON tickets (allocation_id, number);
-- The event foreign key, and the highest number issued in a slot's range.
CREATE INDEX tickets_event_number_idx ON tickets (event_id, number);

-- Numbers of voided tickets, free to be issued again (lowest first).
CREATE TABLE ticket_number_pool (
    event_id bigint NOT NULL
        CONSTRAINT ticket_number_pool_event_id_fkey REFERENCES events (id) ON DELETE CASCADE,
    number integer NOT NULL,
    CONSTRAINT ticket_number_pool_pkey PRIMARY KEY (event_id, number),
    CONSTRAINT ticket_number_pool_number_positive CHECK (number >= 1)
);

-- Picks p_count numbers in [p_first, p_last] for new tickets of an event:
-- pooled numbers first, lowest first, then numbers above the highest issued
-- in that range. Every number of the range up to the highest issued is
-- either on a valid ticket or in the pool, so p_count numbers are free when
-- the range's inventory slot has p_count tickets of room. Called with that
-- slot's row locked, which serialises numbering within the range.
CREATE FUNCTION ticket_numbers_take(p_event_id bigint, p_first integer, p_last integer,
                                    p_count integer) RETURNS SETOF integer
LANGUAGE plpgsql AS $$
DECLARE
    taken integer;
    high integer;
BEGIN
    RETURN QUERY
        DELETE FROM ticket_number_pool
        WHERE event_id = p_event_id
          AND number IN (SELECT number FROM ticket_number_pool
                         WHERE event_id = p_event_id AND number BETWEEN p_first AND p_last
                         ORDER BY number LIMIT p_count)
        RETURNING number;
    GET DIAGNOSTICS taken = ROW_COUNT;
    IF taken < p_count THEN
        SELECT coalesce(max(number), p_first - 1) INTO high
        FROM tickets
        WHERE event_id = p_event_id AND number BETWEEN p_first AND p_last;
        RETURN QUERY SELECT generate_series(high + 1, high + p_count - taken);
    END IF;
END
$$;

-- Whoever inserts tickets: only valid ones, only for purchased allocations,
-- never more valid tickets than the allocation's quantity, numbers within the
-- event's capacity.
CREATE FUNCTION tickets_guard_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    bad record;
BEGIN
    IF EXISTS (SELECT 1 FROM new_tickets WHERE voided_at IS NOT NULL) THEN
        RAISE EXCEPTION USING
            ERRCODE = 'TK005',
            MESSAGE = 'a ticket is issued valid; only cancelling its allocation voids it';
    END IF;
    SELECT a.id, a.status, a.quantity INTO bad
    FROM (SELECT DISTINCT allocation_id FROM new_tickets) AS n
    JOIN allocations AS a ON a.id = n.allocation_id
    WHERE a.status <> 'purchased'
       OR (SELECT count(*) FROM tickets AS t
           WHERE t.allocation_id = a.id AND t.voided_at IS NULL) > a.quantity
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION USING
            ERRCODE = 'TK005',
            MESSAGE = format('allocation %s (%s, quantity %s) cannot get these tickets',
                             bad.id, bad.status, bad.quantity);
    END IF;
    SELECT n.number, e.total_tickets INTO bad
    FROM new_tickets AS n
    JOIN events AS e ON e.id = n.event_id
    WHERE n.number > e.total_tickets
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION USING
            ERRCODE = 'TK005',
            MESSAGE = format('ticket number %s is above the event''s %s tickets',
                             bad.number, bad.total_tickets);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER tickets_guard_insert
    AFTER INSERT ON tickets
    REFERENCING NEW TABLE AS new_tickets
    FOR EACH STATEMENT EXECUTE FUNCTION tickets_guard_insert();

-- A ticket never changes, except that it is voided once, when its allocation
-- is cancelled. Tickets are never deleted.
CREATE FUNCTION tickets_guard_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION USING
            ERRCODE = 'TK005',
            MESSAGE = format('ticket %s cannot be deleted', OLD.id),
            HINT = 'cancel its allocation instead';
    END IF;
    IF (NEW.id, NEW.event_id, NEW.allocation_id, NEW.number, NEW.code, NEW.created_at)
       IS DISTINCT FROM (OLD.id, OLD.event_id, OLD.allocation_id, OLD.number, OLD.code, OLD.created_at)
       OR OLD.voided_at IS NOT NULL
       OR NEW.voided_at IS NULL
       OR NOT EXISTS (SELECT 1 FROM allocations
                      WHERE id = OLD.allocation_id AND status = 'cancelled') THEN
        RAISE EXCEPTION USING
            ERRCODE = 'TK005',
            MESSAGE = format('ticket %s cannot be changed', OLD.id),
            HINT = 'tickets are voided by cancelling their allocation';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER tickets_guard_change
    BEFORE UPDATE OR DELETE ON tickets
    FOR EACH ROW EXECUTE FUNCTION tickets_guard_change();

-- Lowering total_tickets never strands a valid ticket above the new capacity.
-- BEFORE, so it speaks before the inventory re-layout (0004) runs.
CREATE FUNCTION events_check_ticket_numbers() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    high integer;
BEGIN
    IF NEW.total_tickets < OLD.total_tickets THEN
        SELECT max(number) INTO high
        FROM tickets
        WHERE event_id = NEW.id AND voided_at IS NULL AND number > NEW.total_tickets;
        IF high IS NOT NULL THEN
            RAISE EXCEPTION USING
                ERRCODE = 'TK006',
                MESSAGE = format('event %s: total_tickets cannot go below valid ticket number %s',
                                 NEW.id, high);
        END IF;
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER events_check_ticket_numbers
    BEFORE UPDATE OF total_tickets ON events
    FOR EACH ROW EXECUTE FUNCTION events_check_ticket_numbers();
