"""Every object of the schema explains itself in the catalog (COMMENT ON, migration 0011).

The objects are read from the catalogs, not from a list: every table, view, index, sequence,
column, constraint, trigger, function and user type in the database's own schemas, without
what an extension owns (btree_gist) and without yoyo's bookkeeping tables.
"""

from __future__ import annotations

import re
from typing import Any

import psycopg

from ticketing import db

COMMENTS_MIGRATION = "0011_comments"

# One row per object: (what it is, named for a person, its comment or NULL). The comment
# query functions (obj_description, col_description) read pg_description.
_OBJECTS = r"""
WITH schemas AS (
    SELECT n.oid FROM pg_namespace AS n
    WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
      AND n.nspname !~ '^pg_(toast|temp_|toast_temp_)'
), extension_members AS (
    SELECT d.classid, d.objid FROM pg_depend AS d WHERE d.deptype = 'e'
), relations AS (
    -- Tables, views, indexes and sequences; an index counts as yoyo's when its table is.
    SELECT c.oid, c.relkind, c.relname
    FROM pg_class AS c
    LEFT JOIN pg_index AS i ON i.indexrelid = c.oid
    JOIN pg_class AS t ON t.oid = coalesce(i.indrelid, c.oid)
    WHERE c.relnamespace IN (SELECT oid FROM schemas)
      AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'i', 'I', 'S')
      AND t.relname !~ '^_?yoyo_'
      AND (c.oid, 'pg_class'::regclass) NOT IN (
          SELECT objid, classid FROM extension_members)
), types AS (
    -- User types: enums, domains, ranges, multiranges and free-standing composite types.
    SELECT t.oid, t.typrelid
    FROM pg_type AS t
    LEFT JOIN pg_class AS c ON c.oid = t.typrelid
    WHERE t.typnamespace IN (SELECT oid FROM schemas)
      AND (t.typtype IN ('e', 'd', 'r', 'm') OR (t.typtype = 'c' AND c.relkind = 'c'))
      AND (t.oid, 'pg_type'::regclass) NOT IN (SELECT objid, classid FROM extension_members)
), tables AS (
    SELECT oid FROM relations WHERE relkind IN ('r', 'p', 'v', 'm', 'f')
)
SELECT CASE r.relkind
           WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view'
           WHEN 'f' THEN 'foreign table' WHEN 'S' THEN 'sequence'
           WHEN 'i' THEN 'index' WHEN 'I' THEN 'index'
           ELSE 'table'
       END || ' ' || r.oid::regclass::text,
       obj_description(r.oid, 'pg_class')
FROM relations AS r
UNION ALL
SELECT 'column ' || a.attrelid::regclass::text || '.' || quote_ident(a.attname),
       col_description(a.attrelid, a.attnum)
FROM pg_attribute AS a
WHERE a.attnum > 0 AND NOT a.attisdropped
  AND (a.attrelid IN (SELECT oid FROM tables)
       OR a.attrelid IN (SELECT typrelid FROM types WHERE typrelid <> 0))
UNION ALL
SELECT 'constraint ' || quote_ident(con.conname) || ' on '
           || coalesce(nullif(con.conrelid, 0)::regclass::text, con.contypid::regtype::text),
       obj_description(con.oid, 'pg_constraint')
FROM pg_constraint AS con
-- PostgreSQL 18 also lists each NOT NULL as a constraint (contype 'n'), which 15 does not
-- have: a column's NOT NULL is explained by the column's comment on both.
WHERE (con.conrelid IN (SELECT oid FROM tables) OR con.contypid IN (SELECT oid FROM types))
  AND con.contype <> 'n'
UNION ALL
SELECT 'trigger ' || quote_ident(tg.tgname) || ' on ' || tg.tgrelid::regclass::text,
       obj_description(tg.oid, 'pg_trigger')
FROM pg_trigger AS tg
WHERE NOT tg.tgisinternal AND tg.tgrelid IN (SELECT oid FROM tables)
UNION ALL
SELECT 'function ' || p.oid::regprocedure::text, obj_description(p.oid, 'pg_proc')
FROM pg_proc AS p
WHERE p.pronamespace IN (SELECT oid FROM schemas)
  AND (p.oid, 'pg_proc'::regclass) NOT IN (SELECT objid, classid FROM extension_members)
UNION ALL
SELECT 'type ' || t.oid::regtype::text, obj_description(t.oid, 'pg_type')
FROM types AS t
ORDER BY 1
"""


def _objects(conn: psycopg.Connection[Any]) -> list[tuple[str, str | None]]:
    return [(str(name), comment) for name, comment in conn.execute(_OBJECTS).fetchall()]


def _comments(dsn: str) -> dict[str, str]:
    """Each object of the schema that has a comment, with its comment."""
    with db.connect(dsn) as conn:
        return {name: comment for name, comment in _objects(conn) if comment is not None}


def test_every_object_of_the_schema_has_a_comment(admin_conn: psycopg.Connection[Any]) -> None:
    objects = _objects(admin_conn)
    # The query finds the schema: a handful of each kind, not an empty result that passes.
    kinds = {name.split(" ", 1)[0] for name, _ in objects}
    assert {"table", "view", "index", "sequence", "column", "constraint"} <= kinds
    assert {"trigger", "function", "type"} <= kinds
    missing = [name for name, comment in objects if comment is None or not comment.strip()]
    assert missing == [], "objects without a comment (COMMENT ON ... IS '...'):\n  " + (
        "\n  ".join(missing)
    )


def test_every_comment_is_one_line_of_sentences(admin_conn: psycopg.Connection[Any]) -> None:
    badly_formed = [
        f"{name}: {comment!r}"
        for name, comment in _objects(admin_conn)
        if comment is not None
        and (comment != comment.strip() or "\n" in comment or not comment.endswith("."))
    ]
    assert badly_formed == [], "comments that are not one line ending in a full stop:\n  " + (
        "\n  ".join(badly_formed)
    )


def test_rolling_back_the_comments_restores_the_schema_without_them(admin_dsn: str) -> None:
    # The state before 0011 has no comment on any object of the schema: no earlier
    # migration sets one. (A rollback that restored earlier text would need this to change.)
    earlier = [
        path.name
        for path in sorted(db.migrations_dir().glob("[0-9]*.sql"))
        if path.name < COMMENTS_MIGRATION
        and re.search(r"\bCOMMENT\s+ON\b", path.read_text(encoding="utf-8"), re.IGNORECASE)
    ]
    assert earlier == []
    commented = _comments(admin_dsn)
    assert commented

    # Undo 0011 (and whatever came after it), one migration at a time, newest first.
    undone: list[str] = []
    while COMMENTS_MIGRATION not in undone:
        last = db.rollback_last(admin_dsn)
        assert last, f"{COMMENTS_MIGRATION} was never applied"
        undone += last
    assert _comments(admin_dsn) == {}

    # Applying it again brings back every comment, word for word.
    assert db.migrate(admin_dsn) == list(reversed(undone))
    assert _comments(admin_dsn) == commented
