"""Ingestion through the engine: ``expose``, ``track`` and ``record_events`` on both
stores, every rejection code, the project and batch checks, and fire-and-forget sends."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import msgspec
import pytest
import trio

import assay
from assay.engine import (
    SYSTEM_KEY,
    Conflict,
    EngineConfig,
    Experiment,
    ExperimentSpec,
    Metric,
    MetricSpec,
    NotFound,
    PermissionDenied,
    ProjectSpec,
    Role,
    Transition,
    ValidationFailed,
    Variant,
)
from assay.engine._events import (
    MAX_BATCH_EVENTS,
    REJECTION_CODES,
    Conversion,
    EventsRecorded,
    Exposure,
)
from assay.engine._messages import RecordEvents

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from assay.engine import Engine

PROJECT = "shop"
EXPERIMENT = "checkout"


@pytest.fixture(params=["memory", "postgres", "postgres-one-lane"])
def engine_config(request: pytest.FixtureRequest) -> EngineConfig:
    if request.param == "memory":
        return EngineConfig(store="memory")
    # One write lane is the plain pipeline: one transaction in flight at a time.
    lanes = 1 if request.param == "postgres-one-lane" else EngineConfig().ingestion_write_lanes
    return EngineConfig(
        database_url=request.getfixturevalue("pg_dsn"), pool_size=4, ingestion_write_lanes=lanes
    )


async def build_project(engine: Engine) -> None:
    """A running experiment with three metrics, and experiments in other states."""
    service = engine.service
    await service.create_project(SYSTEM_KEY, ProjectSpec(key=PROJECT))
    for spec in (
        MetricSpec(key="purchase", pending_ttl_hours=1),
        MetricSpec(key="signup", requires_exposure=False),
        MetricSpec(key="click", attribution_window_hours=24),
    ):
        await service.create_object(SYSTEM_KEY, Metric, PROJECT, spec)
    variants = [Variant(key="control", value=False), Variant(key="treatment", value=True)]
    for key, transitions in (
        (EXPERIMENT, [Transition.START]),
        ("draft", []),
        ("old", [Transition.START, Transition.COMPLETE, Transition.ARCHIVE]),
        ("compacted", [Transition.START, Transition.COMPLETE]),
    ):
        spec = ExperimentSpec(key=key, variants=variants, primary_metrics=["purchase"])
        await service.create_object(SYSTEM_KEY, Experiment, PROJECT, spec)
        for transition in transitions:
            ended = await service.transition_experiment(SYSTEM_KEY, PROJECT, key, transition)
    # As the data lifecycle marks an experiment ended long ago (engine/_compaction.py).
    assert await service.mark_compacted(ended, datetime.now(UTC)) is not None
    await engine.refresh()


@pytest.fixture
async def engine(engine_config: EngineConfig) -> AsyncIterator[Engine]:
    async with assay.open_engine(engine_config, load_entry_points=False) as engine:
        await build_project(engine)
        yield engine


def answer(result: EventsRecorded) -> tuple[int, int, int, int]:
    return (result.recorded, result.deduplicated, result.pending, len(result.rejected))


def expo(subject: str, variant: str = "control", **kw: Any) -> Exposure:
    return Exposure(experiment=EXPERIMENT, subject=subject, variant=variant, **kw)


def conv(subject: str, metric: str = "purchase", **kw: Any) -> Conversion:
    return Conversion(experiment=EXPERIMENT, metric=metric, subject=subject, **kw)


async def test_expose_and_track(engine: Engine) -> None:
    assert answer(await engine.expose(PROJECT, EXPERIMENT, "u1", "treatment")) == (1, 0, 0, 0)
    result = await engine.track(PROJECT, EXPERIMENT, "purchase", "u1", value=9.5)
    assert answer(result) == (1, 0, 0, 0)
    summary = await engine.ingestion_summary(PROJECT, EXPERIMENT)
    assert summary.exposures == 1
    assert [(v.variant, v.exposures) for v in summary.variants] == [
        ("control", 0),
        ("treatment", 1),
    ]
    purchase = summary.metrics[0]
    assert (purchase.metric, purchase.conversions, purchase.value_sum) == ("purchase", 1, 9.5)


async def test_duplicates_within_and_across_batches(engine: Engine) -> None:
    batch = [
        expo("u1", event_id="e1"),
        expo("u1", event_id="e1"),  # the same event twice in one batch
        expo("u2", event_id="e2"),
        expo("u2", event_id="e3"),  # another event, but the same exposure
        conv("u1", event_id="c1"),
        conv("u1", idempotency_key="order-1"),
        conv("u1", idempotency_key="order-1"),
    ]
    assert answer(await engine.record_events(PROJECT, batch)) == (4, 3, 0, 0)
    # The same batch again: nothing new.
    again = await engine.record_events(PROJECT, batch)
    assert (again.received, *answer(again)) == (7, 0, 7, 0, 0)
    summary = await engine.ingestion_summary(PROJECT, EXPERIMENT)
    assert (summary.exposures, summary.metrics[0].conversions) == (2, 2)


async def test_pending_conversions_wait_for_their_exposure(engine: Engine) -> None:
    assert answer(await engine.track(PROJECT, EXPERIMENT, "purchase", "u1")) == (0, 0, 1, 0)
    # A metric that does not require exposure never waits.
    assert answer(await engine.track(PROJECT, EXPERIMENT, "signup", "u1")) == (1, 0, 0, 0)
    summary = await engine.ingestion_summary(PROJECT, EXPERIMENT)
    assert (summary.pending, summary.metrics[0].conversions) == (1, 0)
    # The exposure happened first but is delivered late, as an SDK's buffered one is.
    # (Had it happened after the conversion, the conversion would be outside the window.)
    earlier = datetime.now(UTC) - timedelta(minutes=1)
    await engine.expose(PROJECT, EXPERIMENT, "u1", "treatment", timestamp=earlier)
    summary = await engine.ingestion_summary(PROJECT, EXPERIMENT)
    assert summary.pending == 0
    purchase = next(m for m in summary.metrics if m.metric == "purchase")
    assert [(v.variant, v.conversions) for v in purchase.variants] == [("treatment", 1)]


async def test_expired_pending_conversions_are_purged(engine: Engine) -> None:
    # Received two hours ago, for a metric that waits one hour: already expired.
    project_id = engine.snapshot.project_ids[PROJECT]
    past = datetime.now(UTC) - timedelta(hours=2)
    result = await engine.ingestion.request(
        RecordEvents(
            project_id=project_id,
            principal_id=SYSTEM_KEY.id,
            events=[conv("u1"), conv("u2", metric="click")],
            received_at=past,
        )
    )
    assert answer(result) == (0, 0, 2, 0)
    summary = await engine.ingestion_summary(PROJECT, EXPERIMENT)
    assert summary.pending == 1  # the click waits a week; the purchase has expired
    # The exposure comes too late for the expired one.
    await engine.expose(PROJECT, EXPERIMENT, "u1", "control")
    assert (await engine.ingestion_summary(PROJECT, EXPERIMENT)).metrics[0].conversions == 0
    assert await engine.purge_pending() == 1
    assert await engine.purge_pending() == 0


async def test_crossovers_are_counted_and_excluded(engine: Engine) -> None:
    result = await engine.record_events(
        PROJECT,
        [expo("u1", "control"), expo("u1", "treatment"), expo("u2", "treatment"), conv("u1")],
    )
    assert answer(result) == (4, 0, 0, 0)
    summary = await engine.ingestion_summary(PROJECT, EXPERIMENT)
    assert (summary.exposures, summary.crossovers) == (1, 1)
    assert [(v.variant, v.exposures, v.crossovers) for v in summary.variants] == [
        ("control", 0, 1),
        ("treatment", 1, 0),
    ]
    assert (summary.metrics[0].conversions, summary.metrics[0].crossover) == (0, 1)


async def test_attribution_window_of_a_metric(engine: Engine) -> None:
    exposed = datetime.now(UTC) - timedelta(days=3)
    await engine.record_events(
        PROJECT,
        [
            expo("u1", timestamp=exposed),
            conv("u1", "click", timestamp=exposed + timedelta(hours=24)),
            conv("u1", "click", timestamp=exposed + timedelta(hours=24, seconds=1)),
            conv("u1", "purchase", timestamp=exposed + timedelta(hours=48)),
        ],
    )
    metrics = {m.metric: m for m in (await engine.ingestion_summary(PROJECT, EXPERIMENT)).metrics}
    assert (metrics["click"].conversions, metrics["click"].outside_window) == (1, 1)
    assert (metrics["purchase"].conversions, metrics["purchase"].outside_window) == (1, 0)


async def test_every_rejection_code(engine: Engine) -> None:
    now = datetime.now(UTC)
    cases: list[tuple[str, Any]] = [
        ("invalid_event", {"experiment": EXPERIMENT}),
        ("invalid_key", Exposure(experiment="not a key!", subject="u1", variant="control")),
        ("unknown_experiment", Exposure(experiment="nope", subject="u1", variant="control")),
        ("experiment_not_started", Exposure(experiment="draft", subject="u1", variant="control")),
        ("experiment_archived", Exposure(experiment="old", subject="u1", variant="control")),
        ("experiment_compacted", Exposure(experiment="compacted", subject="u1", variant="control")),
        ("unknown_variant", expo("u1", "blue")),
        ("unknown_metric", conv("u1", "refund")),
        ("invalid_subject", expo("")),
        ("invalid_value", conv("u1", value=math.inf)),
        ("invalid_event_id", expo("u1", event_id="x" * 129)),
        ("invalid_idempotency_key", conv("u1", idempotency_key="a\x00b")),
        ("invalid_timestamp", expo("u1", timestamp=datetime(2024, 1, 1))),
        ("timestamp_in_future", expo("u1", timestamp=now + timedelta(minutes=6))),
        ("timestamp_too_old", expo("u1", timestamp=now - timedelta(days=31))),
    ]  # fmt: skip
    assert sorted(code for code, _ in cases) == sorted(REJECTION_CODES)
    valid = expo("u-ok")
    result = await engine.record_events(PROJECT, [valid, *(event for _, event in cases)])
    assert (result.received, *answer(result)) == (len(cases) + 1, 1, 0, 0, len(cases))
    assert [(r.index, r.code) for r in result.rejected] == [
        (i + 1, code) for i, (code, _) in enumerate(cases)
    ]
    assert all(r.message for r in result.rejected)
    messages = {code: r.message for (code, _), r in zip(cases, result.rejected, strict=True)}
    # The defaults, in words a person reads (not "2.592e+06 seconds").
    assert messages["timestamp_too_old"] == "timestamp is more than 30 days old"
    assert messages["timestamp_in_future"] == "timestamp is more than 5 minutes in the future"
    # Nothing but the valid event was written.
    assert (await engine.ingestion_summary(PROJECT, EXPERIMENT)).exposures == 1


async def test_the_timestamp_limits_are_settings(engine_config: EngineConfig) -> None:
    config = msgspec.structs.replace(
        engine_config, event_future_skew_seconds=3600, event_max_age_days=1
    )
    async with assay.open_engine(config, load_entry_points=False) as engine:
        await build_project(engine)
        now = datetime.now(UTC)
        result = await engine.record_events(
            PROJECT,
            [
                expo("u1", timestamp=now + timedelta(minutes=30)),
                expo("u2", timestamp=now - timedelta(days=2)),
            ],
        )
    assert [r.code for r in result.rejected] == ["timestamp_too_old"]
    assert result.rejected[0].message == "timestamp is more than 1 day old"


async def test_whole_batch_refusals(engine: Engine) -> None:
    too_many = [expo(f"u{i}") for i in range(MAX_BATCH_EVENTS + 1)]
    with pytest.raises(ValidationFailed) as refused:
        await engine.record_events(PROJECT, too_many)
    assert refused.value.code == "batch_too_large"
    with pytest.raises(NotFound):
        await engine.record_events("nowhere", [expo("u1")])
    # A key may send events to its own project only, and only with a role that may.
    sdk, _ = await engine.service.create_key(SYSTEM_KEY, role=Role.SDK, project=PROJECT)
    viewer, _ = await engine.service.create_key(SYSTEM_KEY, role=Role.VIEWER, project=PROJECT)
    analyst, _ = await engine.service.create_key(SYSTEM_KEY, role=Role.ANALYST, project=PROJECT)
    assert (await engine.record_events(None, [expo("u1")], principal=sdk)).recorded == 1
    with pytest.raises(NotFound):
        await engine.record_events(None, [expo("u2")], principal=viewer)
    with pytest.raises(PermissionDenied):
        await engine.record_events(None, [expo("u2")], principal=analyst)
    with pytest.raises(NotFound):
        await engine.ingestion_summary(None, EXPERIMENT, principal=sdk)
    assert (await engine.ingestion_summary(None, EXPERIMENT, principal=analyst)).exposures == 1
    # An archived project takes no events.
    await engine.service.set_project_archived(SYSTEM_KEY, PROJECT, True)
    await engine.refresh()
    with pytest.raises(Conflict) as archived:
        await engine.record_events(PROJECT, [expo("u3")])
    assert archived.value.code == "project_archived"


async def test_an_empty_batch_answers_at_once(engine: Engine) -> None:
    assert answer(await engine.record_events(PROJECT, [])) == (0, 0, 0, 0)


async def test_fire_and_forget_exposures(engine: Engine) -> None:
    """What the decision path sends when an experiment logs exposures on assignment: no
    reply channel, and the events land all the same."""
    project_id = engine.snapshot.project_ids[PROJECT]
    for i in range(3):
        await engine.ingestion.send(
            RecordEvents(
                project_id=project_id,
                principal_id=SYSTEM_KEY.id,
                events=[expo(f"u{i}", event_id=f"decision-{i}"), expo("bad", "blue")],
                received_at=datetime.now(UTC),
            )
        )
    with trio.fail_after(10):
        # Nobody is told when a fire-and-forget batch lands: poll the store.
        while (await engine.ingestion_summary(PROJECT, EXPERIMENT)).exposures < 3:  # noqa: ASYNC110
            await trio.sleep(0.01)
