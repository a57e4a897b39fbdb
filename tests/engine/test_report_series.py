"""A report's points over time in one pass (``Store.report_series``) against one report per
point, on both stores, to the last digit: every metric kind, CUPED on and off, hour and day
boundaries, a boundary inside an hour, rollups built from the tables and then maintained
by the triggers (several delta rows per hour, added in a fixed order)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import numpy as np
import pytest

import assay
from assay.engine import (
    SYSTEM_KEY,
    Engine,
    MetricSpec,
    Variant,
    report_timeseries,
)
from assay.engine._events import Conversion, Event, Exposure
from assay.engine._report_timeseries import _point, point_times
from assay.engine._reports import PreparedReport
from tests.engine.experiment_setup import engine_config, start_experiment

P, E = "shop", "checkout"
BASE = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=6)
EVENTS = ("conv", "conv_c", "cnt", "cnt_c", "rev", "rev_c", "pct")


def _metric(key: str, kind: str, **kw: Any) -> MetricSpec:
    return MetricSpec(
        key=key, kind=kind, attribution_window_hours=24, requires_exposure=False, **kw
    )


METRICS = [
    _metric("conv", "proportion"),
    _metric("conv_c", "proportion", cuped_days=2),
    _metric("cnt", "count"),
    _metric("cnt_c", "count", cuped_days=2),
    _metric("rev", "mean"),
    _metric("rev_c", "mean", cuped_days=2),
    _metric("per", "ratio", numerator="rev", denominator="cnt"),
    _metric("per_c", "ratio", numerator="rev_c", denominator="cnt_c", cuped_days=2),
    _metric("pct", "percentile", percentile=0.75),
]


@pytest.fixture
async def engine(store_dsn: str | None) -> AsyncIterator[Engine]:
    async with assay.open_engine(engine_config(store_dsn), load_entry_points=False) as engine:
        yield engine


def events(seed: int, subjects: range) -> list[Event]:
    """Exposures over three days from BASE (a few crossovers) and, per subject, conversions
    of every metric before (the CUPED covariate) and after exposure, with values in cents
    (no exact binary sum, so the order of additions shows)."""
    rng = np.random.default_rng(seed)
    out: list[Event] = []
    for i in subjects:
        subject = f"u{i}"
        variant = "b" if rng.random() < 0.5 else "a"
        at = BASE + timedelta(minutes=float(rng.uniform(0, 3 * 24 * 60)))
        out.append(Exposure(experiment=E, subject=subject, variant=variant, timestamp=at))
        if rng.random() < 0.03:
            other = "a" if variant == "b" else "b"
            out.append(
                Exposure(
                    experiment=E, subject=subject, variant=other, timestamp=at + timedelta(hours=1)
                )
            )
        for key in EVENTS:
            for _ in range(int(rng.poisson(0.9 if variant == "b" else 0.7))):
                when = at + timedelta(hours=float(rng.uniform(-40, 30)))
                value = float(np.round(rng.gamma(2.0, 10.0), 2))
                out.append(
                    Conversion(
                        experiment=E, metric=key, subject=subject, value=value, timestamp=when
                    )
                )
    return out


async def setup(engine: Engine) -> None:
    await start_experiment(
        engine,
        P,
        E,
        METRICS,
        variants=[Variant(key="a", value=0), Variant(key="b", value=1)],
        primary_metrics=[m.key for m in METRICS[:4]],
        secondary_metrics=[m.key for m in METRICS[4:]],
    )


async def send(engine: Engine, batch: list[Event]) -> None:
    for k in range(0, len(batch), 500):
        result = await engine.record_events(P, batch[k : k + 500])
        assert not result.rejected, result.rejected[:3]


class _StartedAtBase:
    """The engine, with the experiment started at BASE (it was started now, after its
    events' timestamps): what ``report_timeseries`` reads through its protocol."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self.store = engine.store
        self.metric_kinds = engine.metric_kinds
        self.report = engine.report

    async def report_request(self, *args: Any, **kw: Any) -> PreparedReport:
        prepared = await self._engine.report_request(*args, **kw)
        started = msgspec.structs.replace(prepared.experiment, started_at=BASE)
        return prepared._replace(experiment=started)


async def test_each_point_of_one_pass_equals_its_own_report_to_the_last_digit(
    engine: Engine,
) -> None:
    await setup(engine)
    await send(engine, events(1, range(0, 300)))
    await engine.report(P, E)  # PostgreSQL: the rollups are built from the tables here
    for seed in (2, 3, 4):  # ...and maintained by the triggers from here on
        await send(engine, events(seed, range(seed * 1000, seed * 1000 + 150)))
    prepared = await engine.report_request(SYSTEM_KEY, P, E)
    hours = [BASE + timedelta(hours=h) for h in range(1, 4 * 24, 5)]
    days = [BASE + timedelta(days=d) for d in range(1, 5)]
    inside = [BASE + timedelta(hours=30, minutes=17)]  # read row by row at its edge
    ends = sorted({*hours, *days, *inside})
    series = await engine.store.report_series(prepared.request, ends)
    assert len(series) == len(ends)
    grew = []
    for end, got in zip(ends, series, strict=True):
        alone = await engine.store.report_aggregates(prepared.request._replace(end=end))
        assert dict(got.units) == dict(alone.units), end
        assert got.pending == alone.pending
        assert set(got.rows) == {m.key for m in METRICS}
        for key, rows in alone.rows.items():
            # == on floats: the same bits, not approximately.
            assert dict(got.rows[key]) == dict(rows), (end, key)
        grew.append(sum(u.exposed for u in got.units.values()))
    assert grew == sorted(grew)
    assert 0 < grew[0] < grew[-1]

    # Through the timeseries: each point but the last (the report itself) is the report
    # ending there, comparisons, lifts, intervals and verdicts included.
    reports = _StartedAtBase(engine)
    for interval, now in (("hour", BASE + timedelta(hours=40)), ("day", BASE + timedelta(days=4))):
        got_series = await report_timeseries(reports, P, E, interval=interval, now=now)
        times = point_times(BASE, now, interval)
        assert [p.at for p in got_series.points] == times
        for point in got_series.points[:-1]:
            want = _point(point.at, await engine.report(P, E, end=point.at))
            assert msgspec.to_builtins(point) == msgspec.to_builtins(want), (interval, point.at)
        assert {c.metric for c in got_series.points[-2].comparisons} == {m.key for m in METRICS}
