"""The engine runtime: actors start under supervisors, answer, survive crashes, publish
snapshots, and drain their inboxes when the engine closes."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio
import trio.testing

import assay
from assay.engine import (
    SYSTEM_KEY,
    ActorCrashed,
    Engine,
    EngineConfig,
    EngineOverloaded,
    FlagSpec,
    Ping,
    Pong,
    ProjectSpec,
)
from assay.engine._actors._ingestion import IngestionActor
from assay.engine._messages import CheckGuardrails, GuardrailsChecked

FAST_RESTARTS = {"restart_backoff_seconds": 0.01, "restart_backoff_max_seconds": 0.05}


@pytest.fixture
async def engine() -> AsyncIterator[Engine]:
    config = EngineConfig(store="memory", **FAST_RESTARTS)  # type: ignore[arg-type]
    async with assay.open_engine(config, load_entry_points=False) as engine:
        yield engine


async def test_every_actor_answers(engine: Engine) -> None:
    for mailbox in engine.mailboxes:
        pong = await mailbox.request(Ping())
        assert isinstance(pong, Pong)
        assert pong.actor == mailbox.actor.name


async def test_a_snapshot_is_published_at_start(engine: Engine) -> None:
    assert engine.snapshot.version >= 1


async def test_a_change_publishes_a_new_snapshot(engine: Engine) -> None:
    before = engine.snapshot.version
    await engine.service.create_project(SYSTEM_KEY, ProjectSpec(key="shop"))
    await engine.service.create_object(
        SYSTEM_KEY, assay.Flag, "shop", FlagSpec(key="checkout", default_value=False)
    )
    with trio.fail_after(5):
        while not any(key == "checkout" for _, key in engine.snapshot.flags):  # noqa: ASYNC110
            await trio.sleep(0.01)
    assert engine.snapshot.version > before


async def test_next_snapshot_waits_for_a_newer_snapshot_than_the_one_named(
    engine: Engine,
) -> None:
    current = engine.snapshot
    # Already newer than what the caller names: at once, without waiting.
    with trio.fail_after(1):
        assert await engine.next_snapshot(current.version - 1) is current
    waiter: list[object] = []

    async def wait() -> None:
        waiter.append(await engine.next_snapshot(current.version))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait)
        await trio.testing.wait_all_tasks_blocked()
        assert waiter == []  # nothing newer yet
        await engine.service.create_project(SYSTEM_KEY, ProjectSpec(key="shop"))
    (published,) = waiter
    assert published is engine.snapshot
    assert engine.snapshot.version > current.version
    assert "shop" in engine.snapshot.project_ids


async def test_a_crashed_actor_is_restarted_and_the_engine_keeps_serving(
    engine: Engine, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    actor = engine.guardrail.actor
    original = actor.handle
    calls = 0

    async def crash_once(message: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("boom")
        return await original(message)

    monkeypatch.setattr(actor, "handle", crash_once)
    with caplog.at_level(logging.ERROR, logger="assay.engine.actors"):
        # The caller of the crashing message gets the failure, not a hang.
        with pytest.raises(ActorCrashed):
            await engine.guardrail.request(CheckGuardrails())
        # The restarted actor serves the next message, from the same inbox.
        assert isinstance(await engine.guardrail.request(CheckGuardrails()), GuardrailsChecked)
    assert actor.restarts == 1
    assert any("guardrail actor crashed" in r.getMessage() for r in caplog.records)
    # The other actors never noticed.
    assert engine.decision.actor.restarts == 0
    assert isinstance(await engine.decision.request(Ping()), Pong)


async def test_a_crash_in_background_work_restarts_the_actor(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    crashes = 0

    async def failing_once() -> None:
        nonlocal crashes
        if crashes == 0:
            crashes += 1
            raise RuntimeError("background boom")
        await trio.sleep_forever()

    monkeypatch.setattr(IngestionActor, "background", staticmethod(failing_once))
    config = EngineConfig(store="memory", **FAST_RESTARTS)  # type: ignore[arg-type]
    with caplog.at_level(logging.ERROR, logger="assay.engine.actors"):
        async with assay.open_engine(config, load_entry_points=False) as engine:
            with trio.fail_after(5):
                while engine.ingestion.actor.restarts == 0:  # noqa: ASYNC110
                    await trio.sleep(0.01)
            assert isinstance(await engine.ingestion.request(Ping()), Pong)
    assert crashes == 1
    assert any("ingestion actor crashed" in r.getMessage() for r in caplog.records)


async def test_closing_the_engine_drains_queued_messages() -> None:
    config = EngineConfig(store="memory", inbox_size=64)
    async with assay.open_engine(config, load_entry_points=False) as engine:
        handled_before = engine.ingestion.actor.handled
        for _ in range(50):
            await engine.ingestion.send(Ping())
        actor = engine.ingestion.actor
    # Every queued message was handled before the engine finished closing.
    assert actor.handled == handled_before + 50


async def test_a_full_inbox_pushes_back() -> None:
    config = EngineConfig(store="memory", inbox_size=2)
    async with assay.open_engine(config, load_entry_points=False) as engine:
        # No checkpoint between sends, so the actor cannot drain: a burst must be refused
        # instead of queueing without limit.
        # (The first may go straight to the waiting actor, the next two fill the inbox.)
        with pytest.raises(EngineOverloaded):  # noqa: PT012
            for _ in range(4):
                engine.ingestion.send_nowait(Ping())
