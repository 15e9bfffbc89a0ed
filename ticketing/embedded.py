"""A throwaway PostgreSQL cluster in a temporary directory.

Used by the `ticketing` command when no database URL is given, and by the
test suite when no server answers: one way to start a database. The cluster
is built from the server binaries installed on the machine (`pg_config
--bindir`, else the newest /usr/lib/postgresql/*/bin), listens on a free port
of 127.0.0.1 only, trusts local connections, and is removed on exit.
$TICKETING_PG_BINDIR picks other binaries. As root, initdb and the server run
as the `postgres` OS user, since PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import quote

import psycopg
from psycopg import sql

from ticketing.errors import TicketingError

DEBIAN_BINDIRS = "/usr/lib/postgresql"
SERVER_USER = "postgres"


class ServerBinariesMissing(TicketingError):
    """No PostgreSQL server binaries (initdb, pg_ctl) on this machine."""


class ServerFailed(TicketingError):
    """The throwaway server could not be initialised or started."""


def find_bindir() -> Path:
    """The directory holding initdb and pg_ctl ($TICKETING_PG_BINDIR when set)."""
    candidates: list[Path] = []
    chosen = os.environ.get("TICKETING_PG_BINDIR")
    pg_config = shutil.which("pg_config")
    if chosen:
        candidates.append(Path(chosen))
    elif pg_config:
        out = subprocess.run(  # noqa: S603 - the machine's own pg_config
            [pg_config, "--bindir"], capture_output=True, text=True, check=False
        )
        if out.returncode == 0:
            candidates.append(Path(out.stdout.strip()))
    debian = sorted(
        Path(DEBIAN_BINDIRS).glob("*/bin"),
        key=lambda p: [int(x) for x in p.parent.name.split(".") if x.isdigit()],
        reverse=True,
    )
    if not chosen:
        candidates.extend(debian)
    for bindir in candidates:
        if (bindir / "initdb").is_file() and (bindir / "pg_ctl").is_file():
            return bindir
    raise ServerBinariesMissing(
        "no PostgreSQL server binaries found (initdb, pg_ctl): install them "
        "(Debian: apt-get install postgresql) or pass --database-url / set DATABASE_URL"
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class EmbeddedPostgres:
    """A cluster in a temporary directory; `start()` then `stop()`, or use `running()`."""

    def __init__(
        self, *, port: int | None = None, bindir: Path | None = None, password: str | None = None
    ) -> None:
        self.bindir = bindir or find_bindir()
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.user = SERVER_USER
        self.password = password
        self.root: Path | None = None
        self._as_root = os.geteuid() == 0

    @property
    def datadir(self) -> Path:
        assert self.root is not None, "not started"
        return self.root / "data"

    def url(self, dbname: str = "postgres") -> str:
        auth = f"{self.user}:{quote(self.password, safe='')}" if self.password else self.user
        return f"postgresql://{auth}@{self.host}:{self.port}/{dbname}"

    def _run(self, *args: str, env: dict[str, str] | None = None) -> None:
        command = [str(self.bindir / args[0]), *args[1:]]
        if self._as_root:
            command = ["runuser", "-u", SERVER_USER, "--", *command]
        done = subprocess.run(  # noqa: S603 - fixed server binaries, our own arguments
            command,
            capture_output=True,
            text=True,
            check=False,
            env=None if env is None else os.environ | env,
        )
        if done.returncode != 0:
            detail = (done.stderr or done.stdout).strip().splitlines()
            raise ServerFailed(
                f"{args[0]} {args[1] if len(args) > 1 else ''} failed: "
                f"{detail[-1] if detail else done.returncode}"
            )

    def _make_root(self) -> None:
        """A temporary directory (and its socket directory) the server user owns."""
        self.root = Path(tempfile.mkdtemp(prefix="ticketing-pg-"))
        sockets = self.root / "sockets"
        sockets.mkdir()
        if self._as_root:
            owner = pwd.getpwnam(SERVER_USER)
            for path in (self.root, sockets):
                os.chown(path, owner.pw_uid, owner.pw_gid)
            # The server user must be able to reach the directory.
            parent = self.root.parent
            while parent != parent.parent:
                with contextlib.suppress(OSError):
                    os.chmod(parent, os.stat(parent).st_mode | 0o001)
                parent = parent.parent

    def _launch(self) -> None:
        """Start the server of `datadir` on this port and wait until it accepts connections."""
        assert self.root is not None
        options = (
            f"-p {self.port} -c listen_addresses={self.host} "
            f"-c unix_socket_directories={self.root / 'sockets'} -c max_connections=200"
        )
        self._run(
            "pg_ctl",
            "-D",
            str(self.datadir),
            "-o",
            options,
            "-l",
            str(self.root / "server.log"),
            "-w",
            "-t",
            "60",
            "start",
        )

    def start(self) -> EmbeddedPostgres:
        try:
            self._make_root()
            assert self.root is not None
            auth = ["--auth=trust"]
            if self.password is not None:  # password authentication, even on 127.0.0.1
                pwfile = self.root / "pwfile"
                pwfile.write_text(self.password + "\n", encoding="utf-8")
                if self._as_root:
                    owner = pwd.getpwnam(SERVER_USER)
                    os.chown(pwfile, owner.pw_uid, owner.pw_gid)
                auth = ["--auth=scram-sha-256", f"--pwfile={pwfile}"]
            self._run(
                "initdb",
                "-D",
                str(self.datadir),
                "-U",
                self.user,
                *auth,
                "--encoding=UTF8",
                "--no-sync",
            )
            self._launch()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the server (if it runs) and remove its directory."""
        if self.root is None:
            return
        if (self.datadir / "postmaster.pid").exists():
            with contextlib.suppress(ServerFailed):
                self._run("pg_ctl", "-D", str(self.datadir), "-m", "fast", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)
        self.root = None


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
    names = sql.Literal(standby.application_name)
    with psycopg.connect(primary.url(), autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER SYSTEM SET synchronous_standby_names = {}").format(names))
        conn.execute(sql.SQL("ALTER SYSTEM SET synchronous_commit = {}").format(sql.Literal(level)))
        conn.execute("SELECT pg_reload_conf()")
        _wait_for_sync(conn, standby.application_name)
    try:
        yield
    finally:
        with psycopg.connect(primary.url(), autocommit=True) as conn:
            conn.execute("ALTER SYSTEM RESET synchronous_standby_names")
            conn.execute("ALTER SYSTEM RESET synchronous_commit")
            conn.execute("SELECT pg_reload_conf()")


def _wait_for_sync(
    conn: psycopg.Connection[Any], application_name: str, timeout: float = 60.0
) -> None:
    """Wait until the primary reports the standby as its synchronous one."""
    deadline = time.monotonic() + timeout
    while True:
        row = conn.execute(
            "SELECT sync_state FROM pg_stat_replication WHERE application_name = %s",
            (application_name,),
        ).fetchone()
        if row is not None and row[0] == "sync":
            return
        if time.monotonic() > deadline:
            raise ServerFailed(f"standby {application_name} did not become synchronous")
        time.sleep(0.05)


@contextlib.contextmanager
def running(**kwargs: object) -> Iterator[EmbeddedPostgres]:
    """Start a throwaway cluster; stop and remove it on exit, also on SIGTERM and Ctrl-C."""
    server = EmbeddedPostgres(**kwargs)  # type: ignore[arg-type]

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        signal.signal(signal.SIGTERM, previous)
