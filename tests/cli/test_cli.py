"""The `ticketing` command, run through its real entry point against a real PostgreSQL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pytest_postgresql.executors import NoopExecutor

from tests.support import TICKETING
from ticketing import admin, db, embedded, events


def run(
    *args: str, url: str | None = None, timeout: float = 120, **env: str
) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    environ.update(env)
    if url is not None:
        environ["DATABASE_URL"] = url
    return subprocess.run(
        [TICKETING, *args],
        capture_output=True,
        text=True,
        env=environ,
        timeout=timeout,
        check=False,
    )


def one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    """The command failed with exactly one line on stderr and no traceback."""
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert "Traceback" not in done.stderr
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("ticketing: error: ")
    return lines[0]


@pytest.fixture
def empty_url(pg_server: NoopExecutor) -> Iterator[str]:
    """A database with no schema at all."""
    name = f"cli_{uuid.uuid4().hex[:12]}"
    admin_url = f"postgresql://{pg_server.user}@{pg_server.host}:{pg_server.port}/postgres"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield f"postgresql://{pg_server.user}@{pg_server.host}:{pg_server.port}/{name}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def test_python_m_matches_the_console_script() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ticketing", "--help"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0
    for command in ("migrate", "demo", "sweep", "status", "check"):
        assert command in done.stdout


def test_migrate_twice_is_a_no_op_the_second_time(empty_url: str) -> None:
    dry = run("migrate", "--dry-run", url=empty_url)
    assert dry.returncode == 0
    ids = db.migration_ids()
    assert f"{len(ids)} migrations pending" in dry.stdout
    first = run("migrate", url=empty_url)
    assert first.returncode == 0, first.stderr
    assert [line for line in first.stdout.splitlines() if line.startswith("applied")] == [
        f"applied {migration_id}" for migration_id in ids
    ]
    second = run("migrate", url=empty_url)
    assert second.returncode == 0
    assert second.stdout.strip() == "up to date"
    assert db.pending_migrations(empty_url) == []


def test_migrate_rollback_last_asks_unless_yes(empty_url: str) -> None:
    assert run("migrate", url=empty_url).returncode == 0
    refused = run("migrate", "--rollback-last", url=empty_url)  # no stdin to say yes
    assert refused.returncode != 0
    assert db.pending_migrations(empty_url) == []
    undone = run("migrate", "--rollback-last", "--yes", url=empty_url)
    assert undone.returncode == 0, undone.stderr
    last = db.migration_ids()[-1]
    assert undone.stdout.strip() == f"rolled back {last}"
    assert db.pending_migrations(empty_url) == [last]
    again = run("migrate", url=empty_url)
    assert again.stdout.splitlines()[0] == f"applied {last}"


def test_demo_sells_out_exactly(dsn: str) -> None:
    done = run(
        "demo",
        "--buyers",
        "20",
        "--tickets",
        "60",
        "--workers",
        "4",
        "--hold",
        "1s",
        "--seed",
        "7",
        url=dsn,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "OK: sold out exactly, nothing oversold" in done.stdout
    with db.connect(dsn) as conn:
        (event,) = events.list_events(conn)
        availability = events.get_availability(conn, event.id)
        assert (availability.total_tickets, availability.purchased, availability.available) == (
            60,
            60,
            0,
        )
        valid = conn.execute("SELECT count(*) FROM tickets WHERE voided_at IS NULL").fetchone()
        assert valid == (60,)
        assert admin.check_invariants(conn) == []


def test_check_passes_on_a_sound_database(dsn: str) -> None:
    done = run("check", url=dsn)
    assert done.returncode == 0, done.stderr
    assert "invariant checks passed" in done.stdout


def test_check_fails_on_a_planted_violation(
    dsn: str, conn: psycopg.Connection[Any], admin_conn: psycopg.Connection[Any]
) -> None:
    event = events.create_event(
        conn, name="Planted", starts_at=datetime.now(UTC), total_tickets=5, max_per_buyer=10
    )
    # As superuser, switch the guards (and the ledger) off and write an oversold purchase.
    with admin_conn.transaction():
        admin_conn.execute("ALTER TABLE allocations DISABLE TRIGGER USER")
        row = admin_conn.execute(
            "INSERT INTO allocations (event_id, fingerprint, quantity, status)"
            " VALUES (%s, 'intruder', 9, 'purchased') RETURNING id",
            (event.id,),
        ).fetchone()
        admin_conn.execute("ALTER TABLE allocations ENABLE TRIGGER USER")
    assert row is not None
    done = run("check", url=dsn)
    assert done.returncode == 1
    violations = [line for line in done.stdout.splitlines() if line.startswith("violation:")]
    assert (
        f"violation: event {event.id}: 9 tickets live (9 purchased, 0 held) but total_tickets is 5"
        in violations
    )
    assert (
        f"violation: allocation {row[0]} is purchased x9 (event {event.id}, buyer intruder),"
        " its ledger replays to nothing" in violations
    )
    # capacity, tickets issued, event counters, buyer counters (the event has a limit),
    # allocation ledger
    assert len(violations) == 5
    # One event: the same five for the planted one, none for a sound one.
    done = run("check", "--event", str(event.id), url=dsn)
    assert done.returncode == 1
    assert [line for line in done.stdout.splitlines() if line.startswith("violation:")] == (
        violations
    )
    sound = events.create_event(conn, name="Sound", starts_at=datetime.now(UTC), total_tickets=5)
    done = run("check", "--event", str(sound.id), url=dsn)
    assert done.returncode == 0, done.stderr
    assert f"invariant checks passed for event {sound.id}" in done.stdout
    done = run("check", "--event", "999999", url=dsn)
    assert done.returncode != 0
    assert "event 999999 does not exist" in done.stderr


def test_sweep_once_expires_lapsed_holds(
    dsn: str, conn: psycopg.Connection[Any], admin_conn: psycopg.Connection[Any]
) -> None:
    event = events.create_event(conn, name="Sweep", starts_at=datetime.now(UTC), total_tickets=50)
    # Backdating created_at is the superuser's: the application may not set it.
    admin_conn.execute(
        "INSERT INTO allocations (event_id, fingerprint, quantity, created_at, expires_at)"
        " SELECT %s, 'b' || n, 1, now() - interval '1 hour', now() - interval '1 minute'"
        " FROM generate_series(1, 7) AS n",
        (event.id,),
    )
    conn.execute(
        "INSERT INTO allocations (event_id, fingerprint, quantity) VALUES (%s, 'live', 2)",
        (event.id,),
    )
    done = run("sweep", "--once", "--batch", "3", url=dsn)
    assert done.returncode == 0, done.stderr
    assert "expired 7 lapsed holds" in done.stderr
    counts = dict(
        conn.execute("SELECT status, count(*) FROM allocations GROUP BY status").fetchall()
    )
    assert counts == {"expired": 7, "reserved": 1}
    assert events.get_availability(conn, event.id).reserved == 2


def test_sweep_stops_cleanly_on_sigterm(dsn: str) -> None:
    environ = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    environ["DATABASE_URL"] = dsn
    proc = subprocess.Popen(
        [TICKETING, "sweep", "--every", "1s"], stderr=subprocess.PIPE, text=True, env=environ
    )
    assert proc.stderr is not None
    first = proc.stderr.readline()  # the first round's log line
    assert "expired 0 lapsed holds" in first
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=15) == 0
    assert "received SIGTERM, stopping" in proc.stderr.read()


def test_status_lists_events(dsn: str, conn: psycopg.Connection[Any]) -> None:
    event = events.create_event(
        conn, name="Status show", starts_at=datetime.now(UTC), total_tickets=12
    )
    done = run("status", "--event", str(event.id), url=dsn)
    assert done.returncode == 0, done.stderr
    assert "Status show" in done.stdout
    assert "12" in done.stdout
    missing = run("status", "--event", str(event.id + 1000), url=dsn)
    assert one_error_line(missing) == f"ticketing: error: event {event.id + 1000} does not exist"


def _servers(tmp: Path) -> set[str]:
    """Throwaway cluster folders and server processes: under `tmp`, and under /tmp, where
    a server started by root goes when `tmp` is private to root (as pytest's tmp_path is)."""
    dirs = {str(p) for root in (tmp, Path("/tmp")) for p in root.glob("ticketing-pg-*")}  # noqa: S108
    ps = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True, check=True)
    procs = {line for line in ps.stdout.splitlines() if "ticketing-pg-" in line}
    return dirs | procs


def test_embedded_default_starts_and_cleans_up(tmp_path: Path) -> None:
    before = _servers(tmp_path)
    done = run("check", TMPDIR=str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert "using a throwaway PostgreSQL" in done.stderr
    assert "invariant checks passed" in done.stdout
    assert _servers(tmp_path) - before == set()


def test_embedded_default_cleans_up_on_ctrl_c(tmp_path: Path) -> None:
    before = _servers(tmp_path)
    environ = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    environ["TMPDIR"] = str(tmp_path)
    proc = subprocess.Popen(
        [TICKETING, "demo", "--hold", "1h", "--tickets", "100000", "--buyers", "10"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=environ,
    )
    assert proc.stderr is not None
    assert "using a throwaway PostgreSQL" in proc.stderr.readline()
    time.sleep(1.5)  # the sale is under way
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) != 0
    assert _servers(tmp_path) - before == set()


def test_missing_server_binaries_is_one_clear_line(tmp_path: Path) -> None:
    done = run("status", TICKETING_PG_BINDIR=str(tmp_path))
    line = one_error_line(done)
    assert line == f"ticketing: error: TICKETING_PG_BINDIR={tmp_path} holds no initdb and pg_ctl"


def test_bad_inputs_are_one_line_and_non_zero(dsn: str, empty_url: str) -> None:
    closed = embedded.free_port()
    cases = {
        "unknown subcommand": run("frobnicate", url=dsn),
        "bad url": run("status", url="definitely not a url"),
        "unreachable server": run("status", url=f"postgresql://postgres@127.0.0.1:{closed}/x"),
        "no schema": run("check", url=empty_url),
        "negative buyers": run("demo", "--buyers", "-5", url=dsn),
        "bad duration": run("sweep", "--every", "soon", url=dsn),
    }
    lines = {name: one_error_line(done) for name, done in cases.items()}
    assert "No such command 'frobnicate'" in lines["unknown subcommand"]
    assert "invalid database URL" in lines["bad url"]
    assert "Connection refused" in lines["unreachable server"]
    assert lines["no schema"].endswith("run `ticketing migrate`")
    assert "--buyers" in lines["negative buyers"]
    assert cases["unknown subcommand"].returncode == 2
    assert cases["bad url"].returncode == 1


def test_wrong_password_is_one_line() -> None:
    with embedded.running(password="right horse battery") as server:
        good = run("check", url=server.url().replace("battery", "battery"))
        assert one_error_line(good).endswith("run `ticketing migrate`")  # authenticated fine
        bad = run("check", url=server.url().replace("battery", "staple"))
        line = one_error_line(bad)
        assert "password authentication failed" in line
