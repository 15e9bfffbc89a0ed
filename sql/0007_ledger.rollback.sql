-- Undo 0007_ledger. Drops the history with the tables.
SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '5min';
DROP TRIGGER event_history_append_only ON event_history;
DROP TRIGGER allocation_history_append_only ON allocation_history;
DROP FUNCTION ledger_guard_append_only();
DROP TRIGGER events_record_capacity ON events;
DROP TRIGGER events_record_deleted ON events;
DROP TRIGGER events_record_created ON events;
DROP FUNCTION events_record_capacity();
DROP TRIGGER allocations_record_updated ON allocations;
DROP TRIGGER allocations_record_inserted ON allocations;
DROP FUNCTION allocations_record_updated();
DROP FUNCTION allocations_record_inserted();
DROP TABLE event_history;
DROP TABLE allocation_history;
