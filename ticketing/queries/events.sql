-- Queries of ticketing.events. Each block starts with "-- name: <name>".

-- name: create_event
-- A new event; its event_inventory row and slots are created by a trigger,
-- which reads the slot count from ticketing.slots when set ('' = default).
INSERT INTO events (name, starts_at, total_tickets, max_per_buyer)
SELECT %(name)s, %(starts_at)s, %(total_tickets)s, %(max_per_buyer)s
FROM (SELECT set_config('ticketing.slots', %(slots)s, true)) AS settings
RETURNING id, name, starts_at, total_tickets, max_per_buyer, created_at, updated_at;

-- name: get_event
SELECT id, name, starts_at, total_tickets, max_per_buyer, created_at, updated_at
FROM events
WHERE id = %(event_id)s;

-- name: list_events
-- Events starting after a point in time (or all), in start order; uses events_starts_at_idx.
SELECT id, name, starts_at, total_tickets, max_per_buyer, created_at, updated_at
FROM events
WHERE starts_at > coalesce(%(starts_after)s::timestamptz, '-infinity')
ORDER BY starts_at, id
LIMIT %(limit)s;

-- name: get_availability
-- The slots' counters, less the holds that have lapsed but are not yet
-- marked expired (allocations_event_hold_expiry_idx).
SELECT i.event_id,
       i.total_tickets,
       slots.reserved - lapsed.quantity AS reserved,
       slots.purchased,
       i.total_tickets - slots.purchased - (slots.reserved - lapsed.quantity) AS available
FROM event_inventory AS i
CROSS JOIN LATERAL (
    SELECT sum(s.reserved)::integer AS reserved, sum(s.purchased)::integer AS purchased
    FROM inventory_slots AS s
    WHERE s.event_id = i.event_id
) AS slots
CROSS JOIN LATERAL (
    SELECT coalesce(sum(a.quantity), 0)::integer AS quantity
    FROM allocations AS a
    WHERE a.event_id = i.event_id
      AND a.status = 'reserved'
      AND a.expires_at <= statement_timestamp()
) AS lapsed
WHERE i.event_id = %(event_id)s;
