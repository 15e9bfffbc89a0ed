"""The migrated template reaches each test."""

from typing import Any

import psycopg


def test_schema_present(conn: psycopg.Connection[Any]) -> None:
    row = conn.execute("SELECT count(*) FROM events").fetchone()
    assert row == (0,)
