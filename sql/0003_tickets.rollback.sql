-- Undo 0003_tickets. The btree_gist extension stays: other schemas may use it.
SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '5min';
DROP TRIGGER events_check_ticket_numbers ON events;
DROP FUNCTION events_check_ticket_numbers();
DROP TABLE tickets;
DROP FUNCTION tickets_guard_change();
DROP FUNCTION tickets_guard_insert();
DROP FUNCTION ticket_numbers_take(bigint, integer, integer, integer);
DROP TABLE ticket_number_pool;
DROP FUNCTION ticket_code();
