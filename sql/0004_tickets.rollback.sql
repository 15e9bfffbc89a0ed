-- Undo 0004_tickets. The btree_gist extension stays: other schemas may use it.
SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '5min';
DROP TRIGGER events_guard_ticket_numbers ON events;
DROP FUNCTION events_guard_ticket_numbers();
DROP TRIGGER allocations_issue_tickets ON allocations;
DROP FUNCTION allocations_issue_tickets();
DROP TABLE tickets;
DROP FUNCTION tickets_guard_change();
DROP FUNCTION tickets_guard_insert();
DROP FUNCTION ticket_numbers_take(bigint, integer);
DROP TABLE ticket_number_pool;
DROP FUNCTION ticket_code();
