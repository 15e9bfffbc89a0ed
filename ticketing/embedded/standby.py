"""A synchronous standby of a throwaway primary: commits that wait for another server."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import psycopg
from psycopg import sql

from ticketing.embedded.cluster import EmbeddedPostgres
from ticketing.embedded.machine import ServerFailed
from ticketing.queries import load

_Q = load("server.sql")


class EmbeddedStandby(EmbeddedPostgres):
    """A streaming standby of a throwaway primary (`pg_basebackup -R`), in its own directory.

    It connects as `application_name`, so the primary can name it in
    synchronous_standby_names; `apply_delay_ms` becomes its
    recovery_min_apply_delay. The primary's settings are left alone: see
    `synchronous()`.
    """

    def __init__(
        self,
        primary: EmbeddedPostgres,
        *,
        application_name: str = "s1",
        apply_delay_ms: int = 0,
        port: int | None = None,
    ) -> None:
        super().__init__(port=port, bindir=primary.bindir, password=primary.password)
        self.primary = primary
        self.application_name = application_name
        self.apply_delay_ms = apply_delay_ms

    def start(self) -> EmbeddedStandby:
        try:
            self._make_root()
            env = {"PGPASSWORD": self.password} if self.password is not None else {}
            self._run(
                "pg_basebackup",
                "-D",
                str(self.datadir),
                "-h",
                self.primary.host,
                "-p",
                str(self.primary.port),
                "-U",
                self.primary.user,
                "-X",
                "stream",
                "-R",
                "--no-sync",
                env=env,
            )
            self._configure()
            self._launch()
        except BaseException:
            self.stop()
            raise
        return self

    def set_apply_delay(self, delay_ms: int) -> None:
        """Change recovery_min_apply_delay on the running standby (ALTER SYSTEM, reload)."""
        with psycopg.connect(self.url(), autocommit=True) as conn:
            delay = sql.Literal(f"{delay_ms}ms")
            conn.execute(sql.SQL(_Q["set_apply_delay"]).format(delay=delay))
            conn.execute(_Q["reload_settings"])
        self.apply_delay_ms = delay_ms
        time.sleep(0.2)  # the startup process rereads its settings

    def _configure(self) -> None:
        """Name the standby in primary_conninfo and set its apply delay (postgresql.auto.conf)."""
        conf = self.datadir / "postgresql.auto.conf"
        lines = conf.read_text(encoding="utf-8").splitlines()
        found = False
        for n, line in enumerate(lines):
            if line.startswith("primary_conninfo = '") and line.endswith("'"):
                lines[n] = f"{line[:-1]} application_name={self.application_name}'"
                found = True
        if not found:
            raise ServerFailed("pg_basebackup -R wrote no primary_conninfo")
        lines.append(f"recovery_min_apply_delay = '{self.apply_delay_ms}ms'")
        conf.write_text("\n".join(lines) + "\n", encoding="utf-8")


@contextlib.contextmanager
def synchronous(
    primary: EmbeddedPostgres, standby: EmbeddedStandby, *, level: str = "remote_apply"
) -> Iterator[None]:
    """Make every commit on `primary` wait for `standby` (at `level`) inside the block.

    Only for a primary this module started: ALTER SYSTEM, then reload. On exit
    the primary commits alone again, before the standby stops.
    """
    name = sql.Literal(standby.application_name)
    with psycopg.connect(primary.url(), autocommit=True) as conn:
        conn.execute(sql.SQL(_Q["set_synchronous_standby"]).format(name=name))
        conn.execute(sql.SQL(_Q["set_synchronous_commit"]).format(level=sql.Literal(level)))
        conn.execute(_Q["reload_settings"])
        _wait_for_sync(conn, standby.application_name)
    try:
        yield
    finally:
        with psycopg.connect(primary.url(), autocommit=True) as conn:
            conn.execute(_Q["reset_synchronous_standby"])
            conn.execute(_Q["reset_synchronous_commit"])
            conn.execute(_Q["reload_settings"])


def _wait_for_sync(
    conn: psycopg.Connection[Any], application_name: str, timeout: float = 60.0
) -> None:
    """Wait until the primary reports the standby as its synchronous one."""
    deadline = time.monotonic() + timeout
    while True:
        row = conn.execute(_Q["standby_sync_state"], (application_name,)).fetchone()
        if row is not None and row[0] == "sync":
            return
        if time.monotonic() > deadline:
            raise ServerFailed(f"standby {application_name} did not become synchronous")
        time.sleep(0.05)
