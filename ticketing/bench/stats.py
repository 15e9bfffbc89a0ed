"""Summaries of what buyer processes did: rates, percentiles, errors, ratios."""

from __future__ import annotations

from collections import Counter
from typing import Any

from ticketing._report import percentile_ms
from ticketing.bench.buyers import Tally

__all__ = ["at_least", "error_samples", "percentile_ms", "ratio", "summarise"]


def summarise(tallies: list[Tally]) -> dict[str, Any]:
    started = min(t.started for t in tallies)
    finished = max(t.finished for t in tallies)
    seconds = finished - started
    done = sum(t.done for t in tallies)
    errors: Counter[str] = Counter()
    latencies: list[float] = []
    for tally in tallies:
        errors.update(tally.errors)
        latencies.extend(tally.latencies)
    latencies.sort()
    return {
        "reservations": done,
        "seconds": round(seconds, 3),
        "reservations_per_second": round(done / seconds, 1) if seconds > 0 else 0.0,
        "p50_ms": percentile_ms(latencies, 50),
        "p95_ms": percentile_ms(latencies, 95),
        "p99_ms": percentile_ms(latencies, 99),
        "errors": dict(sorted(errors.items())),
        "error_samples": error_samples(tallies),
    }


def error_samples(tallies: list[Tally]) -> dict[str, str]:
    """The first message seen of each kind of error, SoldOut excepted (it is expected)."""
    samples: dict[str, str] = {}
    for tally in tallies:
        for name, message in tally.samples.items():
            samples.setdefault(name, message)
    samples.pop("SoldOut", None)
    return dict(sorted(samples.items()))


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return round(numerator / denominator, 3)


def at_least(value: float | None, target: float) -> bool | None:
    return None if value is None else value >= target
