"""The benchmark on a tiny configuration: exact counts and a complete report, never speed."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from tests.support import TICKETING
from ticketing import admin, bench, db
from ticketing._tx import LOCK_TIMEOUT
from ticketing.bench import BenchConfig, BenchError, Workload, regimes
from ticketing.bench.workloads import async_spread

# Small enough that the sell-out ends well within its one second, even on a busy machine.
# The same sale over HTTP (service) is some 5x slower per buyer (150 requests on two
# connections: ~0.4 s here): it sells out (60 requests) well within the second, but a busy
# machine may stop it before every loser is answered, which is exact as well.
TINY = BenchConfig(
    workers=2, seconds=1, sellout_buyers=120, sellout_tickets=30, loaded_allocations=500
)
TIMED = ("hot", "async", "for_update", "single_update", "spread")
RATIOS = {
    "layer_vs_for_update",
    "layer_vs_single_update",
    "layer_vs_pgbench",
    "reserve_vs_floor",
    "async_vs_sync",
    "purchase_vs_floor",
    "cancel_vs_floor",
    "expire_vs_floor",
    "client_layer_vs_bare",
    "sweeper_with_vs_without",
    "loaded_reserve",
    "loaded_purchase",
    "loaded_cancel",
    "loaded_get_availability",
    "p99_hot_ms",
    "p99_for_update_ms",
    "p99_single_update_ms",
}
TARGETS = {
    "layer_vs_for_update",
    "layer_vs_single_update",
    "layer_vs_pgbench",
    "p99_below_baselines",
    "async_vs_sync",
    "reserve_vs_floor",
    "purchase_vs_floor",
    "cancel_vs_floor",
    "expire_vs_floor",
    "client_layer_vs_bare",
    "sweeper_with_vs_without",
    "loaded_reserve",
    "loaded_purchase",
    "loaded_cancel",
    "loaded_get_availability",
    "sellout_exact",
    "service_exact",
}
REGIME_KEYS = {
    "name",
    "label",
    "mechanism",
    "commit",
    "refused",
    "server",
    *(w.value.replace("-", "_") for w in Workload),
    "ratios",
    "targets",
    "target_values",
    "failures",
    "ok",
}


SELLOUT_KEYS = {
    "event_id",
    "buyers",
    "tickets",
    "attempts",
    "finished",
    "reservations",
    "purchases",
    "sold",
    "oversold",
    "sold_out_answers",
    "other_errors",
    "error_samples",
    "seconds_to_sell_out",
    "reserve_p99_ms",
    "exact",
}
SERVICE_KEYS = SELLOUT_KEYS | {
    "client_processes",
    "tasks_per_process",
    "pool_max_size",
    "requests",
    "seconds",
    "requests_per_second",
    "reserve_p50_ms",
    "server_cpu_seconds",
    "client_cpu_seconds",
    "violations",
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
    whole = json.loads(path.read_text(encoding="utf-8"))

    assert report.failures == []
    assert (whole["ok"], whole["failures"]) == (True, [])
    assert set(whole) == {"machine", "settings", "regimes", "ok", "failures"}
    assert whole["machine"]["cpu_count"] == os.cpu_count()
    assert (whole["machine"]["workers"], whole["machine"]["seconds"]) == (2, 1)
    assert whole["settings"]["workloads"] == [w.value for w in Workload]
    assert whole["settings"]["database_url_given"] is True
    # A user's server is measured as it is: one regime, its settings unchanged.
    (data,) = whole["regimes"]
    assert set(data) == REGIME_KEYS
    assert (data["name"], data["refused"], data["ok"]) == ("as-given", None, True)
    assert data["commit"]["median_ms"] > 0
    assert (data["commit"]["asked_ms"], data["commit"]["validated"]) == (None, None)
    with db.connect(dsn) as conn:
        facts = conn.execute("SELECT current_setting('synchronous_commit'), version()").fetchone()
    assert facts is not None
    assert data["server"]["synchronous_commit"] == facts[0]
    assert f"PostgreSQL {data['server']['server_version']}" in facts[1]
    assert data["server"]["superuser"] is True

    # The sell-out is exact: 30 sold, the 90 others told SoldOut and nothing else.
    sellout = data["sellout"]
    assert set(sellout) == SELLOUT_KEYS
    measured = ("sold", "oversold", "sold_out_answers", "other_errors", "error_samples")
    assert {k: sellout[k] for k in measured} == {
        "sold": 30,
        "oversold": 0,
        "sold_out_answers": 90,
        "other_errors": {},
        "error_samples": {},
    }
    assert (sellout["attempts"], sellout["reservations"], sellout["purchases"]) == (120, 30, 30)
    assert (sellout["finished"], sellout["exact"]) == (True, True)
    assert sellout["seconds_to_sell_out"] > 0

    # The same sale over HTTP, through examples/service under uvicorn: exact as well. Every
    # buyer made one reservation request and each of the 30 winners one purchase request.
    service = data["service"]
    assert set(service) == SERVICE_KEYS
    assert {k: service[k] for k in measured} == {
        "sold": 30,
        "oversold": 0,
        "sold_out_answers": service["attempts"] - 30,
        "other_errors": {},
        "error_samples": {},
    }
    assert (service["reservations"], service["purchases"], service["violations"]) == (30, 30, 0)
    assert service["requests"] == service["attempts"] + 30
    assert service["exact"] is True
    if service["finished"]:  # else --seconds ended after the sale had sold out
        assert (service["attempts"], service["sold_out_answers"]) == (120, 90)
    else:
        assert 30 <= service["attempts"] < 120
    # Over the seconds from the barrier to the last answer (rounded to the ms in the JSON).
    assert service["requests_per_second"] == pytest.approx(
        service["requests"] / service["seconds"], rel=0.02
    )
    assert 0 < service["reserve_p50_ms"] <= service["reserve_p99_ms"]
    assert 0 < service["seconds_to_sell_out"] <= service["seconds"]
    # One server process with a pool of --workers connections; the buyers as asyncio tasks
    # over one client process per CPU (at most one per worker), as in the async workload.
    clients = min(os.cpu_count() or 1, 2)
    assert (service["pool_max_size"], service["client_processes"]) == (2, clients)
    assert service["tasks_per_process"] == [2 // clients] * clients
    assert service["server_cpu_seconds"] > 0
    assert service["client_cpu_seconds"] > 0
    with db.connect(dsn) as conn:
        assert admin.sale_outcome(conn, service["event_id"]).sold == 30
        assert admin.check_invariants(conn, event_id=service["event_id"]) == []

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
    # The async workload: the 2 workers as asyncio tasks, over one process per CPU (at most 2).
    assert count(dsn, hot_rows, data["async"]["event_id"]) == data["async"]["reservations"]
    processes = min(os.cpu_count() or 1, 2)
    assert data["async"]["processes"] == processes
    assert data["async"]["tasks_per_process"] == [2 // processes] * processes
    assert data["ratios"]["async_vs_sync"] == round(
        data["async"]["reservations_per_second"] / data["hot"]["reservations_per_second"], 3
    )
    assert (data["targets"]["async_vs_sync"], data["target_values"]["async_vs_sync"]) == (
        None,
        "-",
    )
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

    # The floors ran as replica and left nothing behind; every layer run changed its rows.
    assert data["floor"]["rows_changed"] > 0
    assert data["floor"]["rows_per_second"] > 0
    for name in ("purchase", "cancel", "expire"):
        layer, floor = data[name]["layer"], data[name]["floor"]
        assert layer["rows_changed"] == layer["holds"] > 0, name
        assert 0 < floor["rows_changed"] <= floor["holds"], name
        assert (layer["failed_transactions"], floor["failed_transactions"]) == (0, 0), name
        assert data[name]["layer_vs_floor"] > 0, name
        gone = "SELECT count(*) FROM events WHERE id = %s"
        assert count(admin_dsn, gone, floor["event_id"]) == 0, name
    assert data["client"]["layer_us_per_call"] > 0
    assert data["client"]["bare_us_per_call"] > 0

    # The loaded workload ran in two databases of its own, dropped afterwards: 50 warm-up
    # and then blocks of 50 timed calls of each kind on each until 300 or --seconds (1 s),
    # and on one of them 500 preloaded allocations (5 on each of 100 events: 1, 2, 3, 4
    # and 1 tickets, all purchased). Each reserve makes an allocation of 2 tickets, and
    # voided tickets stay.
    loaded = data["loaded"]
    calls = loaded["calls"]
    assert calls in range(50, 301, 50)
    assert loaded["preloaded_allocations"] == 500
    made = 50 + calls
    assert (loaded["empty"]["allocations"], loaded["empty"]["tickets"]) == (made, 2 * made)
    assert (loaded["loaded"]["allocations"], loaded["loaded"]["tickets"]) == (
        500 + made,
        1100 + 2 * made,
    )
    assert loaded["empty"]["violations"] == loaded["loaded"]["violations"] == 0
    assert set(loaded["loaded_vs_empty"]) == {*bench.LOADED_OPERATIONS, "check_event"}
    left = "SELECT count(*) FROM pg_database WHERE datname LIKE 'ticketing_bench_%%'"
    assert count(admin_dsn, left) == 0

    assert set(data["ratios"]) == RATIOS
    assert all(isinstance(value, float) and value > 0 for value in data["ratios"].values())
    assert set(data["targets"]) == TARGETS
    speed = {k: v for k, v in data["targets"].items() if data["target_values"][k] != "-"}
    assert all(isinstance(value, bool) for value in speed.values())
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
    assert "as given" in done.stdout
    whole = json.loads(path.read_text(encoding="utf-8"))
    assert whole["settings"]["workloads"] == ["hot", "sellout"]
    assert whole["ok"] is True
    (data,) = whole["regimes"]
    assert data["hot"]["reservations"] > 0
    assert (data["sellout"]["sold"], data["sellout"]["sold_out_answers"]) == (10, 20)
    assert data["for_update"] is None
    assert data["targets"]["sellout_exact"] is True
    assert data["targets"]["layer_vs_for_update"] is None
    assert data["ok"] is True


def test_bench_command_rejects_bad_options(dsn: str, tmp_path: Path) -> None:
    fewer = run_cli(dsn, "--sellout-buyers", "10", "--sellout-tickets", "50")
    unknown = run_cli(dsn, "--only", "nothing")
    latency = run_cli(dsn, "--commit-latency", "2ms")
    for done in (fewer, unknown, latency):
        assert done.returncode == 2
        assert "Traceback" not in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1
    assert "--sellout-buyers" in fewer.stderr
    assert "'nothing' is not one of" in unknown.stderr
    assert "--commit-latency" in latency.stderr
    # An unwritable results path fails before the run starts.
    blocker = tmp_path / "file"
    blocker.write_text("", encoding="utf-8")
    unwritable = run_cli(dsn, "--json", str(blocker / "out.json"))
    assert unwritable.returncode == 1
    assert "Traceback" not in unwritable.stderr
    assert "buyers" not in unwritable.stdout


def test_standby_regime_is_measured_validated_and_reported_beside_own_commits() -> None:
    config = BenchConfig(
        workers=2,
        seconds=1,
        only=frozenset({Workload.HOT, Workload.ASYNC, Workload.LOADED}),
        loaded_allocations=200,
    )
    report = bench.run_bench(None, config, commit_latencies=(None, 2.0))
    whole = report.data
    assert [r["name"] for r in whole["regimes"]] == ["own-commits", "standby"]
    own, standby = whole["regimes"]
    assert own["commit"]["median_ms"] > 0
    assert own["commit"]["validated"] is None
    assert own["server"]["synchronous_standby_names"] == ""
    assert own["hot"]["reservations"] > 0
    assert own["hot"]["errors"] == {}
    assert own["async"]["reservations"] > 0
    assert own["async"]["errors"] == {}
    assert own["ratios"]["async_vs_sync"] is not None
    # Table growth is measured once, in the first regime.
    assert own["loaded"]["preloaded_allocations"] == 200
    assert standby["loaded"] is None
    # The standby's commits wait for its delayed apply; the run checks the measured
    # latency against the 2 ms asked (within half) and refuses the regime otherwise.
    commit = standby["commit"]
    assert commit["asked_ms"] == 2.0
    assert commit["median_ms"] > 0
    assert commit["apply_delay_ms"] is not None
    assert standby["server"]["synchronous_commit"] == "remote_apply"
    assert standby["server"]["synchronous_standby_names"] == "s1"
    assert "recovery_min_apply_delay" in standby["mechanism"]
    within = 1.0 <= commit["median_ms"] <= 3.0
    assert commit["validated"] is within
    if within:
        assert report.failures == [], report.failures
        assert standby["hot"]["reservations"] > 0
        assert standby["hot"]["errors"] == {}
        assert standby["async"]["reservations"] > 0
        assert standby["async"]["errors"] == {}
        assert standby["ratios"]["async_vs_sync"] is not None
    else:  # a busy machine: the regime is reported as a failure, its workloads not run
        assert standby["refused"] in report.failures
        assert standby["hot"] is None
        assert standby["async"] is None
        assert report.ok is False
    json.dumps(whole)  # the report is JSON as it is


def test_async_workers_are_spread_over_one_process_per_cpu() -> None:
    assert async_spread(16, 2) == (8, 8)
    assert async_spread(5, 2) == (3, 2)
    assert async_spread(2, 8) == (1, 1)
    assert async_spread(3, None) == (3,)


def test_a_regime_off_its_asked_latency_is_refused() -> None:
    regime = regimes.Regime("standby", "s", "postgresql://x", 2.0, "m")
    assert regimes.validate(regime, {"median_ms": 2.9}) is None
    assert regimes.validate(regime, {"median_ms": 1.1}) is None
    refused = regimes.validate(regime, {"median_ms": 3.2})
    assert refused is not None
    assert "not reported" in refused
    assert regimes.validate(regime, {"median_ms": 0.2}) is not None
    assert regimes.validate(regimes.as_given("postgresql://x"), {"median_ms": 9.0}) is None


def test_seconds_bounds_the_sellout(admin_dsn: str) -> None:
    # Far more buyers than one second serves: the sell-out stops at --seconds, unfinished,
    # and says so instead of running on or calling itself exact.
    config = BenchConfig(
        workers=2,
        seconds=1,
        only=frozenset({Workload.SELLOUT}),
        sellout_buyers=1_000_000,
        sellout_tickets=500_000,
    )
    report = bench.run_bench(admin_dsn, config)
    (data,) = report.data["regimes"]
    sellout = data["sellout"]
    assert (sellout["finished"], sellout["exact"], sellout["oversold"]) == (False, False, 0)
    assert 0 < sellout["attempts"] < 1_000_000
    assert sellout["sold"] == sellout["purchases"] == sellout["reservations"]
    assert sellout["sold_out_answers"] == 0
    (failure,) = [f for f in report.failures if "sellout" in f]
    assert failure.endswith(
        f"sellout: stopped after --seconds 1 with {sellout['attempts']:,} of 1,000,000 buyers "
        f"served and {sellout['sold']:,} of 500,000 tickets sold: raise --seconds"
    )


def test_a_sellout_that_sold_out_when_seconds_ran_out_is_exact(admin_dsn: str) -> None:
    # 5 tickets go at once; the buyers left when --seconds ends would all be told SoldOut.
    config = BenchConfig(
        workers=2,
        seconds=1,
        only=frozenset({Workload.SELLOUT}),
        sellout_buyers=1_000_000,
        sellout_tickets=5,
    )
    report = bench.run_bench(admin_dsn, config)
    (data,) = report.data["regimes"]
    sellout = data["sellout"]
    assert (sellout["finished"], sellout["exact"]) == (False, True)
    assert (sellout["sold"], sellout["oversold"], sellout["purchases"]) == (5, 0, 5)
    assert sellout["sold_out_answers"] == sellout["attempts"] - 5
    assert [f for f in report.failures if "sellout" in f] == []


def test_seconds_bounds_the_service_sellout(admin_dsn: str) -> None:
    # The HTTP sell-out stops at --seconds too: unfinished and not sold out, it says so.
    config = BenchConfig(
        workers=2,
        seconds=1,
        only=frozenset({Workload.SERVICE}),
        sellout_buyers=1_000_000,
        sellout_tickets=500_000,
    )
    report = bench.run_bench(admin_dsn, config)
    (data,) = report.data["regimes"]
    service = data["service"]
    assert (service["finished"], service["exact"], service["oversold"]) == (False, False, 0)
    assert 0 < service["attempts"] < 1_000_000
    assert service["sold"] == service["purchases"] == service["reservations"]
    assert service["requests"] == 2 * service["attempts"]
    assert (service["sold_out_answers"], service["other_errors"]) == (0, {})
    assert data["targets"]["service_exact"] is False
    (failure,) = report.failures
    assert failure.endswith(
        f"service: stopped after --seconds 1 with {service['attempts']:,} of 1,000,000 buyers "
        f"served and {service['sold']:,} of 500,000 tickets sold: raise --seconds"
    )


def test_a_service_sellout_that_sold_out_when_seconds_ran_out_is_exact(admin_dsn: str) -> None:
    config = BenchConfig(
        workers=2,
        seconds=1,
        only=frozenset({Workload.SERVICE}),
        sellout_buyers=1_000_000,
        sellout_tickets=5,
    )
    report = bench.run_bench(admin_dsn, config)
    (data,) = report.data["regimes"]
    service = data["service"]
    assert (service["finished"], service["exact"]) == (False, True)
    assert (service["sold"], service["oversold"], service["purchases"]) == (5, 0, 5)
    assert service["sold_out_answers"] == service["attempts"] - 5
    assert service["requests"] == service["attempts"] + 5
    assert report.failures == []
    assert "sell-out over HTTP (examples/service, uvicorn)" in rendered(report)


def test_the_service_workload_is_skipped_without_the_example_service(
    admin_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As from an installed wheel, outside the repository: examples.service cannot be imported.
    monkeypatch.setitem(sys.modules, "examples.service.app", None)
    config = BenchConfig(workers=2, seconds=1, only=frozenset({Workload.SERVICE}))
    report = bench.run_bench(admin_dsn, config)
    (data,) = report.data["regimes"]
    assert set(data["service"]) == {"skipped"}
    assert data["service"]["skipped"].startswith("cannot import examples.service.app:")
    assert (data["targets"]["service_exact"], data["target_values"]["service_exact"]) == (
        None,
        "required",
    )
    assert report.failures == []
    text = rendered(report)
    assert "sell-out over HTTP (service)" in text
    assert "skipped" in text
    assert "sell-out over HTTP (examples/service, uvicorn)" not in text


def rendered(report: bench.BenchReport) -> str:
    console = Console(width=200, record=True, file=io.StringIO())
    console.print(bench.summary(report))
    return console.export_text()
