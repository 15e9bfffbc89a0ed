"""The README's Python example runs as printed, and runs again: a reader may try it twice."""

from __future__ import annotations

import re

import pytest

from tests.support import REPO

EXAMPLE_URL = "postgresql://postgres@127.0.0.1/shop"


def _example() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    blocks = [b for b in re.findall(r"```python\n(.*?)```", text, re.DOTALL) if EXAMPLE_URL in b]
    assert len(blocks) == 1, "the README has one Python example that connects to the shop"
    assert blocks[0].count(EXAMPLE_URL) == 1
    return blocks[0]


def test_the_readme_example_runs_twice(dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = compile(_example().replace(EXAMPLE_URL, dsn), "README.md", "exec")
    outputs = []
    for _ in range(2):
        exec(code, {"__name__": "readme"})  # noqa: S102 - the project's own README
        outputs.append(capsys.readouterr().out)
    first, second = outputs
    assert first.strip()
    # The same story both times: the same lines, with other ids and ticket codes.
    assert len(first.splitlines()) == len(second.splitlines())
    assert "purchased=2" in first
    assert "purchased=2" in second
