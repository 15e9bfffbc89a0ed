-- Invariant checks and status views of ticketing.admin. Each block starts
-- with "-- name: <name>". Every check_* query returns one text column: one
-- row per violation, none when the invariant holds.
--
-- Every check takes %(event_id)s: NULL checks the whole database, an id
-- checks that event's rows only, read through the indexes that lead with
-- event_id (or, for the ledger, allocation_history_allocation_id_idx from
-- the event's allocations), so its cost follows the event's size. The
-- functions run them unprepared: each plan is made for the value given, and
-- "%(event_id)s IS NULL OR ..." folds away.

-- name: check_event_capacity
-- Live quantity (purchased + holds not yet past expires_at) within total_tickets.
SELECT format('event %%s: %%s tickets live (%%s purchased, %%s held) but total_tickets is %%s',
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
  AND (%(event_id)s::bigint IS NULL OR e.id = %(event_id)s::bigint)
ORDER BY e.id;

-- name: check_buyer_limit
-- A buyer's live quantity within the event's max_per_buyer.
SELECT format('event %%s: buyer %%s holds %%s live tickets, max_per_buyer is %%s',
              e.id, a.fingerprint, sum(a.quantity), e.max_per_buyer)
FROM allocations AS a
JOIN events AS e ON e.id = a.event_id
WHERE e.max_per_buyer IS NOT NULL
  AND (%(event_id)s::bigint IS NULL OR a.event_id = %(event_id)s::bigint)
  AND (a.status = 'purchased' OR (a.status = 'reserved' AND a.expires_at > statement_timestamp()))
GROUP BY e.id, e.max_per_buyer, a.fingerprint
HAVING sum(a.quantity) > e.max_per_buyer
ORDER BY e.id, a.fingerprint;

-- name: check_tickets_issued
-- A purchased allocation has exactly quantity valid tickets; any other has none.
SELECT format('allocation %%s (%%s, quantity %%s) has %%s valid tickets',
              a.id, a.status, a.quantity, coalesce(t.valid, 0))
FROM allocations AS a
LEFT JOIN (
    SELECT allocation_id, count(*) AS valid
    FROM tickets
    WHERE voided_at IS NULL
      AND (%(event_id)s::bigint IS NULL OR event_id = %(event_id)s::bigint)
    GROUP BY allocation_id
) AS t ON t.allocation_id = a.id
WHERE (%(event_id)s::bigint IS NULL OR a.event_id = %(event_id)s::bigint)
  AND coalesce(t.valid, 0) <> CASE WHEN a.status = 'purchased' THEN a.quantity ELSE 0 END
ORDER BY a.id;

-- name: check_ticket_numbers
-- Valid ticket numbers unique per event and within 1..total_tickets.
SELECT format('event %%s: valid ticket number %%s %%s', t.event_id, t.number,
              CASE WHEN count(*) > 1 THEN format('is used %%s times', count(*))
                   ELSE format('is outside 1..%%s', e.total_tickets) END)
FROM tickets AS t
JOIN events AS e ON e.id = t.event_id
WHERE t.voided_at IS NULL
  AND (%(event_id)s::bigint IS NULL OR t.event_id = %(event_id)s::bigint)
GROUP BY t.event_id, t.number, e.total_tickets
HAVING count(*) > 1 OR t.number NOT BETWEEN 1 AND e.total_tickets
ORDER BY t.event_id, t.number;

-- name: check_event_counters
-- The slots' counters equal the sums of the event's allocations, and the
-- inventory settings (and each slot's max_per_buyer copy) equal the event's.
SELECT format('event %%s: slots say %%s reserved, %%s purchased, total %%s, max %%s; '
              'allocations say %%s reserved, %%s purchased; event says total %%s, max %%s',
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
WHERE (%(event_id)s::bigint IS NULL OR e.id = %(event_id)s::bigint)
  AND (i.event_id IS NULL
   OR sl.slots IS DISTINCT FROM i.slot_count::bigint
   OR (sl.reserved, sl.purchased, sl.capacity, i.total_tickets)
      IS DISTINCT FROM (s.reserved, s.purchased, e.total_tickets::bigint, e.total_tickets)
   OR i.max_per_buyer IS DISTINCT FROM e.max_per_buyer
   OR NOT sl.max_ok)
ORDER BY e.id;

-- name: check_slot_ranges
-- Slot s owns ticket numbers first_number .. first_number + capacity - 1, the
-- ranges consecutive from 1; its purchased count equals its valid tickets;
-- every number of its range up to the highest issued there is on a valid
-- ticket or in ticket_number_pool (where new tickets get their numbers).
SELECT format('event %%s slot %%s: numbers %%s..%%s (expected to start at %%s), purchased %%s, '
              'valid tickets in range %%s, pooled %%s, highest issued %%s',
              s.event_id, s.slot, s.first_number, s.first_number + s.capacity - 1,
              s.expected_first, s.purchased, t.valid, p.pooled, coalesce(t.high::text, '-'))
FROM (
    SELECT i.*,
           1 + coalesce(sum(i.capacity) OVER (PARTITION BY i.event_id ORDER BY i.slot
                                             ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING),
                        0) AS expected_first
    FROM inventory_slots AS i
    WHERE %(event_id)s::bigint IS NULL OR i.event_id = %(event_id)s::bigint
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
-- For an event with max_per_buyer, buyer_inventory equals each buyer's
-- reserved plus purchased quantity (events without a limit keep no counters).
SELECT format('event %%s: buyer %%s counted %%s, allocations say %%s',
              coalesce(b.event_id, s.event_id), coalesce(b.fingerprint, s.fingerprint),
              coalesce(b.quantity, 0), coalesce(s.quantity, 0))
FROM (
    SELECT bi.event_id, bi.fingerprint, bi.quantity
    FROM buyer_inventory AS bi
    JOIN event_inventory AS i ON i.event_id = bi.event_id
    WHERE i.max_per_buyer IS NOT NULL
      AND (%(event_id)s::bigint IS NULL OR bi.event_id = %(event_id)s::bigint)
) AS b
FULL JOIN (
    SELECT a.event_id, a.fingerprint, sum(a.quantity) AS quantity
    FROM allocations AS a
    JOIN event_inventory AS i ON i.event_id = a.event_id
    WHERE a.status IN ('reserved', 'purchased') AND i.max_per_buyer IS NOT NULL
      AND (%(event_id)s::bigint IS NULL OR a.event_id = %(event_id)s::bigint)
    GROUP BY a.event_id, a.fingerprint
) AS s ON s.event_id = b.event_id AND s.fingerprint = b.fingerprint
WHERE coalesce(b.quantity, 0) <> coalesce(s.quantity, 0)
ORDER BY 1;

-- name: check_lapsed_not_counted
-- Availability never counts a hold past its expires_at as reserved.
SELECT format('event %%s: availability reports %%s reserved, live holds add up to %%s',
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
  AND (%(event_id)s::bigint IS NULL OR e.id = %(event_id)s::bigint)
ORDER BY e.id;

-- name: check_ledger_allocations
-- The ledger replays to the allocations: each allocation's entries (in id
-- order) start with its insert as a hold (or its opening entry, for
-- allocations older than the ledger), each later entry starts where the one
-- before ended, on the same event and buyer, by an allowed transition (or a
-- quantity change of a hold; only a hold's quantity ever changes), and the
-- last one ends at the allocation's current status and quantity. No entry
-- names a missing allocation. For one event: the entries of its allocations
-- (an entry that names a missing allocation is found only by the
-- whole-database check: no index leads with the ledger's event_id).
WITH entries AS (
    SELECT h.id, h.allocation_id, h.event_id, h.fingerprint, h.old_status, h.new_status,
           h.old_quantity, h.new_quantity, h.opening,
           lag(h.new_status) OVER w AS prev_status,
           lag(h.new_quantity) OVER w AS prev_quantity,
           lag(h.event_id) OVER w AS prev_event_id,
           lag(h.fingerprint) OVER w AS prev_fingerprint,
           row_number() OVER w AS step,
           lead(h.id) OVER w IS NULL AS last
    FROM (
        SELECT * FROM allocation_history WHERE %(event_id)s::bigint IS NULL
        UNION ALL
        SELECT l.*
        FROM allocations AS a
        -- OFFSET 0 keeps the lateral subquery a per-allocation index scan.
        CROSS JOIN LATERAL (
            SELECT * FROM allocation_history WHERE allocation_id = a.id OFFSET 0
        ) AS l
        WHERE a.event_id = %(event_id)s::bigint
    ) AS h
    WINDOW w AS (PARTITION BY h.allocation_id ORDER BY h.id)
), problems AS (
    SELECT allocation_id, id AS entry_id,
           format('allocation %%s: ledger entry %%s records %%s x%%s -> %%s x%%s after %%s x%%s',
                  allocation_id, id, coalesce(old_status, 'insert'),
                  coalesce(old_quantity::text, '-'), new_status, new_quantity,
                  coalesce(prev_status, 'nothing'), coalesce(prev_quantity::text, '-')) AS message
    FROM entries
    WHERE (step = 1 AND (old_status IS NOT NULL OR (new_status <> 'reserved' AND NOT opening)))
       OR (step > 1 AND opening)
       OR (old_status <> 'reserved' AND old_quantity <> new_quantity)
       OR (step > 1 AND ((old_status, old_quantity, event_id, fingerprint)
                         IS DISTINCT FROM (prev_status, prev_quantity, prev_event_id,
                                           prev_fingerprint)
                         OR (old_status = new_status AND (old_status <> 'reserved'
                                                          OR old_quantity = new_quantity))
                         OR (old_status <> new_status
                             AND (old_status, new_status) NOT IN (
                                 ('reserved', 'purchased'), ('reserved', 'cancelled'),
                                 ('reserved', 'expired'), ('purchased', 'cancelled')))))
    UNION ALL
    SELECT coalesce(a.id, e.allocation_id), 0,
           format('allocation %%s is %%s, its ledger replays to %%s', coalesce(a.id, e.allocation_id),
                  CASE WHEN a.id IS NULL THEN 'missing'
                       ELSE format('%%s x%%s (event %%s, buyer %%s)', a.status, a.quantity,
                                   a.event_id, a.fingerprint) END,
                  CASE WHEN e.id IS NULL THEN 'nothing'
                       ELSE format('%%s x%%s (event %%s, buyer %%s)', e.new_status, e.new_quantity,
                                   e.event_id, e.fingerprint) END)
    FROM (SELECT * FROM allocations
          WHERE %(event_id)s::bigint IS NULL OR event_id = %(event_id)s::bigint) AS a
    FULL JOIN (SELECT * FROM entries WHERE last) AS e ON e.allocation_id = a.id
    WHERE (a.status, a.quantity, a.event_id, a.fingerprint)
          IS DISTINCT FROM (e.new_status, e.new_quantity, e.event_id, e.fingerprint)
)
SELECT message FROM problems ORDER BY allocation_id, entry_id;

-- name: check_ledger_events
-- The ledger replays to the events' capacities: each event's entries start
-- with its creation, each later one starts where the one before ended and
-- changes something, and the last one ends at the current total_tickets and
-- max_per_buyer, or at 0 for an event that was deleted. No other entry names
-- a missing event.
WITH entries AS (
    SELECT h.id, h.event_id, h.created, h.old_total_tickets, h.new_total_tickets,
           h.old_max_per_buyer, h.new_max_per_buyer,
           lag(h.new_total_tickets) OVER w AS prev_total,
           lag(h.new_max_per_buyer) OVER w AS prev_max,
           row_number() OVER w AS step,
           lead(h.id) OVER w IS NULL AS last
    FROM event_history AS h
    WHERE %(event_id)s::bigint IS NULL OR h.event_id = %(event_id)s::bigint
    WINDOW w AS (PARTITION BY h.event_id ORDER BY h.id)
), problems AS (
    SELECT event_id, id AS entry_id,
           format('event %%s: ledger entry %%s records total %%s -> %%s, max %%s -> %%s after total %%s, max %%s',
                  event_id, id, coalesce(old_total_tickets::text, 'created'), new_total_tickets,
                  coalesce(old_max_per_buyer::text, '-'), coalesce(new_max_per_buyer::text, '-'),
                  coalesce(prev_total::text, 'nothing'), coalesce(prev_max::text, '-')) AS message
    FROM entries
    WHERE (step = 1) <> created
       OR (step > 1 AND ((old_total_tickets, old_max_per_buyer)
                         IS DISTINCT FROM (prev_total, prev_max)
                         OR (old_total_tickets, old_max_per_buyer)
                            IS NOT DISTINCT FROM (new_total_tickets, new_max_per_buyer)))
    UNION ALL
    SELECT coalesce(ev.id, e.event_id), 0,
           format('event %%s has %%s, its ledger replays to %%s', coalesce(ev.id, e.event_id),
                  CASE WHEN ev.id IS NULL THEN 'no row'
                       ELSE format('total %%s, max %%s', ev.total_tickets,
                                   coalesce(ev.max_per_buyer::text, '-')) END,
                  CASE WHEN e.id IS NULL THEN 'nothing'
                       ELSE format('total %%s, max %%s', e.new_total_tickets,
                                   coalesce(e.new_max_per_buyer::text, '-')) END)
    FROM (SELECT * FROM events
          WHERE %(event_id)s::bigint IS NULL OR id = %(event_id)s::bigint) AS ev
    FULL JOIN (SELECT * FROM entries WHERE last) AS e ON e.event_id = ev.id
    WHERE (ev.id, ev.total_tickets, ev.max_per_buyer)
          IS DISTINCT FROM (e.event_id, e.new_total_tickets, e.new_max_per_buyer)
      AND NOT (ev.id IS NULL AND e.new_total_tickets = 0)  -- deleted, and recorded so
)
SELECT message FROM problems ORDER BY event_id, entry_id;

-- name: event_exists
SELECT 1 FROM events WHERE id = %(event_id)s;

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

-- name: sale_outcome
-- What a sale ended with, counted from the rows rather than the slot counters:
-- valid tickets issued, and holds that lapsed (count and quantity). The demo
-- and the benchmark's sell-out compare these with what they asked for.
SELECT (SELECT count(*) FROM tickets AS t
        WHERE t.event_id = %(event_id)s AND t.voided_at IS NULL) AS sold,
       count(*) AS holds_expired,
       coalesce(sum(a.quantity), 0) AS tickets_expired
FROM allocations AS a
WHERE a.event_id = %(event_id)s AND a.status = 'expired';
