-- Undo 0003_inventory.
SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '5min';
DROP TRIGGER allocations_count_updated ON allocations;
DROP TRIGGER allocations_count_inserted ON allocations;
DROP FUNCTION allocations_count_updated();
DROP FUNCTION allocations_count_inserted();
DROP FUNCTION inventory_apply(inventory_delta[]);
DROP TYPE inventory_delta;
DROP TRIGGER events_guard_capacity ON events;
DROP FUNCTION events_guard_capacity();
DROP FUNCTION allocations_reclaim_lapsed(bigint);
DROP TRIGGER events_open_inventory ON events;
DROP FUNCTION events_open_inventory();
DROP TABLE buyer_inventory;
DROP TABLE event_inventory;
