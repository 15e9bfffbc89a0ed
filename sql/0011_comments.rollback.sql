-- Undo 0011_comments. No earlier migration sets a comment, so every comment
-- goes back to NULL.
SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '5min';

-- events (0001; guards 0003, 0004, 0009; ledger triggers 0007)
COMMENT ON TABLE events IS NULL;
COMMENT ON COLUMN events.id IS NULL;
COMMENT ON COLUMN events.name IS NULL;
COMMENT ON COLUMN events.starts_at IS NULL;
COMMENT ON COLUMN events.total_tickets IS NULL;
COMMENT ON COLUMN events.max_per_buyer IS NULL;
COMMENT ON COLUMN events.created_at IS NULL;
COMMENT ON COLUMN events.updated_at IS NULL;
COMMENT ON CONSTRAINT events_pkey ON events IS NULL;
COMMENT ON CONSTRAINT events_name_length ON events IS NULL;
COMMENT ON CONSTRAINT events_total_tickets_range ON events IS NULL;
COMMENT ON CONSTRAINT events_max_per_buyer_range ON events IS NULL;
COMMENT ON CONSTRAINT events_updated_after_created ON events IS NULL;
COMMENT ON CONSTRAINT events_starts_at_range ON events IS NULL;
COMMENT ON INDEX events_pkey IS NULL;
COMMENT ON INDEX events_starts_at_idx IS NULL;
COMMENT ON SEQUENCE events_id_seq IS NULL;
COMMENT ON TRIGGER events_check_ticket_numbers ON events IS NULL;
COMMENT ON TRIGGER events_set_updated_at ON events IS NULL;
COMMENT ON TRIGGER events_guard_id ON events IS NULL;
COMMENT ON TRIGGER events_guard_delete ON events IS NULL;
COMMENT ON TRIGGER events_open_inventory ON events IS NULL;
COMMENT ON TRIGGER events_guard_capacity ON events IS NULL;
COMMENT ON TRIGGER events_record_created ON events IS NULL;
COMMENT ON TRIGGER events_record_capacity ON events IS NULL;
COMMENT ON TRIGGER events_record_deleted ON events IS NULL;

-- allocations (0002; counting and ledger triggers 0009)
COMMENT ON TABLE allocations IS NULL;
COMMENT ON COLUMN allocations.id IS NULL;
COMMENT ON COLUMN allocations.event_id IS NULL;
COMMENT ON COLUMN allocations.fingerprint IS NULL;
COMMENT ON COLUMN allocations.quantity IS NULL;
COMMENT ON COLUMN allocations.status IS NULL;
COMMENT ON COLUMN allocations.expires_at IS NULL;
COMMENT ON COLUMN allocations.idempotency_key IS NULL;
COMMENT ON COLUMN allocations.created_at IS NULL;
COMMENT ON COLUMN allocations.updated_at IS NULL;
COMMENT ON CONSTRAINT allocations_pkey ON allocations IS NULL;
COMMENT ON CONSTRAINT allocations_fingerprint_length ON allocations IS NULL;
COMMENT ON CONSTRAINT allocations_quantity_range ON allocations IS NULL;
COMMENT ON CONSTRAINT allocations_status_valid ON allocations IS NULL;
COMMENT ON CONSTRAINT allocations_expires_after_created ON allocations IS NULL;
COMMENT ON CONSTRAINT allocations_hold_at_most_7_days ON allocations IS NULL;
COMMENT ON CONSTRAINT allocations_idempotency_key_length ON allocations IS NULL;
COMMENT ON CONSTRAINT allocations_updated_after_created ON allocations IS NULL;
COMMENT ON CONSTRAINT allocations_id_event_id_key ON allocations IS NULL;
COMMENT ON INDEX allocations_pkey IS NULL;
COMMENT ON INDEX allocations_id_event_id_key IS NULL;
COMMENT ON INDEX allocations_event_id_idx IS NULL;
COMMENT ON INDEX allocations_hold_expiry_idx IS NULL;
COMMENT ON INDEX allocations_event_hold_expiry_idx IS NULL;
COMMENT ON INDEX allocations_buyer_live_idx IS NULL;
COMMENT ON INDEX allocations_fingerprint_idx IS NULL;
COMMENT ON INDEX allocations_idempotency_key_uniq IS NULL;
COMMENT ON SEQUENCE allocations_id_seq IS NULL;
COMMENT ON TRIGGER allocations_guard_transition ON allocations IS NULL;
COMMENT ON TRIGGER allocations_set_updated_at ON allocations IS NULL;
COMMENT ON TRIGGER allocations_guard_delete ON allocations IS NULL;
COMMENT ON TRIGGER allocations_apply_insert ON allocations IS NULL;
COMMENT ON TRIGGER allocations_apply_updates ON allocations IS NULL;

-- tickets (0003)
COMMENT ON TABLE tickets IS NULL;
COMMENT ON COLUMN tickets.id IS NULL;
COMMENT ON COLUMN tickets.event_id IS NULL;
COMMENT ON COLUMN tickets.allocation_id IS NULL;
COMMENT ON COLUMN tickets.number IS NULL;
COMMENT ON COLUMN tickets.code IS NULL;
COMMENT ON COLUMN tickets.voided_at IS NULL;
COMMENT ON COLUMN tickets.created_at IS NULL;
COMMENT ON CONSTRAINT tickets_pkey ON tickets IS NULL;
COMMENT ON CONSTRAINT tickets_allocation_fkey ON tickets IS NULL;
COMMENT ON CONSTRAINT tickets_number_positive ON tickets IS NULL;
COMMENT ON CONSTRAINT tickets_code_length ON tickets IS NULL;
COMMENT ON CONSTRAINT tickets_voided_after_created ON tickets IS NULL;
COMMENT ON CONSTRAINT tickets_code_key ON tickets IS NULL;
COMMENT ON CONSTRAINT tickets_number_excl ON tickets IS NULL;
COMMENT ON INDEX tickets_pkey IS NULL;
COMMENT ON INDEX tickets_code_key IS NULL;
COMMENT ON INDEX tickets_number_excl IS NULL;
COMMENT ON INDEX tickets_allocation_id_idx IS NULL;
COMMENT ON INDEX tickets_event_number_idx IS NULL;
COMMENT ON SEQUENCE tickets_id_seq IS NULL;
COMMENT ON TRIGGER tickets_guard_insert ON tickets IS NULL;
COMMENT ON TRIGGER tickets_guard_change ON tickets IS NULL;

-- ticket_number_pool (0003)
COMMENT ON TABLE ticket_number_pool IS NULL;
COMMENT ON COLUMN ticket_number_pool.event_id IS NULL;
COMMENT ON COLUMN ticket_number_pool.number IS NULL;
COMMENT ON CONSTRAINT ticket_number_pool_pkey ON ticket_number_pool IS NULL;
COMMENT ON CONSTRAINT ticket_number_pool_number_positive ON ticket_number_pool IS NULL;
COMMENT ON INDEX ticket_number_pool_pkey IS NULL;

-- event_inventory (0004)
COMMENT ON TABLE event_inventory IS NULL;
COMMENT ON COLUMN event_inventory.event_id IS NULL;
COMMENT ON COLUMN event_inventory.total_tickets IS NULL;
COMMENT ON COLUMN event_inventory.max_per_buyer IS NULL;
COMMENT ON COLUMN event_inventory.slot_count IS NULL;
COMMENT ON CONSTRAINT event_inventory_pkey ON event_inventory IS NULL;
COMMENT ON CONSTRAINT event_inventory_event_id_fkey ON event_inventory IS NULL;
COMMENT ON CONSTRAINT event_inventory_slot_count_range ON event_inventory IS NULL;
COMMENT ON INDEX event_inventory_pkey IS NULL;

-- inventory_slots (0004)
COMMENT ON TABLE inventory_slots IS NULL;
COMMENT ON COLUMN inventory_slots.event_id IS NULL;
COMMENT ON COLUMN inventory_slots.slot IS NULL;
COMMENT ON COLUMN inventory_slots.first_number IS NULL;
COMMENT ON COLUMN inventory_slots.capacity IS NULL;
COMMENT ON COLUMN inventory_slots.reserved IS NULL;
COMMENT ON COLUMN inventory_slots.purchased IS NULL;
COMMENT ON COLUMN inventory_slots.max_per_buyer IS NULL;
COMMENT ON CONSTRAINT inventory_slots_pkey ON inventory_slots IS NULL;
COMMENT ON CONSTRAINT inventory_slots_event_id_fkey ON inventory_slots IS NULL;
COMMENT ON CONSTRAINT inventory_slots_slot_range ON inventory_slots IS NULL;
COMMENT ON CONSTRAINT inventory_slots_first_number_positive ON inventory_slots IS NULL;
COMMENT ON CONSTRAINT inventory_slots_counts_nonnegative ON inventory_slots IS NULL;
COMMENT ON CONSTRAINT inventory_slots_within_capacity ON inventory_slots IS NULL;
COMMENT ON INDEX inventory_slots_pkey IS NULL;

-- buyer_inventory (0004; only for events with a limit since 0010)
COMMENT ON TABLE buyer_inventory IS NULL;
COMMENT ON COLUMN buyer_inventory.event_id IS NULL;
COMMENT ON COLUMN buyer_inventory.fingerprint IS NULL;
COMMENT ON COLUMN buyer_inventory.quantity IS NULL;
COMMENT ON CONSTRAINT buyer_inventory_pkey ON buyer_inventory IS NULL;
COMMENT ON CONSTRAINT buyer_inventory_quantity_nonnegative ON buyer_inventory IS NULL;
COMMENT ON INDEX buyer_inventory_pkey IS NULL;

-- allocation_history (0007)
COMMENT ON TABLE allocation_history IS NULL;
COMMENT ON COLUMN allocation_history.id IS NULL;
COMMENT ON COLUMN allocation_history.allocation_id IS NULL;
COMMENT ON COLUMN allocation_history.event_id IS NULL;
COMMENT ON COLUMN allocation_history.fingerprint IS NULL;
COMMENT ON COLUMN allocation_history.old_status IS NULL;
COMMENT ON COLUMN allocation_history.new_status IS NULL;
COMMENT ON COLUMN allocation_history.old_quantity IS NULL;
COMMENT ON COLUMN allocation_history.new_quantity IS NULL;
COMMENT ON COLUMN allocation_history.opening IS NULL;
COMMENT ON COLUMN allocation_history.recorded_at IS NULL;
COMMENT ON COLUMN allocation_history.recorded_by IS NULL;
COMMENT ON COLUMN allocation_history.transaction_id IS NULL;
COMMENT ON CONSTRAINT allocation_history_pkey ON allocation_history IS NULL;
COMMENT ON CONSTRAINT allocation_history_old_both_or_neither ON allocation_history IS NULL;
COMMENT ON CONSTRAINT allocation_history_opening_has_no_old ON allocation_history IS NULL;
COMMENT ON CONSTRAINT allocation_history_status_valid ON allocation_history IS NULL;
COMMENT ON INDEX allocation_history_pkey IS NULL;
COMMENT ON INDEX allocation_history_allocation_id_idx IS NULL;
COMMENT ON SEQUENCE allocation_history_id_seq IS NULL;
COMMENT ON TRIGGER allocation_history_append_only ON allocation_history IS NULL;

-- event_history (0007)
COMMENT ON TABLE event_history IS NULL;
COMMENT ON COLUMN event_history.id IS NULL;
COMMENT ON COLUMN event_history.event_id IS NULL;
COMMENT ON COLUMN event_history.created IS NULL;
COMMENT ON COLUMN event_history.old_total_tickets IS NULL;
COMMENT ON COLUMN event_history.new_total_tickets IS NULL;
COMMENT ON COLUMN event_history.old_max_per_buyer IS NULL;
COMMENT ON COLUMN event_history.new_max_per_buyer IS NULL;
COMMENT ON COLUMN event_history.recorded_at IS NULL;
COMMENT ON COLUMN event_history.recorded_by IS NULL;
COMMENT ON COLUMN event_history.transaction_id IS NULL;
COMMENT ON CONSTRAINT event_history_pkey ON event_history IS NULL;
COMMENT ON CONSTRAINT event_history_old_total_unless_created ON event_history IS NULL;
COMMENT ON INDEX event_history_pkey IS NULL;
COMMENT ON INDEX event_history_event_id_idx IS NULL;
COMMENT ON SEQUENCE event_history_id_seq IS NULL;
COMMENT ON TRIGGER event_history_append_only ON event_history IS NULL;

-- event_counters (0004)
COMMENT ON VIEW event_counters IS NULL;
COMMENT ON COLUMN event_counters.event_id IS NULL;
COMMENT ON COLUMN event_counters.total_tickets IS NULL;
COMMENT ON COLUMN event_counters.max_per_buyer IS NULL;
COMMENT ON COLUMN event_counters.slot_count IS NULL;
COMMENT ON COLUMN event_counters.reserved IS NULL;
COMMENT ON COLUMN event_counters.purchased IS NULL;

-- allocation_change (0004)
COMMENT ON TYPE allocation_change IS NULL;
COMMENT ON COLUMN allocation_change.id IS NULL;
COMMENT ON COLUMN allocation_change.event_id IS NULL;
COMMENT ON COLUMN allocation_change.fingerprint IS NULL;
COMMENT ON COLUMN allocation_change.old_status IS NULL;
COMMENT ON COLUMN allocation_change.new_status IS NULL;
COMMENT ON COLUMN allocation_change.old_quantity IS NULL;
COMMENT ON COLUMN allocation_change.new_quantity IS NULL;

-- Functions: guards
COMMENT ON FUNCTION set_updated_at() IS NULL;
COMMENT ON FUNCTION allocations_guard_transition() IS NULL;
COMMENT ON FUNCTION allocations_guard_delete() IS NULL;
COMMENT ON FUNCTION tickets_guard_insert() IS NULL;
COMMENT ON FUNCTION tickets_guard_change() IS NULL;
COMMENT ON FUNCTION events_check_ticket_numbers() IS NULL;
COMMENT ON FUNCTION events_guard_id() IS NULL;
COMMENT ON FUNCTION events_guard_delete() IS NULL;
COMMENT ON FUNCTION ledger_guard_append_only() IS NULL;

-- Functions: tickets
COMMENT ON FUNCTION ticket_code() IS NULL;
COMMENT ON FUNCTION ticket_numbers_take(bigint, integer, integer, integer) IS NULL;

-- Functions: inventory
COMMENT ON FUNCTION inventory_slot_count(integer) IS NULL;
COMMENT ON FUNCTION inventory_layout(bigint, integer, integer, integer) IS NULL;
COMMENT ON FUNCTION events_open_inventory() IS NULL;
COMMENT ON FUNCTION inventory_resplit(bigint, integer) IS NULL;
COMMENT ON FUNCTION allocations_reclaim_lapsed(bigint, text, bigint[]) IS NULL;
COMMENT ON FUNCTION inventory_take(bigint, integer, bigint[]) IS NULL;
COMMENT ON FUNCTION inventory_move(bigint, integer, boolean) IS NULL;
COMMENT ON FUNCTION events_guard_capacity() IS NULL;
COMMENT ON FUNCTION inventory_apply(allocation_change[]) IS NULL;
COMMENT ON FUNCTION inventory_count_buyers(bigint, integer, allocation_change[]) IS NULL;
COMMENT ON FUNCTION inventory_count_late(bigint, integer, integer, allocation_change[]) IS NULL;
COMMENT ON FUNCTION allocations_apply_insert() IS NULL;
COMMENT ON FUNCTION allocations_apply_updates() IS NULL;

-- Functions: ledger
COMMENT ON FUNCTION events_record_capacity() IS NULL;
