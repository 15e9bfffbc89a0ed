"""pgbench: a layer statement as a pgbench script, and one pgbench run."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ticketing import db, embedded
from ticketing._tx import LOCK_TIMEOUT
from ticketing.bench.config import QUANTITY_RANGE, BenchError
from ticketing.bench.crew import Bar

#: What each named parameter of the reserve statement becomes in the pgbench script.
PGBENCH_PARAMETERS = {
    "event_id": "CAST(:event_id AS bigint)",
    "fingerprint": "('pgbench-' || CAST(:client_id AS text) || '-' || CAST(:nonce AS text))",
    "quantity": "CAST(:quantity AS integer)",
    "hold": "interval '10 minutes'",
    "idempotency_key": "CAST(NULL AS text)",
    "lock_timeout": f"CAST('{LOCK_TIMEOUT}' AS text)",
}
PGBENCH_PREAMBLE = (
    f"\\set quantity random({QUANTITY_RANGE[0]}, {QUANTITY_RANGE[1]})\n"
    "\\set nonce random(1, 2000000000)\n"
)
_PSYCOPG_PARAMETER = re.compile(r"%\((\w+)\)s|%%|%s")
_PGBENCH_TPS = re.compile(r"^tps = ([0-9.]+) \(without initial connection time\)", re.MULTILINE)
_PGBENCH_TRANSACTIONS = re.compile(r"number of transactions actually processed: (\d+)")
_PGBENCH_LATENCY = re.compile(r"latency average = ([0-9.]+) ms")
_PGBENCH_FAILED = re.compile(r"number of failed transactions: (\d+)")


def pgbench_script(
    reserve_sql: str,
    parameters: dict[str, str] | None = None,
    preamble: str = PGBENCH_PREAMBLE,
) -> str:
    """A pgbench script that runs `reserve_sql` with pgbench variables for its parameters.

    Comment lines are dropped; every %(name)s must be one of `parameters`
    (default PGBENCH_PARAMETERS, the reserve statement's); `preamble` comes first.
    """
    parameters = PGBENCH_PARAMETERS if parameters is None else parameters
    body = "\n".join(
        line for line in reserve_sql.splitlines() if not line.lstrip().startswith("--")
    )

    def replace(found: re.Match[str]) -> str:
        name = found.group(1)
        if found.group(0) == "%%":
            return "%"
        if name is None or name not in parameters:
            raise BenchError(f"the statement has a parameter pgbench cannot fill: {found[0]}")
        return parameters[name]

    statement = _PSYCOPG_PARAMETER.sub(replace, body).strip().rstrip(";").strip()
    return f"{preamble}{statement};\n"


def find_pgbench() -> Path | None:
    """pgbench from the PostgreSQL bindir, else from PATH; None when there is none."""
    try:
        candidate = embedded.find_bindir() / "pgbench"
    except embedded.ServerBinariesMissing:
        candidate = None
    if candidate is not None and candidate.is_file():
        return candidate
    found = shutil.which("pgbench")
    return Path(found) if found else None


def pgbench_connection(url: str) -> tuple[list[str], dict[str, str]]:
    """pgbench arguments (-h -p -U dbname) and environment (PGPASSWORD, ...) for a URL."""
    params = db.parse_dsn(url)
    args: list[str] = []
    for key, flag in (("host", "-h"), ("port", "-p"), ("user", "-U")):
        if params.get(key):
            args += [flag, str(params[key])]
    env: dict[str, str] = {}
    for key, variable in (
        ("password", "PGPASSWORD"),
        ("sslmode", "PGSSLMODE"),
        ("options", "PGOPTIONS"),
        ("connect_timeout", "PGCONNECT_TIMEOUT"),
    ):
        if params.get(key):
            env[variable] = str(params[key])
    if params.get("dbname"):
        args.append(str(params["dbname"]))
    return args, env


@dataclass(frozen=True)
class PgbenchRun:
    """One pgbench run: the script, its clients, and for how long or how many transactions."""

    script: str
    clients: int
    seconds: int | None = None  # -T
    transactions: int | None = None  # -t, per client
    defines: dict[str, int] = field(default_factory=dict)  # -D name=value
    options: str | None = None  # added to PGOPTIONS, e.g. -c session_replication_role=replica


def run_pgbench(pgbench: Path, url: str, run: PgbenchRun, bar: Bar) -> dict[str, Any]:
    """Run pgbench -M prepared; its tps, transactions, latency and failures (or an error)."""
    connection, env = pgbench_connection(url)
    if run.options:
        env["PGOPTIONS"] = f"{env.get('PGOPTIONS', '')} {run.options}".strip()
    length = ["-T", str(run.seconds)] if run.transactions is None else ["-t", str(run.transactions)]
    defines = [arg for name, value in run.defines.items() for arg in ("-D", f"{name}={value}")]
    with tempfile.TemporaryDirectory(prefix="ticketing-bench-") as tmp:
        path = Path(tmp) / "script.sql"
        path.write_text(run.script, encoding="utf-8")
        command = [
            str(pgbench),
            "-n",
            "-c",
            str(run.clients),
            "-j",
            str(min(2, run.clients)),
            *length,
            "-M",
            "prepared",
            *defines,
            "-f",
            str(path),
            *connection,
        ]
        environ = {k: v for k, v in os.environ.items() if k not in ("PGPASSWORD", "PGOPTIONS")}
        started = time.monotonic()
        with subprocess.Popen(  # noqa: S603 - the machine's pgbench, our own arguments
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environ | env
        ) as proc:
            try:
                while proc.poll() is None:
                    bar.update(time.monotonic() - started)
                    time.sleep(0.1)
            finally:
                if proc.poll() is None:
                    proc.kill()
            stdout, stderr = proc.communicate()
    bar.finish()
    tps = _PGBENCH_TPS.search(stdout)
    transactions = _PGBENCH_TRANSACTIONS.search(stdout)
    latency = _PGBENCH_LATENCY.search(stdout)
    failed = _PGBENCH_FAILED.search(stdout)
    result: dict[str, Any] = {
        "binary": str(pgbench),
        "clients": run.clients,
        "exit_code": proc.returncode,
        "tps": float(tps.group(1)) if tps else None,
        "transactions": int(transactions.group(1)) if transactions else None,
        "latency_average_ms": float(latency.group(1)) if latency else None,
        "failed_transactions": int(failed.group(1)) if failed else 0,
        "script": run.script,
    }
    if proc.returncode != 0 or tps is None:
        lines = [line for line in (stderr or stdout).strip().splitlines() if line.strip()]
        result["error"] = lines[-1] if lines else f"pgbench exited with {proc.returncode}"
    return result
