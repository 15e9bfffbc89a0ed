-- Undo 0001_events.
DROP TABLE events;
DROP FUNCTION set_updated_at();
