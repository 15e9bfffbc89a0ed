-- Undo 0005_events_starts_at_range.
SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '5min';
ALTER TABLE events DROP CONSTRAINT events_starts_at_range;
