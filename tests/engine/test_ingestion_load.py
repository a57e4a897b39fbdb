"""Ingestion under load, on PostgreSQL: many concurrent senders with duplicates and
retries end with every count exact, and an ingestion actor that crashes mid-stream loses
no event it acknowledged (the callers it could not answer retry, and end exact too), with
one write lane and with several."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest
import trio

from assay.adapters.postgres import _events as postgres_events
from assay.adapters.postgres._events import _STAGE
from assay.engine import (
    ActorCrashed,
    EngineConfig,
    StoreUnavailable,
)
from assay.engine._events import Conversion, EventsRecorded, Exposure

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from contextlib import AbstractAsyncContextManager

    from assay.engine import Engine

PROJECT, EXPERIMENT = "load", "exp"


@pytest.fixture
def lanes() -> int:
    """Write lanes of the ingestion actor; tests parametrize it."""
    return EngineConfig().ingestion_write_lanes


@pytest.fixture
async def engine(
    open_ingestion_engine: Callable[..., AbstractAsyncContextManager[Engine]], lanes: int
) -> AsyncIterator[Engine]:
    async with open_ingestion_engine(lanes, PROJECT, EXPERIMENT) as engine:
        yield engine


@dataclass
class Workload:
    """Unique events, some sent early (conversions before their exposure), and extra
    copies of some of them; every event has an event_id."""

    subjects: int
    conversions: int = 0
    unique: int = 0
    stream: list[Any] = field(default_factory=list)


def workload(subjects: int, *, seed: int, duplicates: float) -> Workload:
    rng = random.Random(seed)
    w = Workload(subjects)
    # Timestamped as an SDK would: whatever order they arrive in, each conversion happened
    # after its subject's exposure, so it is attributed.
    base = datetime.now(UTC) - timedelta(hours=1)
    late: list[Any] = []
    for i in range(subjects):
        at = base + timedelta(milliseconds=i)
        exposure = Exposure(
            experiment=EXPERIMENT,
            subject=f"u{i}",
            variant=rng.choice("ab"),
            timestamp=at,
            event_id=f"x{i}",
        )
        if rng.random() < 0.6:
            w.conversions += 1
            conversion = Conversion(
                experiment=EXPERIMENT,
                metric="purchase",
                subject=f"u{i}",
                value=float(rng.randint(1, 9)),
                timestamp=at + timedelta(seconds=30),
                event_id=f"c{i}",
            )
            if rng.random() < 0.1:  # the conversion first, its exposure at the very end
                w.stream.append(conversion)
                late.append(exposure)
                continue
            w.stream += [exposure, conversion]
        else:
            w.stream.append(exposure)
    w.stream += late
    w.unique = len(w.stream)
    for original in rng.sample(w.stream, int(len(w.stream) * duplicates)):
        w.stream.insert(rng.randrange(len(w.stream) + 1), original)
    return w


@dataclass
class Tally:
    sent: int = 0
    recorded: int = 0
    deduplicated: int = 0
    pending: int = 0
    crashes: int = 0

    def add(self, result: EventsRecorded) -> None:
        assert result.rejected == []
        self.sent += result.received
        self.recorded += result.recorded
        self.deduplicated += result.deduplicated
        self.pending += result.pending


async def send_all(
    engine: Engine, batches: list[list[Any]], tally: Tally, *, senders: int, resend_every: int
) -> None:
    """Concurrent senders; each sends every ``resend_every``-th batch twice (a client
    retrying after a timeout) and retries a batch the actor could not answer."""
    queue = list(reversed(batches))

    async def sender() -> None:
        sent = 0
        while queue:
            batch = queue.pop()
            sent += 1
            for _ in range(2 if sent % resend_every == 0 else 1):
                while True:
                    try:
                        tally.add(await engine.record_events(PROJECT, batch))
                        break
                    except ActorCrashed:
                        tally.crashes += 1

    async with trio.open_nursery() as nursery:
        for _ in range(senders):
            nursery.start_soon(sender)


async def assert_exact(engine: Engine, w: Workload, tally: Tally) -> None:
    # Each unique event was answered recorded or pending exactly once; the rest were
    # duplicates; and the store holds exactly the unique events.
    assert tally.recorded + tally.pending == w.unique
    assert tally.deduplicated == tally.sent - w.unique
    await assert_stored(engine, w)


async def assert_stored(engine: Engine, w: Workload) -> None:
    """The store holds exactly the unique events."""
    summary = await engine.ingestion_summary(PROJECT, EXPERIMENT)
    purchase = summary.metrics[0]
    assert (summary.exposures, summary.crossovers, summary.pending) == (w.subjects, 0, 0)
    assert (purchase.conversions, purchase.outside_window) == (w.conversions, 0)


def chunks(events: list[Any], size: int) -> list[list[Any]]:
    return [events[i : i + size] for i in range(0, len(events), size)]


@pytest.mark.parametrize("lanes", [1, 2, 3])
async def test_concurrent_senders_with_duplicates_and_retries_end_exact(engine: Engine) -> None:
    w = workload(40_000, seed=1, duplicates=0.2)
    tally = Tally()
    await send_all(engine, chunks(w.stream, 700), tally, senders=12, resend_every=3)
    assert tally.sent >= 100_000
    assert tally.pending > 0  # some conversions did arrive before their exposure
    await assert_exact(engine, w, tally)


@pytest.mark.parametrize("lanes", [1, 2])
async def test_a_crash_mid_stream_loses_no_acknowledged_event(
    engine: Engine, lanes: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database goes away twice, inside the transaction, after the batch's exposures
    went in: that transaction rolls back, its callers get StoreUnavailable, the lane goes on
    with the next group, they retry, and the counts end exact. Whatever was acknowledged
    before a failure is in the store when the failure is seen.

    With several lanes, a crashed caller's parts in the other lanes may have committed:
    its retry then finds those events as duplicates. The store still ends exact, and no
    event is answered recorded twice."""
    last_step = postgres_events._record_conversions
    writes = 0

    failing_groups: dict[str, int] = {}  # a group (by its first staged row): attempts left

    async def failing(conn: Any) -> Any:
        nonlocal writes
        writes += 1
        group = await conn.fetchval(f"SELECT min(seq)::text || min(subject) FROM {_STAGE}")
        if writes in (4, 12):
            failing_groups[group] = 3  # every attempt fails: then the callers hear
        if failing_groups.get(group, 0) > 0:
            failing_groups[group] -= 1
            raise StoreUnavailable("the database went away")
        return await last_step(conn)

    monkeypatch.setattr(postgres_events, "_record_conversions", failing)
    w = workload(6_000, seed=2, duplicates=0.1)
    acknowledged: set[str] = set()
    checks: list[tuple[int, int]] = []
    tally = Tally()
    queue = list(reversed(chunks(w.stream, 300)))

    async def sender() -> None:
        while queue:
            batch = queue.pop()
            while True:
                try:
                    result = await engine.record_events(PROJECT, batch)
                    break
                except StoreUnavailable:
                    tally.crashes += 1
                    held = len(acknowledged)
                    stored = (await engine.ingestion_summary(PROJECT, EXPERIMENT)).exposures
                    checks.append((held, stored))
            tally.add(result)
            acknowledged.update(e.subject for e in batch if isinstance(e, Exposure))

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            for _ in range(6):
                nursery.start_soon(sender)
    assert tally.crashes >= 2
    assert engine.ingestion.actor.restarts == 0
    assert checks
    assert all(stored >= held for held, stored in checks)
    if lanes == 1:
        await assert_exact(engine, w, tally)
    else:
        assert tally.recorded + tally.pending <= w.unique
        assert tally.recorded + tally.pending + tally.deduplicated == tally.sent
        await assert_stored(engine, w)
