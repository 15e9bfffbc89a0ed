-- Undo 0010_counters_for_limits: the functions as 0009 left them (0004's
-- events_guard_capacity), and buyer counters for every event again, counted
-- from the allocations while writers of allocations wait.
-- squawk-ignore-file ban-drop-function
SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '5min';

LOCK TABLE allocations IN SHARE ROW EXCLUSIVE MODE;

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

CREATE OR REPLACE FUNCTION allocations_apply_insert() RETURNS trigger
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

DROP FUNCTION inventory_count_late(bigint, integer, integer, allocation_change[]);
DROP FUNCTION inventory_count_buyers(bigint, integer, allocation_change[]);

ALTER FUNCTION allocations_apply_insert() SECURITY DEFINER SET search_path = public, pg_temp;
ALTER FUNCTION events_guard_capacity() SECURITY DEFINER SET search_path = public, pg_temp;

DELETE FROM buyer_inventory AS b
USING event_inventory AS i
WHERE i.event_id = b.event_id AND i.max_per_buyer IS NULL;
INSERT INTO buyer_inventory (event_id, fingerprint, quantity)
SELECT a.event_id, a.fingerprint, sum(a.quantity)::integer
FROM allocations AS a
JOIN event_inventory AS i ON i.event_id = a.event_id
WHERE i.max_per_buyer IS NULL AND a.status IN ('reserved', 'purchased')
GROUP BY a.event_id, a.fingerprint;
