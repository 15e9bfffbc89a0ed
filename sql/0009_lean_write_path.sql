-- A lean write path. On INSERT, the two statement-level triggers on
-- allocations (0004's counting, 0007's ledger), each with a transition
-- table, become one row-level trigger; on UPDATE, one statement-level
-- trigger does both; the foreign keys that made every
-- reservation, ticket and buyer counter take FOR KEY SHARE on the one hot
-- events row become checks inside that event's own rows; and the queries
-- inside the triggers are written so that their plan does not depend on
-- statistics. Every rule holds as before, for any SQL at any isolation level.
-- depends: 0008_roles
-- The drops below are the point of this migration: each foreign key and
-- function it drops is replaced here by what keeps its guarantee.
-- squawk-ignore-file ban-drop-constraint, ban-drop-function

-- Fail fast instead of queueing behind live traffic; retry the deploy later.
SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '5min';

-- 1. Foreign keys to events, replaced.
--
-- allocations.event_id: a new allocation must name an event that has its
-- inventory (allocations_apply_insert looks up event_inventory, which exists
-- exactly while the event does, and takes the capacity from the event's own
-- slot rows); an event with allocations cannot be deleted
-- (events_guard_delete) and ids never change (events_guard_id).
-- tickets.event_id: implied by tickets_allocation_fkey, which references
-- allocations (id, event_id). buyer_inventory and ticket_number_pool: written
-- only by the owner's trigger functions, for events with allocations.
ALTER TABLE allocations DROP CONSTRAINT allocations_event_id_fkey;
ALTER TABLE tickets DROP CONSTRAINT tickets_event_id_fkey;
ALTER TABLE buyer_inventory DROP CONSTRAINT buyer_inventory_event_id_fkey;
ALTER TABLE ticket_number_pool DROP CONSTRAINT ticket_number_pool_event_id_fkey;

-- An event can be deleted only before its first allocation. Its slots are
-- locked first, in slot order, as every writer of them does: a reservation
-- in flight either committed before (and is seen here) or waits and then
-- finds the event gone (EventNotFound). Raises what the foreign key raised.
CREATE FUNCTION events_guard_delete() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM inventory_slots WHERE event_id = OLD.id ORDER BY slot FOR UPDATE;
    IF EXISTS (SELECT 1 FROM allocations WHERE event_id = OLD.id) THEN
        RAISE EXCEPTION USING
            ERRCODE = 'foreign_key_violation',
            CONSTRAINT = 'allocations_event_id_fkey',
            TABLE = 'allocations',
            MESSAGE = format('event %s has allocations and cannot be deleted', OLD.id),
            DETAIL = format('Key (id)=(%s) is still referenced from table "allocations".',
                            OLD.id);
    END IF;
    DELETE FROM buyer_inventory WHERE event_id = OLD.id;
    DELETE FROM ticket_number_pool WHERE event_id = OLD.id;
    RETURN OLD;
END
$$;

CREATE TRIGGER events_guard_delete
    BEFORE DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_guard_delete();

-- An event's id never changes (UPDATE ... SET id = DEFAULT would draw a new one).
CREATE FUNCTION events_guard_id() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION USING
        ERRCODE = 'TK005',
        MESSAGE = format('event %s: id never changes', OLD.id);
END
$$;

CREATE TRIGGER events_guard_id
    BEFORE UPDATE OF id ON events
    FOR EACH ROW
    WHEN (OLD.id IS DISTINCT FROM NEW.id)
    EXECUTE FUNCTION events_guard_id();

-- 2. One function per kind of change for the counting and the ledger.
--
-- Lapsed holds are reclaimed by the statements that are short of capacity
-- or over a buyer limit. With row-level triggers, rows of the running
-- statement whose trigger has not fired yet are visible but not counted:
-- rows written by this transaction are never reclaimed (p_skip stays for
-- the row being counted).
CREATE OR REPLACE FUNCTION allocations_reclaim_lapsed(p_event_id bigint, p_fingerprint text,
                                                      p_skip bigint[])
RETURNS integer
LANGUAGE sql AS $$
    WITH lapsed AS (
        SELECT a.id
        FROM allocations AS a
        JOIN buyer_inventory AS b ON b.event_id = a.event_id AND b.fingerprint = a.fingerprint
        WHERE a.event_id = p_event_id
          AND (p_fingerprint IS NULL OR a.fingerprint = p_fingerprint)
          AND a.status = 'reserved'
          AND a.expires_at <= statement_timestamp()
          AND a.id <> ALL (p_skip)
          AND a.xmin <> pg_current_xact_id()::xid
        FOR UPDATE OF a, b SKIP LOCKED
    ), expired AS (
        UPDATE allocations AS a
        SET status = 'expired'
        FROM lapsed
        WHERE a.id = lapsed.id
        RETURNING 1
    )
    SELECT count(*)::integer FROM expired
$$;

-- inventory_take as in 0004, but a reservation that waited for the slots of
-- an event deleted meanwhile finds none and raises what the foreign key did.
CREATE OR REPLACE FUNCTION inventory_take(p_event_id bigint, p_quantity integer, p_skip bigint[])
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    chosen integer;
    max_copy integer;
    free bigint;
    remaining integer := p_quantity;
    s record;
BEGIN
    -- Steps 1 and 2 each run in a subtransaction. A slot that changed after
    -- this statement's snapshot is locked before it is re-checked, and stays
    -- locked when it no longer has room: rolling the block back releases it,
    -- so no stray slot lock is held while waiting for slots in step 3.
    BEGIN
        SELECT slot INTO chosen
        FROM inventory_slots
        WHERE event_id = p_event_id AND capacity - reserved - purchased >= p_quantity
        ORDER BY random()
        LIMIT 1
        FOR UPDATE SKIP LOCKED;
        IF NOT FOUND THEN
            RAISE EXCEPTION USING ERRCODE = 'TK900';
        END IF;
        UPDATE inventory_slots
        SET reserved = reserved + p_quantity
        WHERE event_id = p_event_id AND slot = chosen
        RETURNING max_per_buyer INTO max_copy;
        RETURN max_copy;
    EXCEPTION WHEN SQLSTATE 'TK900' THEN
        NULL;
    END;

    BEGIN
        SELECT slot INTO chosen
        FROM inventory_slots
        WHERE event_id = p_event_id AND capacity - reserved - purchased >= p_quantity
        ORDER BY random()
        LIMIT 1;
        IF FOUND THEN
            UPDATE inventory_slots
            SET reserved = reserved + p_quantity
            WHERE event_id = p_event_id AND slot = chosen
              AND capacity - reserved - purchased >= p_quantity
            RETURNING max_per_buyer INTO max_copy;
            IF FOUND THEN
                RETURN max_copy;
            END IF;
        END IF;
        RAISE EXCEPTION USING ERRCODE = 'TK900';
    EXCEPTION WHEN SQLSTATE 'TK900' THEN
        NULL;
    END;

    PERFORM 1 FROM inventory_slots WHERE event_id = p_event_id ORDER BY slot FOR UPDATE;
    IF NOT FOUND THEN
        -- The event was deleted while this reservation waited for a slot.
        RAISE EXCEPTION USING
            ERRCODE = 'foreign_key_violation',
            CONSTRAINT = 'allocations_event_id_fkey',
            TABLE = 'allocations',
            MESSAGE = format('event %s does not exist', p_event_id),
            DETAIL = format('Key (event_id)=(%s) is not present in table "events".', p_event_id);
    END IF;
    SELECT coalesce(sum(capacity - reserved - purchased), 0) INTO free
    FROM inventory_slots WHERE event_id = p_event_id;
    IF free < p_quantity THEN
        PERFORM allocations_reclaim_lapsed(p_event_id, NULL, p_skip);
        SELECT coalesce(sum(capacity - reserved - purchased), 0) INTO free
        FROM inventory_slots WHERE event_id = p_event_id;
    END IF;
    IF free < p_quantity THEN
        RAISE EXCEPTION USING
            ERRCODE = 'TK001',
            MESSAGE = format('event %s is sold out: %s requested, %s available',
                             p_event_id, p_quantity, free),
            DETAIL = format('available=%s', free);
    END IF;
    FOR s IN
        SELECT slot, capacity - reserved - purchased AS room, max_per_buyer
        FROM inventory_slots
        WHERE event_id = p_event_id AND capacity - reserved - purchased > 0
        ORDER BY slot
    LOOP
        UPDATE inventory_slots
        SET reserved = reserved + least(s.room, remaining)
        WHERE event_id = p_event_id AND slot = s.slot;
        remaining := remaining - least(s.room, remaining);
        max_copy := s.max_per_buyer;
        EXIT WHEN remaining = 0;
    END LOOP;
    RETURN max_copy;
END
$$;

-- Each inserted allocation is counted by inventory_apply (0004) as a change
-- of one row and recorded in allocation_history (0007), in one call per row:
-- no transition table, no statement-level pass. A new allocation must be a
-- hold of an event that exists.
CREATE FUNCTION allocations_apply_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status <> 'reserved' THEN
        RAISE EXCEPTION USING
            ERRCODE = 'TK003',
            MESSAGE = format('a new allocation must be reserved, not %s', NEW.status),
            HINT = 'reserve first, then purchase';
    END IF;
    PERFORM 1 FROM event_inventory WHERE event_id = NEW.event_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING
            ERRCODE = 'foreign_key_violation',
            CONSTRAINT = 'allocations_event_id_fkey',
            TABLE = 'allocations',
            MESSAGE = format('event %s does not exist', NEW.event_id),
            DETAIL = format('Key (event_id)=(%s) is not present in table "events".',
                            NEW.event_id);
    END IF;
    PERFORM inventory_apply(ARRAY[ROW(NEW.id, NEW.event_id, NEW.fingerprint, NULL,
                                      NEW.status, 0, NEW.quantity)::allocation_change]);
    INSERT INTO allocation_history (allocation_id, event_id, fingerprint, new_status,
                                    new_quantity)
    VALUES (NEW.id, NEW.event_id, NEW.fingerprint, NEW.status, NEW.quantity);
    RETURN NULL;
END
$$;

-- Updates stay statement-level: inventory_apply takes a statement's changes
-- together, event by event, buyers before slots, so a sweep of many holds
-- locks in the one order every writer uses and never deadlocks against
-- buyers. One function counts and records them, from one join of the
-- transition tables.
CREATE FUNCTION allocations_apply_updates() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    changes allocation_change[] := ARRAY(
        SELECT ROW(n.id, n.event_id, n.fingerprint, o.status, n.status, o.quantity,
                   n.quantity)::allocation_change
        FROM new_rows AS n
        JOIN old_rows AS o ON o.id = n.id
        WHERE o.status <> n.status OR o.quantity <> n.quantity
        ORDER BY n.id);
BEGIN
    IF cardinality(changes) > 0 THEN
        PERFORM inventory_apply(changes);
        INSERT INTO allocation_history (allocation_id, event_id, fingerprint, old_status,
                                        new_status, old_quantity, new_quantity)
        SELECT c.id, c.event_id, c.fingerprint, c.old_status, c.new_status, c.old_quantity,
               c.new_quantity
        FROM unnest(changes) AS c
        ORDER BY c.id;
    END IF;
    RETURN NULL;
END
$$;

DROP TRIGGER allocations_guard_insert ON allocations;
DROP TRIGGER allocations_count_inserted ON allocations;
DROP TRIGGER allocations_count_updated ON allocations;
DROP TRIGGER allocations_record_inserted ON allocations;
DROP TRIGGER allocations_record_updated ON allocations;
DROP FUNCTION allocations_guard_insert();
DROP FUNCTION allocations_count_inserted();
DROP FUNCTION allocations_count_updated();
DROP FUNCTION allocations_record_inserted();
DROP FUNCTION allocations_record_updated();

CREATE TRIGGER allocations_apply_insert
    AFTER INSERT ON allocations
    FOR EACH ROW EXECUTE FUNCTION allocations_apply_insert();

CREATE TRIGGER allocations_apply_updates
    AFTER UPDATE ON allocations
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION allocations_apply_updates();

-- 3. Plans that do not depend on statistics.
--
-- The highest number issued in a slot's range: one step down
-- tickets_event_number_idx, whatever the planner thinks of the table (an
-- aggregate over the whole range read every ticket of the slot).
CREATE OR REPLACE FUNCTION ticket_numbers_take(p_event_id bigint, p_first integer,
                                               p_last integer, p_count integer)
RETURNS SETOF integer
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
        SELECT t.number INTO high
        FROM tickets AS t
        WHERE t.event_id = p_event_id AND t.number BETWEEN p_first AND p_last
        ORDER BY t.number DESC
        LIMIT 1;
        high := coalesce(high, p_first - 1);
        RETURN QUERY SELECT generate_series(high + 1, high + p_count - taken);
    END IF;
END
$$;

-- The valid tickets of an allocation are counted by tickets_allocation_id_idx
-- alone: the filter on voided_at is applied to that allocation's rows, so the
-- partial GiST index tickets_number_excl (WHERE voided_at IS NULL) is never a
-- candidate for a bitmap scan of the whole event.
CREATE OR REPLACE FUNCTION tickets_guard_insert() RETURNS trigger
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
       OR (SELECT count(*) FILTER (WHERE t.voided_at IS NULL) FROM tickets AS t
           WHERE t.allocation_id = a.id) > a.quantity
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

-- inventory_apply as in 0004, but a cancelled purchase finds its tickets
-- through their allocation, not by scanning the event's valid tickets.
CREATE OR REPLACE FUNCTION inventory_apply(changes allocation_change[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    ev record;
    b record;
    a record;
    part record;
    settings event_inventory;
    held integer;
    max_copy integer;
    parts integer[];
    firsts integer[];
    lasts integer[];
    p integer;
    need integer;
    give integer;
    counting bigint[] := ARRAY(SELECT c.id FROM unnest(changes) AS c);
BEGIN
    FOR ev IN
        SELECT c.event_id,
               sum(CASE WHEN c.new_status IN ('reserved', 'purchased')
                         AND coalesce(c.old_status, 'reserved') = 'reserved'
                        THEN c.new_quantity ELSE 0 END
                   - CASE WHEN c.old_status = 'reserved' THEN c.old_quantity ELSE 0 END)::integer
                   AS hold_change,
               sum(CASE WHEN c.old_status = 'reserved' AND c.new_status = 'purchased'
                        THEN c.new_quantity ELSE 0 END)::integer AS bought,
               bool_or(c.old_status = 'purchased' AND c.new_status = 'cancelled') AS refunds
        FROM unnest(changes) AS c
        GROUP BY c.event_id
        ORDER BY c.event_id
    LOOP
        SELECT * INTO settings FROM event_inventory WHERE event_id = ev.event_id;
        IF NOT FOUND THEN
            RAISE EXCEPTION USING
                ERRCODE = 'TK007',
                MESSAGE = format('event %s has no inventory row', ev.event_id);
        END IF;

        -- 1. Buyers.
        FOR b IN
            SELECT c.fingerprint,
                   sum(CASE WHEN c.new_status IN ('reserved', 'purchased') THEN c.new_quantity ELSE 0 END
                       - CASE WHEN c.old_status IN ('reserved', 'purchased') THEN c.old_quantity ELSE 0 END)
                       ::integer AS delta
            FROM unnest(changes) AS c
            WHERE c.event_id = ev.event_id
            GROUP BY c.fingerprint
            HAVING sum(CASE WHEN c.new_status IN ('reserved', 'purchased') THEN c.new_quantity ELSE 0 END
                       - CASE WHEN c.old_status IN ('reserved', 'purchased') THEN c.old_quantity ELSE 0 END)
                   <> 0
            ORDER BY c.fingerprint
        LOOP
            IF b.delta < 0 THEN
                UPDATE buyer_inventory SET quantity = quantity + b.delta
                WHERE event_id = ev.event_id AND fingerprint = b.fingerprint;
                CONTINUE;
            END IF;
            INSERT INTO buyer_inventory AS bi (event_id, fingerprint, quantity)
            VALUES (ev.event_id, b.fingerprint, b.delta)
            ON CONFLICT (event_id, fingerprint)
                DO UPDATE SET quantity = bi.quantity + excluded.quantity
            RETURNING bi.quantity INTO held;
            IF held > settings.max_per_buyer THEN
                PERFORM allocations_reclaim_lapsed(ev.event_id, b.fingerprint, counting);
                SELECT quantity INTO held FROM buyer_inventory
                WHERE event_id = ev.event_id AND fingerprint = b.fingerprint;
                IF held > settings.max_per_buyer THEN
                    RAISE EXCEPTION USING
                        ERRCODE = 'TK002',
                        MESSAGE = format('event %s allows %s tickets per buyer; this buyer would hold %s',
                                         ev.event_id, settings.max_per_buyer, held),
                        DETAIL = format('max_per_buyer=%s', settings.max_per_buyer);
                END IF;
            END IF;
        END LOOP;

        -- 2. Capacity. max_copy is max_per_buyer as read under a slot lock.
        max_copy := settings.max_per_buyer;
        IF ev.hold_change > 0 THEN
            max_copy := inventory_take(ev.event_id, ev.hold_change, counting);
        ELSE
            IF ev.hold_change < 0 THEN
                PERFORM inventory_move(ev.event_id, -ev.hold_change, false);
            END IF;
            -- A hold grew while others shrank (raw SQL), so no capacity was
            -- taken: read the limit under a share lock on a slot, which a
            -- concurrent change of max_per_buyer (it locks every slot)
            -- cannot pass unseen.
            IF EXISTS (
                SELECT 1 FROM unnest(changes) AS c
                WHERE c.event_id = ev.event_id AND c.new_status IN ('reserved', 'purchased')
                  AND c.new_quantity > c.old_quantity
            ) THEN
                SELECT i.max_per_buyer INTO max_copy
                FROM inventory_slots AS i
                WHERE i.event_id = ev.event_id
                ORDER BY i.slot
                LIMIT 1
                FOR SHARE;
            END IF;
        END IF;
        -- The limit changed since the buyers were checked in step 1: check again.
        IF max_copy IS DISTINCT FROM settings.max_per_buyer AND max_copy IS NOT NULL THEN
            SELECT bi.fingerprint, bi.quantity INTO b
            FROM buyer_inventory AS bi
            WHERE bi.event_id = ev.event_id AND bi.quantity > max_copy
              AND bi.fingerprint IN (SELECT c.fingerprint FROM unnest(changes) AS c
                                     WHERE c.event_id = ev.event_id)
            LIMIT 1;
            IF FOUND THEN
                RAISE EXCEPTION USING
                    ERRCODE = 'TK002',
                    MESSAGE = format('event %s allows %s tickets per buyer; this buyer would hold %s',
                                     ev.event_id, max_copy, b.quantity),
                    DETAIL = format('max_per_buyer=%s', max_copy);
            END IF;
        END IF;

        -- 3. Purchases.
        IF ev.bought > 0 THEN
            SELECT array_agg(m.quantity), array_agg(m.first_number), array_agg(m.last_number)
            INTO parts, firsts, lasts
            FROM inventory_move(ev.event_id, ev.bought, true) AS m;
            p := 1;
            FOR a IN
                SELECT c.id, c.new_quantity
                FROM unnest(changes) AS c
                WHERE c.event_id = ev.event_id AND c.old_status = 'reserved'
                  AND c.new_status = 'purchased'
                ORDER BY c.id
            LOOP
                need := a.new_quantity;
                WHILE need > 0 LOOP
                    give := least(need, parts[p]);
                    INSERT INTO tickets (event_id, allocation_id, number)
                    SELECT ev.event_id, a.id, num
                    FROM ticket_numbers_take(ev.event_id, firsts[p], lasts[p], give) AS num
                    ORDER BY num;
                    parts[p] := parts[p] - give;
                    need := need - give;
                    IF parts[p] = 0 THEN
                        p := p + 1;
                    END IF;
                END LOOP;
            END LOOP;
        END IF;

        -- 4. Cancelled purchases: lock the slots their numbers belong to, in order.
        -- The allocations' tickets are read by tickets_allocation_id_idx alone
        -- (MATERIALIZED keeps the valid-ticket filter off that scan, so the
        -- partial GiST index tickets_number_excl, which covers every valid
        -- ticket of the event, is never a candidate).
        IF ev.refunds THEN
            FOR part IN
                WITH refunded AS MATERIALIZED (
                    SELECT t.number, t.voided_at
                    FROM tickets AS t
                    WHERE t.allocation_id = ANY (ARRAY(
                        SELECT c.id FROM unnest(changes) AS c
                        WHERE c.event_id = ev.event_id AND c.old_status = 'purchased'
                          AND c.new_status = 'cancelled'))
                )
                SELECT s.slot, count(*)::integer AS tickets
                FROM refunded AS r
                JOIN inventory_slots AS s
                  ON s.event_id = ev.event_id
                 AND r.number BETWEEN s.first_number AND s.first_number + s.capacity - 1
                WHERE r.voided_at IS NULL
                GROUP BY s.slot
                ORDER BY s.slot
            LOOP
                UPDATE inventory_slots SET purchased = purchased - part.tickets
                WHERE event_id = ev.event_id AND slot = part.slot;
            END LOOP;
            WITH refunded AS MATERIALIZED (
                SELECT t.id, t.voided_at
                FROM tickets AS t
                WHERE t.allocation_id = ANY (ARRAY(
                    SELECT c.id FROM unnest(changes) AS c
                    WHERE c.event_id = ev.event_id AND c.old_status = 'purchased'
                      AND c.new_status = 'cancelled'))
            ), voided AS (
                UPDATE tickets AS t
                SET voided_at = greatest(now(), t.created_at)
                FROM refunded AS r
                WHERE t.id = r.id AND r.voided_at IS NULL
                RETURNING t.event_id, t.number
            )
            INSERT INTO ticket_number_pool (event_id, number)
            SELECT event_id, number FROM voided;
        END IF;
    END LOOP;
END
$$;

-- 4. Ownership and privileges, as 0008 set them for the objects it knew.
ALTER FUNCTION events_guard_delete() OWNER TO ticketing_owner;
ALTER FUNCTION events_guard_id() OWNER TO ticketing_owner;
ALTER FUNCTION allocations_apply_insert() OWNER TO ticketing_owner;
ALTER FUNCTION allocations_apply_updates() OWNER TO ticketing_owner;
REVOKE EXECUTE ON FUNCTION events_guard_delete(), events_guard_id(), allocations_apply_insert(),
    allocations_apply_updates()
FROM PUBLIC;
-- events_guard_delete deletes counters and pooled numbers, which only the owner may write.
ALTER FUNCTION events_guard_delete() SECURITY DEFINER SET search_path = public, pg_temp;
ALTER FUNCTION allocations_apply_insert() SECURITY DEFINER SET search_path = public, pg_temp;
ALTER FUNCTION allocations_apply_updates() SECURITY DEFINER SET search_path = public, pg_temp;
