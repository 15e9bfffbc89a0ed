-- The statements ticketing._tx runs at the start of every transaction a query
-- function owns (or joins).

-- name: set_lock_timeout
-- SET LOCAL: until the transaction ends, inside a caller's transaction too.
SELECT set_config('lock_timeout', %(timeout)s, true);

-- name: set_repeatable_read
SET TRANSACTION ISOLATION LEVEL REPEATABLE READ;

-- name: set_serializable
SET TRANSACTION ISOLATION LEVEL SERIALIZABLE;
