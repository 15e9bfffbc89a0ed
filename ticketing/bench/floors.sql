-- The design's floors: pgbench scripts of the least work each operation must
-- do on the layer's tables (inventory_slots, allocations, tickets), run with
-- session_replication_role = replica so that no trigger (and no foreign key)
-- fires. Each block starts with "-- name: <name>". Variables: event_id,
-- base and per_client (the pre-made holds), n (a per-client counter from 0),
-- limit (expire batch).

-- name: reserve_floor
-- One statement: claim a slot with room that nobody has locked, insert the hold.
\set quantity random(1, 4)
\set nonce random(1, 2000000000)
WITH slot AS (
    SELECT slot FROM inventory_slots
    WHERE event_id = CAST(:event_id AS bigint)
      AND capacity - reserved - purchased >= CAST(:quantity AS integer)
    ORDER BY random()
    LIMIT 1
    FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE inventory_slots AS s SET reserved = s.reserved + CAST(:quantity AS integer)
    FROM slot
    WHERE s.event_id = CAST(:event_id AS bigint) AND s.slot = slot.slot
    RETURNING s.event_id
)
INSERT INTO allocations (event_id, fingerprint, quantity, expires_at)
SELECT event_id, 'floor-' || CAST(:client_id AS text) || '-' || CAST(:nonce AS text),
       CAST(:quantity AS integer), now() + interval '10 minutes'
FROM claimed
RETURNING id;

-- name: purchase_floor
-- Mark the hold purchased, move its quantity from reserved to purchased in a
-- slot that holds that much, insert its tickets from that slot's range.
\set k :client_id * :per_client + :n
\set n :n + 1
\set aid :base + :k
WITH hold AS (
    SELECT id, event_id, quantity FROM allocations
    WHERE id = CAST(:aid AS bigint) AND fingerprint = 'bench-h-' || CAST(:k AS text)
      AND status = 'reserved' AND expires_at > statement_timestamp()
), slot AS (
    SELECT s.event_id, s.slot
    FROM inventory_slots AS s JOIN hold ON s.event_id = hold.event_id
    WHERE s.reserved >= hold.quantity
    LIMIT 1
    FOR UPDATE OF s SKIP LOCKED
), bought AS (
    UPDATE allocations AS a SET status = 'purchased'
    FROM hold, slot
    WHERE a.id = hold.id
    RETURNING a.id, a.event_id, a.quantity
), moved AS (
    UPDATE inventory_slots AS s
    SET reserved = s.reserved - bought.quantity, purchased = s.purchased + bought.quantity
    FROM bought, slot
    WHERE s.event_id = slot.event_id AND s.slot = slot.slot
    RETURNING s.first_number + s.purchased - bought.quantity AS first_ticket,
              bought.id, bought.event_id, bought.quantity
)
INSERT INTO tickets (event_id, allocation_id, number)
SELECT moved.event_id, moved.id, moved.first_ticket + g
FROM moved, generate_series(0, moved.quantity - 1) AS g;

-- name: cancel_floor
-- Mark the hold cancelled and return its quantity to a slot that holds that much.
\set k :client_id * :per_client + :n
\set n :n + 1
\set aid :base + :k
WITH hold AS (
    SELECT id, event_id, quantity FROM allocations
    WHERE id = CAST(:aid AS bigint) AND fingerprint = 'bench-h-' || CAST(:k AS text)
      AND status = 'reserved'
), slot AS (
    SELECT s.event_id, s.slot
    FROM inventory_slots AS s JOIN hold ON s.event_id = hold.event_id
    WHERE s.reserved >= hold.quantity
    LIMIT 1
    FOR UPDATE OF s SKIP LOCKED
), cancelled AS (
    UPDATE allocations AS a SET status = 'cancelled'
    FROM hold, slot
    WHERE a.id = hold.id
    RETURNING a.quantity
)
UPDATE inventory_slots AS s SET reserved = s.reserved - cancelled.quantity
FROM cancelled, slot
WHERE s.event_id = slot.event_id AND s.slot = slot.slot;

-- name: expire_floor
-- One sweeper batch: lapsed holds in expiry order, marked expired in bulk,
-- their quantity returned to their event's slot (the expire events have one).
WITH due AS (
    SELECT id FROM allocations
    WHERE status = 'reserved' AND expires_at <= statement_timestamp()
    ORDER BY expires_at
    LIMIT CAST(:limit AS integer)
    FOR UPDATE SKIP LOCKED
), expired AS (
    UPDATE allocations AS a SET status = 'expired'
    FROM due
    WHERE a.id = due.id
    RETURNING a.event_id, a.quantity
), returned AS (
    SELECT event_id, sum(quantity) AS quantity FROM expired GROUP BY event_id
)
UPDATE inventory_slots AS s SET reserved = s.reserved - returned.quantity
FROM returned
WHERE s.event_id = returned.event_id AND s.slot = 0;
