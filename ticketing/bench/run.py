"""One benchmark run: the workloads in order, then failures, ratios and targets."""

from __future__ import annotations

import os
import platform
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from rich.progress import Progress

from ticketing import db
from ticketing.bench.config import (
    SHORT_HOLD,
    SWEEPER_PAUSE,
    TARGET_SWEEPER,
    TARGET_VS_FOR_UPDATE,
    TARGET_VS_PGBENCH,
    TARGET_VS_SINGLE_UPDATE,
    BenchConfig,
    BenchError,
    BenchReport,
    Workload,
)
from ticketing.bench.crew import Bar, Crew
from ticketing.bench.sql import Q
from ticketing.bench.stats import at_least, ratio
from ticketing.bench.workloads import WORKLOADS, Run, json_key, prepare_baselines
from ticketing.errors import InvalidInput


def machine_facts(conn: psycopg.Connection[Any]) -> tuple[dict[str, Any], int]:
    row = conn.execute(Q["server_facts"]).fetchone()
    assert row is not None
    version, synchronous_commit, max_connections, _superuser = row
    facts = {
        "cpu_count": os.cpu_count(),
        "server_version": version,
        "synchronous_commit": synchronous_commit,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    return facts, int(max_connections)


def run_bench(url: str, config: BenchConfig, *, progress: Progress | None = None) -> BenchReport:
    """Run the chosen workloads against the migrated database at `url`."""
    if config.runs(Workload.SELLOUT) and config.sellout_buyers < config.sellout_tickets:
        raise InvalidInput(
            f"a sell-out needs at least as many buyers ({config.sellout_buyers:,}) "
            f"as tickets ({config.sellout_tickets:,})"
        )
    started_at = datetime.now(UTC)
    run = Run(
        url=url,
        config=config,
        progress=progress,
        tag=f"b{started_at:%H%M%S}{random.randrange(1000):03d}",  # noqa: S311 - a label
        seed=int(started_at.timestamp()),
    )
    with db.connect(url) as conn:
        machine, max_connections = machine_facts(conn)
        # Buyers (or pgbench's clients), one sweeper, this connection and a spare.
        if config.workers + 3 > max_connections:
            raise BenchError(
                f"{config.workers} workers need {config.workers + 3} connections; "
                f"the server allows {max_connections} (max_connections)"
            )
        data: dict[str, Any] = {
            "machine": machine | {"workers": config.workers, "seconds": config.seconds},
            "settings": {
                "workers": config.workers,
                "seconds": config.seconds,
                "workloads": [w.value for w in Workload if config.runs(w)],
                "sellout_buyers": config.sellout_buyers,
                "sellout_tickets": config.sellout_tickets,
                "spread_events": config.spread_events,
                "short_hold_ms": SHORT_HOLD / timedelta(milliseconds=1),
                "sweeper_pause_s": SWEEPER_PAUSE,
                "started_at": started_at.isoformat(),
            },
        }
        data |= {json_key(workload): None for workload in Workload}
        report = BenchReport(data)
        bar = Bar(progress, f"starting {config.workers} buyer processes", config.workers)
        with Crew(url, config.workers) as crew:
            crew.start(bar)
            if config.runs(Workload.FOR_UPDATE) or config.runs(Workload.SINGLE_UPDATE):
                prepare_baselines(conn)
            for workload in Workload:
                if config.runs(workload):
                    data[json_key(workload)] = WORKLOADS[workload](run, conn, crew)
            report.failures += data["sellout"].pop("failures") if data["sellout"] else []
    collect_failures(report)
    add_ratios(data, report)
    return report


def collect_failures(report: BenchReport) -> None:
    """Timed workloads never sell out, so any error answer is a failure."""
    data = report.data
    timed_results: dict[str, dict[str, Any] | None] = {
        "hot": data["hot"],
        "for-update": data["for_update"],
        "single-update": data["single_update"],
        "spread": data["spread"],
    }
    if data["sweeper"] is not None:
        timed_results["sweeper without"] = data["sweeper"]["without"]
        timed_results["sweeper with"] = data["sweeper"]["with"]
    for name, result in timed_results.items():
        if result is not None and result["errors"]:
            report.failures.append(
                f"{name}: error answers {result['errors']}; "
                f"first messages: {result['error_samples']}"
            )
    pgbench = data["pgbench"]
    if pgbench is not None and "error" in pgbench:
        report.failures.append(f"pgbench: {pgbench['error']}")
    elif pgbench is not None and pgbench.get("failed_transactions"):
        report.failures.append(f"pgbench: {pgbench['failed_transactions']} failed transactions")


def add_ratios(data: dict[str, Any], report: BenchReport) -> None:
    def rate(name: str) -> float | None:
        result = data[name]
        return None if result is None else float(result["reservations_per_second"])

    def p99(name: str) -> float | None:
        result = data[name]
        return None if result is None else result["p99_ms"]

    pgbench = data["pgbench"]
    pgbench_tps = None if pgbench is None else pgbench.get("tps")
    sweeper = data["sweeper"]
    ratios = {
        "layer_vs_for_update": ratio(rate("hot"), rate("for_update")),
        "layer_vs_single_update": ratio(rate("hot"), rate("single_update")),
        "layer_vs_pgbench": ratio(rate("hot"), pgbench_tps),
        "sweeper_with_vs_without": None
        if sweeper is None
        else ratio(
            sweeper["with"]["reservations_per_second"],
            sweeper["without"]["reservations_per_second"],
        ),
        "p99_layer_ms": p99("hot"),
        "p99_single_update_ms": p99("single_update"),
    }
    layer_p99, single_p99 = ratios["p99_layer_ms"], ratios["p99_single_update_ms"]
    data["ratios"] = ratios
    data["targets"] = {
        "layer_vs_for_update": at_least(ratios["layer_vs_for_update"], TARGET_VS_FOR_UPDATE),
        "layer_vs_single_update": at_least(
            ratios["layer_vs_single_update"], TARGET_VS_SINGLE_UPDATE
        ),
        "layer_vs_pgbench": at_least(ratios["layer_vs_pgbench"], TARGET_VS_PGBENCH),
        "p99_no_worse": None
        if layer_p99 is None or single_p99 is None
        else layer_p99 <= single_p99,
        "sellout_exact": None if data["sellout"] is None else data["sellout"]["exact"],
        "sweeper_with_vs_without": at_least(ratios["sweeper_with_vs_without"], TARGET_SWEEPER),
    }
    data["failures"] = list(report.failures)
    data["ok"] = report.ok
