"""An experiment's report over time: cumulative statistics at each hour or day.

Each point ``t`` is the experiment's report over the subjects first exposed before ``t``
(``Engine.report(end=t)``), so every number comes from the same rollups, the same
statistics and the same access checks as the report itself. Their conversions count as
the report counts them now (inside each metric's attribution window), so an older point
can still grow while its subjects' windows are open.

The points before the last are aggregated together (``Store.report_series``: one pass over
the hourly rollups, summed cumulatively) and each is then built exactly as a report over
that period would be, to the last digit; the last point is the report itself.

Points run from the hour (or UTC day) of the experiment's start to its end, or to now
while it runs, the last point being the end (or now) itself. Intervals are always-valid
(sequential): the band of relative lift over time stays a valid 95% band however often
anyone looks, which is what a chart of it invites.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Literal, NamedTuple, Protocol

import msgspec

from assay.engine._core._stats import LiftAnalysis
from assay.engine._errors import ValidationFailed
from assay.engine._model import ApiKey, Experiment, ExperimentStatus
from assay.engine._reports import build_report, check_correction, withhold_on_srm
from assay.engine._service import SYSTEM_KEY

if TYPE_CHECKING:
    from collections.abc import Mapping

    from assay.engine._metric_kinds import MetricKind
    from assay.engine._ports import Store
    from assay.engine._reports import PreparedReport, Report

Interval = Literal["hour", "day"]
INTERVALS: tuple[Interval, ...] = ("hour", "day")
MAX_POINTS = 200
"""More points than this is refused (``timeseries_too_long``): ask for days instead."""


class _Out(msgspec.Struct, frozen=True, kw_only=True):
    pass


class TimeseriesVariant(_Out, frozen=True, kw_only=True):
    key: str
    exposed: int
    crossovers: int
    subjects: int


class TimeseriesLift(_Out, frozen=True, kw_only=True):
    """One lift at one point: its estimate with the always-valid (sequential) 95% interval
    and adjusted p-value, as the report's verdict reads them."""

    estimate: float
    ci_low: float
    ci_high: float
    p_value: float | None
    error: str | None = None


class TimeseriesComparison(_Out, frozen=True, kw_only=True):
    metric: str
    variant: str
    control_value: float
    value: float
    absolute: TimeseriesLift
    relative: TimeseriesLift
    chance_to_win: float
    verdict: str


class TimeseriesPoint(_Out, frozen=True, kw_only=True):
    at: datetime
    """Subjects first exposed before this moment."""
    variants: list[TimeseriesVariant]
    comparisons: list[TimeseriesComparison]
    srm_p_value: float


class Timeseries(_Out, frozen=True, kw_only=True):
    experiment: str
    interval: Interval
    control: str | None
    correction: str
    points: list[TimeseriesPoint]


class _Reports(Protocol):
    @property
    def store(self) -> Store: ...

    @property
    def metric_kinds(self) -> Mapping[str, MetricKind]: ...

    async def report_request(
        self,
        principal: ApiKey,
        project: str | None,
        experiment: str,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> PreparedReport: ...

    async def report(
        self,
        project: str | None,
        experiment: str,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
        correction: str | None = None,
        principal: ApiKey = SYSTEM_KEY,
    ) -> Report: ...


def point_times(started: datetime | None, until: datetime, interval: Interval) -> list[datetime]:
    """The moments of a series: each interval boundary after ``started``, then ``until``."""
    if started is None or until <= started:
        return []
    step = timedelta(hours=1) if interval == "hour" else timedelta(days=1)
    first = started.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    if interval == "day":
        first = first.replace(hour=0)
    times = []
    t = first + step
    while t < until:
        times.append(t)
        t += step
        if len(times) > MAX_POINTS:
            raise ValidationFailed(
                f"more than {MAX_POINTS} points at interval {interval!r}; ask for interval=day",
                code="timeseries_too_long",
                details={"max_points": MAX_POINTS, "interval": interval},
            )
    times.append(until)
    return times


def _lift(result: LiftAnalysis) -> TimeseriesLift:
    seq = result.sequential
    return TimeseriesLift(
        estimate=seq.estimate,
        ci_low=seq.ci_low,
        ci_high=seq.ci_high,
        p_value=seq.adjusted_p_value if seq.adjusted_p_value is not None else seq.p_value,
        error=None if result.error is None else str(result.error),
    )


def _point(at: datetime, report: Report) -> TimeseriesPoint:
    comparisons = []
    for metric in report.metrics:
        for c in metric.comparisons:
            comparisons.append(
                TimeseriesComparison(
                    metric=metric.key,
                    variant=c.variant,
                    control_value=c.result.control.mean,
                    value=c.result.treatment.mean,
                    absolute=_lift(c.result.absolute),
                    relative=_lift(c.result.relative),
                    chance_to_win=c.result.relative.bayesian.chance_to_win,
                    verdict=c.verdict,
                )
            )
    return TimeseriesPoint(
        at=at,
        variants=[
            TimeseriesVariant(
                key=v.key, exposed=v.exposed, crossovers=v.crossovers, subjects=v.subjects
            )
            for v in report.variants
        ],
        comparisons=comparisons,
        srm_p_value=report.srm.p_value,
    )


class EarlierPoints(NamedTuple):
    """A series without its last point (the experiment's whole report, made apart)."""

    experiment: Experiment
    interval: Interval
    points: list[TimeseriesPoint]
    last_at: datetime | None
    """The last point's moment; None when the series has no point."""


async def earlier_points(
    reports: _Reports,
    project: str | None,
    experiment: str,
    *,
    interval: str = "day",
    correction: str | None = None,
    principal: ApiKey = SYSTEM_KEY,
    now: datetime | None = None,
) -> EarlierPoints:
    """Every point of the series but the last, from one ``Store.report_series`` call: each
    built exactly as ``report(end=at)`` builds its report (a period: no planned verdict).
    Checks the arguments and access as ``report_timeseries`` does, so it may run at the
    same time as the report that will be the last point (the console's results page)."""
    if interval not in INTERVALS:
        raise ValidationFailed(
            f"interval must be one of {', '.join(INTERVALS)}",
            code="invalid_parameter",
            details={"parameter": "interval", "accepted": list(INTERVALS)},
        )
    check_correction(correction)
    prepared = await reports.report_request(principal, project, experiment)
    target = prepared.experiment
    until = now or datetime.now(UTC)
    if target.ended_at is not None and target.status is not ExperimentStatus.RUNNING:
        until = min(until, target.ended_at)
    times = point_times(target.started_at, until, interval)
    ends = times[:-1]
    series = await reports.store.report_series(prepared.request, ends) if ends else []
    points = []
    for at, aggregates in zip(ends, series, strict=True):
        report = build_report(
            target,
            prepared.roles,
            prepared.metrics,
            reports.metric_kinds,
            aggregates.units,
            aggregates.rows,
            pending=aggregates.pending,
            start=None,
            end=at,
            correction=correction or target.correction,
        )
        points.append(_point(at, withhold_on_srm(report)))
    return EarlierPoints(
        experiment=target,
        interval=interval,
        points=points,
        last_at=times[-1] if times else None,
    )


def with_last_point(earlier: EarlierPoints, latest: Report) -> Timeseries:
    """The series, ``latest`` (the experiment's whole report) as its last point."""
    points = list(earlier.points)
    if earlier.last_at is not None:
        points.append(_point(earlier.last_at, latest))
    return Timeseries(
        experiment=earlier.experiment.key,
        interval=earlier.interval,
        control=latest.control,
        correction=latest.correction,
        points=points,
    )


async def report_timeseries(
    reports: _Reports,
    project: str | None,
    experiment: str,
    *,
    interval: str = "day",
    correction: str | None = None,
    principal: ApiKey = SYSTEM_KEY,
    now: datetime | None = None,
) -> Timeseries:
    """The cumulative report of ``experiment`` at each ``interval`` since it started.

    Raises what ``report`` raises (``NotFound`` for what the principal cannot see or
    read, ``invalid_correction``), ``invalid_parameter`` for an unknown interval and
    ``timeseries_too_long`` past ``MAX_POINTS``. A DRAFT experiment has no points.
    """
    earlier = await earlier_points(
        reports,
        project,
        experiment,
        interval=interval,
        correction=correction,
        principal=principal,
        now=now,
    )
    latest = await reports.report(project, experiment, correction=correction, principal=principal)
    return with_last_point(earlier, latest)


__all__ = [
    "INTERVALS",
    "MAX_POINTS",
    "EarlierPoints",
    "Timeseries",
    "TimeseriesComparison",
    "TimeseriesLift",
    "TimeseriesPoint",
    "TimeseriesVariant",
    "earlier_points",
    "point_times",
    "report_timeseries",
    "with_last_point",
]
