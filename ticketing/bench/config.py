"""What a benchmark run is asked to do, its constants and targets, and its report."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

from ticketing.errors import TicketingError


class Workload(StrEnum):
    """The workloads `--only` can pick, in the order they run."""

    HOT = "hot"
    ASYNC = "async"
    FOR_UPDATE = "for-update"
    SINGLE_UPDATE = "single-update"
    PGBENCH = "pgbench"
    FLOOR = "floor"
    PURCHASE = "purchase"
    CANCEL = "cancel"
    EXPIRE = "expire"
    SPREAD = "spread"
    SELLOUT = "sellout"
    SERVICE = "service"
    SWEEPER = "sweeper"
    CLIENT = "client"
    LOADED = "loaded"


#: Capacity of the events of the timed workloads: never sells out during a run.
NEVER_SELLS_OUT = 2_000_000_000
#: Events the spread workload reserves on.
SPREAD_EVENTS = 1000
#: Allocations the loaded workload preloads.
LOADED_ALLOCATIONS = 1_000_000
#: Loaded / empty median of each hot call: at most.
TARGET_LOADED = 1.2
#: Hold of the sweeper workload: short enough to lapse during the run.
SHORT_HOLD = timedelta(milliseconds=500)
#: The sweeper process pauses this long after a batch that was not full.
SWEEPER_PAUSE = 0.1
#: Holds per expire_due call of the sweeper (and when draining before the run).
SWEEPER_BATCH = 1000
#: Longest wait for every buyer process to be connected and ready.
READY_TIMEOUT = 120.0
#: Longest wait for one HTTP answer of the service workload (a hung server fails the run).
HTTP_TIMEOUT = 30.0
#: Reserve quantities, as in the issue: 1-4 tickets, chosen at random.
QUANTITY_RANGE = (1, 4)

# Targets, reported (never asserted). The layer's throughput against each
# reference depends on how slow a commit is: with commits of SLOW_COMMIT_MS
# or more (a synchronous standby) a hot row caps the baselines near one
# commit per lock hold; at a local disk's commits everything is CPU-bound.
#: Measured bare commit (ms) from which a regime is judged by SLOW_TARGETS.
SLOW_COMMIT_MS = 1.0
SLOW_TARGETS = {"layer_vs_for_update": 6.0, "layer_vs_single_update": 6.0, "layer_vs_pgbench": 0.7}
FAST_TARGETS = {"layer_vs_for_update": 3.0, "layer_vs_single_update": 1.2}
#: pgbench: the layer's statement against the design's floor, in every regime.
TARGET_VS_FLOOR = 0.85
FLOOR_TARGETED = ("reserve", "purchase", "cancel")
#: Client CPU of allocations.reserve against a bare execute of its statement: at most.
TARGET_CLIENT = 1.3
TARGET_SWEEPER = 0.9
#: The default commit latencies of a throwaway run: the machine's own, then a standby's.
DEFAULT_COMMIT_LATENCIES: tuple[float | None, ...] = (None, 2.0)

#: The baseline events (in the bench schema) of the two baseline workloads.
BASELINE_EVENT_IDS = {Workload.FOR_UPDATE: 1, Workload.SINGLE_UPDATE: 2}


class BenchError(TicketingError):
    """The benchmark could not run (a buyer process died, pgbench is unusable, ...)."""


@dataclass(frozen=True)
class BenchConfig:
    """What to run, and how hard."""

    workers: int = 16
    seconds: int = 5
    only: frozenset[Workload] = frozenset(Workload)
    sellout_buyers: int = 10_000
    sellout_tickets: int = 1000
    spread_events: int = SPREAD_EVENTS
    loaded_allocations: int = LOADED_ALLOCATIONS

    def runs(self, workload: Workload) -> bool:
        return workload in self.only


@dataclass
class BenchReport:
    """One run's numbers (`data`, written as JSON) and its correctness failures."""

    data: dict[str, Any]
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


def default_json_path(now: datetime | None = None, base: Path | None = None) -> Path:
    """bench/results/bench-<UTC timestamp>.json under `base` (default: the current directory)."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    return (base or Path()) / "bench" / "results" / f"bench-{stamp}.json"


def check_writable(path: Path) -> None:
    """Fail now (OSError) if the results cannot be written to `path` after the run."""
    path.parent.mkdir(parents=True, exist_ok=True)
    existed = path.exists()
    with path.open("a", encoding="utf-8"):
        pass
    if not existed:
        path.unlink()


def write_json(report: BenchReport, path: Path) -> None:
    """Write the report's data (creating the directory)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report.data, indent=2, sort_keys=False) + "\n", encoding="utf-8")
