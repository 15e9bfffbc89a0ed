"""The benchmark on a tiny configuration: exact counts and a complete report, never speed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ticketing import admin, bench, db
from ticketing._tx import LOCK_TIMEOUT
from ticketing.bench import BenchConfig, BenchError, Workload

TICKETING = str(Path(sys.executable).with_name("ticketing"))

TINY = BenchConfig(workers=2, seconds=1, sellout_buyers=200, sellout_tickets=50)
TIMED = ("hot", "for_update", "single_update", "spread")
RATIOS = {
    "layer_vs_for_update",
    "layer_vs_single_update",
    "layer_vs_pgbench",
    "sweeper_with_vs_without",
    "p99_layer_ms",
    "p99_single_update_ms",
}
TARGETS = {
    "layer_vs_for_update",
    "layer_vs_single_update",
    "layer_vs_pgbench",
    "p99_no_worse",
    "sellout_exact",
    "sweeper_with_vs_without",
}


def count(dsn: str, query: str, *params: object) -> int:
    with db.connect(dsn) as conn:
        row = conn.execute(query, params).fetchone()
    assert row is not None
    return int(row[0])


def test_every_workload_on_a_tiny_configuration(dsn: str, admin_dsn: str, tmp_path: Path) -> None:
    assert bench.find_pgbench() is not None  # installed with the server on this machine
    # The benchmark creates its baseline tables: it needs a role with CREATE.
    report = bench.run_bench(admin_dsn, TINY)
    path = tmp_path / "results" / "bench.json"
    bench.write_json(report, path)
    data = json.loads(path.read_text(encoding="utf-8"))

    assert report.failures == []
    assert data["ok"] is True
    assert data["failures"] == []
    assert set(data) == {
        "machine",
        "settings",
        *(w.value.replace("-", "_") for w in Workload),
        "ratios",
        "targets",
        "ok",
        "failures",
    }
    assert data["machine"]["cpu_count"] == os.cpu_count()
    with db.connect(dsn) as conn:
        facts = conn.execute("SELECT current_setting('synchronous_commit'), version()").fetchone()
    assert facts is not None
    assert data["machine"]["synchronous_commit"] == facts[0]
    assert f"PostgreSQL {data['machine']['server_version']}" in facts[1]
    assert (data["machine"]["workers"], data["machine"]["seconds"]) == (2, 1)
    assert data["settings"]["workloads"] == [w.value for w in Workload]

    # The sell-out is exact: 50 sold, the 150 others told SoldOut and nothing else.
    sellout = data["sellout"]
    measured = ("sold", "oversold", "sold_out_answers", "other_errors", "error_samples")
    assert {k: sellout[k] for k in measured} == {
        "sold": 50,
        "oversold": 0,
        "sold_out_answers": 150,
        "other_errors": {},
        "error_samples": {},
    }
    assert (sellout["attempts"], sellout["reservations"], sellout["purchases"]) == (200, 50, 50)
    assert sellout["exact"] is True
    assert sellout["seconds_to_sell_out"] > 0

    # Every timed workload did work without a single error, and the database agrees.
    for name in TIMED:
        assert data[name]["reservations"] > 0, name
        assert (data[name]["errors"], data[name]["error_samples"]) == ({}, {}), name
        assert data[name]["p50_ms"] <= data[name]["p95_ms"] <= data[name]["p99_ms"], name
    for half in ("without", "with"):
        assert data["sweeper"][half]["reservations"] > 0
        assert data["sweeper"][half]["errors"] == {}
    hot_rows = "SELECT count(*) FROM allocations WHERE event_id = %s"
    assert count(dsn, hot_rows, data["hot"]["event_id"]) == data["hot"]["reservations"]
    for name in ("for_update", "single_update"):
        event_id = data[name]["bench_event_id"]
        rows = "SELECT count(*) FROM bench.allocations WHERE event_id = %s"
        assert count(admin_dsn, rows, event_id) == data[name]["reservations"]
        taken = "SELECT taken - (SELECT sum(quantity) FROM bench.allocations WHERE event_id = %s)"
        assert count(admin_dsn, taken + " FROM bench.events WHERE id = %s", event_id, event_id) == 0
    spread_rows = (
        "SELECT count(*) FROM allocations AS a"
        " JOIN events AS e ON e.id = a.event_id WHERE e.name LIKE %s"
    )
    assert count(dsn, spread_rows, "bench % spread %") == data["spread"]["reservations"]
    assert data["spread"]["events"] == bench.SPREAD_EVENTS
    assert data["sweeper"]["expired_by_sweeper"] > 0

    # pgbench ran the layer's own statement; every transaction it counted is a row.
    pgbench = data["pgbench"]
    assert (pgbench["exit_code"], pgbench["failed_transactions"], pgbench["clients"]) == (0, 0, 2)
    assert pgbench["tps"] > 0
    assert pgbench["rows_inserted"] >= pgbench["transactions"] > 0
    assert "%(" not in pgbench["script"]

    assert set(data["ratios"]) == RATIOS
    assert all(isinstance(value, float) and value > 0 for value in data["ratios"].values())
    assert set(data["targets"]) == TARGETS
    assert all(isinstance(value, bool) for value in data["targets"].values())
    assert data["targets"]["sellout_exact"] is True
    with db.connect(dsn) as conn:
        assert admin.check_invariants(conn) == []


def test_pgbench_script_turns_parameters_into_variables() -> None:
    sql = (
        "-- a comment: with a colon\n"
        "SELECT %(event_id)s, %(fingerprint)s, %(quantity)s,\n"
        "       now() + %(hold)s::interval, %(idempotency_key)s, 5 %% 3,\n"
        "       set_config('lock_timeout', %(lock_timeout)s, true);"
    )
    assert bench.pgbench_script(sql) == (
        "\\set quantity random(1, 4)\n"
        "\\set nonce random(1, 2000000000)\n"
        "SELECT CAST(:event_id AS bigint),"
        " ('pgbench-' || CAST(:client_id AS text) || '-' || CAST(:nonce AS text)),"
        " CAST(:quantity AS integer),\n"
        "       now() + interval '10 minutes'::interval, CAST(NULL AS text), 5 % 3,\n"
        f"       set_config('lock_timeout', CAST('{LOCK_TIMEOUT}' AS text), true);\n"
    )
    with pytest.raises(BenchError, match="cannot fill: %\\(limit\\)s"):
        bench.pgbench_script("SELECT %(limit)s")
    with pytest.raises(BenchError, match="cannot fill: %s"):
        bench.pgbench_script("SELECT %s")


def test_pgbench_connection_comes_from_the_url() -> None:
    args, env = bench.pgbench_connection("postgresql://shop:s%40cret@db.example:6543/tickets")
    assert args == ["-h", "db.example", "-p", "6543", "-U", "shop", "tickets"]
    assert env == {"PGPASSWORD": "s@cret"}
    args, env = bench.pgbench_connection(
        "postgresql+psycopg://postgres@127.0.0.1/x?sslmode=disable"
    )
    assert args == ["-h", "127.0.0.1", "-U", "postgres", "x"]
    assert env == {"PGSSLMODE": "disable"}


def run_cli(dsn: str, *args: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    environ["DATABASE_URL"] = dsn
    return subprocess.run(
        [TICKETING, "bench", *args],
        capture_output=True,
        text=True,
        env=environ,
        timeout=120,
        check=False,
    )


def test_bench_command_end_to_end(admin_dsn: str, tmp_path: Path) -> None:
    path = tmp_path / "out.json"
    done = run_cli(
        admin_dsn,  # the benchmark creates its baseline tables: a role with CREATE
        "--workers",
        "2",
        "--seconds",
        "1",
        "--only",
        "hot",
        "--only",
        "sellout",
        "--sellout-buyers",
        "30",
        "--sellout-tickets",
        "10",
        "--json",
        str(path),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"results written to {path}" in done.stdout
    assert "answered SoldOut (of 20 losers)" in done.stdout
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["settings"]["workloads"] == ["hot", "sellout"]
    assert data["hot"]["reservations"] > 0
    assert (data["sellout"]["sold"], data["sellout"]["sold_out_answers"]) == (10, 20)
    assert data["for_update"] is None
    assert data["targets"]["sellout_exact"] is True
    assert data["targets"]["layer_vs_for_update"] is None
    assert data["ok"] is True


def test_bench_command_rejects_bad_options(dsn: str) -> None:
    fewer = run_cli(dsn, "--sellout-buyers", "10", "--sellout-tickets", "50")
    unknown = run_cli(dsn, "--only", "nothing")
    for done in (fewer, unknown):
        assert done.returncode == 2
        assert "Traceback" not in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1
    assert "--sellout-buyers" in fewer.stderr
    assert "'nothing' is not one of" in unknown.stderr
