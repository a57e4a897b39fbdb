"""The event half of the Store contract: every test runs against each adapter (memory,
postgres), so de-duplication, crossovers, pending conversions and attribution windows mean
the same thing on both. PostgreSQL runs twice: by its fast path, and by the careful path
it falls back to when another writer collides with a batch."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest
import trio

from assay.adapters.memory import open_memory_store
from assay.adapters.postgres import _events as postgres_events
from assay.adapters.postgres import open_postgres_store
from assay.engine._events import IngestionCounts, Kind, MetricCounts, Outcome, StagedEvent

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from assay.engine._ports import Store

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
NOW = T0 + timedelta(hours=1)
LATER = T0 + timedelta(days=30)

R, D, P, X = Outcome.RECORDED, Outcome.DUPLICATE, Outcome.PENDING, Outcome.CROSSOVER


@pytest.fixture(params=["memory", "postgres", "postgres-careful"])
def adapter(request: pytest.FixtureRequest) -> tuple[str, str | None]:
    """Which store, and its database. Sync, as in conftest: the database fixtures start
    a Trio run of their own, which an async fixture cannot."""
    if request.param == "memory":
        return "memory", None
    dsn: str = request.getfixturevalue("pg_dsn")
    return request.param, dsn


@pytest.fixture
async def store(
    adapter: tuple[str, str | None], monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Store]:
    kind, dsn = adapter
    if dsn is None:
        async with open_memory_store() as memory:
            yield memory
        return
    if kind == "postgres-careful":
        write = postgres_events._aio_write

        async def always_careful(*args: Any, careful: bool, **kwargs: Any) -> Any:
            return await write(*args, careful=True, **kwargs)

        monkeypatch.setattr(postgres_events, "_aio_write", always_careful)
    async with open_postgres_store(dsn) as postgres:
        yield postgres


def exposure(
    subject: str,
    variant: str = "a",
    *,
    experiment: str = "exp_1",
    at: datetime = T0,
    event_id: str | None = None,
    project: str = "prj_1",
) -> StagedEvent:
    return StagedEvent(
        Kind.EXPOSURE, project, experiment, subject, variant, None, 1.0, at.timestamp(), event_id,
        None, None,
    )  # fmt: skip


def conversion(
    subject: str,
    metric: str = "buy",
    *,
    value: float = 1.0,
    experiment: str = "exp_1",
    at: datetime = T0,
    event_id: str | None = None,
    key: str | None = None,
    expires_at: datetime | None = T0 + timedelta(days=7),
    project: str = "prj_1",
) -> StagedEvent:
    return StagedEvent(
        Kind.CONVERSION, project, experiment, subject, None, metric, value, at.timestamp(),
        event_id, key, None if expires_at is None else expires_at.timestamp(),
    )  # fmt: skip


async def record(store: Store, *events: StagedEvent, now: datetime = NOW) -> list[Outcome]:
    return [Outcome(o) for o in await store.record_events(list(events), now=now)]


async def counts(
    store: Store,
    experiment: str = "exp_1",
    *,
    windows: dict[str, int | None] | None = None,
    until: datetime | None = None,
    now: datetime = NOW,
) -> IngestionCounts:
    return await store.ingestion_counts(experiment, windows=windows or {}, until=until, now=now)


def metric(c: IngestionCounts, key: str = "buy") -> MetricCounts:
    return next(m for m in c.metrics if m.metric == key)


def per_variant(c: IngestionCounts) -> dict[str, tuple[int, int]]:
    return {v.variant: (v.exposures, v.crossovers) for v in c.variants}


async def test_an_empty_batch_records_nothing(store: Store) -> None:
    assert await store.record_events([], now=NOW) == []


async def test_event_ids_of_different_projects_never_collide(store: Store) -> None:
    """The same characters split differently between project and id are two ids (the
    PostgreSQL key joins the two, with the project id's length in front)."""
    assert await record(
        store,
        exposure("s1", event_id="2x", project="prj_1"),
        exposure("s2", event_id="x", project="prj_12"),
    ) == [R, R]
    assert await record(store, exposure("s3", event_id="x", project="prj_12")) == [D]


async def test_event_ids_deduplicate_within_and_across_batches(store: Store) -> None:
    first = await record(
        store,
        conversion("s1", event_id="e1"),
        conversion("s1", event_id="e1"),
        exposure("s1", event_id="e2"),
        conversion("s1", event_id="e3"),
    )
    assert first == [R, D, R, R]
    # Ids are per project, across kinds: a conversion may not reuse an exposure's id.
    again = await record(
        store,
        conversion("s1", event_id="e2"),
        conversion("s1", event_id="e3"),
        conversion("s1", event_id="e4"),
        conversion("s1", event_id="e1", project="prj_2", experiment="exp_2"),
    )
    assert again == [D, D, R, P]
    assert metric(await counts(store)).conversions == 3


async def test_the_same_batch_twice_changes_nothing(store: Store) -> None:
    batch = [
        exposure("s1", "a", event_id="x1"),
        exposure("s2", "b", event_id="x2"),
        conversion("s1", event_id="c1", value=2.5),
        conversion("s3", event_id="c2"),  # no exposure yet: waits
        conversion("s2", key="order-9"),
    ]
    assert await record(store, *batch) == [R, R, R, P, R]
    before = await counts(store)
    assert await record(store, *batch) == [D, D, D, D, D]
    assert await counts(store) == before


async def test_first_exposure_wins_and_other_variants_are_crossovers(store: Store) -> None:
    assert await record(store, exposure("s1", "a"), exposure("s2", "b")) == [R, R]
    assert await record(
        store,
        exposure("s1", "a"),  # the same again
        exposure("s1", "b"),  # another variant: crossover
        exposure("s1", "b"),  # that crossover again
        exposure("s1", "c"),  # a third variant: another crossover row, same subject
        exposure("s3", "a", experiment="exp_2"),  # other experiments are apart
        exposure("s3", "b"),
    ) == [D, X, D, X, R, R]
    c = await counts(store)
    assert c.crossovers == 1  # subjects, not rows
    # The crossover subject counts under its first variant as a crossover, not exposure.
    assert per_variant(c) == {"a": (0, 1), "b": (2, 0)}


async def test_a_crossover_within_one_batch(store: Store) -> None:
    outcomes = await record(
        store, exposure("s1", "b"), exposure("s1", "a"), exposure("s1", "a"), exposure("s1", "b")
    )
    assert outcomes == [R, X, D, D]
    assert per_variant(await counts(store)) == {"b": (0, 1)}


async def test_a_duplicate_does_not_make_the_next_exposure_a_crossover(store: Store) -> None:
    assert await record(store, exposure("s1", "a", event_id="e1")) == [R]
    # Applied in order: the first is a duplicate (known id), so the second is s2's first.
    assert await record(
        store, exposure("s2", "a", event_id="e1"), exposure("s2", "b", event_id="e2")
    ) == [D, R]
    assert per_variant(await counts(store)) == {"a": (1, 0), "b": (1, 0)}


async def test_idempotency_keys_are_unique_per_experiment(store: Store) -> None:
    assert await record(
        store,
        exposure("s1"),
        conversion("s1", key="k1"),
        conversion("s1", key="k1"),
        conversion("s1", key="k1", experiment="exp_2"),
        conversion("s1", key="k2", metric="other"),
    ) == [R, R, D, P, R]
    assert await record(store, conversion("s1", key="k2")) == [D]
    # A key whose conversion was a duplicate by event id is not taken.
    assert await record(store, conversion("s1", key="k9", event_id="k1-event")) == [R]
    assert await record(
        store,
        conversion("s1", key="k3", event_id="k1-event"),
        conversion("s1", key="k3", event_id="fresh"),
    ) == [D, R]
    c = await counts(store)
    assert metric(c).conversions == 3
    assert metric(c, "other").conversions == 1


async def test_a_key_taken_in_one_experiment_is_free_in_another_in_a_later_batch(
    store: Store,
) -> None:
    """Separate batches: the second meets the first's key in the table, not in its own
    batch (which another statement handles), so the lookup must match the experiment."""
    assert await record(store, exposure("s1"), conversion("s1", key="k1")) == [R, R]
    assert await record(
        store, exposure("s1", experiment="exp_2"), conversion("s1", key="k1", experiment="exp_2")
    ) == [R, R]
    assert await record(store, conversion("s1", key="k1", experiment="exp_2")) == [D]
    assert await record(store, conversion("s1", key="k1")) == [D]


async def test_pending_conversions_are_promoted_when_the_exposure_lands(store: Store) -> None:
    assert await record(
        store, conversion("s1", value=3.0), conversion("s1", value=4.0, metric="other")
    ) == [P, P]
    c = await counts(store)
    assert c.pending == 2
    assert c.metrics == []
    assert await record(store, exposure("s1", "b")) == [R]
    c = await counts(store)
    assert c.pending == 0
    assert metric(c).conversions == 1
    assert metric(c).value_sum == 3.0
    assert metric(c, "other").variants[0].variant == "b"


async def test_a_conversion_sent_with_its_exposure_is_not_pending(store: Store) -> None:
    # Exposures of a batch are applied before its conversions, wherever they stand in it.
    assert await record(store, conversion("s1"), exposure("s1")) == [R, R]
    assert (await counts(store)).pending == 0


async def test_a_metric_without_exposure_records_at_once(store: Store) -> None:
    assert await record(store, conversion("s1", expires_at=None)) == [R]
    c = await counts(store)
    assert (c.pending, metric(c).conversions, metric(c).unexposed) == (0, 0, 1)


async def test_expired_pending_conversions_are_purged_not_promoted(store: Store) -> None:
    soon = T0 + timedelta(hours=2)
    assert await record(
        store,
        conversion("s1", expires_at=soon),
        conversion("s1", expires_at=soon + timedelta(days=1)),
        conversion("s2", expires_at=soon),
    ) == [P, P, P]
    assert await store.purge_pending(soon - timedelta(seconds=1)) == 0
    assert (await counts(store, now=soon - timedelta(seconds=1))).pending == 3
    # The exposure lands after the first expired: only the live one is promoted.
    assert await record(store, exposure("s1"), now=soon) == [R]
    assert metric(await counts(store, now=soon)).conversions == 1
    assert (await counts(store, now=soon)).pending == 0
    assert await store.purge_pending(soon) == 2
    assert await store.purge_pending(soon) == 0
    # Purged is gone: a late exposure finds nothing to promote.
    assert await record(store, exposure("s2"), now=soon) == [R]
    assert metric(await counts(store, now=soon)).conversions == 1


# Odd microseconds too: staged times travel as epoch seconds in a double, and must come
# out as the very microsecond they went in as, or these one-microsecond edges would move.
@pytest.mark.parametrize("shift_us", [0, 1, 123_457, 999_999])
async def test_attribution_window_edges(store: Store, shift_us: int) -> None:
    window = 24
    start = T0 + timedelta(microseconds=shift_us)
    edge = start + timedelta(hours=window)
    await record(
        store,
        exposure("s1", "a", at=start),
        exposure("s2", "b", at=start + timedelta(hours=1)),
        conversion("s1", at=start, value=1.0),  # at the exposure itself: in
        conversion("s1", at=edge, value=2.0),  # exactly N hours in: in
        conversion("s1", at=edge + timedelta(microseconds=1), value=4.0),  # just after: out
        conversion("s1", at=start - timedelta(microseconds=1), value=8.0),  # before: out
        conversion("s2", at=edge, value=16.0),  # s2 was exposed an hour later: in
        conversion("s2", metric="unbounded", at=start + timedelta(days=20), value=1.0),
    )
    c = await counts(store, windows={"buy": window, "unbounded": None})
    buy = metric(c)
    assert (buy.conversions, buy.value_sum, buy.outside_window) == (3, 19.0, 2)
    assert {v.variant: (v.conversions, v.subjects, v.value_sum) for v in buy.variants} == {
        "a": (2, 1, 3.0),
        "b": (1, 1, 16.0),
    }
    assert metric(c, "unbounded").conversions == 1
    # Without a window the whole experiment counts, up to its end when it has ended.
    ended = await counts(store, until=edge)
    assert (metric(ended).conversions, metric(ended).outside_window) == (3, 2)
    assert metric(ended, "unbounded").outside_window == 1


async def test_conversions_of_crossover_subjects_are_excluded(store: Store) -> None:
    await record(
        store,
        exposure("s1", "a"),
        exposure("s2", "a"),
        exposure("s2", "b"),
        conversion("s1"),
        conversion("s2"),
        conversion("s2"),
    )
    buy = metric(await counts(store))
    assert (buy.conversions, buy.crossover) == (1, 2)


async def test_two_writers_on_one_database_agree(pg_dsn: str) -> None:
    """Two stores (as two processes would have) write overlapping batches at once: every
    subject still gets exactly one first exposure, and every crossover is counted once."""
    subjects = [f"s{i}" for i in range(400)]
    outcomes: list[Outcome] = []

    async def writer(variant: str) -> None:
        async with open_postgres_store(pg_dsn, max_size=2) as store:
            for start in range(0, len(subjects), 50):
                batch = [exposure(s, variant) for s in subjects[start : start + 50]]
                # Each writer sends its batches twice: retries collide too.
                outcomes.extend(await record(store, *batch))
                outcomes.extend(await record(store, *batch))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer, "a")
        nursery.start_soon(writer, "b")
    # Per subject: one first exposure, one crossover (the other variant), two duplicates.
    assert (outcomes.count(R), outcomes.count(X), outcomes.count(D)) == (400, 400, 800)
    async with open_postgres_store(pg_dsn) as store:
        c = await counts(store)
    assert c.crossovers == 400
    assert sum(v.crossovers for v in c.variants) == 400


# --- reports over time ----------------------------------------------------------------

# Every built-in kind, CUPED on and off; each metric reads the events of its own key (a
# ratio those of its parts). Windows: 24 h after exposure, CUPED over the 2 days before.
_SERIES_METRICS = (
    ("m0", "proportion", None, {}),
    ("p0", "proportion", 2, {}),
    ("m1", "mean", 2, {}),
    ("m2", "count", None, {}),
    ("c2", "count", 2, {}),
    ("r0", "ratio", None, {"numerator": "m1", "denominator": "m2"}),
    ("q0", "percentile", None, {"percentile": 0.9}),
)


def _series_request() -> Any:
    from assay.engine._metric_kinds import ReportMetric, ReportRequest, RollupSpec
    from assay.engine._model import MetricSpec
    from assay.plugins.metrics import BUILTIN_KINDS

    specs = [
        MetricSpec(key=k, kind=kind, attribution_window_hours=24, cuped_days=days, **extra)
        for k, kind, days, extra in _SERIES_METRICS
    ]
    return ReportRequest(
        experiment_id="exp_1",
        start=None,
        end=None,
        until=None,
        rollups=tuple(
            RollupSpec(s.key, 24, None if s.cuped_days is None else s.cuped_days * 24)
            for s in specs
            if s.kind != "ratio"
        ),
        metrics=tuple(ReportMetric(s, BUILTIN_KINDS[s.kind]) for s in specs),
        now=NOW,
    )


def _series_events(seed: int, first: int, count: int) -> list[StagedEvent]:
    """Subjects exposed over three days from T0 (a few cross over), each with conversions
    of every event-bearing metric before (the CUPED covariate) and after exposure, valued
    in cents so that the order of additions shows in the sums."""
    import random

    rng = random.Random(seed)
    events = []
    for i in range(first, first + count):
        subject, variant = f"u{i}", rng.choice("ab")
        at = T0 + timedelta(minutes=rng.uniform(0, 3 * 24 * 60))
        events.append(exposure(subject, variant, at=at))
        if rng.random() < 0.04:
            events.append(exposure(subject, "b" if variant == "a" else "a", at=at))
        for key in ("m0", "p0", "m1", "m2", "c2", "q0"):
            for _ in range(rng.randrange(3)):
                when = at + timedelta(hours=rng.uniform(-40, 30))
                value = round(rng.gammavariate(2.0, 10.0), 2)
                events.append(conversion(subject, key, value=value, at=when, expires_at=None))
    return events


async def test_a_series_of_report_ends_equals_each_report_to_the_last_digit(
    store: Store,
) -> None:
    """``report_series`` against ``report_aggregates`` at each end, on one state: whole
    hours and days (one pass over the hourly rollups on PostgreSQL), an end inside an hour
    (read row by row at its edge), after rollups were built from the tables and then
    maintained by the ingestion triggers."""
    request = _series_request()
    await store.record_events(_series_events(1, 0, 200), now=NOW)
    await store.report_aggregates(request)  # PostgreSQL: the rollups are built here
    for seed in (2, 3):
        await store.record_events(_series_events(seed, seed * 1000, 100), now=NOW)
    ends = sorted(
        {
            *(T0 + timedelta(hours=h) for h in range(1, 80, 7)),
            *(T0.replace(hour=0) + timedelta(days=d) for d in range(1, 4)),
            T0 + timedelta(hours=30, minutes=17),
        }
    )
    series = await store.report_series(request, ends)
    assert len(series) == len(ends)
    for end, got in zip(ends, series, strict=True):
        alone = await store.report_aggregates(request._replace(end=end))
        assert dict(got.units) == dict(alone.units), end
        assert got.pending == alone.pending
        for key, rows in alone.rows.items():
            assert dict(got.rows[key]) == dict(rows), (end, key)  # ==: the same bits
    exposed = [sum(u.exposed for u in got.units.values()) for got in series]
    assert exposed == sorted(exposed)
    assert 0 < exposed[0] < exposed[-1] == 400
    assert series[-1].rows["p0"]["a"]["n_pre"] > 0  # the CUPED covariate is in the sums
