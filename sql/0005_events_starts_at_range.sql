-- Events start within 0001-01-02 .. 9999-12-30 UTC: a stored starts_at must
-- read back in every session time zone (offsets up to about 16 hours) as a
-- timestamp that clients can represent (years 1 to 9999), and 'infinity'
-- would break every ordered listing.
-- depends: 0004_inventory

-- Fail fast instead of queueing behind live traffic; retry the deploy later.
SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '5min';

ALTER TABLE events ADD CONSTRAINT events_starts_at_range
    CHECK (starts_at BETWEEN '0001-01-02 00:00:00+00' AND '9999-12-30 00:00:00+00') NOT VALID;
