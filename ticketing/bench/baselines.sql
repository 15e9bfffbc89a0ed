-- Statements of the benchmark (ticketing bench), outside the layer. Each block
-- starts with "-- name: <name>". The baselines are two textbook
-- implementations of a reservation that live only in the `bench` schema.

-- name: baseline_schema
CREATE SCHEMA IF NOT EXISTS bench;

-- name: baseline_drop
DROP TABLE IF EXISTS bench.allocations, bench.events;

-- name: baseline_events_table
CREATE TABLE bench.events (
    id bigint PRIMARY KEY,
    total integer NOT NULL,
    taken integer NOT NULL DEFAULT 0,
    CHECK (taken <= total)
);

-- name: baseline_allocations_table
CREATE TABLE bench.allocations (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id bigint NOT NULL REFERENCES bench.events (id),
    fingerprint text NOT NULL,
    quantity integer NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- name: baseline_new_event
INSERT INTO bench.events (id, total, taken) VALUES (%(id)s, %(total)s, 0);

-- name: for_update_lock
-- Baseline (a), three round trips inside BEGIN ... COMMIT: lock and read,
-- update, insert.
SELECT total, taken FROM bench.events WHERE id = %(id)s FOR UPDATE;

-- name: for_update_take
UPDATE bench.events SET taken = taken + %(q)s WHERE id = %(id)s;

-- name: for_update_insert
INSERT INTO bench.allocations (event_id, fingerprint, quantity)
VALUES (%(id)s, %(fp)s, %(q)s)
RETURNING id;

-- name: single_update
-- Baseline (b), one statement: a conditional UPDATE that feeds the INSERT.
WITH e AS (
    UPDATE bench.events SET taken = taken + %(q)s
    WHERE id = %(id)s AND taken + %(q)s <= total
    RETURNING id
)
INSERT INTO bench.allocations (event_id, fingerprint, quantity)
SELECT id, %(fp)s, %(q)s FROM e
RETURNING id;

-- name: count_valid_tickets
-- Reading the results back from the layer's tables.
SELECT count(*) FROM tickets WHERE event_id = %(event_id)s AND voided_at IS NULL;

-- name: count_event_allocations
SELECT count(*) FROM allocations WHERE event_id = %(event_id)s;

-- name: server_facts
SELECT current_setting('server_version'),
       current_setting('synchronous_commit'),
       current_setting('max_connections')::integer,
       (SELECT rolsuper FROM pg_roles WHERE rolname = current_user);
