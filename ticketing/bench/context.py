"""What every workload of one run shares: the server, the config, labels, bars, events."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from rich.progress import Progress

from ticketing import allocations, events
from ticketing.bench.buyers import Task
from ticketing.bench.config import SWEEPER_BATCH, BenchConfig, Workload
from ticketing.bench.crew import Bar


def drain(conn: psycopg.Connection[Any]) -> int:
    """Expire every lapsed hold in the database; return how many."""
    total = 0
    while True:
        batch = allocations.expire_due(conn, limit=SWEEPER_BATCH)
        total += batch
        if batch < SWEEPER_BATCH:
            return total


def json_key(workload: Workload) -> str:
    """The workload's key in the JSON: for-update -> for_update."""
    return workload.value.replace("-", "_")


@dataclass(frozen=True)
class Run:
    """What every workload of one run shares."""

    url: str
    config: BenchConfig
    progress: Progress | None
    tag: str  # in event names and fingerprints
    seed: int
    superuser: bool = False  # the floors need session_replication_role = replica
    #: Rates seen so far in this run (name -> per second), to size the pre-made holds.
    rates: dict[str, float] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return float(self.config.seconds)

    def bar(self, description: str, total: float | None = None) -> Bar:
        return Bar(self.progress, description, self.seconds if total is None else total)

    def task(self, kind: Workload, event_ids: tuple[int, ...], label: str, **extra: Any) -> Task:
        return Task(
            kind=kind,
            event_ids=event_ids,
            seconds=self.seconds,
            tag=f"{self.tag}-{label}",
            seed=self.seed,
            **extra,
        )

    def event(
        self, conn: psycopg.Connection[Any], label: str, total: int, slots: int | None = None
    ) -> int:
        return events.create_event(
            conn,
            name=f"bench {self.tag} {label}",
            starts_at=datetime.now(UTC) + timedelta(days=30),
            total_tickets=total,
            max_per_buyer=None,
            slots=slots,
        ).id


def as_elapsed(elapsed: float) -> float:
    return elapsed
