"""Named SQL statements, read once at import from the .sql files beside this module.

Each file holds blocks that start with a ``-- name: <name>`` line, as in
procrastinate's queries.sql: a DBA can read every statement the layer runs
without reading Python.
"""

from __future__ import annotations

import re
from importlib import resources
from typing import LiteralString, cast

_NAME = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


def load(filename: str, package: str = __name__) -> dict[str, LiteralString]:
    """Return the named statements of one .sql file of `package` (default: this one)."""
    text = resources.files(package).joinpath(filename).read_text(encoding="utf-8")
    parts = _NAME.split(text)
    queries: dict[str, LiteralString] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in queries:
            raise ValueError(f"{filename}: query {name!r} is defined twice")
        # The SQL comes from the package's own files, never from input.
        queries[name] = cast(LiteralString, body.strip().rstrip(";"))
    return queries
