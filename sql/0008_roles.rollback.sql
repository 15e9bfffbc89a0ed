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

REASSIGN OWNED BY ticketing_owner TO CURRENT_USER;
REVOKE ALL ON SCHEMA public FROM ticketing_owner;
REVOKE ALL ON SCHEMA public FROM ticketing_app;
