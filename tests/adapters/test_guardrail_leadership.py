"""One guardrail leader per database (PostgreSQL advisory lock): two engines on one
database, only one acts; when it stops, or its connection drops, the other takes over."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import trio

import assay
from assay.adapters.postgres import open_postgres_store
from assay.adapters.postgres._guardrails import GUARDRAIL_LOCK_ID
from assay.engine import Engine, EngineConfig

INTERVAL = 0.1


class Node:
    """An engine in a task of its own, stopped on request: a process in miniature."""

    def __init__(self, dsn: str) -> None:
        self.config = EngineConfig(
            database_url=dsn, guardrail_interval_seconds=INTERVAL, pool_size=2
        )
        self.engine: Engine | None = None
        self.stop = trio.Event()
        self.stopped = trio.Event()

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            async with assay.open_engine(self.config, load_entry_points=False) as engine:
                self.engine = engine
                task_status.started()
                await self.stop.wait()
        finally:
            self.stopped.set()

    @property
    def status(self) -> dict[str, Any]:
        assert self.engine is not None
        return self.engine.guardrail_status


async def wait_for(predicate: Callable[[], bool], seconds: float = 10) -> None:
    with trio.fail_after(seconds):
        while not predicate():  # noqa: ASYNC110 - polling another task's counters
            await trio.sleep(0.01)


async def test_only_one_engine_acts_and_the_other_takes_over(pg_dsn: str, nursery: Any) -> None:
    a, b = Node(pg_dsn), Node(pg_dsn)
    await nursery.start(a.run)
    await nursery.start(b.run)
    await wait_for(lambda: a.status["rounds"] + b.status["rounds"] >= 5)

    # Exactly one leads, and only the leader has run rounds.
    leader, follower = (a, b) if a.status["leading"] else (b, a)
    assert leader.status["leading"]
    assert not follower.status["leading"]
    assert follower.status["rounds"] == 0

    leader.stop.set()
    await leader.stopped.wait()
    # Its lock went with its connection: the follower leads within an interval or two.
    await wait_for(lambda: follower.status["leading"] and follower.status["rounds"] >= 1)
    follower.stop.set()


async def test_a_dropped_leader_connection_hands_the_lead_over(pg_dsn: str, nursery: Any) -> None:
    a, b = Node(pg_dsn), Node(pg_dsn)
    await nursery.start(a.run)
    await nursery.start(b.run)
    await wait_for(lambda: a.status["leading"] or b.status["leading"])
    leader = a if a.status["leading"] else b
    rounds_before = leader.status["rounds"]

    # As when the leader's machine vanishes: PostgreSQL drops its session, and the lock.
    assert await _sql(pg_dsn, _TERMINATE_LEADER) == 1

    # Someone leads again, on a new session, and rounds go on: at most one at a time holds
    # the lock (PostgreSQL's guarantee), and both engines agree who.
    def settled() -> bool:
        rounds = a.status["rounds"] + b.status["rounds"]
        return a.status["leading"] != b.status["leading"] and rounds > rounds_before + 2

    await wait_for(settled)
    assert await _sql(pg_dsn, _LOCK_HOLDERS) == 1
    a.stop.set()
    b.stop.set()


# A bigint advisory key shows in pg_locks as two 32-bit halves.
_HOLDS_LOCK = f"""
SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted
  AND classid::bigint = {GUARDRAIL_LOCK_ID >> 32}
  AND objid::bigint = {GUARDRAIL_LOCK_ID & 0xFFFF_FFFF} AND objsubid = 1
"""
_LOCK_HOLDERS = f"SELECT count(*) FROM ({_HOLDS_LOCK}) holders"
_TERMINATE_LEADER = f"""
SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM ({_HOLDS_LOCK}) holders) killed
"""


async def _sql(dsn: str, sql: str) -> int:
    async with open_postgres_store(dsn, migrate=False) as store:
        value: int = await store._loop.run(store._pool.fetchval, sql)
    return value


async def test_the_memory_store_always_leads() -> None:
    config = EngineConfig(store="memory", guardrail_interval_seconds=INTERVAL)
    async with assay.open_engine(config, load_entry_points=False) as engine:
        await wait_for(lambda: engine.guardrail_status["rounds"] >= 1)
        assert engine.guardrail_status["leading"]


async def test_the_lock_is_held_by_one_session_and_freed_with_it(pg_dsn: str) -> None:
    async with open_postgres_store(pg_dsn) as one, open_postgres_store(pg_dsn) as two:
        async with one.guardrail_leadership() as first:
            async with two.guardrail_leadership() as second:
                assert await first.acquire()
                assert not await second.acquire()
                assert await first.acquire()  # still held: confirmed, not stacked
                assert not await second.acquire()
            async with two.guardrail_leadership() as third:
                assert not await third.acquire()
        # Leaving the block closed the leader's connection, and with it the lock.
        async with two.guardrail_leadership() as fourth:
            assert await fourth.acquire()
