-- Comments on every table, view, column, constraint, index, sequence, trigger,
-- function and type of the schema, so that psql's \d+, \di+, \ds+, \df+, \dT+
-- and \dd explain each object where it lives: what it is and why it exists,
-- in a sentence or two (schema.md and docs/design.md tell the whole story). Only comments
-- change: no object, row or privilege does. COMMENT takes a SHARE UPDATE
-- EXCLUSIVE lock on a table, so reads and writes go on.
-- depends: 0010_counters_for_limits

-- Fail fast instead of queueing behind live traffic; retry the deploy later.
SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '5min';

-- events (0001; guards 0003, 0004, 0009; ledger triggers 0007)
COMMENT ON TABLE events IS
    'What is on sale: one row per event, with its start time, capacity (total_tickets) and '
    'optional per-buyer limit. Inserting one opens its inventory (event_inventory, '
    'inventory_slots); capacity changes are the owner''s, and an event can be deleted only '
    'before its first allocation.';
COMMENT ON COLUMN events.id IS
    'Event id, drawn from events_id_seq (GENERATED ALWAYS); never changes (events_guard_id).';
COMMENT ON COLUMN events.name IS
    'Display name, 1 to 200 characters.';
COMMENT ON COLUMN events.starts_at IS
    'When the event starts; list_events pages through events in (starts_at, id) order.';
COMMENT ON COLUMN events.total_tickets IS
    'Capacity: how many tickets the event sells. Copied to event_inventory and split over the '
    'event''s inventory_slots rows; changing it re-lays the slots (events_guard_capacity).';
COMMENT ON COLUMN events.max_per_buyer IS
    'The most tickets one buyer (fingerprint) may hold at once, reserved plus purchased; NULL '
    'means no limit. Copied to event_inventory and to every slot.';
COMMENT ON COLUMN events.created_at IS
    'When the event was created (the creating transaction''s start).';
COMMENT ON COLUMN events.updated_at IS
    'When the event was last updated: greatest(now(), created_at), set by trigger '
    'events_set_updated_at.';
COMMENT ON CONSTRAINT events_pkey ON events IS
    'Event ids are unique.';
COMMENT ON CONSTRAINT events_name_length ON events IS
    'A name has 1 to 200 characters, the bound the library''s input validation also applies.';
COMMENT ON CONSTRAINT events_total_tickets_range ON events IS
    'Capacity is 1 to 2,000,000,000, so every count and ticket number fits in an integer; 0 '
    'never occurs on a live event, which lets event_history use it to mark a deletion.';
COMMENT ON CONSTRAINT events_max_per_buyer_range ON events IS
    'A buyer limit, when set, is 1 to 10,000 (NULL, no limit, passes).';
COMMENT ON CONSTRAINT events_updated_after_created ON events IS
    'updated_at is never before created_at (why set_updated_at takes greatest(now(), '
    'created_at)).';
COMMENT ON CONSTRAINT events_starts_at_range ON events IS
    'starts_at lies within 0001-01-02 .. 9999-12-30 UTC: it reads back in every session time '
    'zone as a timestamp clients can represent, and ''infinity'' cannot break ordered listings '
    '(added NOT VALID by 0005, validated by 0006).';
COMMENT ON INDEX events_pkey IS
    'Unique index behind events_pkey: get_event, the event lookups of the trigger functions, '
    'and the foreign keys of event_inventory and inventory_slots.';
COMMENT ON INDEX events_starts_at_idx IS
    'Serves list_events, which pages through events in (starts_at, id) order.';
COMMENT ON SEQUENCE events_id_seq IS
    'Identity sequence of events.id; owned by the column, it follows the table.';
COMMENT ON TRIGGER events_check_ticket_numbers ON events IS
    'BEFORE UPDATE OF total_tickets, per row: refuses (TK006) a capacity lowered below a valid '
    'ticket''s number, before the slots are re-laid out.';
COMMENT ON TRIGGER events_set_updated_at ON events IS
    'BEFORE UPDATE, per row: keeps updated_at current (set_updated_at).';
COMMENT ON TRIGGER events_guard_id ON events IS
    'BEFORE UPDATE OF id, per row, when the id would change: an event''s id never changes '
    '(TK005), which the foreign keys to events enforced before 0009.';
COMMENT ON TRIGGER events_guard_delete ON events IS
    'BEFORE DELETE, per row: an event with allocations cannot be deleted (23503, as the foreign '
    'key dropped by 0009 raised); without any, its buyer counters and pooled numbers go with '
    'it.';
COMMENT ON TRIGGER events_open_inventory ON events IS
    'AFTER INSERT, per row: creates the new event''s event_inventory row and its '
    'inventory_slots rows.';
COMMENT ON TRIGGER events_guard_capacity ON events IS
    'AFTER UPDATE OF total_tickets, max_per_buyer, per row: checks a capacity or limit change '
    'against what is live and re-lays the event''s slots.';
COMMENT ON TRIGGER events_record_created ON events IS
    'AFTER INSERT, per row: writes the event''s creation entry to the ledger, event_history.';
COMMENT ON TRIGGER events_record_capacity ON events IS
    'AFTER UPDATE OF total_tickets, max_per_buyer, per row and only when one of them changes: '
    'records the old and new values in event_history.';
COMMENT ON TRIGGER events_record_deleted ON events IS
    'AFTER DELETE, per row: records the deletion in event_history (new_total_tickets 0), so '
    'that the event''s history outlives it and still replays.';

-- allocations (0002; counting and ledger triggers 0009)
COMMENT ON TABLE allocations IS
    'A buyer''s hold (reserved) or purchase of quantity tickets of an event, moving along the '
    'status state machine; history, never deleted. Triggers count every insert and every status '
    'or quantity change against the event''s slots and buyer limit, and record it in '
    'allocation_history.';
COMMENT ON COLUMN allocations.id IS
    'Allocation id, drawn from allocations_id_seq; never changes.';
COMMENT ON COLUMN allocations.event_id IS
    'The event; never changes. A new allocation''s event is checked by '
    'allocations_apply_insert, which replaced the foreign key in 0009.';
COMMENT ON COLUMN allocations.fingerprint IS
    'Opaque buyer identity: purchase and cancel check ownership against it, and buyer limits '
    'count by it. Never changes.';
COMMENT ON COLUMN allocations.quantity IS
    'Tickets held or bought; may change only while the allocation is reserved.';
COMMENT ON COLUMN allocations.status IS
    'reserved, purchased, expired or cancelled; allocations_guard_transition allows only the '
    'state machine''s moves.';
COMMENT ON COLUMN allocations.expires_at IS
    'When the hold lapses (default now() + 10 minutes): it can be purchased only before, and '
    'expired only from then on. A lapsed hold cannot be extended.';
COMMENT ON COLUMN allocations.idempotency_key IS
    'Optional client key: a retried reserve with the same key returns the first allocation '
    'instead of making another. Unique across the database; never changes.';
COMMENT ON COLUMN allocations.created_at IS
    'When the allocation was created (the creating transaction''s start); never changes.';
COMMENT ON COLUMN allocations.updated_at IS
    'When the allocation was last updated: greatest(now(), created_at), set by trigger '
    'allocations_set_updated_at.';
COMMENT ON CONSTRAINT allocations_pkey ON allocations IS
    'Allocation ids are unique.';
COMMENT ON CONSTRAINT allocations_fingerprint_length ON allocations IS
    'A buyer fingerprint has 1 to 200 characters.';
COMMENT ON CONSTRAINT allocations_quantity_range ON allocations IS
    'An allocation is for 1 to 10,000 tickets.';
COMMENT ON CONSTRAINT allocations_status_valid ON allocations IS
    'status is one of reserved, purchased, expired and cancelled; allocations_guard_transition '
    'decides which moves between them are allowed.';
COMMENT ON CONSTRAINT allocations_expires_after_created ON allocations IS
    'A hold has a positive length: expires_at is after created_at.';
COMMENT ON CONSTRAINT allocations_hold_at_most_7_days ON allocations IS
    'A hold lasts at most 7 days from its creation, extensions included.';
COMMENT ON CONSTRAINT allocations_idempotency_key_length ON allocations IS
    'An idempotency key, when given, has 1 to 200 characters.';
COMMENT ON CONSTRAINT allocations_updated_after_created ON allocations IS
    'updated_at is never before created_at.';
COMMENT ON CONSTRAINT allocations_id_event_id_key ON allocations IS
    '(id, event_id) is unique (id alone is): the target of tickets_allocation_fkey, which keeps '
    'each ticket on its allocation''s event.';
COMMENT ON INDEX allocations_pkey IS
    'Unique index behind allocations_pkey: one allocation''s lookups (get, purchase, cancel) '
    'and the id joins of the sweeper, the reclaim of lapsed holds and the ticket guards.';
COMMENT ON INDEX allocations_id_event_id_key IS
    'Unique index behind allocations_id_event_id_key: the check of tickets_allocation_fkey on '
    'every ticket issued.';
COMMENT ON INDEX allocations_event_id_idx IS
    'An event''s allocations by status: whether an event has any (events_guard_delete, '
    'inventory_resplit), and the per-event sums by status of ticketing check.';
COMMENT ON INDEX allocations_hold_expiry_idx IS
    'Live holds (reserved) in expiry order: the sweeper''s expire_due takes its batches of '
    'lapsed holds from it.';
COMMENT ON INDEX allocations_event_hold_expiry_idx IS
    'One event''s live holds (reserved) by expiry: allocations_reclaim_lapsed, and the lapsed '
    'sums of get_availability, ticketing status and ticketing check.';
COMMENT ON INDEX allocations_buyer_live_idx IS
    'Buyers'' live (reserved or purchased) allocations per event, for the queries that sum them '
    'by buyer: ticketing check''s buyer limit and buyer counter checks, and the recount when '
    'events_guard_capacity first sets a limit.';
COMMENT ON INDEX allocations_fingerprint_idx IS
    'A buyer''s allocations, newest first: list_for_buyer.';
COMMENT ON INDEX allocations_idempotency_key_uniq IS
    'Makes idempotency keys unique across the database (allocations without one excepted): the '
    'arbiter of reserve''s ON CONFLICT (idempotency_key) and get_by_idempotency_key''s lookup.';
COMMENT ON SEQUENCE allocations_id_seq IS
    'Identity sequence of allocations.id; owned by the column, it follows the table.';
COMMENT ON TRIGGER allocations_guard_transition ON allocations IS
    'BEFORE UPDATE, per row: keeps the row on the status state machine and its identity columns '
    'unchanged.';
COMMENT ON TRIGGER allocations_set_updated_at ON allocations IS
    'BEFORE UPDATE, per row: keeps updated_at current (set_updated_at).';
COMMENT ON TRIGGER allocations_guard_delete ON allocations IS
    'BEFORE DELETE, per row: allocations are history and are never deleted (TK005); cancel them '
    'instead.';
COMMENT ON TRIGGER allocations_apply_insert ON allocations IS
    'AFTER INSERT, per row: checks the new hold, takes its capacity from the event''s slots, '
    'counts its buyer when the event has a limit, and records it in allocation_history.';
COMMENT ON TRIGGER allocations_apply_updates ON allocations IS
    'AFTER UPDATE, per statement with transition tables: counts the statement''s status and '
    'quantity changes together (one lock order for a whole sweep) and records them in '
    'allocation_history.';

-- tickets (0003)
COMMENT ON TABLE tickets IS
    'One row per purchased ticket: a number within the event, unique among its valid tickets, '
    'and an unguessable code. Issued and voided only by inventory_apply, from the number ranges '
    'of the slots; voided when the purchase is cancelled, never deleted.';
COMMENT ON COLUMN tickets.id IS
    'Ticket id, drawn from tickets_id_seq.';
COMMENT ON COLUMN tickets.event_id IS
    'The event, always that of the ticket''s allocation (tickets_allocation_fkey).';
COMMENT ON COLUMN tickets.allocation_id IS
    'The purchase the ticket belongs to.';
COMMENT ON COLUMN tickets.number IS
    'Ticket number within the event, 1 .. total_tickets, taken from the range of the slot the '
    'purchase drew on; unique among the event''s valid tickets.';
COMMENT ON COLUMN tickets.code IS
    'Unguessable 22-character code (ticket_code()), unique; what get_by_code looks up.';
COMMENT ON COLUMN tickets.voided_at IS
    'NULL while the ticket is valid; set once, to greatest(now(), created_at), when its '
    'allocation is cancelled.';
COMMENT ON COLUMN tickets.created_at IS
    'When the ticket was issued (the purchasing transaction''s start).';
COMMENT ON CONSTRAINT tickets_pkey ON tickets IS
    'Ticket ids are unique.';
COMMENT ON CONSTRAINT tickets_allocation_fkey ON tickets IS
    '(allocation_id, event_id) references allocations (id, event_id): a ticket belongs to an '
    'allocation of the same event, which also vouches for the event.';
COMMENT ON CONSTRAINT tickets_number_positive ON tickets IS
    'Ticket numbers start at 1.';
COMMENT ON CONSTRAINT tickets_code_length ON tickets IS
    'A code has 22 to 200 characters (ticket_code makes 22).';
COMMENT ON CONSTRAINT tickets_voided_after_created ON tickets IS
    'A ticket is voided no earlier than it was issued (why voiding takes greatest(now(), '
    'created_at)).';
COMMENT ON CONSTRAINT tickets_code_key ON tickets IS
    'Ticket codes are unique, so a code names exactly one ticket.';
COMMENT ON CONSTRAINT tickets_number_excl ON tickets IS
    'No two valid tickets of an event share a number, whoever inserts (a GiST exclusion, hence '
    'the btree_gist extension); voided tickets keep their numbers without conflicting.';
COMMENT ON INDEX tickets_pkey IS
    'Unique index behind tickets_pkey: a ticket''s identity, and the join of the voiding UPDATE '
    'in inventory_apply.';
COMMENT ON INDEX tickets_code_key IS
    'Unique index behind tickets_code_key: get_by_code.';
COMMENT ON INDEX tickets_number_excl IS
    'Partial GiST index (valid tickets only) behind the exclusion constraint '
    'tickets_number_excl; it exists to enforce it, and the functions'' queries are written so '
    'that the planner does not pick it to scan an event''s tickets.';
COMMENT ON INDEX tickets_allocation_id_idx IS
    'An allocation''s tickets by number: list_for_allocation, the valid-ticket count of '
    'tickets_guard_insert, the refunds of inventory_apply, and the referencing side of '
    'tickets_allocation_fkey.';
COMMENT ON INDEX tickets_event_number_idx IS
    'An event''s tickets by number: the highest number issued in a slot''s range '
    '(ticket_numbers_take, events_guard_capacity), events_check_ticket_numbers, and ticketing '
    'check''s slot range check.';
COMMENT ON SEQUENCE tickets_id_seq IS
    'Identity sequence of tickets.id; owned by the column, it follows the table.';
COMMENT ON TRIGGER tickets_guard_insert ON tickets IS
    'AFTER INSERT, per statement with a transition table: new tickets must be valid, belong to '
    'purchased allocations within their quantity, and be numbered within the event''s capacity '
    '(TK005).';
COMMENT ON TRIGGER tickets_guard_change ON tickets IS
    'BEFORE UPDATE OR DELETE, per row: a ticket is never deleted and changes only to be voided '
    'once its allocation is cancelled (TK005).';

-- ticket_number_pool (0003)
COMMENT ON TABLE ticket_number_pool IS
    'Internal: ticket numbers free to be issued again (voided tickets'' numbers, and numbers a '
    'capacity raise brings back into range), lowest first. Every number up to the highest '
    'issued in a slot''s range is on a valid ticket or here, which keeps new numbers within the '
    'range.';
COMMENT ON COLUMN ticket_number_pool.event_id IS
    'The event the number belongs to.';
COMMENT ON COLUMN ticket_number_pool.number IS
    'A ticket number on no valid ticket, ready for ticket_numbers_take to issue again.';
COMMENT ON CONSTRAINT ticket_number_pool_pkey ON ticket_number_pool IS
    'A number is pooled at most once per event.';
COMMENT ON CONSTRAINT ticket_number_pool_number_positive ON ticket_number_pool IS
    'Pooled numbers are ticket numbers: 1 or above.';
COMMENT ON INDEX ticket_number_pool_pkey IS
    'Unique index behind ticket_number_pool_pkey: ticket_numbers_take takes the lowest pooled '
    'numbers of a slot''s range from it, and ticketing check counts them per range.';

-- event_inventory (0004)
COMMENT ON TABLE event_inventory IS
    'Internal: one settings row per event, copies of its total_tickets and max_per_buyer plus '
    'how many slots share its capacity. It exists exactly while its event does, and '
    'reservations read it without locking it.';
COMMENT ON COLUMN event_inventory.event_id IS
    'The event; the row is deleted with it.';
COMMENT ON COLUMN event_inventory.total_tickets IS
    'Copy of events.total_tickets, kept by events_open_inventory and events_guard_capacity.';
COMMENT ON COLUMN event_inventory.max_per_buyer IS
    'Copy of events.max_per_buyer, read when a change starts to decide whether its buyers are '
    'counted.';
COMMENT ON COLUMN event_inventory.slot_count IS
    'How many inventory_slots rows share the event''s capacity.';
COMMENT ON CONSTRAINT event_inventory_pkey ON event_inventory IS
    'One settings row per event.';
COMMENT ON CONSTRAINT event_inventory_event_id_fkey ON event_inventory IS
    'The row belongs to an existing event and is deleted with it (ON DELETE CASCADE), so a '
    'missing row means a missing event to allocations_apply_insert.';
COMMENT ON CONSTRAINT event_inventory_slot_count_range ON event_inventory IS
    'An event has 1 to 64 slots.';
COMMENT ON INDEX event_inventory_pkey IS
    'Unique index behind event_inventory_pkey: the settings read at the start of every '
    'allocation change (and the existence check of a new allocation''s event), and the foreign '
    'key''s lookups.';

-- inventory_slots (0004)
COMMENT ON TABLE inventory_slots IS
    'Internal: an event''s capacity split over slot_count rows, each counting its own reserved '
    'and purchased tickets and owning a consecutive range of ticket numbers. A buyer locks one '
    'slot, not the event, and each row''s CHECK is the anti-oversell invariant; fillfactor 50 '
    'keeps the frequent updates HOT.';
COMMENT ON COLUMN inventory_slots.event_id IS
    'The event; its slots are deleted with it.';
COMMENT ON COLUMN inventory_slots.slot IS
    'Slot number, 0 .. slot_count - 1; whoever waits for several slots of an event waits in '
    'this order.';
COMMENT ON COLUMN inventory_slots.first_number IS
    'First ticket number of the slot''s range, first_number .. first_number + capacity - 1; the '
    'ranges are consecutive from 1 in slot order.';
COMMENT ON COLUMN inventory_slots.capacity IS
    'The slot''s share of total_tickets (the shares add up to it); may be 0 after a capacity '
    'cut.';
COMMENT ON COLUMN inventory_slots.reserved IS
    'Tickets held in this slot by reserved allocations, lapsed holds included until they are '
    'marked expired; not tied to particular allocations.';
COMMENT ON COLUMN inventory_slots.purchased IS
    'Tickets sold out of this slot: always the number of valid tickets numbered in its range.';
COMMENT ON COLUMN inventory_slots.max_per_buyer IS
    'Copy of events.max_per_buyer, read by a change under its slot lock, so that a concurrent '
    'change of the limit (which locks every slot) cannot pass unseen.';
COMMENT ON CONSTRAINT inventory_slots_pkey ON inventory_slots IS
    'One row per slot of an event.';
COMMENT ON CONSTRAINT inventory_slots_event_id_fkey ON inventory_slots IS
    'Slots belong to an existing event and are deleted with it (ON DELETE CASCADE).';
COMMENT ON CONSTRAINT inventory_slots_slot_range ON inventory_slots IS
    'Slot numbers are 0 to 63: at most 64 slots per event.';
COMMENT ON CONSTRAINT inventory_slots_first_number_positive ON inventory_slots IS
    'Ticket number ranges start at 1 or above.';
COMMENT ON CONSTRAINT inventory_slots_counts_nonnegative ON inventory_slots IS
    'capacity, reserved and purchased are never negative: catches a desynchronised decrement.';
COMMENT ON CONSTRAINT inventory_slots_within_capacity ON inventory_slots IS
    'reserved + purchased <= capacity: the anti-oversell invariant, local to one row and '
    'checked on every row version whoever writes. Summed over the slots, it bounds the event by '
    'total_tickets.';
COMMENT ON INDEX inventory_slots_pkey IS
    'Unique index behind inventory_slots_pkey: every slot access (taking, moving and returning '
    'tickets, locking an event''s slots in slot order) and the foreign key''s lookups.';

-- buyer_inventory (0004; only for events with a limit since 0010)
COMMENT ON TABLE buyer_inventory IS
    'Internal: per event with a max_per_buyer, one counter per buyer holding their reserved '
    'plus purchased quantity, which the limit is checked against under the row''s lock. Events '
    'without a limit keep no counters; setting a limit counts every buyer afresh.';
COMMENT ON COLUMN buyer_inventory.event_id IS
    'The event.';
COMMENT ON COLUMN buyer_inventory.fingerprint IS
    'The buyer (allocations.fingerprint).';
COMMENT ON COLUMN buyer_inventory.quantity IS
    'The buyer''s reserved plus purchased quantity on the event, lapsed holds included until '
    'they are marked expired.';
COMMENT ON CONSTRAINT buyer_inventory_pkey ON buyer_inventory IS
    'One counter per buyer and event.';
COMMENT ON CONSTRAINT buyer_inventory_quantity_nonnegative ON buyer_inventory IS
    'A buyer''s count is never negative: catches a desynchronised decrement.';
COMMENT ON INDEX buyer_inventory_pkey IS
    'Unique index behind buyer_inventory_pkey: the arbiter of inventory_count_buyers'' upsert, '
    'the join of allocations_reclaim_lapsed, and the highest count that events_guard_capacity '
    'checks a new limit against.';

-- allocation_history (0007)
COMMENT ON TABLE allocation_history IS
    'Ledger: one append-only entry per allocation inserted and per change of its status or '
    'quantity, written by the triggers on allocations in the same transaction. Replaying it '
    'gives the current allocations (ticketing check); only the table owner may rewrite it.';
COMMENT ON COLUMN allocation_history.id IS
    'Entry id, drawn from allocation_history_id_seq: the replay order of an allocation''s '
    'entries.';
COMMENT ON COLUMN allocation_history.allocation_id IS
    'The allocation. No foreign key, on purpose: allocations are never deleted, the replay '
    'finds orphans, and a foreign key check would cost every reservation one more trigger call.';
COMMENT ON COLUMN allocation_history.event_id IS
    'The allocation''s event.';
COMMENT ON COLUMN allocation_history.fingerprint IS
    'The allocation''s buyer.';
COMMENT ON COLUMN allocation_history.old_status IS
    'Status before the change; NULL for an insert or an opening entry.';
COMMENT ON COLUMN allocation_history.new_status IS
    'Status after the change.';
COMMENT ON COLUMN allocation_history.old_quantity IS
    'Quantity before the change; NULL exactly when old_status is.';
COMMENT ON COLUMN allocation_history.new_quantity IS
    'Quantity after the change.';
COMMENT ON COLUMN allocation_history.opening IS
    'True only for the opening entries that 0007 wrote for allocations older than the ledger, '
    'which may start in any status.';
COMMENT ON COLUMN allocation_history.recorded_at IS
    'When the entry was written (clock_timestamp(), not the transaction start).';
COMMENT ON COLUMN allocation_history.recorded_by IS
    'The login that made the change (session_user), not the owner role the recording trigger '
    'runs as.';
COMMENT ON COLUMN allocation_history.transaction_id IS
    'The writing transaction; groups the entries of one transaction.';
COMMENT ON CONSTRAINT allocation_history_pkey ON allocation_history IS
    'Entry ids are unique.';
COMMENT ON CONSTRAINT allocation_history_old_both_or_neither ON allocation_history IS
    'old_status and old_quantity are both NULL (an insert or an opening entry) or both set.';
COMMENT ON CONSTRAINT allocation_history_opening_has_no_old ON allocation_history IS
    'An opening entry has no old values.';
COMMENT ON CONSTRAINT allocation_history_status_valid ON allocation_history IS
    'new_status, and old_status when set, are allocation statuses.';
COMMENT ON INDEX allocation_history_pkey IS
    'Unique index behind allocation_history_pkey, on the entry ids that give the replay order.';
COMMENT ON INDEX allocation_history_allocation_id_idx IS
    'An allocation''s entries in order: the ledger replay of ticketing check, which reads one '
    'event''s entries through its allocations.';
COMMENT ON SEQUENCE allocation_history_id_seq IS
    'Identity sequence of allocation_history.id; owned by the column, it follows the table.';
COMMENT ON TRIGGER allocation_history_append_only ON allocation_history IS
    'BEFORE UPDATE, DELETE or TRUNCATE, per statement: refuses them (TK008) unless the current '
    'role is the table''s owner itself.';

-- event_history (0007)
COMMENT ON TABLE event_history IS
    'Ledger: one append-only entry per event inserted, per change of its total_tickets or '
    'max_per_buyer, and per event deleted, written by the triggers on events. Replaying it '
    'gives the current capacities (ticketing check); only the table owner may rewrite it.';
COMMENT ON COLUMN event_history.id IS
    'Entry id, drawn from event_history_id_seq: the replay order of an event''s entries.';
COMMENT ON COLUMN event_history.event_id IS
    'The event. No foreign key, so that the entries outlive a deleted event.';
COMMENT ON COLUMN event_history.created IS
    'The entry records the event''s creation (or is its opening entry).';
COMMENT ON COLUMN event_history.old_total_tickets IS
    'total_tickets before the change; NULL exactly when created.';
COMMENT ON COLUMN event_history.new_total_tickets IS
    'total_tickets after the change; 0 for the entry of a deleted event.';
COMMENT ON COLUMN event_history.old_max_per_buyer IS
    'max_per_buyer before the change; NULL when created, or when there was no limit.';
COMMENT ON COLUMN event_history.new_max_per_buyer IS
    'max_per_buyer after the change; NULL for no limit, and for the entry of a deleted event.';
COMMENT ON COLUMN event_history.recorded_at IS
    'When the entry was written (clock_timestamp(), not the transaction start).';
COMMENT ON COLUMN event_history.recorded_by IS
    'The login that made the change (session_user), not the owner role the recording trigger '
    'runs as.';
COMMENT ON COLUMN event_history.transaction_id IS
    'The writing transaction; groups the entries of one transaction.';
COMMENT ON CONSTRAINT event_history_pkey ON event_history IS
    'Entry ids are unique.';
COMMENT ON CONSTRAINT event_history_old_total_unless_created ON event_history IS
    'Exactly the creation entries have no old total_tickets.';
COMMENT ON INDEX event_history_pkey IS
    'Unique index behind event_history_pkey, on the entry ids that give the replay order.';
COMMENT ON INDEX event_history_event_id_idx IS
    'An event''s entries in order: the ledger replay of ticketing check.';
COMMENT ON SEQUENCE event_history_id_seq IS
    'Identity sequence of event_history.id; owned by the column, it follows the table.';
COMMENT ON TRIGGER event_history_append_only ON event_history IS
    'BEFORE UPDATE, DELETE or TRUNCATE, per statement: refuses them (TK008) unless the current '
    'role is the table''s owner itself.';

-- event_counters (0004)
COMMENT ON VIEW event_counters IS
    'An event''s counters in one row: its event_inventory settings and the reserved and '
    'purchased tickets summed over its slots. For psql users and tests; the library reads the '
    'slots themselves.';
COMMENT ON COLUMN event_counters.event_id IS
    'The event.';
COMMENT ON COLUMN event_counters.total_tickets IS
    'The event''s capacity (event_inventory).';
COMMENT ON COLUMN event_counters.max_per_buyer IS
    'The event''s buyer limit (event_inventory); NULL means none.';
COMMENT ON COLUMN event_counters.slot_count IS
    'How many slots share the capacity.';
COMMENT ON COLUMN event_counters.reserved IS
    'Tickets held, summed over the slots; lapsed holds count until they are marked expired.';
COMMENT ON COLUMN event_counters.purchased IS
    'Tickets sold, summed over the slots.';

-- allocation_change (0004)
COMMENT ON TYPE allocation_change IS
    'One allocation row changed by a statement, as the trigger functions hand it to '
    'inventory_apply and the buyer-counting helpers.';
COMMENT ON COLUMN allocation_change.id IS
    'The allocation.';
COMMENT ON COLUMN allocation_change.event_id IS
    'Its event.';
COMMENT ON COLUMN allocation_change.fingerprint IS
    'Its buyer.';
COMMENT ON COLUMN allocation_change.old_status IS
    'Status before the change; NULL for an insert.';
COMMENT ON COLUMN allocation_change.new_status IS
    'Status after the change.';
COMMENT ON COLUMN allocation_change.old_quantity IS
    'Quantity before the change; 0 for an insert.';
COMMENT ON COLUMN allocation_change.new_quantity IS
    'Quantity after the change.';

-- Functions: guards
COMMENT ON FUNCTION set_updated_at() IS
    'Trigger function of events_set_updated_at and allocations_set_updated_at: sets updated_at '
    'to greatest(now(), created_at), since now(), the transaction start, can be earlier than '
    'the row''s creation.';
COMMENT ON FUNCTION allocations_guard_transition() IS
    'Trigger function: the status state machine (reserved to purchased before expires_at, to '
    'cancelled, or to expired from expires_at on; purchased to cancelled), fixed identity '
    'columns, and quantity or expiry changes for live holds only (TK003, TK004, TK005).';
COMMENT ON FUNCTION allocations_guard_delete() IS
    'Trigger function: refuses every DELETE of an allocation (TK005); allocations are cancelled '
    'or expire instead.';
COMMENT ON FUNCTION tickets_guard_insert() IS
    'Trigger function, per statement: refuses tickets inserted voided, tickets of an allocation '
    'that is not purchased or would get more valid tickets than its quantity, and numbers above '
    'the event''s total_tickets (TK005), whoever inserts.';
COMMENT ON FUNCTION tickets_guard_change() IS
    'Trigger function: refuses deleting a ticket, and any change but voiding a valid ticket '
    'whose allocation is cancelled (TK005).';
COMMENT ON FUNCTION events_check_ticket_numbers() IS
    'Trigger function: refuses (TK006) a total_tickets lowered below the number of a valid '
    'ticket, before events_guard_capacity re-lays the slots.';
COMMENT ON FUNCTION events_guard_id() IS
    'Trigger function: refuses any change of an event''s id (TK005).';
COMMENT ON FUNCTION events_guard_delete() IS
    'Trigger function, SECURITY DEFINER: under the event''s slot locks, refuses to delete an '
    'event that has allocations (23503, as the foreign key dropped by 0009 did), else deletes '
    'its buyer counters and pooled numbers.';
COMMENT ON FUNCTION ledger_guard_append_only() IS
    'Trigger function of the ledger tables: refuses UPDATE, DELETE and TRUNCATE (TK008) unless '
    'the current role is the table''s owner itself. Runs as the caller, deliberately not '
    'SECURITY DEFINER.';

-- Functions: tickets
COMMENT ON FUNCTION ticket_code() IS
    'Default of tickets.code: the 16 bytes of a random version 4 UUID (122 random bits) in '
    'base64url without padding, 22 characters.';
COMMENT ON FUNCTION ticket_numbers_take(bigint, integer, integer, integer) IS
    'Picks p_count free ticket numbers of an event within [p_first, p_last]: pooled numbers '
    'first, lowest first, then those above the highest issued in the range. Called with the '
    'range''s slot locked, which serialises numbering.';

-- Functions: inventory
COMMENT ON FUNCTION inventory_slot_count(integer) IS
    'Default slot count of a new event: one per 64 tickets, from 1 to 16. More slots let more '
    'buyers reserve at once; fewer fragment capacity less near sell-out.';
COMMENT ON FUNCTION inventory_layout(bigint, integer, integer, integer) IS
    'Inserts an event''s slot rows, splitting p_total over p_slots as evenly as possible, with '
    'consecutive ticket number ranges from 1.';
COMMENT ON FUNCTION events_open_inventory() IS
    'Trigger function, SECURITY DEFINER: gives a new event its event_inventory row and its '
    'slots, inventory_slot_count of them or the count in the transaction-local setting '
    'ticketing.slots (TK006 outside 1 .. least(64, total_tickets)), which it then clears.';
COMMENT ON FUNCTION inventory_resplit(bigint, integer) IS
    'For the owner: re-splits an event''s capacity over p_slots slots, only before its first '
    'allocation (TK006 otherwise). Locks the event_inventory row, then the slots in slot order, '
    'so it cannot race a first reservation.';
COMMENT ON FUNCTION allocations_reclaim_lapsed(bigint, text, bigint[]) IS
    'Marks an event''s (or one buyer''s) lapsed holds expired, skipping rows other transactions '
    'have locked, the ids in p_skip and rows of the current transaction; returns how many. Used '
    'when an event looks sold out, a buyer over the limit, or settings go down.';
COMMENT ON FUNCTION inventory_take(bigint, integer, bigint[]) IS
    'Takes p_quantity tickets into the reserved counts of an event''s slots: an unlocked slot '
    'with room at random, else a wait for one, else all slots locked in slot order and lapsed '
    'holds reclaimed. TK001 only when the event lacks the tickets; returns the max_per_buyer '
    'copy read under the slot lock.';
COMMENT ON FUNCTION inventory_move(bigint, integer, boolean) IS
    'Moves p_quantity tickets of an event out of reserved, into purchased when p_purchase, from '
    'one unlocked slot or from several in slot order; returns the slots used with their number '
    'ranges. TK007 if the slots hold fewer reserved tickets.';
COMMENT ON FUNCTION events_guard_capacity() IS
    'Trigger function, SECURITY DEFINER: under all the event''s slot locks, refuses (TK006) a '
    'total_tickets or max_per_buyer below what is live, counts buyers afresh when a limit is '
    'first set, re-lays the slots and copies the settings.';
COMMENT ON FUNCTION inventory_apply(allocation_change[]) IS
    'Applies an UPDATE''s allocation changes (from allocations_apply_updates), event by event: '
    'buyer counters for events with a limit, capacity taken or returned, tickets issued for '
    'purchases and voided for cancelled purchases. Locks buyers before slots.';
COMMENT ON FUNCTION inventory_count_buyers(bigint, integer, allocation_change[]) IS
    'Updates one event''s buyer counters for a set of changes, in fingerprint order; a buyer '
    'over p_limit first gets their own lapsed holds reclaimed, then TK002.';
COMMENT ON FUNCTION inventory_count_late(bigint, integer, integer, allocation_change[]) IS
    'Run once a change holds its slot lock: re-checks its buyers if the limit changed since it '
    'was read, or counts them if a limit was set meanwhile (TK002), so that a limit set during '
    'a sale is exact.';
COMMENT ON FUNCTION allocations_apply_insert() IS
    'Trigger function, SECURITY DEFINER, per row: a new allocation must be a hold (TK003) of an '
    'existing event (23503, as the foreign key raised); counts its buyer if the event has a '
    'limit, takes its capacity (inventory_take) and records it in allocation_history.';
COMMENT ON FUNCTION allocations_apply_updates() IS
    'Trigger function, SECURITY DEFINER, per statement: hands the rows whose status or quantity '
    'changed to inventory_apply and records them in allocation_history.';

-- Functions: ledger
COMMENT ON FUNCTION events_record_capacity() IS
    'Trigger function, SECURITY DEFINER, of events_record_created, events_record_capacity and '
    'events_record_deleted: writes the event''s entry to event_history (creation, capacity '
    'change or deletion, told apart by TG_OP).';
