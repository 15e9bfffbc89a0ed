-- What ticketing.embedded runs on a throwaway primary it started and its
-- standby: make the primary's commits wait for the standby, and undo that.

-- name: set_synchronous_standby
-- {name} is the standby's application_name, a literal.
ALTER SYSTEM SET synchronous_standby_names = {name};

-- name: set_synchronous_commit
-- {level} is a literal: remote_apply, remote_write or on.
ALTER SYSTEM SET synchronous_commit = {level};

-- name: reset_synchronous_standby
ALTER SYSTEM RESET synchronous_standby_names;

-- name: reset_synchronous_commit
ALTER SYSTEM RESET synchronous_commit;

-- name: reload_settings
SELECT pg_reload_conf();

-- name: standby_sync_state
SELECT sync_state FROM pg_stat_replication WHERE application_name = %s;

-- name: set_apply_delay
-- On a standby: how long it waits before applying what it receives ({delay}: a literal, '1ms').
ALTER SYSTEM SET recovery_min_apply_delay = {delay};
