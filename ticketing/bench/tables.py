"""The tables `ticketing bench` prints: workloads, the sell-out, the targets."""

from __future__ import annotations

from typing import Any

from rich.console import Group
from rich.table import Table

from ticketing.bench.config import (
    TARGET_SWEEPER,
    TARGET_VS_FOR_UPDATE,
    TARGET_VS_PGBENCH,
    TARGET_VS_SINGLE_UPDATE,
    BenchReport,
)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _verdict(value: bool | None, missed: str = "[yellow]missed[/]") -> str:
    if value is None:
        return "[dim]not run[/]"
    return "[green]met[/]" if value else missed


def summary(report: BenchReport) -> Group:
    """The run as tables: the workloads (machine facts in the title), the sell-out, the targets."""
    data = report.data
    machine = data["machine"]
    title = (
        f"ticketing bench: {machine['cpu_count']} CPUs, "
        f"PostgreSQL {str(machine['server_version']).split()[0]}, "
        f"synchronous_commit={machine['synchronous_commit']}, "
        f"{machine['workers']} workers, {machine['seconds']} s runs"
    )
    tables = [_workloads_table(data, title)]
    if data["sellout"] is not None:
        tables.append(_sellout_table(data["sellout"]))
    tables.append(_targets_table(data))
    return Group(*tables)


def _workloads_table(data: dict[str, Any], title: str) -> Table:
    table = Table(title=title, caption="reservations per second; latency in ms")
    table.add_column("workload", no_wrap=True)
    for name in ("per s", "p50", "p95", "p99", "count", "errors"):
        table.add_column(name, justify="right")

    def timed_row(label: str, result: dict[str, Any] | None) -> None:
        if result is None:
            return
        errors = sum(result["errors"].values())
        table.add_row(
            label,
            f"{result['reservations_per_second']:,.0f}",
            _ms(result["p50_ms"]),
            _ms(result["p95_ms"]),
            _ms(result["p99_ms"]),
            f"{result['reservations']:,}",
            f"[red]{errors:,}[/]" if errors else "0",
        )

    timed_row("hot: layer", data["hot"])
    timed_row("hot: SELECT FOR UPDATE", data["for_update"])
    timed_row("hot: single UPDATE", data["single_update"])
    pgbench = data["pgbench"]
    if pgbench is not None:
        if "skipped" in pgbench:
            table.add_row("hot: pgbench, layer SQL", "skipped", "", "", "", "", "")
        else:
            failed = pgbench["failed_transactions"] + (1 if "error" in pgbench else 0)
            table.add_row(
                "hot: pgbench, layer SQL",
                "-" if pgbench["tps"] is None else f"{pgbench['tps']:,.0f}",
                "",
                "",
                "",
                f"{pgbench['transactions'] or 0:,}",
                f"[red]{failed:,}[/]" if failed else "0",
            )
    spread = data["spread"]
    timed_row(f"spread: {spread['events']:,} events" if spread else "", spread)
    sweeper = data["sweeper"]
    if sweeper is not None:
        timed_row("short holds, no sweeper", sweeper["without"])
        timed_row("short holds + sweeper", sweeper["with"])
    return table


def _sellout_table(sellout: dict[str, Any]) -> Table:
    table = Table(
        title=f"sell-out: {sellout['buyers']:,} buyers, one ticket each, "
        f"{sellout['tickets']:,} tickets"
    )
    table.add_column("measure")
    table.add_column("value", justify="right")
    wrong = "[red]{}[/]"
    losers = sellout["buyers"] - sellout["tickets"]
    other = sum(sellout["other_errors"].values())
    table.add_row(
        "tickets sold",
        (wrong if sellout["sold"] != sellout["tickets"] else "{}").format(f"{sellout['sold']:,}"),
    )
    table.add_row(
        "oversold", (wrong if sellout["oversold"] else "{}").format(f"{sellout['oversold']:,}")
    )
    table.add_row(
        f"answered SoldOut (of {losers:,} losers)",
        (wrong if sellout["sold_out_answers"] != losers else "{}").format(
            f"{sellout['sold_out_answers']:,}"
        ),
    )
    table.add_row("other answers", (wrong if other else "{}").format(f"{other:,}"))
    table.add_row("time to sell out", f"{sellout['seconds_to_sell_out']:.2f} s")
    table.add_row("reserve p99", f"{_ms(sellout['reserve_p99_ms'])} ms")
    table.add_row("exact", _verdict(sellout["exact"], "[red]NO[/]"))
    return table


def _targets_table(data: dict[str, Any]) -> Table:
    ratios, targets = data["ratios"], data["targets"]
    table = Table(title="targets (reported, not asserted)")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_column("target", justify="right")
    table.add_column("")
    for label, key, target in (
        ("layer / SELECT FOR UPDATE", "layer_vs_for_update", TARGET_VS_FOR_UPDATE),
        ("layer / single UPDATE", "layer_vs_single_update", TARGET_VS_SINGLE_UPDATE),
        ("layer / pgbench", "layer_vs_pgbench", TARGET_VS_PGBENCH),
        ("with sweeper / without", "sweeper_with_vs_without", TARGET_SWEEPER),
    ):
        table.add_row(label, _x(ratios[key]), f">= {target:g}x", _verdict(targets[key]))
    table.add_row(
        "p99 ms: layer / single UPDATE",
        f"{_ms(ratios['p99_layer_ms'])} / {_ms(ratios['p99_single_update_ms'])}",
        "no worse",
        _verdict(targets["p99_no_worse"]),
    )
    table.add_row(
        "sell-out exact", "", "required", _verdict(targets["sellout_exact"], "[red]FAILED[/]")
    )
    return table
