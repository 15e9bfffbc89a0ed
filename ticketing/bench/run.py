"""A benchmark run: its regimes in turn, each with the chosen workloads in order.

Without a URL the run starts a throwaway primary and runs the regimes of
`commit_latencies` (default: the machine's own commits, then ~2 ms with a
synchronous standby). With a URL it runs one regime, the server as given.
"""

from __future__ import annotations

import os
import platform
import random
from collections.abc import Generator, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from rich.progress import Progress

from ticketing import db
from ticketing._report import plural
from ticketing.bench import regimes, verdicts
from ticketing.bench.client import client_workload
from ticketing.bench.config import (
    DEFAULT_COMMIT_LATENCIES,
    SHORT_HOLD,
    SWEEPER_PAUSE,
    BenchConfig,
    BenchError,
    BenchReport,
    Workload,
)
from ticketing.bench.context import Run, json_key
from ticketing.bench.crew import Bar, Crew
from ticketing.bench.loaded import loaded_workload
from ticketing.bench.regimes import Regime
from ticketing.bench.server import SERVER_WORKLOADS
from ticketing.bench.service import service_workload
from ticketing.bench.sql import Q
from ticketing.bench.workloads import WORKLOADS, prepare_baselines
from ticketing.errors import InvalidInput

ALL_WORKLOADS = (
    WORKLOADS
    | SERVER_WORKLOADS
    | {
        Workload.SERVICE: service_workload,
        Workload.CLIENT: client_workload,
        Workload.LOADED: loaded_workload,
    }
)


def _server(conn: psycopg.Connection[Any]) -> tuple[dict[str, Any], int]:
    row = conn.execute(Q["server_facts"]).fetchone()
    assert row is not None
    version, synchronous_commit, standby_names, max_connections, superuser = row
    facts = {
        "server_version": version,
        "synchronous_commit": synchronous_commit,
        "synchronous_standby_names": standby_names,
        "superuser": bool(superuser),
    }
    return facts, int(max_connections)


def _commit(regime: Regime, bar: Bar) -> tuple[dict[str, Any], str | None]:
    """The regime's measured bare commit, and why it may not be reported (None: it may)."""
    commit: dict[str, Any] = {"asked_ms": regime.asked_ms, "apply_delay_ms": regime.apply_delay_ms}
    try:
        commit |= regimes.measure_commit(regime.url)
    except psycopg.Error as exc:  # e.g. a login without CREATE on a user's server
        commit |= {"median_ms": None, "error": " ".join(str(exc).split())[:300]}
    bar.finish()
    refused = None if commit["median_ms"] is None else regimes.validate(regime, commit)
    if regime.asked_ms is not None and commit["median_ms"] is None:
        refused = f"{regime.name}: the commit latency could not be measured: {commit['error']}"
    commit["validated"] = None if regime.asked_ms is None else refused is None
    return commit, refused


def _run_regime(
    regime: Regime, config: BenchConfig, progress: Progress | None, tag: str, seed: int
) -> dict[str, Any]:
    """Every chosen workload on one regime's server: its entry in the JSON."""
    bar = Bar(progress, f"{regime.name}: measuring one bare commit", 1)
    commit, refused = _commit(regime, bar)
    data: dict[str, Any] = {
        "name": regime.name,
        "label": regime.label,
        "mechanism": regime.mechanism,
        "commit": commit,
        "refused": refused,
    }
    data |= {json_key(workload): None for workload in Workload}
    with db.connect(regime.url) as conn:
        server, max_connections = _server(conn)
        data["server"] = server
        # Buyers (or pgbench's clients), one sweeper, this connection, the client's and a spare.
        if config.workers + 4 > max_connections:
            raise BenchError(
                f"{plural(config.workers, 'worker')} need {config.workers + 4} connections; "
                f"the server allows {max_connections} (max_connections)"
            )
        if refused is None:
            run = Run(
                url=regime.url,
                config=config,
                progress=progress,
                tag=f"{tag}{regime.name[0]}",
                seed=seed,
                superuser=server["superuser"],
            )
            bar = Bar(
                progress,
                f"{regime.name}: starting {plural(config.workers, 'buyer')}",
                config.workers,
            )
            with Crew(regime.url, config.workers) as crew:
                crew.start(bar)
                if config.runs(Workload.FOR_UPDATE) or config.runs(Workload.SINGLE_UPDATE):
                    prepare_baselines(conn)
                for workload in Workload:
                    if config.runs(workload):
                        data[json_key(workload)] = ALL_WORKLOADS[workload](run, conn, crew)
    failures = [] if refused is None else [refused]
    if refused is None:
        failures += [f"{regime.name}: {failure}" for failure in verdicts.failures(data)]
    data["ratios"] = verdicts.ratios(data)
    data["targets"], data["target_values"] = verdicts.targets(data)
    data["failures"] = failures
    data["ok"] = not failures
    return data


@contextmanager
def _regimes(url: str | None, latencies: tuple[float | None, ...]) -> Iterator[Iterator[Regime]]:
    """The regimes to run, one after the other (each one's servers live while it runs)."""
    if url is not None:
        yield iter([regimes.as_given(url)])
        return
    with regimes.throwaway_primary() as primary:

        def each() -> Generator[Regime, None, None]:
            for asked in latencies:
                if asked is None:
                    yield regimes.own_commits(primary)
                    continue
                with ExitStack() as stack:
                    yield stack.enter_context(regimes.standby(primary, asked))

        regimes_left = each()
        try:
            yield regimes_left
        finally:
            regimes_left.close()  # a standby stops before its primary


def run_bench(
    url: str | None,
    config: BenchConfig,
    *,
    commit_latencies: tuple[float | None, ...] | None = None,
    progress: Progress | None = None,
) -> BenchReport:
    """Run the chosen workloads in each regime: on `url` as given, or on throwaway servers.

    `commit_latencies` (only without a URL): None for the machine's own
    commits, a number of milliseconds for a synchronous standby tuned to it.
    """
    sells_out = config.runs(Workload.SELLOUT) or config.runs(Workload.SERVICE)
    if sells_out and config.sellout_buyers < config.sellout_tickets:
        raise InvalidInput(
            f"a sell-out needs at least as many buyers ({config.sellout_buyers:,}) "
            f"as tickets ({config.sellout_tickets:,})"
        )
    if url is not None and commit_latencies is not None:
        raise InvalidInput("a commit latency needs the throwaway server: not with a database URL")
    latencies = DEFAULT_COMMIT_LATENCIES if commit_latencies is None else commit_latencies
    started_at = datetime.now(UTC)
    tag = f"b{started_at:%H%M%S}{random.randrange(1000):03d}"  # noqa: S311 - a label
    data: dict[str, Any] = {
        "machine": {
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "workers": config.workers,
            "seconds": config.seconds,
        },
        "settings": {
            "workers": config.workers,
            "seconds": config.seconds,
            "workloads": [w.value for w in Workload if config.runs(w)],
            "database_url_given": url is not None,
            "commit_latencies_ms": None if url is not None else list(latencies),
            "sellout_buyers": config.sellout_buyers,
            "sellout_tickets": config.sellout_tickets,
            "spread_events": config.spread_events,
            "loaded_allocations": config.loaded_allocations,
            "short_hold_ms": SHORT_HOLD / timedelta(milliseconds=1),
            "sweeper_pause_s": SWEEPER_PAUSE,
            "started_at": started_at.isoformat(),
        },
        "regimes": [],
    }
    with _regimes(url, latencies) as each:
        for regime in each:
            entry = _run_regime(regime, config, progress, tag, int(started_at.timestamp()))
            data["regimes"].append(entry)
            if entry["loaded"] is not None:  # measured once: where it ran first
                config = replace(config, only=config.only - {Workload.LOADED})
    if data["regimes"]:
        data["machine"]["server_version"] = data["regimes"][0]["server"]["server_version"]
    report = BenchReport(data, [f for entry in data["regimes"] for f in entry["failures"]])
    data["failures"] = list(report.failures)
    data["ok"] = report.ok
    return report
