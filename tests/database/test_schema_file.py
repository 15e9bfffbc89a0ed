"""docs/schema.sql is what migrating an empty database gives, to the line."""

from __future__ import annotations

import difflib
import uuid

from pytest_postgresql.executors import NoopExecutor

from tests.support import REPO
from ticketing import _schema, embedded


def test_docs_schema_sql_matches_the_migrations(pg_server: NoopExecutor) -> None:
    auth = f"{pg_server.user}:{pg_server.password}" if pg_server.password else pg_server.user
    server_url = f"postgresql://{auth}@{pg_server.host}:{pg_server.port}/postgres"
    dumped = _schema.fresh_schema(
        server_url, f"schema_{uuid.uuid4().hex[:12]}", bindir=embedded.find_bindir()
    )
    committed = (REPO / _schema.SCHEMA_FILE).read_text(encoding="utf-8")
    if dumped != committed:
        diff = difflib.unified_diff(
            committed.splitlines(),
            dumped.splitlines(),
            "docs/schema.sql (committed)",
            "the migrations (now)",
            lineterm="",
        )
        shown = "\n".join(list(diff)[:80])
        raise AssertionError(
            "docs/schema.sql differs from what the migrations give: run `make schema` "
            f"and commit it.\n{shown}"
        )


def test_normalise_drops_what_varies_with_the_tools() -> None:
    dump = "\n".join(
        [
            "\\restrict abc123",
            "-- Dumped from database version 18.6",
            "-- Dumped by pg_dump version 18.6",
            "SET statement_timeout = 0;",
            "SELECT pg_catalog.set_config('search_path', '', false);",
            "",
            "",
            "",
            "CREATE TABLE public.t (id integer);",
            "ALTER VIEW public.v OWNER TO ticketing_owner;",
            "ALTER DEFAULT PRIVILEGES FOR ROLE r REVOKE ALL ON FUNCTIONS  FROM PUBLIC;",
            "\\unrestrict abc123",
        ]
    )
    assert _schema.normalise(dump) == _schema.HEADER + "\n" + "\n".join(
        [
            "CREATE TABLE public.t (id integer);",
            "ALTER TABLE public.v OWNER TO ticketing_owner;",
            "ALTER DEFAULT PRIVILEGES FOR ROLE r REVOKE ALL ON FUNCTIONS FROM PUBLIC;",
            "",
        ]
    )
