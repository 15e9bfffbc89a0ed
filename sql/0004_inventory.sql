-- Inventory: an event's capacity split over slot rows, buyer counters, and the
-- triggers on allocations that take and return capacity, enforce buyer
-- limits and issue or void tickets. This is the database-level guarantee that
-- no event and no buyer is ever oversold, whoever writes.
-- depends: 0003_tickets

-- Fail fast instead of queueing behind live traffic; retry the deploy later.
SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '5min';

-- An event's inventory settings, copied from events by trigger. slot_count
-- is how many inventory_slots rows share its capacity.
CREATE TABLE event_inventory (
    event_id bigint CONSTRAINT event_inventory_pkey PRIMARY KEY
        CONSTRAINT event_inventory_event_id_fkey REFERENCES events (id) ON DELETE CASCADE,
    total_tickets integer NOT NULL,
    max_per_buyer integer,
    slot_count integer NOT NULL,
    CONSTRAINT event_inventory_slot_count_range CHECK (slot_count BETWEEN 1 AND 64)
);

-- An event's capacity, split over slot_count rows. Each row counts the
-- tickets held (reserved, holds past expires_at included until they are
-- marked expired) and sold (purchased) out of its own capacity, and its CHECK
-- is the anti-oversell invariant, local to one row: a buyer locks one slot,
-- not the event, so buyers of one event do not queue on one row. The slots'
-- capacities add up to total_tickets, and slot s owns the ticket numbers
-- first_number .. first_number + capacity - 1 (consecutive ranges from 1):
-- its purchased count equals its valid tickets. max_per_buyer is a copy
-- that a reservation reads under its slot lock. Half-full pages keep the
-- frequent updates HOT.
CREATE TABLE inventory_slots (
    event_id bigint NOT NULL
        CONSTRAINT inventory_slots_event_id_fkey REFERENCES events (id) ON DELETE CASCADE,
    slot integer NOT NULL,
    first_number integer NOT NULL,
    capacity integer NOT NULL,
    reserved integer NOT NULL DEFAULT 0,
    purchased integer NOT NULL DEFAULT 0,
    max_per_buyer integer,
    CONSTRAINT inventory_slots_pkey PRIMARY KEY (event_id, slot),
    CONSTRAINT inventory_slots_slot_range CHECK (slot BETWEEN 0 AND 63),
    CONSTRAINT inventory_slots_first_number_positive CHECK (first_number >= 1),
    CONSTRAINT inventory_slots_counts_nonnegative
        CHECK (capacity >= 0 AND reserved >= 0 AND purchased >= 0),
    CONSTRAINT inventory_slots_within_capacity CHECK (reserved + purchased <= capacity)
) WITH (fillfactor = 50);

-- One row per buyer and event: the buyer's reserved plus purchased quantity.
CREATE TABLE buyer_inventory (
    event_id bigint NOT NULL
        CONSTRAINT buyer_inventory_event_id_fkey REFERENCES events (id) ON DELETE CASCADE,
    fingerprint text NOT NULL,
    quantity integer NOT NULL,
    CONSTRAINT buyer_inventory_pkey PRIMARY KEY (event_id, fingerprint),
    CONSTRAINT buyer_inventory_quantity_nonnegative CHECK (quantity >= 0)
);

-- How many slots an event gets by default: one per 64 tickets, at most 16
-- (one for events under 128 tickets). More slots let more buyers reserve at
-- once; fewer keep capacity less fragmented near sell-out.
CREATE FUNCTION inventory_slot_count(p_total integer) RETURNS integer
LANGUAGE sql IMMUTABLE AS $$
    SELECT least(16, greatest(1, p_total / 64))
$$;

-- Splits p_total over p_slots new slot rows, as evenly as possible.
CREATE FUNCTION inventory_layout(p_event_id bigint, p_total integer, p_slots integer,
                                 p_max_per_buyer integer) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO inventory_slots (event_id, slot, first_number, capacity, max_per_buyer)
    SELECT p_event_id, s,
           1 + s * (p_total / p_slots) + least(s, p_total % p_slots),
           p_total / p_slots + CASE WHEN s < p_total % p_slots THEN 1 ELSE 0 END,
           p_max_per_buyer
    FROM generate_series(0, p_slots - 1) AS s
$$;

-- A new event gets its inventory settings and slots.
CREATE FUNCTION events_open_inventory() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    slots integer := inventory_slot_count(NEW.total_tickets);
BEGIN
    INSERT INTO event_inventory (event_id, total_tickets, max_per_buyer, slot_count)
    VALUES (NEW.id, NEW.total_tickets, NEW.max_per_buyer, slots);
    PERFORM inventory_layout(NEW.id, NEW.total_tickets, slots, NEW.max_per_buyer);
    RETURN NULL;
END
$$;

CREATE TRIGGER events_open_inventory
    AFTER INSERT ON events
    FOR EACH ROW EXECUTE FUNCTION events_open_inventory();

-- Re-splits an event's capacity over p_slots slots; only before its first
-- allocation (ticketing.events.create_event(slots=...) calls it).
CREATE FUNCTION inventory_resplit(p_event_id bigint, p_slots integer) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    inv event_inventory;
BEGIN
    SELECT * INTO inv FROM event_inventory WHERE event_id = p_event_id FOR UPDATE;
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

-- Marks lapsed holds expired: one event's, or one buyer's on that event.
-- Skips holds (and buyer counters) another transaction has locked: it is
-- deciding their fate, and waiting on it could deadlock. Also skips p_skip,
-- the rows of the statement being counted (a hold inserted already lapsed is
-- not counted yet). Returns how many.
CREATE FUNCTION allocations_reclaim_lapsed(p_event_id bigint, p_fingerprint text,
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

-- Takes p_quantity tickets of an event into the reserved bucket of its slots
-- and returns the max_per_buyer copy read under the slot lock.
--   1. One slot with room that nobody has locked (SKIP LOCKED), picked at
--      random so concurrent buyers spread over the slots: one statement.
--   2. Slots with room exist but all are locked: wait for one of them.
--   3. No single slot has room (near sell-out): lock every slot of the event
--      in slot order, reclaim lapsed holds if the event is short, and take
--      from several slots. So a request never gets TK001 (sold out) while
--      the event has p_quantity tickets free.
CREATE FUNCTION inventory_take(p_event_id bigint, p_quantity integer, p_skip bigint[])
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

-- Moves p_quantity tickets of an event out of one bucket of its slots:
-- from reserved to purchased (p_purchase) or out of reserved (a hold ends).
-- Reserved tickets are interchangeable, so any slots will do: one unlocked
-- slot holding enough if there is one, else every slot is locked in slot
-- order and the reserved tickets are taken from as many as needed. Returns the
-- slots used, with their ticket number ranges and how many each gave.
CREATE FUNCTION inventory_move(p_event_id bigint, p_quantity integer, p_purchase boolean)
RETURNS TABLE (slot integer, first_number integer, last_number integer, quantity integer)
LANGUAGE plpgsql AS $$
DECLARE
    remaining integer := p_quantity;
    chosen integer;
    s record;
    part integer;
BEGIN
    -- In a subtransaction, for the reason given in inventory_take.
    BEGIN
        SELECT i.slot INTO chosen
        FROM inventory_slots AS i
        WHERE i.event_id = p_event_id AND i.reserved >= p_quantity
        ORDER BY random()
        LIMIT 1
        FOR UPDATE SKIP LOCKED;
        IF NOT FOUND THEN
            RAISE EXCEPTION USING ERRCODE = 'TK900';
        END IF;
        RETURN QUERY
            UPDATE inventory_slots AS t
            SET reserved = t.reserved - p_quantity,
                purchased = t.purchased + CASE WHEN p_purchase THEN p_quantity ELSE 0 END
            WHERE t.event_id = p_event_id AND t.slot = chosen
            RETURNING t.slot, t.first_number, t.first_number + t.capacity - 1, p_quantity;
        RETURN;
    EXCEPTION WHEN SQLSTATE 'TK900' THEN
        NULL;
    END;
    -- Lock every slot first, in slot order, then read them: a slot that
    -- looked empty when the loop started may have been given holds since.
    PERFORM 1 FROM inventory_slots AS i WHERE i.event_id = p_event_id ORDER BY i.slot FOR UPDATE;
    FOR s IN
        SELECT i.slot, i.reserved, i.first_number, i.capacity
        FROM inventory_slots AS i
        WHERE i.event_id = p_event_id AND i.reserved > 0
        ORDER BY i.slot
    LOOP
        part := least(s.reserved, remaining);
        UPDATE inventory_slots AS t
        SET reserved = t.reserved - part,
            purchased = t.purchased + CASE WHEN p_purchase THEN part ELSE 0 END
        WHERE t.event_id = p_event_id AND t.slot = s.slot;
        slot := s.slot;
        first_number := s.first_number;
        last_number := s.first_number + s.capacity - 1;
        quantity := part;
        RETURN NEXT;
        remaining := remaining - part;
        EXIT WHEN remaining = 0;
    END LOOP;
    IF remaining > 0 THEN
        RAISE EXCEPTION USING
            ERRCODE = 'TK007',
            MESSAGE = format('event %s: slots hold %s fewer reserved tickets than its holds',
                             p_event_id, remaining);
    END IF;
END
$$;

-- Lowering capacity never goes below what is live (lapsed holds are
-- reclaimed first) and lowering max_per_buyer never below a buyer's live
-- quantity. Every slot is locked, in slot order, so no reservation is half
-- way. Capacity added goes to the last slot; capacity removed comes off the
-- top slots (valid tickets never sit above the new total: see
-- events_check_ticket_numbers), and holds counted there move down to slots
-- with room.
CREATE FUNCTION events_guard_capacity() RETURNS trigger
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

CREATE TRIGGER events_guard_capacity
    AFTER UPDATE OF total_tickets, max_per_buyer ON events
    FOR EACH ROW EXECUTE FUNCTION events_guard_capacity();

-- One allocation row changed by a statement (old_status NULL for an insert).
CREATE TYPE allocation_change AS (
    id bigint,
    event_id bigint,
    fingerprint text,
    old_status text,
    new_status text,
    old_quantity integer,
    new_quantity integer
);

-- Applies a statement's allocation changes, event by event in id order:
--   1. buyer counters, in fingerprint order: a buyer going over max_per_buyer
--      first gets their own lapsed holds reclaimed, then TK002;
--   2. capacity: holds taken (inventory_take, TK001 when short) or returned;
--      the buyer limit is checked again against the copy read under the slot
--      lock, in case max_per_buyer was lowered meanwhile;
--   3. purchases: quantity moved from reserved to purchased and the tickets
--      issued from the ticket numbers of the slots it came from;
--   4. cancelled purchases: tickets voided, their numbers pooled, their
--      slots' purchased counts returned.
-- Lock order: buyer rows, then slot rows; waits for slots are in slot order.
CREATE FUNCTION inventory_apply(changes allocation_change[]) RETURNS void
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
        IF ev.refunds THEN
            FOR part IN
                SELECT s.slot, count(*)::integer AS tickets
                FROM tickets AS t
                JOIN inventory_slots AS s
                  ON s.event_id = t.event_id
                 AND t.number BETWEEN s.first_number AND s.first_number + s.capacity - 1
                WHERE t.event_id = ev.event_id AND t.voided_at IS NULL
                  AND t.allocation_id IN (SELECT c.id FROM unnest(changes) AS c
                                          WHERE c.event_id = ev.event_id
                                            AND c.old_status = 'purchased'
                                            AND c.new_status = 'cancelled')
                GROUP BY s.slot
                ORDER BY s.slot
            LOOP
                UPDATE inventory_slots SET purchased = purchased - part.tickets
                WHERE event_id = ev.event_id AND slot = part.slot;
            END LOOP;
            WITH voided AS (
                UPDATE tickets AS t
                SET voided_at = greatest(now(), t.created_at)
                WHERE t.event_id = ev.event_id AND t.voided_at IS NULL
                  AND t.allocation_id IN (SELECT c.id FROM unnest(changes) AS c
                                          WHERE c.event_id = ev.event_id
                                            AND c.old_status = 'purchased'
                                            AND c.new_status = 'cancelled')
                RETURNING t.event_id, t.number
            )
            INSERT INTO ticket_number_pool (event_id, number)
            SELECT event_id, number FROM voided;
        END IF;
    END LOOP;
END
$$;

-- Each statement on allocations hands its changed rows to inventory_apply.
CREATE FUNCTION allocations_count_inserted() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM inventory_apply(ARRAY(
        SELECT ROW(n.id, n.event_id, n.fingerprint, NULL, n.status, 0, n.quantity)::allocation_change
        FROM new_rows AS n));
    RETURN NULL;
END
$$;

CREATE FUNCTION allocations_count_updated() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM inventory_apply(ARRAY(
        SELECT ROW(n.id, n.event_id, n.fingerprint, o.status, n.status, o.quantity,
                   n.quantity)::allocation_change
        FROM new_rows AS n
        JOIN old_rows AS o ON o.id = n.id
        WHERE o.status <> n.status OR o.quantity <> n.quantity));
    RETURN NULL;
END
$$;

CREATE TRIGGER allocations_count_inserted
    AFTER INSERT ON allocations
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION allocations_count_inserted();

CREATE TRIGGER allocations_count_updated
    AFTER UPDATE ON allocations
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION allocations_count_updated();

-- An event's counters in one row, summed over its slots: for psql users,
-- and tests (the layer itself reads the slots directly).
CREATE VIEW event_counters AS
SELECT i.event_id, i.total_tickets, i.max_per_buyer, i.slot_count,
       coalesce(sum(s.reserved), 0)::integer AS reserved,
       coalesce(sum(s.purchased), 0)::integer AS purchased
FROM event_inventory AS i
LEFT JOIN inventory_slots AS s ON s.event_id = i.event_id
GROUP BY i.event_id;

-- Events created before this migration get their inventory. Allocations
-- already there are counted into one slot per event (tickets issued before
-- this migration keep their numbers within 1..total_tickets).
INSERT INTO event_inventory (event_id, total_tickets, max_per_buyer, slot_count)
SELECT id, total_tickets, max_per_buyer, 1 FROM events;

INSERT INTO inventory_slots (event_id, slot, first_number, capacity, reserved, purchased,
                             max_per_buyer)
SELECT e.id, 0, 1, e.total_tickets,
       coalesce(sum(a.quantity) FILTER (WHERE a.status = 'reserved'), 0),
       coalesce(sum(a.quantity) FILTER (WHERE a.status = 'purchased'), 0),
       e.max_per_buyer
FROM events AS e
LEFT JOIN allocations AS a ON a.event_id = e.id
GROUP BY e.id;

INSERT INTO buyer_inventory (event_id, fingerprint, quantity)
SELECT event_id, fingerprint, sum(quantity)
FROM allocations
WHERE status IN ('reserved', 'purchased')
GROUP BY event_id, fingerprint;
