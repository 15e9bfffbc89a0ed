-- Buyer counters only where there is a limit. buyer_inventory exists to
-- enforce max_per_buyer; an event without one (the common case of an on-sale)
-- no longer writes a counter row per reservation, and a new hold is counted by
-- one call of inventory_take from its own row-level trigger. Setting a limit
-- on an event without one counts every buyer afresh under the event's slot
-- locks. Every rule holds as before, for any SQL at any isolation level.
-- depends: 0009_lean_write_path

-- Fail fast instead of queueing behind live traffic; retry the deploy later.
SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '5min';

-- The protocol. event_inventory.max_per_buyer is read when a change starts;
-- a limit is set or changed only by events_guard_capacity, which first locks
-- every slot of the event. So:
--   * a change that read a limit counts its buyers first (buyers before
--     slots, the order every writer uses), and checks them again if the
--     limit read under its slot lock differs (as in 0004);
--   * a change that read no limit skips the counters; once it holds a slot
--     lock it reads the limit again. Still none: a limit set later is counted
--     from committed allocations, which will include this one. One now: it
--     was set (and its counters rebuilt without this change) in between,
--     so this change counts its buyers now (inventory_count_late).
-- Under REPEATABLE READ or SERIALIZABLE, a slot locked after a limit was set
-- since the snapshot raises a serialization failure instead.
-- Counter rows of an event whose limit was removed are left as they were and
-- mean nothing; they are replaced when a limit is set again.

-- Lapsed holds of one event (and one buyer, when given) become expired. The
-- buyer counters of an event with a limit are locked with them, skipping
-- either when someone else holds it, since the caller may hold slot locks;
-- an event without a limit has no counters to lock.
CREATE OR REPLACE FUNCTION allocations_reclaim_lapsed(p_event_id bigint, p_fingerprint text,
                                                      p_skip bigint[])
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    reclaimed integer;
BEGIN
    IF (SELECT i.max_per_buyer FROM event_inventory AS i WHERE i.event_id = p_event_id)
       IS NOT NULL THEN
        WITH lapsed AS (
            SELECT a.id
            FROM allocations AS a
            JOIN buyer_inventory AS b
              ON b.event_id = a.event_id AND b.fingerprint = a.fingerprint
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
        SELECT count(*)::integer INTO reclaimed FROM expired;
    ELSE
        WITH lapsed AS (
            SELECT a.id
            FROM allocations AS a
            WHERE a.event_id = p_event_id
              AND (p_fingerprint IS NULL OR a.fingerprint = p_fingerprint)
              AND a.status = 'reserved'
              AND a.expires_at <= statement_timestamp()
              AND a.id <> ALL (p_skip)
              AND a.xmin <> pg_current_xact_id()::xid
            FOR UPDATE OF a SKIP LOCKED
        ), expired AS (
            UPDATE allocations AS a
            SET status = 'expired'
            FROM lapsed
            WHERE a.id = lapsed.id
            RETURNING 1
        )
        SELECT count(*)::integer INTO reclaimed FROM expired;
    END IF;
    RETURN reclaimed;
END
$$;

-- The buyer counters of one event for a statement's changes, in fingerprint
-- order (step 1 of inventory_apply in 0004). A buyer going over p_limit
-- first gets their own lapsed holds reclaimed, then TK002.
CREATE FUNCTION inventory_count_buyers(p_event_id bigint, p_limit integer,
                                       changes allocation_change[])
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    b record;
    held integer;
    counting bigint[] := ARRAY(SELECT c.id FROM unnest(changes) AS c);
BEGIN
    FOR b IN
        SELECT c.fingerprint,
               sum(CASE WHEN c.new_status IN ('reserved', 'purchased') THEN c.new_quantity ELSE 0 END
                   - CASE WHEN c.old_status IN ('reserved', 'purchased') THEN c.old_quantity ELSE 0 END)
                   ::integer AS delta
        FROM unnest(changes) AS c
        WHERE c.event_id = p_event_id
        GROUP BY c.fingerprint
        HAVING sum(CASE WHEN c.new_status IN ('reserved', 'purchased') THEN c.new_quantity ELSE 0 END
                   - CASE WHEN c.old_status IN ('reserved', 'purchased') THEN c.old_quantity ELSE 0 END)
               <> 0
        ORDER BY c.fingerprint
    LOOP
        IF b.delta < 0 THEN
            UPDATE buyer_inventory SET quantity = quantity + b.delta
            WHERE event_id = p_event_id AND fingerprint = b.fingerprint;
            CONTINUE;
        END IF;
        INSERT INTO buyer_inventory AS bi (event_id, fingerprint, quantity)
        VALUES (p_event_id, b.fingerprint, b.delta)
        ON CONFLICT (event_id, fingerprint)
            DO UPDATE SET quantity = bi.quantity + excluded.quantity
        RETURNING bi.quantity INTO held;
        IF held > p_limit THEN
            PERFORM allocations_reclaim_lapsed(p_event_id, b.fingerprint, counting);
            SELECT quantity INTO held FROM buyer_inventory
            WHERE event_id = p_event_id AND fingerprint = b.fingerprint;
            IF held > p_limit THEN
                RAISE EXCEPTION USING
                    ERRCODE = 'TK002',
                    MESSAGE = format('event %s allows %s tickets per buyer; this buyer would hold %s',
                                     p_event_id, p_limit, held),
                    DETAIL = format('max_per_buyer=%s', p_limit);
            END IF;
        END IF;
    END LOOP;
END
$$;

-- After the slot locks: p_counted is the limit the change read when it
-- started (its buyers were counted when not NULL), p_limit the limit now.
-- Counted, and the limit changed: check the buyers again. Not counted, and a
-- limit was set in between: count them now.
CREATE FUNCTION inventory_count_late(p_event_id bigint, p_counted integer, p_limit integer,
                                     changes allocation_change[])
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    b record;
BEGIN
    IF p_limit IS NULL OR p_limit IS NOT DISTINCT FROM p_counted THEN
        RETURN;
    END IF;
    IF p_counted IS NULL THEN
        PERFORM inventory_count_buyers(p_event_id, p_limit, changes);
        RETURN;
    END IF;
    SELECT bi.fingerprint, bi.quantity INTO b
    FROM buyer_inventory AS bi
    WHERE bi.event_id = p_event_id AND bi.quantity > p_limit
      AND bi.fingerprint IN (SELECT c.fingerprint FROM unnest(changes) AS c
                             WHERE c.event_id = p_event_id)
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION USING
            ERRCODE = 'TK002',
            MESSAGE = format('event %s allows %s tickets per buyer; this buyer would hold %s',
                             p_event_id, p_limit, b.quantity),
            DETAIL = format('max_per_buyer=%s', p_limit);
    END IF;
END
$$;

-- A new hold: counted by one call of inventory_take (no change array, no
-- pass over the statement's changes), its buyer counted only when the event
-- has a limit, and recorded in allocation_history.
CREATE OR REPLACE FUNCTION allocations_apply_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    counted integer;
    max_copy integer;
    change allocation_change[];
BEGIN
    IF NEW.status <> 'reserved' THEN
        RAISE EXCEPTION USING
            ERRCODE = 'TK003',
            MESSAGE = format('a new allocation must be reserved, not %s', NEW.status),
            HINT = 'reserve first, then purchase';
    END IF;
    SELECT i.max_per_buyer INTO counted FROM event_inventory AS i WHERE i.event_id = NEW.event_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING
            ERRCODE = 'foreign_key_violation',
            CONSTRAINT = 'allocations_event_id_fkey',
            TABLE = 'allocations',
            MESSAGE = format('event %s does not exist', NEW.event_id),
            DETAIL = format('Key (event_id)=(%s) is not present in table "events".',
                            NEW.event_id);
    END IF;
    IF counted IS NOT NULL THEN
        change := ARRAY[ROW(NEW.id, NEW.event_id, NEW.fingerprint, NULL, NEW.status, 0,
                            NEW.quantity)::allocation_change];
        PERFORM inventory_count_buyers(NEW.event_id, counted, change);
    END IF;
    -- max_per_buyer as read under the slot lock.
    max_copy := inventory_take(NEW.event_id, NEW.quantity, ARRAY[NEW.id]);
    IF max_copy IS DISTINCT FROM counted THEN
        PERFORM inventory_count_late(
            NEW.event_id, counted, max_copy,
            ARRAY[ROW(NEW.id, NEW.event_id, NEW.fingerprint, NULL, NEW.status, 0,
                      NEW.quantity)::allocation_change]);
    END IF;
    INSERT INTO allocation_history (allocation_id, event_id, fingerprint, new_status,
                                    new_quantity)
    VALUES (NEW.id, NEW.event_id, NEW.fingerprint, NEW.status, NEW.quantity);
    RETURN NULL;
END
$$;

-- inventory_apply as in 0009, with the buyer counters of step 1 kept only for
-- events with a limit, and a step 5 for a limit set while the change ran.
CREATE OR REPLACE FUNCTION inventory_apply(changes allocation_change[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    ev record;
    a record;
    part record;
    settings event_inventory;
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

        -- 1. Buyers, for an event with a limit.
        IF settings.max_per_buyer IS NOT NULL THEN
            PERFORM inventory_count_buyers(ev.event_id, settings.max_per_buyer, changes);
        END IF;

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

        -- 5. The limit as it stands now that this change holds a slot lock.
        IF settings.max_per_buyer IS NULL THEN
            SELECT i.max_per_buyer INTO max_copy FROM event_inventory AS i
            WHERE i.event_id = ev.event_id;
        END IF;
        PERFORM inventory_count_late(ev.event_id, settings.max_per_buyer, max_copy, changes);
    END LOOP;
END
$$;

-- events_guard_capacity as in 0004, but setting a limit on an event without
-- one first counts its buyers.
CREATE OR REPLACE FUNCTION events_guard_capacity() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    live bigint;
    top_buyer integer;
    cut integer;
    low integer;
    high integer;
    spill integer := 0;
    s record;
BEGIN
    PERFORM 1 FROM inventory_slots WHERE event_id = NEW.id ORDER BY slot FOR UPDATE;
    -- events_check_ticket_numbers ran before these locks; a purchase that was
    -- in flight then has committed now: look again.
    IF NEW.total_tickets < OLD.total_tickets AND EXISTS (
        SELECT 1 FROM tickets
        WHERE event_id = NEW.id AND voided_at IS NULL AND number > NEW.total_tickets
    ) THEN
        RAISE EXCEPTION USING
            ERRCODE = 'TK006',
            MESSAGE = format('event %s: total_tickets cannot go below a valid ticket number',
                             NEW.id);
    END IF;
    IF NEW.total_tickets < OLD.total_tickets
       OR NEW.max_per_buyer < coalesce(OLD.max_per_buyer, 2147483647) THEN
        PERFORM allocations_reclaim_lapsed(NEW.id, NULL, '{}');
    END IF;
    SELECT sum(reserved + purchased) INTO live FROM inventory_slots WHERE event_id = NEW.id;
    IF live > NEW.total_tickets THEN
        RAISE EXCEPTION USING
            ERRCODE = 'TK006',
            MESSAGE = format('event %s: total_tickets cannot go below the %s tickets live',
                             NEW.id, live);
    END IF;
    -- An event without a limit keeps no buyer counters: setting one counts
    -- every buyer's live quantity afresh, under the slot locks taken above.
    -- A change that read "no limit" and has not locked a slot yet counts
    -- itself once it has (inventory_count_late).
    IF NEW.max_per_buyer IS NOT NULL AND OLD.max_per_buyer IS NULL THEN
        DELETE FROM buyer_inventory WHERE event_id = NEW.id;
        INSERT INTO buyer_inventory (event_id, fingerprint, quantity)
        SELECT a.event_id, a.fingerprint, sum(a.quantity)::integer
        FROM allocations AS a
        WHERE a.event_id = NEW.id AND a.status IN ('reserved', 'purchased')
        GROUP BY a.event_id, a.fingerprint;
    END IF;
    IF NEW.max_per_buyer IS NOT NULL THEN
        SELECT max(quantity) INTO top_buyer FROM buyer_inventory WHERE event_id = NEW.id;
        IF top_buyer > NEW.max_per_buyer THEN
            RAISE EXCEPTION USING
                ERRCODE = 'TK006',
                MESSAGE = format('event %s: max_per_buyer cannot go below a buyer''s %s live tickets',
                                 NEW.id, top_buyer);
        END IF;
    END IF;

    IF NEW.total_tickets > OLD.total_tickets THEN
        UPDATE inventory_slots
        SET capacity = capacity + (NEW.total_tickets - OLD.total_tickets)
        WHERE event_id = NEW.id
          AND slot = (SELECT max(i.slot) FROM inventory_slots AS i WHERE i.event_id = NEW.id)
        RETURNING first_number, first_number + capacity - 1 INTO low, high;
        -- After an earlier cut, the last slot's range can now cover numbers
        -- that were never issued below ones that were: pool them, so that
        -- every number up to the highest issued in the range is valid or
        -- pooled, as ticket_numbers_take expects.
        INSERT INTO ticket_number_pool (event_id, number)
        SELECT NEW.id, n
        FROM generate_series(low, (SELECT coalesce(max(t.number), low - 1) FROM tickets AS t
                                   WHERE t.event_id = NEW.id
                                     AND t.number BETWEEN low AND high)) AS n
        WHERE NOT EXISTS (SELECT 1 FROM tickets AS t
                          WHERE t.event_id = NEW.id AND t.number = n AND t.voided_at IS NULL)
        ON CONFLICT DO NOTHING;
    ELSIF NEW.total_tickets < OLD.total_tickets THEN
        cut := OLD.total_tickets - NEW.total_tickets;
        FOR s IN
            SELECT slot, capacity, reserved, purchased FROM inventory_slots
            WHERE event_id = NEW.id ORDER BY slot DESC
        LOOP
            EXIT WHEN cut = 0;
            UPDATE inventory_slots
            SET capacity = s.capacity - least(cut, s.capacity),
                reserved = least(s.reserved, s.capacity - least(cut, s.capacity) - s.purchased)
            WHERE event_id = NEW.id AND slot = s.slot;
            spill := spill + s.reserved
                     - least(s.reserved, s.capacity - least(cut, s.capacity) - s.purchased);
            cut := cut - least(cut, s.capacity);
        END LOOP;
        FOR s IN
            SELECT slot, capacity - reserved - purchased AS room FROM inventory_slots
            WHERE event_id = NEW.id AND capacity - reserved - purchased > 0 ORDER BY slot
        LOOP
            EXIT WHEN spill = 0;
            UPDATE inventory_slots SET reserved = reserved + least(spill, s.room)
            WHERE event_id = NEW.id AND slot = s.slot;
            spill := spill - least(spill, s.room);
        END LOOP;
        -- Ranges stay consecutive: emptied slots start above the new total.
        UPDATE inventory_slots AS t
        SET first_number = r.first_number
        FROM (SELECT i.slot,
                     1 + coalesce(sum(i.capacity) OVER (ORDER BY i.slot ROWS BETWEEN UNBOUNDED
                                                       PRECEDING AND 1 PRECEDING), 0)
                         AS first_number
              FROM inventory_slots AS i WHERE i.event_id = NEW.id) AS r
        WHERE t.event_id = NEW.id AND t.slot = r.slot AND t.first_number <> r.first_number;
    END IF;
    UPDATE inventory_slots SET max_per_buyer = NEW.max_per_buyer
    WHERE event_id = NEW.id AND max_per_buyer IS DISTINCT FROM NEW.max_per_buyer;
    UPDATE event_inventory
    SET total_tickets = NEW.total_tickets, max_per_buyer = NEW.max_per_buyer
    WHERE event_id = NEW.id;
    RETURN NULL;
END
$$;

-- Ownership and privileges, as 0008 set them. CREATE OR REPLACE resets
-- SECURITY DEFINER and the pinned search_path: set them again.
ALTER FUNCTION inventory_count_buyers(bigint, integer, allocation_change[])
    OWNER TO ticketing_owner;
ALTER FUNCTION inventory_count_late(bigint, integer, integer, allocation_change[])
    OWNER TO ticketing_owner;
REVOKE EXECUTE ON FUNCTION
    inventory_count_buyers(bigint, integer, allocation_change[]),
    inventory_count_late(bigint, integer, integer, allocation_change[])
FROM PUBLIC;
ALTER FUNCTION allocations_apply_insert() SECURITY DEFINER SET search_path = public, pg_temp;
ALTER FUNCTION events_guard_capacity() SECURITY DEFINER SET search_path = public, pg_temp;
