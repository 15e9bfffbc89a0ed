-- Undo 0002_allocations.
SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '5min';
DROP TABLE allocations;
DROP FUNCTION allocations_guard_delete();
DROP FUNCTION allocations_guard_transition();
DROP FUNCTION allocations_guard_insert();
