"""The wheel carries the migrations, the named queries and the license."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from tests.support import REPO


def test_wheel_ships_the_sql(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            str(REPO),
            "-w",
            str(tmp_path),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("ticketing-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    migrations = {f"ticketing/sql/{p.name}" for p in (REPO / "sql").glob("*.sql")}
    queries = {
        f"ticketing/queries/{p.name}" for p in (REPO / "ticketing" / "queries").glob("*.sql")
    }
    assert len(migrations) == 22
    assert migrations <= names
    assert queries <= names
    # The license the package declares travels with it.
    assert "ticketing-0.1.0.dist-info/licenses/LICENSE" in names
