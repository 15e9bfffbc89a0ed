"""Commit-latency regimes: the server's own commits, a synchronous standby, or a URL as given.

A regime is a server and how slow its commits are. On a throwaway cluster the
benchmark runs the machine's own commits, then (or instead) commits that wait
for a synchronous standby: `pg_basebackup -R` makes a standby named s1,
the primary gets `synchronous_standby_names = 's1'` and `synchronous_commit =
remote_apply`, and the standby's `recovery_min_apply_delay` makes every
commit wait for its delayed apply. The delay is calibrated: a few values near
the asked latency, keeping the one whose measured bare commit comes closest.

Every regime measures one bare single-client commit (the median of
COMMIT_SAMPLES autocommit INSERTs into bench.commit_probe). A regime that
asked for a latency and measured one off by more than half is refused: its
workloads do not run and the run fails. A user's own server is measured as
it is ("as given"); its settings are never changed.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg

from ticketing import db, embedded
from ticketing.bench.sql import Q

#: Bare commits per measurement (each one round trip with a write).
COMMIT_SAMPLES = 300
#: A regime whose measured commit is off the asked latency by more than this share is refused.
LATENCY_TOLERANCE = 0.5
#: Apply delays tried around the asked latency when calibrating the standby.
CALIBRATION_TRIES = 3


@dataclass(frozen=True)
class Regime:
    """One server to run the workloads on, and the commit latency asked of it."""

    name: str  # "own-commits", "standby", "as-given"
    label: str  # a table column heading
    url: str
    asked_ms: float | None  # None: whatever the server does
    mechanism: str
    apply_delay_ms: int | None = None


def measure_commit(url: str, samples: int = COMMIT_SAMPLES) -> dict[str, Any]:
    """Milliseconds of one bare single-client commit: median and p90 of `samples`."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(Q["commit_probe_schema"])
        conn.execute(Q["commit_probe_table"])
        for _ in range(10):  # warm up the connection and the plan
            conn.execute(Q["commit_probe"])
        times: list[float] = []
        for _ in range(samples):
            begun = time.perf_counter()
            conn.execute(Q["commit_probe"])
            times.append(time.perf_counter() - begun)
        conn.execute(Q["commit_probe_empty"])
    times.sort()
    return {
        "median_ms": round(1000 * statistics.median(times), 3),
        "p90_ms": round(1000 * times[int(0.9 * (len(times) - 1))], 3),
        "samples": samples,
    }


def validate(regime: Regime, measured: dict[str, Any]) -> str | None:
    """Why the measured commit latency disqualifies the regime; None when it may be reported."""
    if regime.asked_ms is None:
        return None
    median = float(measured["median_ms"])
    if abs(median - regime.asked_ms) > LATENCY_TOLERANCE * regime.asked_ms:
        return (
            f"{regime.name}: asked for {regime.asked_ms:g} ms commits, measured "
            f"{median:.2f} ms (more than {LATENCY_TOLERANCE:.0%} off): not reported"
        )
    return None


def as_given(url: str) -> Regime:
    return Regime(
        name="as-given",
        label="as given",
        url=url,
        asked_ms=None,
        mechanism="the server at the given URL, as it is (its settings unchanged)",
    )


def own_commits(server: embedded.EmbeddedPostgres) -> Regime:
    return Regime(
        name="own-commits",
        label="own commits",
        url=server.url(),
        asked_ms=None,
        mechanism="a throwaway cluster, synchronous_commit = on, no standby",
    )


def _calibrate(
    primary: embedded.EmbeddedPostgres, standby: embedded.EmbeddedStandby, asked_ms: float
) -> tuple[int, dict[str, Any]]:
    """The apply delay whose measured commit is closest to `asked_ms`, and that measurement."""
    delay = max(0, round(asked_ms - 1))
    tried: dict[int, dict[str, Any]] = {}
    for _ in range(CALIBRATION_TRIES):
        standby.set_apply_delay(delay)
        measured = measure_commit(primary.url(), samples=COMMIT_SAMPLES // 3)
        tried[delay] = measured
        off = float(measured["median_ms"]) - asked_ms
        if abs(off) <= asked_ms / 4:
            break
        step = -1 if off > 0 else 1
        if delay + step < 0 or delay + step in tried:
            break
        delay += step
    best = min(tried, key=lambda d: abs(float(tried[d]["median_ms"]) - asked_ms))
    standby.set_apply_delay(best)
    return best, tried[best]


@contextmanager
def standby(primary: embedded.EmbeddedPostgres, asked_ms: float) -> Iterator[Regime]:
    """A synchronous standby of `primary` for the block: the regime of `asked_ms` commits."""
    replica = embedded.EmbeddedStandby(primary, application_name="s1")
    replica.start()
    try:
        with embedded.synchronous(primary, replica, level="remote_apply"):
            delay, _ = _calibrate(primary, replica, asked_ms)
            yield Regime(
                name="standby",
                label=f"standby, ~{asked_ms:g} ms commits",
                url=primary.url(),
                asked_ms=asked_ms,
                mechanism=(
                    "a throwaway primary with a synchronous standby (pg_basebackup -R, "
                    "application_name=s1, synchronous_standby_names = 's1', "
                    "synchronous_commit = remote_apply), standby "
                    f"recovery_min_apply_delay = '{delay}ms'"
                ),
                apply_delay_ms=delay,
            )
    finally:
        replica.stop()


@contextmanager
def throwaway_primary() -> Iterator[embedded.EmbeddedPostgres]:
    """A migrated throwaway cluster (the primary of every throwaway regime)."""
    with embedded.running() as server:
        db.migrate(server.url())
        yield server
