"""What the `ticketing` command prints: help screens, counts, the status table, logs, pipes."""

from __future__ import annotations

import json
import os
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.cli.test_cli import run
from tests.support import TICKETING
from ticketing import _report, events

COMMANDS = ("migrate", "demo", "sweep", "status", "check", "bench")


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_screens_name_their_values(command: str | None) -> None:
    done = run(*([command] if command else []), "--help", COLUMNS="100")
    assert done.returncode == 0, done.stderr
    for typer_metavar in ("<bool>", "<int", "<str>", "<path>", "<list"):
        assert typer_metavar not in done.stdout, f"{command}: {typer_metavar}"
    if command in ("demo", "sweep", "status", "check", "bench"):
        assert any(name in done.stdout for name in (" N ", " ID ", " DURATION ")), done.stdout


def test_plural() -> None:
    assert _report.plural(1, "migration") == "1 migration"
    assert _report.plural(0, "migration") == "0 migrations"
    assert _report.plural(1000, "worker") == "1,000 workers"
    assert _report.plural(2, "entry", "entries") == "2 entries"


def test_percentile_is_nearest_rank() -> None:
    seconds = [n / 1000 for n in range(1, 101)]  # 1 ms .. 100 ms
    assert _report.percentile_ms(seconds, 50) == 50.0
    assert _report.percentile_ms(seconds, 99) == 99.0
    assert _report.percentile_ms(seconds, 100) == 100.0
    assert _report.percentile_ms([0.002], 99) == 2.0
    assert _report.percentile_ms([], 50) is None


def test_one_pending_migration_is_singular(admin_conn: psycopg.Connection[Any], dsn: str) -> None:
    admin_conn.execute(
        "DELETE FROM _yoyo_migration WHERE migration_id = "
        "(SELECT max(migration_id) FROM _yoyo_migration)"
    )
    done = run("status", url=dsn)
    assert done.returncode == 1
    assert "(1 migration pending)" in done.stderr


def test_status_fits_80_columns(dsn: str, conn: psycopg.Connection[Any]) -> None:
    long_name = "Kraftwerk: 3-D The Catalogue, Philharmonie, night one of eight " * 2
    event = events.create_event(
        conn,
        name=long_name,
        starts_at=datetime(2030, 6, 1, 20, tzinfo=UTC),
        total_tickets=1_000_000,
    )
    done = run("status", "--event", str(event.id), url=dsn, COLUMNS="80")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    (row,) = [line for line in lines if line.lstrip().startswith(f"{event.id} ")]
    assert "Kraftwer…" in row  # the name is cut short, not wrapped
    assert row.rstrip().endswith("1,000,000")
    assert "2030-06-01 20:00" in row


def test_sweep_log_lines_name_no_source_file(dsn: str) -> None:
    done = run("sweep", "--once", url=dsn, COLUMNS="200")
    assert done.returncode == 0, done.stderr
    assert "expired 0 lapsed holds" in done.stderr
    assert ".py:" not in done.stderr


def test_bench_into_a_closed_pipe_ends_quietly_with_its_json(
    admin_dsn: str, tmp_path: Path
) -> None:
    target = tmp_path / "results.json"
    environ = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    environ["DATABASE_URL"] = admin_dsn  # the benchmark creates its baseline tables
    args = ["bench", "--only", "hot", "--workers", "2", "--seconds", "1", "--json", str(target)]
    proc = subprocess.Popen(
        [TICKETING, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environ,
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    proc.stdout.readline()  # `| head -1`: one line, then the reader goes away
    proc.stdout.close()
    stderr = proc.stderr.read()
    code = proc.wait(timeout=300)
    assert "Traceback" not in stderr
    assert "error" not in stderr.lower()
    assert code in (0, 1)  # the verdict of the run; not 120 or a signal
    report = json.loads(target.read_text(encoding="utf-8"))
    assert "hot" in json.dumps(report)
