-- Invariant checks and status views of ticketing.admin. Each block starts
-- with "-- name: <name>". Every check_* query returns one text column: one
-- row per violation, none when the invariant holds.

-- name: check_event_capacity
-- Live quantity (purchased + holds not yet past expires_at) within total_tickets.
SELECT format('event %s: %s tickets live (%s purchased, %s held) but total_tickets is %s',
              e.id, s.purchased + s.live_reserved, s.purchased, s.live_reserved, e.total_tickets)
FROM events AS e
JOIN LATERAL (
    SELECT coalesce(sum(quantity) FILTER (WHERE status = 'purchased'), 0) AS purchased,
           coalesce(sum(quantity) FILTER (WHERE status = 'reserved'
                                            AND expires_at > statement_timestamp()), 0) AS live_reserved
    FROM allocations
    WHERE event_id = e.id
) AS s ON true
WHERE s.purchased + s.live_reserved > e.total_tickets
ORDER BY e.id;

-- name: check_buyer_limit
-- A buyer's live quantity within the event's max_per_buyer.
SELECT format('event %s: buyer %s holds %s live tickets, max_per_buyer is %s',
              e.id, a.fingerprint, sum(a.quantity), e.max_per_buyer)
FROM allocations AS a
JOIN events AS e ON e.id = a.event_id
WHERE e.max_per_buyer IS NOT NULL
  AND (a.status = 'purchased' OR (a.status = 'reserved' AND a.expires_at > statement_timestamp()))
GROUP BY e.id, e.max_per_buyer, a.fingerprint
HAVING sum(a.quantity) > e.max_per_buyer
ORDER BY e.id, a.fingerprint;

-- name: check_tickets_issued
-- A purchased allocation has exactly quantity valid tickets; any other has none.
SELECT format('allocation %s (%s, quantity %s) has %s valid tickets',
              a.id, a.status, a.quantity, coalesce(t.valid, 0))
FROM allocations AS a
LEFT JOIN (
    SELECT allocation_id, count(*) AS valid
    FROM tickets
    WHERE voided_at IS NULL
    GROUP BY allocation_id
) AS t ON t.allocation_id = a.id
WHERE coalesce(t.valid, 0) <> CASE WHEN a.status = 'purchased' THEN a.quantity ELSE 0 END
ORDER BY a.id;

-- name: check_ticket_numbers
-- Valid ticket numbers unique per event and within 1..total_tickets.
SELECT format('event %s: valid ticket number %s %s', t.event_id, t.number,
              CASE WHEN count(*) > 1 THEN format('is used %s times', count(*))
                   ELSE format('is outside 1..%s', e.total_tickets) END)
FROM tickets AS t
JOIN events AS e ON e.id = t.event_id
WHERE t.voided_at IS NULL
GROUP BY t.event_id, t.number, e.total_tickets
HAVING count(*) > 1 OR t.number NOT BETWEEN 1 AND e.total_tickets
ORDER BY t.event_id, t.number;

-- name: check_event_counters
-- The slots' counters equal the sums of the event's allocations, and the
-- inventory settings (and each slot's max_per_buyer copy) equal the event's.
SELECT format('event %s: slots say %s reserved, %s purchased, total %s, max %s; '
              'allocations say %s reserved, %s purchased; event says total %s, max %s',
              e.id, coalesce(sl.reserved, 0), coalesce(sl.purchased, 0),
              coalesce(sl.capacity::text, '-'), coalesce(i.max_per_buyer::text, '-'),
              s.reserved, s.purchased, e.total_tickets, coalesce(e.max_per_buyer::text, '-'))
FROM events AS e
LEFT JOIN event_inventory AS i ON i.event_id = e.id
LEFT JOIN LATERAL (
    SELECT sum(reserved) AS reserved, sum(purchased) AS purchased, sum(capacity) AS capacity,
           count(*) AS slots, bool_and(max_per_buyer IS NOT DISTINCT FROM e.max_per_buyer) AS max_ok
    FROM inventory_slots
    WHERE event_id = e.id
) AS sl ON true
JOIN LATERAL (
    SELECT coalesce(sum(quantity) FILTER (WHERE status = 'reserved'), 0) AS reserved,
           coalesce(sum(quantity) FILTER (WHERE status = 'purchased'), 0) AS purchased
    FROM allocations
    WHERE event_id = e.id
) AS s ON true
WHERE i.event_id IS NULL
   OR sl.slots IS DISTINCT FROM i.slot_count::bigint
   OR (sl.reserved, sl.purchased, sl.capacity, i.total_tickets)
      IS DISTINCT FROM (s.reserved, s.purchased, e.total_tickets::bigint, e.total_tickets)
   OR i.max_per_buyer IS DISTINCT FROM e.max_per_buyer
   OR NOT sl.max_ok
ORDER BY e.id;

-- name: check_slot_ranges
-- Slot s owns ticket numbers first_number .. first_number + capacity - 1, the
-- ranges consecutive from 1; its purchased count equals its valid tickets;
-- every number of its range up to the highest issued there is on a valid
-- ticket or in ticket_number_pool (where new tickets get their numbers).
SELECT format('event %s slot %s: numbers %s..%s (expected to start at %s), purchased %s, '
              'valid tickets in range %s, pooled %s, highest issued %s',
              s.event_id, s.slot, s.first_number, s.first_number + s.capacity - 1,
              s.expected_first, s.purchased, t.valid, p.pooled, coalesce(t.high::text, '-'))
FROM (
    SELECT i.*,
           1 + coalesce(sum(i.capacity) OVER (PARTITION BY i.event_id ORDER BY i.slot
                                             ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING),
                        0) AS expected_first
    FROM inventory_slots AS i
) AS s
CROSS JOIN LATERAL (
    SELECT count(*) FILTER (WHERE voided_at IS NULL) AS valid, max(number) AS high
    FROM tickets
    WHERE event_id = s.event_id
      AND number BETWEEN s.first_number AND s.first_number + s.capacity - 1
) AS t
CROSS JOIN LATERAL (
    SELECT count(*) AS pooled
    FROM ticket_number_pool
    WHERE event_id = s.event_id
      AND number BETWEEN s.first_number AND least(t.high, s.first_number + s.capacity - 1)
) AS p
WHERE s.first_number <> s.expected_first
   OR s.purchased <> t.valid
   OR t.valid + p.pooled <> coalesce(t.high - s.first_number + 1, 0)
ORDER BY s.event_id, s.slot;

-- name: check_buyer_counters
-- buyer_inventory equals each buyer's reserved plus purchased quantity.
SELECT format('event %s: buyer %s counted %s, allocations say %s',
              coalesce(b.event_id, s.event_id), coalesce(b.fingerprint, s.fingerprint),
              coalesce(b.quantity, 0), coalesce(s.quantity, 0))
FROM buyer_inventory AS b
FULL JOIN (
    SELECT event_id, fingerprint, sum(quantity) AS quantity
    FROM allocations
    WHERE status IN ('reserved', 'purchased')
    GROUP BY event_id, fingerprint
) AS s ON s.event_id = b.event_id AND s.fingerprint = b.fingerprint
WHERE coalesce(b.quantity, 0) <> coalesce(s.quantity, 0)
ORDER BY 1;

-- name: check_lapsed_not_counted
-- Availability never counts a hold past its expires_at as reserved.
SELECT format('event %s: availability reports %s reserved, live holds add up to %s',
              e.id, sl.reserved - lapsed.quantity, live.quantity)
FROM events AS e
JOIN LATERAL (
    SELECT coalesce(sum(reserved), 0) AS reserved FROM inventory_slots WHERE event_id = e.id
) AS sl ON true
JOIN LATERAL (
    SELECT coalesce(sum(quantity), 0) AS quantity
    FROM allocations
    WHERE event_id = e.id AND status = 'reserved' AND expires_at <= statement_timestamp()
) AS lapsed ON true
JOIN LATERAL (
    SELECT coalesce(sum(quantity), 0) AS quantity
    FROM allocations
    WHERE event_id = e.id AND status = 'reserved' AND expires_at > statement_timestamp()
) AS live ON true
WHERE sl.reserved - lapsed.quantity <> live.quantity
ORDER BY e.id;

-- name: status
-- Events with their availability, as get_availability computes it.
SELECT e.id, e.name, e.starts_at, i.total_tickets,
       sl.reserved - lapsed.quantity AS reserved,
       sl.purchased,
       i.total_tickets - sl.purchased - (sl.reserved - lapsed.quantity) AS available
FROM events AS e
JOIN event_inventory AS i ON i.event_id = e.id
CROSS JOIN LATERAL (
    SELECT sum(s.reserved)::integer AS reserved, sum(s.purchased)::integer AS purchased
    FROM inventory_slots AS s
    WHERE s.event_id = e.id
) AS sl
CROSS JOIN LATERAL (
    SELECT coalesce(sum(a.quantity), 0)::integer AS quantity
    FROM allocations AS a
    WHERE a.event_id = e.id AND a.status = 'reserved' AND a.expires_at <= statement_timestamp()
) AS lapsed
WHERE %(event_id)s::bigint IS NULL OR e.id = %(event_id)s::bigint
ORDER BY e.starts_at, e.id
LIMIT %(limit)s;
