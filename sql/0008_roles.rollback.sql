-- Undo 0008_roles: objects back to the role running the rollback, grants
-- and SECURITY DEFINER removed, EXECUTE back to PUBLIC. The roles stay
-- (other databases of the cluster may use them; drop them by hand), and so
-- do the locking inventory_resplit, events_open_inventory reading
-- ticketing.slots, and the REVOKE CREATE ON SCHEMA public FROM PUBLIC.
SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '5min';

REVOKE ALL ON events, allocations, tickets, ticket_number_pool, event_inventory,
    inventory_slots, buyer_inventory, allocation_history, event_history, event_counters
FROM ticketing_app;
REVOKE ALL (name, starts_at, total_tickets, max_per_buyer) ON events FROM ticketing_app;
REVOKE ALL (event_id, fingerprint, quantity, expires_at, idempotency_key) ON allocations
FROM ticketing_app;
REVOKE ALL (status) ON allocations FROM ticketing_app;
REVOKE SELECT ON _yoyo_migration FROM ticketing_app;

ALTER FUNCTION events_open_inventory() SECURITY INVOKER RESET search_path;
ALTER FUNCTION events_guard_capacity() SECURITY INVOKER RESET search_path;
ALTER FUNCTION allocations_count_inserted() SECURITY INVOKER RESET search_path;
ALTER FUNCTION allocations_count_updated() SECURITY INVOKER RESET search_path;
ALTER FUNCTION allocations_record_inserted() SECURITY INVOKER RESET search_path;
ALTER FUNCTION allocations_record_updated() SECURITY INVOKER RESET search_path;
ALTER FUNCTION events_record_capacity() SECURITY INVOKER RESET search_path;

GRANT EXECUTE ON FUNCTION
    set_updated_at(),
    allocations_guard_insert(),
    allocations_guard_transition(),
    allocations_guard_delete(),
    ticket_code(),
    ticket_numbers_take(bigint, integer, integer, integer),
    tickets_guard_insert(),
    tickets_guard_change(),
    events_check_ticket_numbers(),
    inventory_slot_count(integer),
    inventory_layout(bigint, integer, integer, integer),
    events_open_inventory(),
    inventory_resplit(bigint, integer),
    allocations_reclaim_lapsed(bigint, text, bigint[]),
    inventory_take(bigint, integer, bigint[]),
    inventory_move(bigint, integer, boolean),
    events_guard_capacity(),
    inventory_apply(allocation_change[]),
    allocations_count_inserted(),
    allocations_count_updated(),
    allocations_record_inserted(),
    allocations_record_updated(),
    events_record_capacity(),
    ledger_guard_append_only()
TO PUBLIC;
ALTER DEFAULT PRIVILEGES FOR ROLE ticketing_owner GRANT EXECUTE ON FUNCTIONS TO PUBLIC;

-- Ownership back to the role running the rollback, object by object
-- (REASSIGN OWNED would also take databases and tablespaces the role owns).
ALTER TABLE events OWNER TO CURRENT_USER;
ALTER TABLE allocations OWNER TO CURRENT_USER;
ALTER TABLE tickets OWNER TO CURRENT_USER;
ALTER TABLE ticket_number_pool OWNER TO CURRENT_USER;
ALTER TABLE event_inventory OWNER TO CURRENT_USER;
ALTER TABLE inventory_slots OWNER TO CURRENT_USER;
ALTER TABLE buyer_inventory OWNER TO CURRENT_USER;
ALTER TABLE allocation_history OWNER TO CURRENT_USER;
ALTER TABLE event_history OWNER TO CURRENT_USER;
ALTER VIEW event_counters OWNER TO CURRENT_USER;
ALTER TYPE allocation_change OWNER TO CURRENT_USER;
ALTER FUNCTION set_updated_at() OWNER TO CURRENT_USER;
ALTER FUNCTION allocations_guard_insert() OWNER TO CURRENT_USER;
ALTER FUNCTION allocations_guard_transition() OWNER TO CURRENT_USER;
ALTER FUNCTION allocations_guard_delete() OWNER TO CURRENT_USER;
ALTER FUNCTION ticket_code() OWNER TO CURRENT_USER;
ALTER FUNCTION ticket_numbers_take(bigint, integer, integer, integer) OWNER TO CURRENT_USER;
ALTER FUNCTION tickets_guard_insert() OWNER TO CURRENT_USER;
ALTER FUNCTION tickets_guard_change() OWNER TO CURRENT_USER;
ALTER FUNCTION events_check_ticket_numbers() OWNER TO CURRENT_USER;
ALTER FUNCTION inventory_slot_count(integer) OWNER TO CURRENT_USER;
ALTER FUNCTION inventory_layout(bigint, integer, integer, integer) OWNER TO CURRENT_USER;
ALTER FUNCTION events_open_inventory() OWNER TO CURRENT_USER;
ALTER FUNCTION inventory_resplit(bigint, integer) OWNER TO CURRENT_USER;
ALTER FUNCTION allocations_reclaim_lapsed(bigint, text, bigint[]) OWNER TO CURRENT_USER;
ALTER FUNCTION inventory_take(bigint, integer, bigint[]) OWNER TO CURRENT_USER;
ALTER FUNCTION inventory_move(bigint, integer, boolean) OWNER TO CURRENT_USER;
ALTER FUNCTION events_guard_capacity() OWNER TO CURRENT_USER;
ALTER FUNCTION inventory_apply(allocation_change[]) OWNER TO CURRENT_USER;
ALTER FUNCTION allocations_count_inserted() OWNER TO CURRENT_USER;
ALTER FUNCTION allocations_count_updated() OWNER TO CURRENT_USER;
ALTER FUNCTION allocations_record_inserted() OWNER TO CURRENT_USER;
ALTER FUNCTION allocations_record_updated() OWNER TO CURRENT_USER;
ALTER FUNCTION events_record_capacity() OWNER TO CURRENT_USER;
ALTER FUNCTION ledger_guard_append_only() OWNER TO CURRENT_USER;
REVOKE ALL ON SCHEMA public FROM ticketing_owner;
REVOKE ALL ON SCHEMA public FROM ticketing_app;
