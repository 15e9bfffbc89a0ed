"""Wording shared by the command line, the demo and the benchmark."""

from __future__ import annotations


def plural(count: int, word: str, many: str | None = None) -> str:
    """'1 migration', '2 migrations', '1,000 workers' ('many' for irregular plurals)."""
    return f"{count:,} {word if count == 1 else (many or word + 's')}"
