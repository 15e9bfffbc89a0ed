-- What ticketing.db reads around yoyo: whether the login may take yoyo's lock,
-- and which migrations a database has (without changing anything in it).

-- name: may_take_migration_lock
-- yoyo retries a refused lock insert for 10 s, as if another process held the
-- lock: a login without the privilege (ticketing_app) is told at once instead.
SELECT to_regclass('yoyo_lock') IS NULL OR has_table_privilege('yoyo_lock', 'INSERT');

-- name: migrations_table
SELECT to_regclass('public._yoyo_migration');

-- name: applied_migrations
SELECT migration_id FROM _yoyo_migration;

-- name: create_empty_database
-- migrated_database: an empty database to migrate ({name}: an identifier), dropped afterwards.
CREATE DATABASE {name} TEMPLATE template0;

-- name: drop_database
DROP DATABASE IF EXISTS {name};
