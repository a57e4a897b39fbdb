"""The data lifecycle, held to the same contract by both stores, on a virtual clock:
decision records and event ids expire by whole UTC days past retention, never earlier;
an expired decision id is known as expired; de-duplication holds across a day (partition)
boundary for every event ingestion would accept."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from assay.engine._core import Decision, Reason
from assay.engine._events import Kind, Outcome, StagedEvent
from assay.engine._ports import Store
from assay.engine._retention import EVENT_ID_PARTITION_DAYS, RetentionPolicy

DAY = timedelta(days=1)
NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
POLICY = RetentionPolicy(decision_days=30, event_id_days=31, event_max_age_days=30.0)
PREFIX = "0123456789abcdef"


def decision(counter: int, at: datetime, prefix: str = PREFIX) -> Decision:
    return Decision(
        decision_id=f"{prefix}{counter:08x}",
        project_id="prj_p",
        flag="color",
        subject=f"user-{counter}",
        value="red",
        reason=Reason.DEFAULT,
        snapshot_version=1,
        decided_at=at.timestamp(),
    )


def exposure(subject: str, event_id: str, at: datetime) -> StagedEvent:
    return StagedEvent(
        Kind.EXPOSURE, "prj_1", "exp_1", subject, "a", None, 1.0, at.timestamp(), event_id,
        None, None,
    )  # fmt: skip


async def record(store: Store, *events: StagedEvent, now: datetime) -> list[Outcome]:
    return [Outcome(o) for o in await store.record_events(list(events), now=now)]


async def test_decision_records_expire_by_whole_days_past_retention(store: Store) -> None:
    # Ids of one prefix are issued in time order, as the engine issues them.
    times = [
        NOW - 40 * DAY,  # long past retention
        NOW - 31 * DAY,  # past retention, on a day wholly past it
        NOW - 30 * DAY - timedelta(hours=1),  # past 30 days, but its day is not wholly past
        NOW - 29 * DAY,
        NOW - timedelta(minutes=1),
    ]
    decisions = [decision(i + 1, at) for i, at in enumerate(times)]
    await store.record_decisions(decisions)
    await store.expire(NOW - 60 * DAY, POLICY)  # partitions for the days ahead exist

    expired = await store.expire(NOW, POLICY)
    assert expired.ran
    assert expired.decision_records == 2

    for d in decisions[:2]:
        assert await store.get_decision(d.decision_id) is None
        assert await store.decision_expired(d.decision_id)
    for d in decisions[2:]:
        assert await store.get_decision(d.decision_id) == d
    # Never issued before an expired one, or another process's: unknown, not expired.
    assert not await store.decision_expired(f"{PREFIX}{99:08x}")
    assert not await store.decision_expired(f"fedcba9876543210{1:08x}")
    assert not await store.decision_expired("nonsense")

    # A day later the third one's day is wholly past retention too.
    await store.expire(NOW + DAY, POLICY)
    assert await store.get_decision(decisions[2].decision_id) is None
    assert await store.decision_expired(decisions[2].decision_id)
    assert await store.get_decision(decisions[3].decision_id) == decisions[3]
    stats = await store.retention_stats(NOW + DAY, POLICY)
    (records,) = [k for k in stats.kinds if k.kind == "decision_records"]
    assert records.retention_days == 30
    assert records.oldest is not None
    assert records.oldest <= NOW - 29 * DAY


async def test_duplicates_are_recognised_across_a_day_boundary(store: Store) -> None:
    midnight = datetime(2026, 3, 10, tzinfo=UTC)
    await store.expire(midnight - DAY, POLICY)
    first = exposure("s1", "ev-1", midnight - timedelta(seconds=30))
    # Arrives before midnight; re-delivered (same event, same timestamp) after it, and a
    # day later still.
    assert await record(store, first, now=midnight - timedelta(seconds=10)) == [Outcome.RECORDED]
    await store.expire(midnight + timedelta(minutes=1), POLICY)
    assert await record(store, first, now=midnight + timedelta(seconds=10)) == [Outcome.DUPLICATE]
    assert await record(store, first, now=midnight + DAY) == [Outcome.DUPLICATE]
    # An event of the new day with its own id is new.
    after = exposure("s2", "ev-2", midnight + timedelta(seconds=5))
    assert await record(store, after, now=midnight + timedelta(seconds=10)) == [Outcome.RECORDED]
    assert await record(store, after, now=midnight + DAY) == [Outcome.DUPLICATE]


async def test_event_ids_are_kept_as_long_as_their_event_is_accepted(store: Store) -> None:
    at = NOW - timedelta(hours=1)
    event = exposure("s1", "ev-1", at)
    assert await record(store, event, now=NOW) == [Outcome.RECORDED]
    # The last moment ingestion would accept this event (event_max_age_days): the id is
    # still there, whatever expiry ran before.
    last_accepted = at + timedelta(days=POLICY.event_max_age_days)
    expired = await store.expire(last_accepted, POLICY)
    assert expired.ran
    assert await record(store, event, now=last_accepted) == [Outcome.DUPLICATE]
    stats = await store.retention_stats(last_accepted, POLICY)
    (ids,) = [k for k in stats.kinds if k.kind == "event_ids"]
    assert ids.next_expiry_rows == 0
    # Once every event of its partition (a week) is past the id retention, the id goes.
    gone = at + timedelta(days=POLICY.event_id_days + EVENT_ID_PARTITION_DAYS)
    stats = await store.retention_stats(gone, POLICY)
    (ids,) = [k for k in stats.kinds if k.kind == "event_ids"]
    assert ids.oldest is not None
    assert ids.oldest <= at
    await store.expire(gone, POLICY)
    stats = await store.retention_stats(gone, POLICY)
    (ids,) = [k for k in stats.kinds if k.kind == "event_ids"]
    assert ids.oldest is None or ids.oldest > at
