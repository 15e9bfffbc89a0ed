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

-- name: count_event_allocations
-- Reading the results back from the layer's tables (tickets sold: admin.sale_outcome).
SELECT count(*) FROM allocations WHERE event_id = %(event_id)s;

-- name: server_facts
SELECT current_setting('server_version'),
       current_setting('synchronous_commit'),
       current_setting('synchronous_standby_names'),
       current_setting('max_connections')::integer,
       (SELECT rolsuper FROM pg_roles WHERE rolname = current_user);

-- name: commit_probe_schema
-- One bare single-client commit with a write (ticketing.bench.regimes).
CREATE SCHEMA IF NOT EXISTS bench;

-- name: commit_probe_table
CREATE TABLE IF NOT EXISTS bench.commit_probe (n integer NOT NULL);

-- name: commit_probe
INSERT INTO bench.commit_probe (n) VALUES (1);

-- name: commit_probe_empty
TRUNCATE bench.commit_probe;

-- name: make_holds
-- Holds made before a timed run (purchase, cancel, expire) and the loaded
-- workload's preload, through the layer's triggers, one batch per statement.
-- The k-th hold (from 0) has fingerprint bench-h-k; pgbench finds it as
-- base + k (see hold_range).
INSERT INTO allocations (event_id, fingerprint, quantity, expires_at)
SELECT %(event_id)s::bigint, 'bench-h-' || k, 1 + k %% 4, now() + %(hold)s::interval
FROM generate_series(%(first)s::integer, %(first)s::integer + %(count)s::integer - 1) AS k
ORDER BY k
RETURNING id;

-- name: hold_range
-- The first id of an event's holds, how many, and how many have id = base + k.
WITH h AS (
    SELECT id, fingerprint FROM allocations WHERE event_id = %(event_id)s
), b AS (
    SELECT min(id) AS base FROM h
)
SELECT b.base, count(*), count(*) FILTER (WHERE h.fingerprint = 'bench-h-' || (h.id - b.base))
FROM h, b
GROUP BY b.base;

-- name: count_event_status
SELECT count(*) FROM allocations WHERE event_id = %(event_id)s AND status = %(status)s;

-- name: event_tables
-- Tables of the layer's schema with an event_id or allocation_id column, to
-- remove a floor event completely (it ran without the layer's triggers).
SELECT c.table_name, bool_or(c.column_name = 'event_id') AS by_event
FROM information_schema.columns AS c
JOIN information_schema.tables AS t USING (table_schema, table_name)
WHERE c.table_schema = current_schema()
  AND t.table_type = 'BASE TABLE'
  AND c.column_name IN ('event_id', 'allocation_id')
GROUP BY c.table_name
ORDER BY c.table_name;

-- name: load_set_status
-- Purchase (tickets issued) or cancel a batch of the preload's allocations.
UPDATE allocations SET status = %(status)s WHERE id = ANY(%(ids)s::bigint[]);

-- name: load_sizes
SELECT (SELECT count(*) FROM allocations), (SELECT count(*) FROM tickets);

-- name: may_create_databases
SELECT rolcreatedb OR rolsuper FROM pg_roles WHERE rolname = current_user;

-- name: vacuum_analyze
-- After the loaded workload's preload: fresh statistics and visibility maps on both sides.
VACUUM (ANALYZE);

-- name: skip_triggers
-- remove_events: delete the benchmark's events without firing the layer's guards.
SET LOCAL session_replication_role = replica;

-- name: delete_by_allocation
DELETE FROM {table} WHERE allocation_id IN (SELECT id FROM allocations WHERE event_id = ANY(%(ids)s));

-- name: delete_by_event
DELETE FROM {table} WHERE event_id = ANY(%(ids)s);

-- name: delete_events
DELETE FROM events WHERE id = ANY(%(ids)s);
