"""The tables `ticketing bench` prints: every regime side by side, the sell-outs, the targets."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rich.console import Group
from rich.table import Table

from ticketing._report import plural
from ticketing.bench.config import BenchReport
from ticketing.bench.loaded import OPERATIONS as LOADED_OPERATIONS

Cell = Callable[[dict[str, Any]], str]


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _verdict(value: bool | None, missed: str = "[yellow]missed[/]") -> str:
    if value is None:
        return "[dim]-[/]"
    return "[green]met[/]" if value else missed


def _timed(result: dict[str, Any] | None) -> str:
    """reservations/s and p99 of a timed workload, with its errors in red."""
    if result is None:
        return "[dim]not run[/]"
    text = f"{result['reservations_per_second']:,.0f} /s, p99 {_ms(result['p99_ms'])}"
    errors = sum(result["errors"].values())
    return text + (f" [red]{errors:,} errors[/]" if errors else "")


def _service(regime: dict[str, Any]) -> str:
    """HTTP requests/s and reserve p99 of the sell-out over HTTP, its wrong answers in red."""
    result = regime["service"]
    if result is None:
        return "[dim]not run[/]"
    if "skipped" in result:
        return "[dim]skipped[/]"
    text = f"{result['requests_per_second']:,.0f} req/s, p99 {_ms(result['reserve_p99_ms'])}"
    others = sum(result["other_errors"].values())
    text += f" [red]{others:,} other answers[/]" if others else ""
    return text + ("" if result["exact"] else " [red]not exact[/]")


def _pgbench(result: dict[str, Any] | None, key: str = "tps") -> str:
    if result is None:
        return "[dim]not run[/]"
    for reason in ("skipped", "unavailable"):
        if reason in result:
            return f"[dim]{reason}[/]"
    if "error" in result:
        return "[red]failed[/]"
    rate = result.get(key)
    failed = result.get("failed_transactions") or 0
    return ("-" if rate is None else f"{rate:,.0f} /s") + (
        f" [red]{failed} failed[/]" if failed else ""
    )


def _pair(name: str, side: str) -> Cell:
    def cell(regime: dict[str, Any]) -> str:
        pair = regime[name]
        return _pgbench(None if pair is None else pair[side], "rows_per_second")

    return cell


def _commit(regime: dict[str, Any]) -> str:
    commit = regime["commit"]
    if commit.get("median_ms") is None:
        return "[dim]not measured[/]"
    text = f"{commit['median_ms']:.2f} ms"
    if commit["asked_ms"] is not None:
        mark = "[green]ok[/]" if commit["validated"] else "[red]REFUSED[/]"
        text += f" (asked {commit['asked_ms']:g}, {mark})"
    return text


def _client(regime: dict[str, Any]) -> str:
    client = regime["client"]
    if client is None:
        return "[dim]not run[/]"
    return f"{client['layer_us_per_call']:,.0f} / {client['bare_us_per_call']:,.0f} us"


def _sweeper(half: str) -> Cell:
    def cell(regime: dict[str, Any]) -> str:
        return _timed(None if regime["sweeper"] is None else regime["sweeper"][half])

    return cell


ROWS: list[tuple[str, Cell]] = [
    ("one bare commit (median)", _commit),
    ("hot: layer", lambda r: _timed(r["hot"])),
    ("hot: layer, asyncio (ticketing.aio)", lambda r: _timed(r["async"])),
    ("hot: SELECT FOR UPDATE", lambda r: _timed(r["for_update"])),
    ("hot: single UPDATE", lambda r: _timed(r["single_update"])),
    ("reserve: pgbench, layer SQL", lambda r: _pgbench(r["pgbench"])),
    ("reserve: pgbench, floor", lambda r: _pgbench(r["floor"], "rows_per_second")),
    ("purchase: pgbench, layer SQL", _pair("purchase", "layer")),
    ("purchase: pgbench, floor", _pair("purchase", "floor")),
    ("cancel: pgbench, layer SQL", _pair("cancel", "layer")),
    ("cancel: pgbench, floor", _pair("cancel", "floor")),
    ("expire_due: rows, layer SQL", _pair("expire", "layer")),
    ("expire_due: rows, floor", _pair("expire", "floor")),
    ("spread: many events", lambda r: _timed(r["spread"])),
    ("short holds, no sweeper", _sweeper("without")),
    ("short holds + sweeper", _sweeper("with")),
    ("client CPU/reserve: layer / bare", _client),
    ("sell-out over HTTP (service)", _service),
]

TARGET_ROWS = [
    ("layer / SELECT FOR UPDATE", "layer_vs_for_update"),
    ("layer / single UPDATE", "layer_vs_single_update"),
    ("layer / pgbench (reserve)", "layer_vs_pgbench"),
    ("hot: asyncio / processes", "async_vs_sync"),
    ("p99: layer below both baselines", "p99_below_baselines"),
    ("reserve: layer SQL / floor", "reserve_vs_floor"),
    ("purchase: layer SQL / floor", "purchase_vs_floor"),
    ("cancel: layer SQL / floor", "cancel_vs_floor"),
    ("expire_due: layer SQL / floor", "expire_vs_floor"),
    ("client CPU: layer / bare", "client_layer_vs_bare"),
    ("with sweeper / without", "sweeper_with_vs_without"),
    *((f"{op}: loaded / empty (median)", f"loaded_{op}") for op in LOADED_OPERATIONS),
    ("sell-out exact", "sellout_exact"),
    ("sell-out over HTTP exact", "service_exact"),
]
#: Targets that are correctness, not speed: shown without a value, FAILED when missed.
EXACT_TARGETS = ("sellout_exact", "service_exact")


def summary(report: BenchReport) -> Group:
    """The run as tables: workloads by regime, the sell-outs, the targets, the mechanisms."""
    data = report.data
    machine, regimes = data["machine"], data["regimes"]
    version = str(machine.get("server_version", "?")).split()[0]
    title = (
        f"ticketing bench: {machine['cpu_count']} CPUs, PostgreSQL {version}, "
        f"{plural(machine['workers'], 'worker')}, {machine['seconds']} s runs"
    )
    table = Table(title=title, caption="per second; latency in ms")
    table.add_column("workload", no_wrap=True)
    for regime in regimes:
        table.add_column(regime["label"], justify="right")
    for label, cell in ROWS:
        table.add_row(
            label, *(cell(r) if cell is _commit else _refused(r) or cell(r) for r in regimes)
        )
    tables: list[Table] = [table]
    if any(r["sellout"] is not None for r in regimes):
        tables.append(_sellout_table(regimes))
    if any(r["service"] is not None and "skipped" not in r["service"] for r in regimes):
        tables.append(_sellout_table(regimes, "service"))
    loaded = [r for r in regimes if r["loaded"] is not None and "skipped" not in r["loaded"]]
    if loaded:
        tables.append(_loaded_table(loaded[0]))
    tables.append(_targets_table(regimes))
    tables.append(_mechanisms_table(regimes))
    return Group(*tables)


def _refused(regime: dict[str, Any]) -> str | None:
    return "[red]refused[/]" if regime["refused"] else None


def _sellout_table(regimes: list[dict[str, Any]], key: str = "sellout") -> Table:
    """The sell-out (`sellout`), or the same sale over HTTP (`service`), by regime."""
    measured = [r[key] for r in regimes if r[key] is not None and "skipped" not in r[key]]
    first = measured[0]
    what = "sell-out" if key == "sellout" else "sell-out over HTTP (examples/service, uvicorn)"
    table = Table(
        title=f"{what}: {plural(first['buyers'], 'buyer')}, one ticket each, "
        f"{plural(first['tickets'], 'ticket')}"
    )
    table.add_column("measure")
    for regime in regimes:
        table.add_column(regime["label"], justify="right")
    wrong = "[red]{}[/]"

    def row(label: str, cell: Callable[[dict[str, Any]], str]) -> None:
        table.add_row(label, *_sale_cells(regimes, key, cell))

    def count(key: str, right: Callable[[dict[str, Any]], bool]) -> Cell:
        return lambda s: ("{}" if right(s) else wrong).format(f"{s[key]:,}")

    losers = first["buyers"] - first["tickets"]
    if key == "service":
        row("HTTP requests per second", lambda s: f"{s['requests_per_second']:,.0f}")
        row("reserve p50", lambda s: f"{_ms(s['reserve_p50_ms'])} ms")
    row("tickets sold", count("sold", lambda s: s["sold"] == s["tickets"]))
    row("oversold", count("oversold", lambda s: not s["oversold"]))
    # --seconds may end a sale that sold out before every buyer was served: still exact.
    row("buyers served", count("attempts", lambda s: s["finished"] or s["sold"] == s["tickets"]))
    row(
        f"answered SoldOut (of {losers:,} losers)",
        count(
            "sold_out_answers",
            lambda s: (
                s["sold_out_answers"] == s["attempts"] - s["sold"]
                and (not s["finished"] or s["sold_out_answers"] == s["buyers"] - s["tickets"])
            ),
        ),
    )
    row("other answers", lambda s: f"{sum(s['other_errors'].values()):,}")
    row("time to sell out", lambda s: f"{s['seconds_to_sell_out']:.2f} s")
    row("reserve p99", lambda s: f"{_ms(s['reserve_p99_ms'])} ms")
    if key == "service":
        row(
            "CPU: server / clients",
            lambda s: (
                f"{s['server_cpu_seconds']:.2f} / {s['client_cpu_seconds']:.2f} s "
                f"in {s['seconds']:.2f} s"
            ),
        )
    row("exact", lambda s: _verdict(s["exact"], "[red]NO[/]"))
    return table


def _sale_cells(regimes: list[dict[str, Any]], key: str, cell: Cell) -> list[str]:
    cells = []
    for regime in regimes:
        result = regime[key]
        if result is None:
            cells.append("-")
        elif "skipped" in result:
            cells.append("[dim]skipped[/]")
        else:
            cells.append(cell(result))
    return cells


def _loaded_table(regime: dict[str, Any]) -> Table:
    loaded = regime["loaded"]
    empty, full = loaded["empty"], loaded["loaded"]
    table = Table(
        title=f"cost as the tables grow ({regime['label']}): median of {loaded['calls']} calls, "
        f"one client, after a preload of {loaded['preloaded_allocations']:,} allocations "
        f"({loaded['preload_s']:,.0f} s)"
    )
    for column in ("call", "empty", "loaded", "loaded / empty"):
        table.add_column(column, justify="left" if column == "call" else "right")
    table.add_row(
        "database",
        f"{empty['allocations']:,} allocations",
        f"{full['allocations']:,} allocations",
        f"{full['tickets']:,} tickets",
    )
    for op in LOADED_OPERATIONS:
        table.add_row(
            op,
            f"{_ms(empty['median_ms'][op])} ms",
            f"{_ms(full['median_ms'][op])} ms",
            _x(loaded["loaded_vs_empty"][op]),
        )
    table.add_row(
        "check --event (one event)",
        f"{empty['check_event_s']:.3f} s",
        f"{full['check_event_s']:.3f} s",
        _x(loaded["loaded_vs_empty"]["check_event"]),
    )
    table.add_row(
        "check (whole database)",
        f"{empty['check_all_s']:.3f} s",
        f"{full['check_all_s']:.3f} s",
        "",
    )
    return table


def _targets_table(regimes: list[dict[str, Any]]) -> Table:
    table = Table(title="targets (reported, not asserted)")
    table.add_column("measure")
    for regime in regimes:
        table.add_column(regime["label"], justify="right")
        table.add_column("target", justify="right")
        table.add_column("")
    for label, key in TARGET_ROWS:
        cells: list[str] = []
        for regime in regimes:
            value = regime["ratios"].get(key)
            if key == "p99_below_baselines":
                shown = f"{_ms(regime['ratios']['p99_hot_ms'])} ms"
            elif key in EXACT_TARGETS:
                shown = ""
            else:
                shown = _x(value)
            met = regime["targets"][key]
            missed = "[red]FAILED[/]" if key in EXACT_TARGETS else "[yellow]missed[/]"
            cells += [shown, regime["target_values"][key], _verdict(met, missed)]
        table.add_row(label, *cells)
    return table


def _mechanisms_table(regimes: list[dict[str, Any]]) -> Table:
    table = Table(title="regimes")
    table.add_column("regime", no_wrap=True)
    table.add_column("how the commit latency is produced")
    for regime in regimes:
        note = regime["mechanism"]
        if regime["refused"]:
            note += f" [red]{regime['refused']}[/]"
        table.add_row(regime["label"], note)
    return table
