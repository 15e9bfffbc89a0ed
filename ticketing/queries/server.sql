-- What ticketing.embedded runs on a throwaway primary it started: make its
-- commits wait for a synchronous standby, and undo that.

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

-- name: create_empty_database
-- ticketing._schema: an empty database to migrate and dump ({name}: an identifier).
CREATE DATABASE {name} TEMPLATE template0;

-- name: drop_database
DROP DATABASE IF EXISTS {name};
