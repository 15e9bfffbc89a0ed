-- Undo 0006_events_starts_at_validate. A validated constraint cannot be made
-- NOT VALID again, and need not be: the rollback of 0005 drops it.
SET LOCAL lock_timeout = '5s';
