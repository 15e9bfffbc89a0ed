-- Undo 0001_events.
SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '5min';
DROP TABLE events;
DROP FUNCTION set_updated_at();
