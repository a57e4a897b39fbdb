"""The ingestion actor's write lanes, on PostgreSQL: a batch split over lanes is answered
once, only after every part of it committed, with the outcomes of its parts added up; a
lane whose write fails answers every caller not yet answered with ``ActorCrashed``, and
the restarted actor carries on; the setting is checked."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pytest
import trio
import trio.testing

from assay.engine import (
    SYSTEM_KEY,
    ActorCrashed,
    EngineConfig,
    StoreUnavailable,
    ValidationFailed,
)
from assay.engine._actors._ingestion import IngestionActor
from assay.engine._events import Conversion, EventsRecorded, Exposure, StagedEvent
from assay.engine._messages import Envelope, RecordEvents

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Sequence
    from contextlib import AbstractAsyncContextManager

    from assay.engine import Engine

PROJECT, EXPERIMENT = "lanes", "exp"


def lane_of(subject: str, lanes: int) -> int:
    """The actor's rule: an event goes to the lane of its subject."""
    return hash(subject) % lanes


def subjects_in(lane: int, lanes: int, count: int, prefix: str) -> list[str]:
    found: list[str] = []
    i = 0
    while len(found) < count:
        subject = f"{prefix}{i}"
        if lane_of(subject, lanes) == lane:
            found.append(subject)
        i += 1
    return found


@pytest.fixture
def lanes() -> int:
    return 2


@pytest.fixture
async def engine(
    open_ingestion_engine: Callable[..., AbstractAsyncContextManager[Engine]], lanes: int
) -> AsyncIterator[Engine]:
    async with open_ingestion_engine(lanes, PROJECT, EXPERIMENT) as engine:
        yield engine


@pytest.fixture
async def gates(engine: Engine) -> AsyncIterator[list[trio.Event]]:
    """Events that tests hold store writes on. All are set when the test ends, passed or
    failed, before the engine closes: a write still held would keep it from closing."""
    held: list[trio.Event] = []
    yield held
    for gate in held:
        gate.set()


class Sent:
    """A batch sent straight to the actor, with room for more than one answer: a second
    answer would wait here to be seen instead of failing the actor's send."""

    def __init__(self, engine: Engine, events: list[Any]) -> None:
        self.engine = engine
        self.events = events
        self.send, self.receive = trio.open_memory_channel[Any](8)

    async def go(self) -> None:
        message = RecordEvents(
            project_id=self.engine.snapshot.project_ids[PROJECT],
            principal_id=SYSTEM_KEY.id,
            events=self.events,
            received_at=datetime.now(UTC),
        )
        await self.engine.ingestion.send_channel.send(Envelope(message, self.send))

    async def only_answer(self) -> Any:
        with trio.fail_after(10):
            answer = await self.receive.receive()
        self.assert_no_more()
        return answer

    def assert_no_more(self) -> None:
        with pytest.raises(trio.WouldBlock):
            self.receive.receive_nowait()


def expo(subject: str, variant: str = "a", **kw: Any) -> Exposure:
    return Exposure(experiment=EXPERIMENT, subject=subject, variant=variant, **kw)


def conv(subject: str, **kw: Any) -> Conversion:
    return Conversion(experiment=EXPERIMENT, metric="purchase", subject=subject, **kw)


def subjects_of(events: Sequence[StagedEvent]) -> set[str]:
    return {event.subject for event in events}


@pytest.mark.parametrize("lanes", [2, 3])
async def test_a_batch_split_over_lanes_is_answered_once_with_its_parts_added_up(
    engine: Engine, lanes: int, gates: list[trio.Event], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lane 0 is held back: the other lanes commit their parts first, and the caller
    hears nothing until lane 0 has committed too; then one answer, every part counted."""
    old = [s for lane in range(lanes) for s in subjects_in(lane, lanes, 3, "old")]
    await engine.record_events(PROJECT, [expo(s, event_id=f"x-{s}") for s in old])

    record = engine.store.record_events
    writes: list[set[str]] = []
    committed: list[set[str]] = []
    release = trio.Event()
    gates.append(release)

    async def recording(events: Sequence[StagedEvent], *, now: datetime) -> list[int]:
        subjects = subjects_of(events)
        writes.append(subjects)
        if any(lane_of(s, lanes) == 0 for s in subjects):
            await release.wait()
        outcomes = await record(events, now=now)
        committed.append(subjects)
        return outcomes

    monkeypatch.setattr(engine.store, "record_events", recording)
    new = [s for lane in range(lanes) for s in subjects_in(lane, lanes, 4, "new")]
    waiting = [s for lane in range(lanes) for s in subjects_in(lane, lanes, 2, "wait")]
    batch: list[Any] = [expo(s, event_id=f"x-{s}") for s in new]  # recorded
    batch += [expo(s, event_id=f"x-{s}") for s in old]  # duplicates: ids known
    batch += [expo(s, "b") for s in old]  # crossovers: recorded
    batch += [conv(s, event_id=f"c-{s}") for s in waiting]  # pending: no exposure yet
    batch += [conv(s, event_id=f"c-{s}") for s in waiting]  # duplicates: same ids
    batch.append(expo("stray", "z"))  # rejected: no such variant
    sent = Sent(engine, batch)
    await sent.go()

    with trio.fail_after(10):
        while len(committed) < lanes - 1:  # noqa: ASYNC110
            await trio.sleep(0.01)
    # Every lane but the held one has committed its part: still no answer.
    await trio.testing.wait_all_tasks_blocked()
    sent.assert_no_more()
    release.set()
    result = await sent.only_answer()
    assert len(committed) == lanes
    assert isinstance(result, EventsRecorded)
    assert (result.received, result.recorded, result.deduplicated, result.pending) == (
        len(batch),
        len(new) + len(old),
        len(old) + len(waiting),
        len(waiting),
    )
    assert [r.code for r in result.rejected] == ["unknown_variant"]
    # One transaction per lane, each holding only its own lane's subjects.
    assert len(writes) == lanes
    for subjects in writes:
        assert len({lane_of(s, lanes) for s in subjects}) == 1
    summary = await engine.ingestion_summary(PROJECT, EXPERIMENT)
    assert (summary.exposures, summary.crossovers, summary.pending) == (
        len(new),
        len(old),
        len(waiting),
    )


async def test_a_failed_lane_write_fails_only_its_callers_and_the_lane_carries_on(
    engine: Engine, gates: list[trio.Event], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lane 0's write hangs, then fails (the database went away). Meanwhile: a caller
    split over both lanes sees its lane-1 part committed but is not answered; a caller
    wholly in lane 1 is answered; a caller that arrives for lane 0 waits in its next group.
    The failure answers the split caller (once, with StoreUnavailable); the lane goes on
    to write the next group, and the actor is not restarted."""
    bad, good = subjects_in(0, 2, 3, "bad"), subjects_in(1, 2, 3, "good")
    record = engine.store.record_events
    release = trio.Event()
    gates.append(release)
    calls: list[set[str]] = []

    async def failing(events: Sequence[StagedEvent], *, now: datetime) -> list[int]:
        subjects = subjects_of(events)
        calls.append(subjects)
        if bad[0] in subjects:
            await release.wait()
            raise StoreUnavailable("the database went away")
        return await record(events, now=now)

    monkeypatch.setattr(engine.store, "record_events", failing)
    split = Sent(engine, [expo(bad[0]), expo(good[0])])
    alone = Sent(engine, [expo(good[1])])
    late = Sent(engine, [expo(bad[1])])
    await split.go()
    with trio.fail_after(10):
        while len(calls) < 2:  # noqa: ASYNC110
            await trio.sleep(0.01)
    await alone.go()
    assert (await alone.only_answer()).recorded == 1
    await late.go()
    await trio.testing.wait_all_tasks_blocked()
    for sent in (split, late):
        sent.assert_no_more()

    release.set()
    assert isinstance(await split.only_answer(), StoreUnavailable)
    assert (await late.only_answer()).recorded == 1
    monkeypatch.setattr(engine.store, "record_events", record)

    # The split caller's lane-1 part stayed committed: its retry finds it a duplicate.
    summary = await engine.ingestion_summary(PROJECT, EXPERIMENT)
    assert summary.exposures == 3  # good[0], good[1] and bad[1]
    retried = await engine.record_events(PROJECT, [expo(bad[0]), expo(good[0])])
    assert (retried.recorded, retried.deduplicated) == (1, 1)
    assert engine.ingestion.actor.restarts == 0


async def test_a_batch_the_database_refuses_fails_only_its_own_caller(
    engine: Engine, gates: list[trio.Event], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three callers' batches gather in one group; the database refuses the group for what
    one of them holds. Each batch is then written on its own: only that caller fails."""
    record = engine.store.record_events
    release = trio.Event()
    gates.append(release)
    poison = subjects_in(0, 2, 1, "poison")[0]
    first = subjects_in(0, 2, 1, "first")[0]
    others = subjects_in(0, 2, 2, "other")

    async def picky(events: Sequence[StagedEvent], *, now: datetime) -> list[int]:
        subjects = subjects_of(events)
        if first in subjects:
            await release.wait()  # hold the lane so that the next three share a group
        if poison in subjects:
            raise RuntimeError("invalid byte sequence")
        return await record(events, now=now)

    monkeypatch.setattr(engine.store, "record_events", picky)
    holder = Sent(engine, [expo(first)])
    await holder.go()
    await trio.testing.wait_all_tasks_blocked()
    sent = [Sent(engine, [expo(s)]) for s in (others[0], poison, others[1])]
    for batch in sent:
        await batch.go()
    await trio.testing.wait_all_tasks_blocked()
    release.set()
    assert (await holder.only_answer()).recorded == 1
    answers = [await batch.only_answer() for batch in sent]
    assert answers[0].recorded == answers[2].recorded == 1
    assert isinstance(answers[1], ActorCrashed)
    assert "invalid byte" not in answers[1].message  # never the text from inside
    assert engine.ingestion.actor.restarts == 0


async def test_ids_and_keys_shared_by_subjects_of_different_lanes_are_taken_once(
    engine: Engine,
) -> None:
    """Two lanes write the same event id (or idempotency key) at the same time: one of
    the two transactions takes it, the other finds it taken, whichever commits first."""
    left, right = subjects_in(0, 2, 20, "l"), subjects_in(1, 2, 20, "r")
    await engine.record_events(PROJECT, [expo(s) for s in left + right])
    batches = [
        [
            conv(a, event_id=f"id{i}"),
            conv(b, event_id=f"id{i}"),
            conv(a, idempotency_key=f"key{i}"),
            conv(b, idempotency_key=f"key{i}"),
        ]
        for i, (a, b) in enumerate(zip(left, right, strict=True))
    ]
    results: list[EventsRecorded] = []

    async def send(batch: list[Any]) -> None:
        results.append(await engine.record_events(PROJECT, batch))

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            for batch in batches:
                nursery.start_soon(send, batch)
    assert sum(r.recorded for r in results) == 2 * len(batches)
    assert sum(r.deduplicated for r in results) == 2 * len(batches)
    summary = await engine.ingestion_summary(PROJECT, EXPERIMENT)
    assert summary.metrics[0].conversions == 2 * len(batches)


@pytest.mark.parametrize("lanes", [1])
async def test_one_lane_writes_a_batch_in_one_transaction(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = engine.store.record_events
    writes: list[int] = []

    async def counting(events: Sequence[StagedEvent], *, now: datetime) -> list[int]:
        writes.append(len(events))
        return await record(events, now=now)

    monkeypatch.setattr(engine.store, "record_events", counting)
    batch = [expo(f"u{i}", event_id=f"x{i}") for i in range(50)]
    result = await engine.record_events(PROJECT, batch + batch[:10])
    assert (result.recorded, result.deduplicated) == (50, 10)
    assert writes == [60]


async def test_a_batch_with_nothing_to_write_is_answered(engine: Engine) -> None:
    with trio.fail_after(10):
        result = await engine.record_events(PROJECT, [expo("u1", "z"), expo("u2", "z")])
    assert (result.received, result.recorded, len(result.rejected)) == (2, 0, 2)


def test_the_number_of_lanes_is_a_checked_setting() -> None:
    assert EngineConfig.load(env={}).ingestion_write_lanes == 2
    config = EngineConfig.load(env={"ASSAY_INGESTION_WRITE_LANES": "3"})
    assert config.ingestion_write_lanes == 3
    with pytest.raises(ValidationFailed):
        EngineConfig.load(env={"ASSAY_INGESTION_WRITE_LANES": "0"})
    with pytest.raises(ValueError, match="write_lanes"):
        IngestionActor(None, lambda: None, write_lanes=0)  # type: ignore[arg-type]
