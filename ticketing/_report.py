"""How the command line, the demo and the benchmark report: counts and percentiles."""

from __future__ import annotations

from collections.abc import Sequence


def plural(count: int, word: str, many: str | None = None) -> str:
    """'1 migration', '2 migrations', '1,000 workers' ('many' for irregular plurals)."""
    return f"{count:,} {word if count == 1 else (many or word + 's')}"


def percentile_ms(ordered: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile of sorted seconds, in milliseconds; None when there are none.

    The one definition for every latency the demo and the benchmark print.
    """
    if not ordered:
        return None
    rank = max(1, -(-len(ordered) * p // 100))
    return round(1000 * ordered[int(rank) - 1], 3)
