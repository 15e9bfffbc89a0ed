"""The benchmark's own SQL, read once at import from the .sql files beside this module.

The files use the format of ticketing/queries (blocks that start with a
``-- name: <name>`` line), and are read by the same loader.
"""

from __future__ import annotations

from importlib import resources
from typing import LiteralString, cast

from ticketing.queries import _NAME


def load(filename: str) -> dict[str, LiteralString]:
    """Return the named statements of one .sql file of this package."""
    text = resources.files("ticketing.bench").joinpath(filename).read_text(encoding="utf-8")
    parts = _NAME.split(text)
    queries: dict[str, LiteralString] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in queries:
            raise ValueError(f"{filename}: query {name!r} is defined twice")
        # The SQL comes from the package's own files, never from input.
        queries[name] = cast(LiteralString, body.strip().rstrip(";"))
    return queries


#: The baselines, the floors and the reads of the results (baselines.sql).
Q = load("baselines.sql")
