-- Validates events_starts_at_range for the rows that existed before it was
-- added; takes only a SHARE UPDATE EXCLUSIVE lock, so reads and writes go on.
-- depends: 0005_events_starts_at_range

SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '5min';

ALTER TABLE events VALIDATE CONSTRAINT events_starts_at_range;
