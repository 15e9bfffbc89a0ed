"""Generate the sync modules from their asyncio sources: `python -m ticketing.aio._unasync`.

`ticketing/aio/{events,allocations,tickets,admin}.py` are the source;
`ticketing/{events,allocations,tickets,admin}.py` are written from them by
unasync's token rewrite (`async`/`await` dropped, the names below replaced),
then formatted by ruff, under a header that says so. A test regenerates them
and fails when a committed sync module differs. Development only: unasync and
ruff come with the `dev` extra.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent
MODULES = ("events", "allocations", "tickets", "admin")
REPLACEMENTS = {
    "AsyncConnection": "Connection",
    "_atx": "_tx",
}
HEADER = (
    "# Generated from ticketing/aio/{name}.py by `make sync-api` (ticketing.aio._unasync).\n"
    "# DO NOT CHANGE: edit the async source and regenerate.\n"
)


def generate(name: str) -> str:
    """The sync module generated from ticketing/aio/<name>.py, formatted."""
    import unasync  # a development tool (the dev extra), not a runtime dependency

    source = PACKAGE / "aio" / f"{name}.py"
    with tempfile.TemporaryDirectory() as tmp:
        async_dir = Path(tmp) / "_async"
        async_dir.mkdir()
        copy = async_dir / f"{name}.py"
        copy.write_text(source.read_text(encoding="utf-8"), encoding="utf-8")
        rule = unasync.Rule("/_async/", "/_sync/", additional_replacements=REPLACEMENTS)
        unasync.unasync_files([str(copy)], rules=[rule])
        out = Path(tmp) / "_sync" / f"{name}.py"
        text = HEADER.format(name=name) + out.read_text(encoding="utf-8")
        out.write_text(text, encoding="utf-8")
        ruff = Path(sys.executable).with_name("ruff")
        subprocess.run(  # noqa: S603 - the environment's own ruff
            [str(ruff), "format", "--quiet", str(out)], check=True, cwd=PACKAGE.parent
        )
        return out.read_text(encoding="utf-8")


def main() -> None:
    for name in MODULES:
        target = PACKAGE / f"{name}.py"
        target.write_text(generate(name), encoding="utf-8")
        print(f"wrote {target.relative_to(PACKAGE.parent)}")


if __name__ == "__main__":
    main()
