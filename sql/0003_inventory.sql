-- Inventory counters and the triggers that keep them: the database-level
-- guarantee that no event and no buyer is ever oversold, whoever writes.
-- depends: 0002_allocations

-- Fail fast instead of queueing behind live traffic; retry the deploy later.
SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '5min';

-- One row per event. reserved and purchased are the sums of quantity over the
-- event's allocations in those statuses (holds past expires_at included until
-- they are marked expired). The CHECK is the anti-oversell invariant: every
-- write that takes capacity updates this row, so it is checked under the row
-- lock, at any isolation level.
CREATE TABLE event_inventory (
    event_id bigint CONSTRAINT event_inventory_pkey PRIMARY KEY
        CONSTRAINT event_inventory_event_id_fkey REFERENCES events (id) ON DELETE CASCADE,
    total_tickets integer NOT NULL,
    max_per_buyer integer,
    reserved integer NOT NULL DEFAULT 0,
    purchased integer NOT NULL DEFAULT 0,
    CONSTRAINT event_inventory_counts_nonnegative CHECK (reserved >= 0 AND purchased >= 0),
    CONSTRAINT event_inventory_within_capacity CHECK (reserved + purchased <= total_tickets)
);

-- One row per buyer and event: the buyer's reserved plus purchased quantity.
-- Only written while the event's event_inventory row is locked, which
-- serialises all changes to one event's buyers.
CREATE TABLE buyer_inventory (
    event_id bigint NOT NULL
        CONSTRAINT buyer_inventory_event_id_fkey REFERENCES events (id) ON DELETE CASCADE,
    fingerprint text NOT NULL,
    quantity integer NOT NULL,
    CONSTRAINT buyer_inventory_pkey PRIMARY KEY (event_id, fingerprint),
    CONSTRAINT buyer_inventory_quantity_nonnegative CHECK (quantity >= 0)
);

-- An event's inventory row follows its capacity settings.
CREATE FUNCTION events_open_inventory() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO event_inventory (event_id, total_tickets, max_per_buyer)
    VALUES (NEW.id, NEW.total_tickets, NEW.max_per_buyer);
    RETURN NULL;
END
$$;

CREATE TRIGGER events_open_inventory
    AFTER INSERT ON events
    FOR EACH ROW EXECUTE FUNCTION events_open_inventory();

-- Marks an event's lapsed holds expired, skipping rows another transaction
-- holds (it is deciding their fate; waiting on them could deadlock). Called
-- with the event's event_inventory row already locked. Returns how many.
CREATE FUNCTION allocations_reclaim_lapsed(p_event_id bigint) RETURNS integer
LANGUAGE sql AS $$
    WITH lapsed AS (
        SELECT id
        FROM allocations
        WHERE event_id = p_event_id
          AND status = 'reserved'
          AND expires_at <= statement_timestamp()
        FOR UPDATE SKIP LOCKED
    ), expired AS (
        UPDATE allocations AS a
        SET status = 'expired'
        FROM lapsed
        WHERE a.id = lapsed.id
        RETURNING 1
    )
    SELECT count(*)::integer FROM expired
$$;

-- Lowering capacity never goes below what is live (lapsed holds are reclaimed
-- first), and lowering max_per_buyer never goes below a buyer's live quantity.
CREATE FUNCTION events_guard_capacity() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    inv event_inventory;
    top_buyer integer;
BEGIN
    SELECT * INTO inv FROM event_inventory WHERE event_id = NEW.id FOR UPDATE;
    IF inv.reserved + inv.purchased > NEW.total_tickets
       OR NEW.max_per_buyer < coalesce(OLD.max_per_buyer, 2147483647) THEN
        PERFORM allocations_reclaim_lapsed(NEW.id);
        SELECT * INTO inv FROM event_inventory WHERE event_id = NEW.id;
    END IF;
    IF inv.reserved + inv.purchased > NEW.total_tickets THEN
        RAISE EXCEPTION USING
            ERRCODE = 'TK006',
            MESSAGE = format('event %s: total_tickets cannot go below the %s tickets live', NEW.id,
                             inv.reserved + inv.purchased);
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
    UPDATE event_inventory
    SET total_tickets = NEW.total_tickets, max_per_buyer = NEW.max_per_buyer
    WHERE event_id = NEW.id;
    RETURN NULL;
END
$$;

CREATE TRIGGER events_guard_capacity
    AFTER UPDATE OF total_tickets, max_per_buyer ON events
    FOR EACH ROW EXECUTE FUNCTION events_guard_capacity();

-- One change to the counters: quantity moved into (positive) or out of
-- (negative) the reserved and purchased buckets of one buyer on one event.
CREATE TYPE inventory_delta AS (
    event_id bigint,
    fingerprint text,
    reserved integer,
    purchased integer
);

-- Applies a statement's changes to the counters. Events are locked in id
-- order, and an event's buyer rows only while its inventory row is locked, so
-- two statements never wait on each other in a cycle. When capacity or the
-- buyer limit looks short, the event's lapsed holds are reclaimed first, so a
-- hold that has lapsed never blocks a sale. Raises TK002 (buyer limit) before
-- TK001 (sold out); the CHECKs on both tables stay as the last word.
CREATE FUNCTION inventory_apply(deltas inventory_delta[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    ev record;
    inv event_inventory;
    over_buyer record;
    wanted bigint;
BEGIN
    FOR ev IN
        SELECT d.event_id, sum(d.reserved)::integer AS reserved, sum(d.purchased)::integer AS purchased
        FROM unnest(deltas) AS d
        GROUP BY d.event_id
        ORDER BY d.event_id
    LOOP
        SELECT * INTO inv FROM event_inventory WHERE event_id = ev.event_id FOR UPDATE;
        IF NOT FOUND THEN
            RAISE EXCEPTION USING
                ERRCODE = 'TK007',
                MESSAGE = format('event %s has no inventory row', ev.event_id);
        END IF;
        wanted := ev.reserved::bigint + ev.purchased;
        IF (wanted > 0 AND inv.reserved::bigint + inv.purchased + wanted > inv.total_tickets)
           OR (inv.max_per_buyer IS NOT NULL AND EXISTS (
                SELECT 1
                FROM unnest(deltas) AS d
                LEFT JOIN buyer_inventory AS b
                       ON b.event_id = d.event_id AND b.fingerprint = d.fingerprint
                WHERE d.event_id = ev.event_id
                  AND d.reserved + d.purchased > 0
                  AND coalesce(b.quantity, 0)::bigint + d.reserved + d.purchased > inv.max_per_buyer))
        THEN
            PERFORM allocations_reclaim_lapsed(ev.event_id);
            SELECT * INTO inv FROM event_inventory WHERE event_id = ev.event_id;
        END IF;

        -- A negative change always finds its row; a buyer's first hold inserts
        -- one. No other transaction can touch this event's buyer rows now.
        WITH change AS (
            SELECT d.fingerprint, sum(d.reserved + d.purchased) AS quantity
            FROM unnest(deltas) AS d
            WHERE d.event_id = ev.event_id
            GROUP BY d.fingerprint
            HAVING sum(d.reserved + d.purchased) <> 0
        ), updated AS (
            UPDATE buyer_inventory AS b
            SET quantity = b.quantity + change.quantity
            FROM change
            WHERE b.event_id = ev.event_id AND b.fingerprint = change.fingerprint
            RETURNING b.fingerprint, b.quantity
        ), inserted AS (
            INSERT INTO buyer_inventory (event_id, fingerprint, quantity)
            SELECT ev.event_id, change.fingerprint, change.quantity
            FROM change
            WHERE change.fingerprint NOT IN (SELECT fingerprint FROM updated)
            RETURNING fingerprint, quantity
        )
        SELECT fingerprint, quantity INTO over_buyer
        FROM (SELECT * FROM updated UNION ALL SELECT * FROM inserted) AS buyer
        WHERE quantity > inv.max_per_buyer
        LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION USING
                ERRCODE = 'TK002',
                MESSAGE = format('event %s allows %s tickets per buyer; this buyer would hold %s',
                                 ev.event_id, inv.max_per_buyer, over_buyer.quantity),
                DETAIL = format('max_per_buyer=%s', inv.max_per_buyer);
        END IF;

        IF wanted > 0 AND inv.reserved::bigint + inv.purchased + wanted > inv.total_tickets THEN
            RAISE EXCEPTION USING
                ERRCODE = 'TK001',
                MESSAGE = format('event %s is sold out: %s requested, %s available', ev.event_id,
                                 wanted,
                                 inv.total_tickets - inv.reserved - inv.purchased),
                DETAIL = format('available=%s', inv.total_tickets - inv.reserved - inv.purchased);
        END IF;

        UPDATE event_inventory
        SET reserved = reserved + ev.reserved, purchased = purchased + ev.purchased
        WHERE event_id = ev.event_id;
    END LOOP;
END
$$;

-- Each statement on allocations moves its rows' quantity between buckets.
CREATE FUNCTION allocations_count_inserted() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM inventory_apply(ARRAY(
        SELECT ROW(n.event_id, n.fingerprint,
                   coalesce(sum(n.quantity) FILTER (WHERE n.status = 'reserved'), 0)::integer,
                   coalesce(sum(n.quantity) FILTER (WHERE n.status = 'purchased'), 0)::integer
               )::inventory_delta
        FROM new_rows AS n
        GROUP BY n.event_id, n.fingerprint));
    RETURN NULL;
END
$$;

CREATE FUNCTION allocations_count_updated() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM inventory_apply(ARRAY(
        SELECT ROW(c.event_id, c.fingerprint, sum(c.reserved)::integer, sum(c.purchased)::integer)::inventory_delta
        FROM (
            SELECT n.event_id, n.fingerprint,
                   CASE WHEN n.status = 'reserved' THEN n.quantity ELSE 0 END AS reserved,
                   CASE WHEN n.status = 'purchased' THEN n.quantity ELSE 0 END AS purchased
            FROM new_rows AS n
            UNION ALL
            SELECT o.event_id, o.fingerprint,
                   CASE WHEN o.status = 'reserved' THEN -o.quantity ELSE 0 END,
                   CASE WHEN o.status = 'purchased' THEN -o.quantity ELSE 0 END
            FROM old_rows AS o
        ) AS c
        GROUP BY c.event_id, c.fingerprint
        HAVING sum(c.reserved) <> 0 OR sum(c.purchased) <> 0));
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

-- Events created before this migration get their inventory rows.
INSERT INTO event_inventory (event_id, total_tickets, max_per_buyer, reserved, purchased)
SELECT e.id, e.total_tickets, e.max_per_buyer,
       coalesce(sum(a.quantity) FILTER (WHERE a.status = 'reserved'), 0),
       coalesce(sum(a.quantity) FILTER (WHERE a.status = 'purchased'), 0)
FROM events AS e
LEFT JOIN allocations AS a ON a.event_id = e.id
GROUP BY e.id;

INSERT INTO buyer_inventory (event_id, fingerprint, quantity)
SELECT event_id, fingerprint, sum(quantity)
FROM allocations
WHERE status IN ('reserved', 'purchased')
GROUP BY event_id, fingerprint;
