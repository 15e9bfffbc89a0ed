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
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from urllib.parse import quote

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

    def _run(self, *args: str) -> None:
        command = [str(self.bindir / args[0]), *args[1:]]
        if self._as_root:
            command = ["runuser", "-u", SERVER_USER, "--", *command]
        done = subprocess.run(  # noqa: S603 - fixed server binaries, our own arguments
            command, capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            detail = (done.stderr or done.stdout).strip().splitlines()
            raise ServerFailed(
                f"{args[0]} {args[1] if len(args) > 1 else ''} failed: "
                f"{detail[-1] if detail else done.returncode}"
            )

    def start(self) -> EmbeddedPostgres:
        self.root = Path(tempfile.mkdtemp(prefix="ticketing-pg-"))
        try:
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
            auth = ["--auth=trust"]
            if self.password is not None:  # password authentication, even on 127.0.0.1
                pwfile = self.root / "pwfile"
                pwfile.write_text(self.password + "\n", encoding="utf-8")
                if self._as_root:
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
            options = (
                f"-p {self.port} -c listen_addresses={self.host} "
                f"-c unix_socket_directories={sockets} -c max_connections=200"
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
