"""The sync API and ticketing.aio cannot drift: one is generated from the other, and both
expose the same names, signatures (the connection's type aside) and docstrings."""

from __future__ import annotations

import inspect
from pathlib import Path
from types import ModuleType

import pytest

from ticketing import admin, aio, allocations, db, events, tickets
from ticketing.aio import _unasync

PAIRS = [
    (events, aio.events),
    (allocations, aio.allocations),
    (tickets, aio.tickets),
    (admin, aio.admin),
]
IDS = [sync.__name__ for sync, _ in PAIRS]


def _public(module: ModuleType) -> set[str]:
    return {name for name in vars(module) if not name.startswith("_")}


def _functions(module: ModuleType) -> dict[str, object]:
    return {
        name: obj
        for name, obj in vars(module).items()
        if not name.startswith("_")
        and inspect.isfunction(obj)
        and obj.__module__ == module.__name__
    }


@pytest.mark.parametrize(("sync", "aio_module"), PAIRS, ids=IDS)
def test_same_public_names(sync: ModuleType, aio_module: ModuleType) -> None:
    assert _public(sync) == _public(aio_module)
    assert set(_functions(sync)) == set(_functions(aio_module))
    assert _functions(sync), "the module has public functions"


@pytest.mark.parametrize(("sync", "aio_module"), PAIRS, ids=IDS)
def test_same_signatures_and_docstrings(sync: ModuleType, aio_module: ModuleType) -> None:
    for name, function in _functions(sync).items():
        twin = getattr(aio_module, name)
        assert not inspect.iscoroutinefunction(function), name
        assert inspect.iscoroutinefunction(twin), name
        expected = str(inspect.signature(function)).replace(
            "psycopg.Connection", "psycopg.AsyncConnection"
        )
        assert str(inspect.signature(twin)) == expected, name
        assert inspect.getdoc(twin) == inspect.getdoc(function), name
        assert inspect.getdoc(function), f"{name} has a docstring"


@pytest.mark.parametrize("name", _unasync.MODULES)
def test_the_generated_sync_modules_are_up_to_date(name: str) -> None:
    committed = (Path(_unasync.PACKAGE) / f"{name}.py").read_text(encoding="utf-8")
    assert committed.startswith("# Generated from ticketing/aio/")
    assert _unasync.generate(name) == committed, (
        f"ticketing/{name}.py is stale: run `make sync-api` after changing ticketing/aio/{name}.py"
    )


def test_the_async_pool_is_set_up_like_the_sync_one() -> None:
    url = "postgresql://nobody@127.0.0.1:1/none"
    sync_pool = db.create_pool(url, open=False)
    async_pool = aio.create_pool(url)
    assert async_pool.closed  # opened by the caller, in its event loop
    assert async_pool.kwargs == sync_pool.kwargs == {"autocommit": True, "prepare_threshold": 0}
    assert (async_pool.min_size, async_pool.max_size) == (sync_pool.min_size, sync_pool.max_size)
    assert (async_pool.min_size, async_pool.max_size) == (db.POOL_MIN_SIZE, db.POOL_MAX_SIZE)
