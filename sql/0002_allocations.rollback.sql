-- Undo 0002_allocations.
DROP TABLE allocations;
DROP FUNCTION allocations_guard_delete();
DROP FUNCTION allocations_guard_transition();
DROP FUNCTION allocations_guard_insert();
