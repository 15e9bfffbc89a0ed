"""One regime's verdicts: its correctness failures, its ratios, and the targets they meet."""

from __future__ import annotations

from typing import Any

from ticketing.bench.config import (
    FAST_TARGETS,
    FLOOR_TARGETED,
    SLOW_COMMIT_MS,
    SLOW_TARGETS,
    TARGET_CLIENT,
    TARGET_LOADED,
    TARGET_SWEEPER,
    TARGET_VS_FLOOR,
)
from ticketing.bench.loaded import OPERATIONS as LOADED_OPERATIONS
from ticketing.bench.stats import at_least, ratio

#: The pgbench pairs (layer SQL and floor) of the server workloads, by JSON key.
PAIRS = ("purchase", "cancel", "expire")


def _measured(result: dict[str, Any] | None) -> dict[str, Any] | None:
    """A workload's result, or None when it did not run or was skipped."""
    return None if result is None or "skipped" in result else result


def _pgbench_failures(name: str, result: dict[str, Any] | None, exact: bool) -> list[str]:
    """pgbench failing; with `exact`, a layer run whose transactions did not all change a row."""
    if result is None or "skipped" in result or "unavailable" in result:
        return []
    if "error" in result:
        return [f"{name}: {result['error']}"]
    if result.get("failed_transactions"):
        return [f"{name}: {result['failed_transactions']} failed transactions"]
    if exact and result.get("holds_in_place") and result["rows_changed"] != result["holds"]:
        return [f"{name}: {result['rows_changed']:,} rows changed, not {result['holds']:,}"]
    return []


def failures(data: dict[str, Any]) -> list[str]:
    """Timed workloads never sell out, so any error answer is a failure; so is pgbench failing."""
    found: list[str] = []
    timed: dict[str, dict[str, Any] | None] = {
        "hot": data["hot"],
        "async": data["async"],
        "for-update": data["for_update"],
        "single-update": data["single_update"],
        "spread": data["spread"],
    }
    if data["sweeper"] is not None:
        timed["sweeper without"] = data["sweeper"]["without"]
        timed["sweeper with"] = data["sweeper"]["with"]
    for name, result in timed.items():
        if result is not None and result["errors"]:
            found.append(
                f"{name}: error answers {result['errors']}; "
                f"first messages: {result['error_samples']}"
            )
    found += _pgbench_failures("pgbench", data["pgbench"], exact=False)
    found += _pgbench_failures("floor", data["floor"], exact=False)
    for name in PAIRS:
        pair = data[name]
        if pair is not None:
            found += _pgbench_failures(f"{name} (layer SQL)", pair["layer"], exact=True)
            found += _pgbench_failures(f"{name} (floor)", pair["floor"], exact=False)
    loaded = _measured(data["loaded"])
    if loaded is not None and (loaded["empty"]["violations"] or loaded["loaded"]["violations"]):
        found.append("loaded: check_invariants found violations")
    if data["sellout"] is not None:
        found += data["sellout"].pop("failures")
    service = _measured(data["service"])
    if service is not None:
        found += service.pop("failures")
    return found


def _rate(result: dict[str, Any] | None, key: str = "reservations_per_second") -> float | None:
    if result is None or result.get(key) is None:
        return None
    return float(result[key])


def ratios(data: dict[str, Any]) -> dict[str, float | None]:
    pgbench, sweeper, client = data["pgbench"], data["sweeper"], data["client"]
    found: dict[str, float | None] = {
        "layer_vs_for_update": ratio(_rate(data["hot"]), _rate(data["for_update"])),
        "layer_vs_single_update": ratio(_rate(data["hot"]), _rate(data["single_update"])),
        "layer_vs_pgbench": ratio(_rate(data["hot"]), _rate(pgbench, "tps")),
        "reserve_vs_floor": ratio(_rate(pgbench, "tps"), _rate(data["floor"], "rows_per_second")),
        "async_vs_sync": ratio(_rate(data["async"]), _rate(data["hot"])),
    }
    for name in PAIRS:
        found[f"{name}_vs_floor"] = None if data[name] is None else data[name]["layer_vs_floor"]
    found["client_layer_vs_bare"] = None if client is None else client["layer_vs_bare"]
    found["sweeper_with_vs_without"] = (
        None if sweeper is None else ratio(_rate(sweeper["with"]), _rate(sweeper["without"]))
    )
    loaded = _measured(data["loaded"])
    for op in LOADED_OPERATIONS:
        found[f"loaded_{op}"] = None if loaded is None else loaded["loaded_vs_empty"][op]
    for name in ("hot", "for_update", "single_update"):
        found[f"p99_{name}_ms"] = None if data[name] is None else data[name]["p99_ms"]
    return found


def targets(data: dict[str, Any]) -> tuple[dict[str, bool | None], dict[str, str]]:
    """Which targets the regime meets (None: not measured, or no target here), and each target."""
    values = data["ratios"]
    commit = data["commit"].get("median_ms")
    slow = commit is not None and commit >= SLOW_COMMIT_MS
    speed = SLOW_TARGETS if slow else FAST_TARGETS
    met: dict[str, bool | None] = {}
    wanted: dict[str, str] = {}
    for name in ("layer_vs_for_update", "layer_vs_single_update", "layer_vs_pgbench"):
        met[name] = at_least(values[name], speed[name]) if name in speed else None
        wanted[name] = f">= {speed[name]:g}x" if name in speed else "-"
    met["async_vs_sync"], wanted["async_vs_sync"] = None, "-"  # reported: asyncio's cost
    p99 = [values[f"p99_{name}_ms"] for name in ("hot", "for_update", "single_update")]
    met["p99_below_baselines"] = None if not slow or None in p99 else p99[0] < min(p99[1], p99[2])
    wanted["p99_below_baselines"] = "below both" if slow else "-"
    for name in FLOOR_TARGETED:
        met[f"{name}_vs_floor"] = at_least(values[f"{name}_vs_floor"], TARGET_VS_FLOOR)
        wanted[f"{name}_vs_floor"] = f">= {TARGET_VS_FLOOR:g}x"
    met["expire_vs_floor"], wanted["expire_vs_floor"] = None, "-"
    client = values["client_layer_vs_bare"]
    met["client_layer_vs_bare"] = None if client is None else client <= TARGET_CLIENT
    wanted["client_layer_vs_bare"] = f"<= {TARGET_CLIENT:g}x"
    met["sweeper_with_vs_without"] = at_least(values["sweeper_with_vs_without"], TARGET_SWEEPER)
    wanted["sweeper_with_vs_without"] = f">= {TARGET_SWEEPER:g}x"
    for op in LOADED_OPERATIONS:
        value = values[f"loaded_{op}"]
        met[f"loaded_{op}"] = None if value is None else value <= TARGET_LOADED
        wanted[f"loaded_{op}"] = f"<= {TARGET_LOADED:g}x"
    met["sellout_exact"] = None if data["sellout"] is None else data["sellout"]["exact"]
    wanted["sellout_exact"] = "required"
    service = _measured(data["service"])
    met["service_exact"] = None if service is None else service["exact"]
    wanted["service_exact"] = "required"
    return met, wanted
