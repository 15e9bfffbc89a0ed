-- Allocations: a buyer's hold (reserved) or purchase of N tickets, and the
-- guard that keeps every row on the status state machine.
-- depends: 0001_events

-- Fail fast instead of queueing behind live traffic; retry the deploy later.
SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '5min';

CREATE TABLE allocations (
    id bigint GENERATED ALWAYS AS IDENTITY CONSTRAINT allocations_pkey PRIMARY KEY,
    event_id bigint NOT NULL CONSTRAINT allocations_event_id_fkey REFERENCES events (id),
    fingerprint text NOT NULL,
    quantity integer NOT NULL,
    status text NOT NULL DEFAULT 'reserved',
    expires_at timestamptz NOT NULL DEFAULT now() + interval '10 minutes',
    idempotency_key text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT allocations_fingerprint_length CHECK (char_length(fingerprint) BETWEEN 1 AND 200),
    CONSTRAINT allocations_quantity_range CHECK (quantity BETWEEN 1 AND 10000),
    CONSTRAINT allocations_status_valid
        CHECK (status IN ('reserved', 'purchased', 'expired', 'cancelled')),
    CONSTRAINT allocations_expires_after_created CHECK (expires_at > created_at),
    CONSTRAINT allocations_hold_at_most_7_days CHECK (expires_at <= created_at + interval '7 days'),
    CONSTRAINT allocations_idempotency_key_length
        CHECK (char_length(idempotency_key) BETWEEN 1 AND 200),
    CONSTRAINT allocations_updated_after_created CHECK (updated_at >= created_at),
    -- Target of the tickets (allocation_id, event_id) foreign key, which keeps a
    -- ticket on the same event as its allocation.
    CONSTRAINT allocations_id_event_id_key UNIQUE (id, event_id)
);

-- Foreign key index; also serves per-event sums by status (ticketing check).
CREATE INDEX allocations_event_id_idx ON allocations (event_id, status);
-- The sweeper: live holds in expiry order.
CREATE INDEX allocations_hold_expiry_idx ON allocations (expires_at)
    WHERE status = 'reserved';
-- Reclaiming one event's lapsed holds, and availability's lapsed sum.
CREATE INDEX allocations_event_hold_expiry_idx ON allocations (event_id, expires_at)
    WHERE status = 'reserved';
-- A buyer's live allocations on an event (ticketing check's buyer limit check;
-- the triggers keep the same sums in buyer_inventory).
CREATE INDEX allocations_buyer_live_idx ON allocations (event_id, fingerprint)
    WHERE status IN ('reserved', 'purchased');
-- list_for_buyer, newest first.
CREATE INDEX allocations_fingerprint_idx ON allocations (fingerprint, created_at DESC, id DESC);
-- Idempotency keys are unique across the whole database.
CREATE UNIQUE INDEX allocations_idempotency_key_uniq ON allocations (idempotency_key)
    WHERE idempotency_key IS NOT NULL;

CREATE TRIGGER allocations_set_updated_at
    BEFORE UPDATE ON allocations
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- Every allocation starts as a hold.
CREATE FUNCTION allocations_guard_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status <> 'reserved' THEN
        RAISE EXCEPTION USING
            ERRCODE = 'TK003',
            MESSAGE = format('a new allocation must be reserved, not %s', NEW.status),
            HINT = 'reserve first, then purchase';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER allocations_guard_insert
    BEFORE INSERT ON allocations
    FOR EACH ROW EXECUTE FUNCTION allocations_guard_insert();

-- The status state machine:
--   reserved  -> purchased (only before expires_at) | cancelled | expired (only after expires_at)
--   purchased -> cancelled
-- Identity columns never change; only a hold may change its quantity or expiry,
-- and a lapsed hold cannot be extended back to life.
CREATE FUNCTION allocations_guard_transition() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.id <> OLD.id OR NEW.event_id <> OLD.event_id OR NEW.fingerprint <> OLD.fingerprint
       OR NEW.created_at <> OLD.created_at
       OR NEW.idempotency_key IS DISTINCT FROM OLD.idempotency_key THEN
        RAISE EXCEPTION USING
            ERRCODE = 'TK005',
            MESSAGE = format('allocation %s: id, event_id, fingerprint, created_at and idempotency_key never change', OLD.id);
    END IF;
    IF OLD.status <> 'reserved'
       AND (NEW.quantity <> OLD.quantity OR NEW.expires_at <> OLD.expires_at) THEN
        RAISE EXCEPTION USING
            ERRCODE = 'TK005',
            MESSAGE = format('allocation %s is %s: only a hold can change its quantity or expiry', OLD.id, OLD.status);
    END IF;
    IF NEW.expires_at <> OLD.expires_at AND OLD.expires_at <= statement_timestamp() THEN
        RAISE EXCEPTION USING
            ERRCODE = 'TK004',
            MESSAGE = format('allocation %s: the hold lapsed at %s and cannot be extended',
                             OLD.id, OLD.expires_at);
    END IF;
    IF NEW.status = OLD.status THEN
        RETURN NEW;
    END IF;
    IF (OLD.status, NEW.status) NOT IN (('reserved', 'purchased'), ('reserved', 'cancelled'),
                                        ('reserved', 'expired'), ('purchased', 'cancelled')) THEN
        RAISE EXCEPTION USING
            ERRCODE = 'TK003',
            MESSAGE = format('allocation %s cannot go from %s to %s', OLD.id, OLD.status, NEW.status);
    END IF;
    IF NEW.status = 'purchased' AND OLD.expires_at <= statement_timestamp() THEN
        RAISE EXCEPTION USING
            ERRCODE = 'TK004',
            MESSAGE = format('allocation %s: the hold lapsed at %s', OLD.id, OLD.expires_at);
    END IF;
    IF NEW.status = 'expired' AND OLD.expires_at > statement_timestamp() THEN
        RAISE EXCEPTION USING
            ERRCODE = 'TK003',
            MESSAGE = format('allocation %s cannot expire before %s', OLD.id, OLD.expires_at);
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER allocations_guard_transition
    BEFORE UPDATE ON allocations
    FOR EACH ROW EXECUTE FUNCTION allocations_guard_transition();

-- Allocations are history: a hold is cancelled or expires, it is never deleted.
CREATE FUNCTION allocations_guard_delete() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION USING
        ERRCODE = 'TK005',
        MESSAGE = format('allocation %s cannot be deleted', OLD.id),
        HINT = 'cancel it instead';
END
$$;

CREATE TRIGGER allocations_guard_delete
    BEFORE DELETE ON allocations
    FOR EACH ROW EXECUTE FUNCTION allocations_guard_delete();
