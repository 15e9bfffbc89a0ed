-- Events: what is on sale, when, and how many tickets it has.
-- depends:

-- Fail fast instead of queueing behind live traffic; retry the deploy later.
SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '5min';

-- Shared by every table with an updated_at column. now() is the transaction's
-- start, which can be before the row was created (a transaction that waited
-- for a lock, or that began before another committed the row).
CREATE FUNCTION set_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := greatest(now(), NEW.created_at);
    RETURN NEW;
END
$$;

CREATE TABLE events (
    id bigint GENERATED ALWAYS AS IDENTITY CONSTRAINT events_pkey PRIMARY KEY,
    name text NOT NULL,
    starts_at timestamptz NOT NULL,
    total_tickets integer NOT NULL,
    max_per_buyer integer,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT events_name_length CHECK (char_length(name) BETWEEN 1 AND 200),
    CONSTRAINT events_total_tickets_range CHECK (total_tickets BETWEEN 1 AND 2000000000),
    CONSTRAINT events_max_per_buyer_range CHECK (max_per_buyer BETWEEN 1 AND 10000),
    CONSTRAINT events_updated_after_created CHECK (updated_at >= created_at)
);

-- list_events pages through events in (starts_at, id) order.
CREATE INDEX events_starts_at_idx ON events (starts_at, id);

CREATE TRIGGER events_set_updated_at
    BEFORE UPDATE ON events
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();
