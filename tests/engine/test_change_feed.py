"""An engine follows the store's change feed: a change committed anywhere reaches its
snapshot, and its own writes, which it loads at once to read them (read-your-writes), are
not loaded a second time when the feed announces them back.

Loads are counted by the snapshot's version (each load publishes the next one). The feed's
progress is read from the decision actor's counters: a test waits until every change
announced so far is held by the snapshot in force, then no load is due. Waits are bounded
functional limits (the design promises changes reach every node within a second), never
measurements."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest
import trio

import assay
from assay.engine import SYSTEM_KEY, ConfigState, Engine, EngineConfig, FlagSpec, ProjectSpec


def _config(dsn: str | None) -> EngineConfig:
    return EngineConfig(store="memory") if dsn is None else EngineConfig(database_url=dsn)


@pytest.fixture
async def engine(store_dsn: str | None) -> AsyncIterator[Engine]:
    async with assay.open_engine(_config(store_dsn), load_entry_points=False) as engine:
        yield engine


def _open(dsn: str) -> AbstractAsyncContextManager[Engine]:
    return assay.open_engine(_config(dsn), load_entry_points=False)


async def _settled(engine: Engine, *, announced: int = 1) -> int:
    """Wait until the feed has announced at least ``announced`` changes and the snapshot in
    force holds every one of them; the number announced."""
    actor: Any = engine.decision.actor
    with trio.fail_after(5):
        while (  # noqa: ASYNC110
            actor.changes_announced < announced or actor.changes_settled < actor.changes_announced
        ):
            await trio.sleep(0.01)
    assert actor.changes_settled == actor.changes_announced
    return int(actor.changes_announced)


async def _create_flag(engine: Engine, key: str) -> None:
    await engine.service.create_object(
        SYSTEM_KEY, assay.Flag, "shop", FlagSpec(key=key, default_value=True)
    )


def _has(engine: Engine, key: str) -> bool:
    return engine.decide(key, "u", project="shop").reason != "flag_not_found"


async def _until(engine: Engine, keys: set[str]) -> None:
    """Wait (a functional bound) until ``engine`` decides every flag of ``keys``."""
    with trio.fail_after(5):
        while not all(_has(engine, key) for key in keys):
            await engine.next_snapshot(engine.snapshot.version)


async def test_an_own_write_is_loaded_once_and_visible_at_once(engine: Engine) -> None:
    await engine.service.create_project(SYSTEM_KEY, ProjectSpec(key="shop"))
    announced = await _settled(engine, announced=2)  # the watch's start, the project
    loads = engine.snapshot.version

    for i in range(3):
        await _create_flag(engine, f"f{i}")
        assert _has(engine, f"f{i}")  # read-your-writes: no wait, no refresh
        assert engine.snapshot.version == loads + i + 1
        # The feed announces the write back; the snapshot in force holds it already.
        await _settled(engine, announced=announced + i + 1)
        assert engine.snapshot.version == loads + i + 1


async def test_another_engines_writes_are_followed(pg_dsn: str) -> None:
    async with _open(pg_dsn) as a, _open(pg_dsn) as b:
        await a.service.create_project(SYSTEM_KEY, ProjectSpec(key="shop"))
        await _settled(b, announced=2)  # the watch's start, the project
        for i in range(3):
            await _create_flag(b, f"b{i}")
            await _until(a, {f"b{i}"})
            await _create_flag(a, f"a{i}")
            await _until(b, {f"a{i}"})
        await _settled(a)
        await _settled(b)


async def test_engines_writing_at_once_see_all_writes(pg_dsn: str) -> None:
    async with _open(pg_dsn) as a, _open(pg_dsn) as b:
        await a.service.create_project(SYSTEM_KEY, ProjectSpec(key="shop"))
        await _settled(b, announced=2)
        missing: list[str] = []

        async def write(engine: Engine, prefix: str) -> None:
            for i in range(10):
                await _create_flag(engine, f"{prefix}{i}")
                if not _has(engine, f"{prefix}{i}"):
                    missing.append(f"{prefix}{i}")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(write, a, "a")
            nursery.start_soon(write, b, "b")
        assert missing == []  # each saw its own write when it returned
        every = {f"{prefix}{i}" for prefix in "ab" for i in range(10)}
        await _until(a, every)
        await _until(b, every)


async def test_a_change_committed_during_a_load_is_loaded_after_it(
    pg_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Engine A's load for its own write has read; engine B commits; both changes are
    announced to A before that load is published. The load holds A's write, not B's:
    B's must be loaded again, though it arrived while a load was running."""
    async with _open(pg_dsn) as a, _open(pg_dsn) as b:
        await a.service.create_project(SYSTEM_KEY, ProjectSpec(key="shop"))
        await _settled(b, announced=2)  # the watch's start, the project
        announced = await _settled(a, announced=2)
        loads = a.snapshot.version

        read, go = trio.Event(), trio.Event()
        load: Callable[[], Awaitable[ConfigState]] = a.store.load_config

        async def paused_once() -> ConfigState:
            state = await load()
            if not read.is_set():
                read.set()
                await go.wait()
            return state

        monkeypatch.setattr(a.store, "load_config", paused_once)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_create_flag, a, "mine")
            with trio.fail_after(5):
                await read.wait()
            await _create_flag(b, "theirs")
            actor: Any = a.decision.actor
            with trio.fail_after(5):
                while actor.changes_announced < announced + 2:  # noqa: ASYNC110
                    await trio.sleep(0.01)
            assert a.snapshot.version == loads  # the paused load is not published yet
            go.set()
        assert _has(a, "mine")
        await _until(a, {"theirs"})
        await _settled(a)
        assert a.snapshot.version == loads + 2
