"""The report over time: its points, and that each point is the report at that moment."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

import assay
from assay.engine import (
    SYSTEM_KEY,
    EngineConfig,
    Experiment,
    ExperimentSpec,
    Exposure,
    Metric,
    MetricSpec,
    ProjectSpec,
    Role,
    Transition,
    ValidationFailed,
    Variant,
    report_timeseries,
)
from assay.engine._report_timeseries import MAX_POINTS, point_times

T0 = datetime(2026, 3, 1, 10, 37, tzinfo=UTC)


def test_points_fall_on_interval_boundaries_and_end_at_until() -> None:
    until = T0 + timedelta(hours=3, minutes=5)
    assert point_times(T0, until, "hour") == [
        datetime(2026, 3, 1, 11, tzinfo=UTC),
        datetime(2026, 3, 1, 12, tzinfo=UTC),
        datetime(2026, 3, 1, 13, tzinfo=UTC),
        until,
    ]
    assert point_times(T0, T0 + timedelta(days=2), "day") == [
        datetime(2026, 3, 2, tzinfo=UTC),
        datetime(2026, 3, 3, tzinfo=UTC),
        T0 + timedelta(days=2),
    ]
    assert point_times(T0, T0 + timedelta(minutes=5), "hour") == [T0 + timedelta(minutes=5)]
    assert point_times(None, T0, "day") == []
    assert point_times(T0, T0, "day") == []


def test_too_many_points_is_refused() -> None:
    with pytest.raises(ValidationFailed) as raised:
        point_times(T0, T0 + timedelta(hours=MAX_POINTS + 2), "hour")
    assert raised.value.code == "timeseries_too_long"
    assert len(point_times(T0, T0 + timedelta(days=MAX_POINTS - 2), "day")) < MAX_POINTS


async def test_each_point_is_the_report_up_to_it() -> None:
    config = EngineConfig(store="memory")
    async with assay.open_engine(config, load_entry_points=False) as engine:
        service = engine.service
        await service.create_project(SYSTEM_KEY, ProjectSpec(key="p"))
        await service.create_object(SYSTEM_KEY, Metric, "p", MetricSpec(key="m"))
        await service.create_object(
            SYSTEM_KEY,
            Experiment,
            "p",
            ExperimentSpec(
                key="e",
                variants=[Variant(key="a", value=0), Variant(key="b", value=1)],
                primary_metrics=["m"],
            ),
        )
        started = await service.transition_experiment(SYSTEM_KEY, "p", "e", Transition.START)
        await engine.refresh()
        assert started.started_at is not None
        soon = datetime.now(UTC)
        await engine.record_events(
            "p",
            [
                Exposure(experiment="e", subject=f"s{i}", variant="ab"[i % 2], timestamp=soon)
                for i in range(30)
            ],
        )
        later = started.started_at + timedelta(days=3)
        series = await report_timeseries(engine, "p", "e", interval="day", now=later)
        assert [p.at for p in series.points] == point_times(started.started_at, later, "day")
        for point in series.points:
            report = await engine.report("p", "e", end=point.at)
            assert [v.subjects for v in point.variants] == [v.subjects for v in report.variants]
            assert [(c.metric, c.variant) for c in point.comparisons] == [("m", "b")]
        assert sum(v.subjects for v in series.points[-1].variants) == 30
        _, viewer = await service.create_key(SYSTEM_KEY, role=Role.VIEWER, project="p")
        key = await service.authenticate(viewer)
        with pytest.raises(assay.engine.NotFound):
            await report_timeseries(engine, "p", "e", principal=key)
        with pytest.raises(ValidationFailed):
            await report_timeseries(engine, "p", "e", interval="week")
