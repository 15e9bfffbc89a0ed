-- Queries of ticketing.tickets. Each block starts with "-- name: <name>".
-- Tickets are issued and voided by the triggers on allocations.

-- name: list_for_allocation
-- Uses tickets_allocation_id_idx.
SELECT id, event_id, allocation_id, number, code, voided_at, created_at
FROM tickets
WHERE allocation_id = %(allocation_id)s
ORDER BY number, id;

-- name: get_by_code
-- Uses the index of tickets_code_key.
SELECT id, event_id, allocation_id, number, code, voided_at, created_at
FROM tickets
WHERE code = %(code)s;
