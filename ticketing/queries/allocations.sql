-- Queries of ticketing.allocations. Each block starts with "-- name: <name>".
-- Capacity is taken and returned by the triggers on allocations, not here:
-- these statements only change an allocation's row.

-- name: reserve
-- A new hold. The insert trigger takes capacity from one of the event's
-- slots (reclaiming lapsed holds if short) or raises TK002/TK001. A key
-- already used returns no row. The statement sets its own lock timeout, so
-- it can run alone: one round trip.
INSERT INTO allocations (event_id, fingerprint, quantity, expires_at, idempotency_key)
SELECT %(event_id)s::bigint, %(fingerprint)s::text, %(quantity)s::integer,
       now() + %(hold)s::interval, %(idempotency_key)s::text
FROM (SELECT set_config('lock_timeout', %(lock_timeout)s, true)) AS settings
ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
RETURNING id, event_id, fingerprint, quantity, status, expires_at, idempotency_key,
          created_at, updated_at;

-- name: get_by_idempotency_key
SELECT id, event_id, fingerprint, quantity, status, expires_at, idempotency_key,
       created_at, updated_at
FROM allocations
WHERE idempotency_key = %(idempotency_key)s;

-- name: purchase
-- A live hold of this buyer becomes a purchase; the update trigger moves the
-- quantity from reserved to purchased and issues the tickets. Sets its own
-- lock timeout, like reserve.
UPDATE allocations
SET status = 'purchased'
FROM (SELECT set_config('lock_timeout', %(lock_timeout)s, true)) AS settings
WHERE id = %(allocation_id)s
  AND fingerprint = %(fingerprint)s
  AND status = 'reserved'
  AND expires_at > statement_timestamp()
RETURNING id, event_id, fingerprint, quantity, status, expires_at, idempotency_key,
          created_at, updated_at;

-- name: cancel
-- A hold (lapsed or not) or a purchase of this buyer is cancelled; the update
-- trigger returns the capacity and voids the tickets.
UPDATE allocations
SET status = 'cancelled'
FROM (SELECT set_config('lock_timeout', %(lock_timeout)s, true)) AS settings
WHERE id = %(allocation_id)s
  AND fingerprint = %(fingerprint)s
  AND status IN ('reserved', 'purchased')
RETURNING id, event_id, fingerprint, quantity, status, expires_at, idempotency_key,
          created_at, updated_at;

-- name: get_buyer_allocation
-- Why purchase or cancel changed nothing: the allocation as its buyer sees it.
SELECT id, event_id, fingerprint, quantity, status, expires_at, idempotency_key,
       created_at, updated_at
FROM allocations
WHERE id = %(allocation_id)s AND fingerprint = %(fingerprint)s;

-- name: get_allocation
SELECT id, event_id, fingerprint, quantity, status, expires_at, idempotency_key,
       created_at, updated_at
FROM allocations
WHERE id = %(allocation_id)s;

-- name: list_for_buyer
-- A buyer's allocations, newest first; uses allocations_fingerprint_idx.
SELECT id, event_id, fingerprint, quantity, status, expires_at, idempotency_key,
       created_at, updated_at
FROM allocations
WHERE fingerprint = %(fingerprint)s
  AND (%(event_id)s::bigint IS NULL OR event_id = %(event_id)s::bigint)
ORDER BY created_at DESC, id DESC;

-- name: expire_due
-- One sweeper batch: lapsed holds in expiry order, skipping rows that another
-- transaction holds; uses allocations_hold_expiry_idx. The update trigger
-- returns their capacity, locking each event's counters in id order.
WITH due AS (
    SELECT id
    FROM allocations
    WHERE status = 'reserved'
      AND expires_at <= statement_timestamp()
    ORDER BY expires_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE allocations AS a
SET status = 'expired'
FROM due, (SELECT set_config('lock_timeout', %(lock_timeout)s, true)) AS settings
WHERE a.id = due.id
RETURNING a.id;
