"""A throwaway PostgreSQL cluster in a temporary directory: start, stop, remove.

It listens on a free port of 127.0.0.1 only, trusts local connections, and
is removed on exit. No folder's permissions are changed: as root the cluster
goes under a temporary folder the server's OS user can reach (falling back to
/tmp when $TMPDIR is private), and binaries that user cannot reach are
refused with a clear error.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from urllib.parse import quote

from ticketing.embedded.machine import (
    SERVER_USER,
    ServerFailed,
    find_bindir,
    reachable_by,
    server_user,
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
