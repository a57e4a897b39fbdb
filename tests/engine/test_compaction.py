"""Compaction of an ended experiment's raw events, through a running engine on both stores
and a virtual clock: every metric kind (CUPED and a quantile included) reports the same to
the last digit before and after, and so do the periods the kept data can answer, the
timeseries and the ingestion summary; events for the experiment are refused from the
moment it is marked; what cannot be answered exactly is refused, never changed.

The memory store keeps its raw events (memory reports are computed from them), so there
the reports are trivially unchanged; the refusals of events hold on both.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import numpy as np
import pytest
import trio

import assay
from assay.engine import (
    SYSTEM_KEY,
    Engine,
    EngineConfig,
    Experiment,
    Metric,
    MetricSpec,
    Transition,
)
from assay.engine._compaction import SETTLE, ExperimentCompactor
from assay.engine._errors import Conflict
from assay.engine._events import Conversion, Event, Exposure
from assay.engine._report_timeseries import report_timeseries
from assay.engine._retention import Compaction, Retention, RetentionPolicy
from tests.engine.experiment_setup import engine_config, start_experiment

P = "shop"
E = "checkout"
NOW = datetime.now(UTC)
BASE = NOW.replace(minute=0, second=0, microsecond=0) - timedelta(days=6)
POLICY = RetentionPolicy(decision_days=30, event_id_days=31, raw_event_days=31)
METRICS = [
    MetricSpec(key="converted", kind="proportion", attribution_window_hours=24),
    MetricSpec(key="orders", kind="count", attribution_window_hours=24),
    MetricSpec(
        key="revenue", kind="mean", attribution_window_hours=24, cuped_days=2,
        requires_exposure=False,
    ),
    MetricSpec(key="per_order", kind="ratio", numerator="revenue", denominator="orders"),
    MetricSpec(key="basket", kind="percentile", percentile=0.75),
]  # fmt: skip


@pytest.fixture
async def engine(store_dsn: str | None) -> AsyncIterator[Engine]:
    async with assay.open_engine(engine_config(store_dsn), load_entry_points=False) as engine:
        yield engine


def events(seed: int, subjects: range) -> list[Event]:
    """Exposures over three days (and a few in the hour the experiment ends in), some
    crossovers, conversions of every metric before, inside and after their windows."""
    rng = np.random.default_rng(seed)
    out: list[Event] = []
    last_hour = NOW.replace(minute=0, second=0, microsecond=0)
    for i in subjects:
        subject = f"u{i}"
        variant = "treatment" if rng.random() < 0.5 else "control"
        if i % 50 == 0:  # in the hour the experiment ends, before it ends
            at = last_hour + (NOW - last_hour) * float(rng.uniform(0, 0.5))
        else:
            at = BASE + timedelta(minutes=float(rng.uniform(0, 3 * 24 * 60)))
        out.append(Exposure(experiment=E, subject=subject, variant=variant, timestamp=at))
        for metric in ("converted", "orders", "revenue", "basket"):
            for _ in range(int(rng.poisson(0.9))):
                when = min(at + timedelta(hours=float(rng.uniform(-40, 30))), NOW)
                value = float(np.round(rng.gamma(2.0, 10.0), 2))
                out.append(
                    Conversion(
                        experiment=E, metric=metric, subject=subject, value=value, timestamp=when
                    )
                )
        if rng.random() < 0.05:
            other = "control" if variant == "treatment" else "treatment"
            out.append(Exposure(experiment=E, subject=subject, variant=other, timestamp=at))
    return out


async def setup(engine: Engine) -> Experiment:
    keys = [m.key for m in METRICS]
    await start_experiment(
        engine, P, E, METRICS, primary_metrics=keys[:2], secondary_metrics=keys[2:]
    )
    batch = events(7, range(600))
    for lo in range(0, len(batch), 400):
        result = await engine.record_events(P, batch[lo : lo + 400])
        assert not result.rejected, result.rejected[:3]
    return await engine.service.transition_experiment(SYSTEM_KEY, P, E, Transition.COMPLETE)


def same(report: Any) -> bytes:
    """A report as JSON without the moment it was generated."""
    raw = msgspec.to_builtins(report)
    if isinstance(raw, dict):
        raw.pop("generated_at", None)
    return msgspec.json.encode(raw)


async def views(engine: Engine, ended: Experiment) -> dict[str, bytes]:
    """What users read of an ended experiment: the report, whole-hour periods, the periods
    up to its end and from its start, the timeseries, the ingestion summary."""
    assert ended.ended_at is not None
    assert ended.started_at is not None
    hour = BASE + timedelta(hours=7)
    out = {
        "report": same(await engine.report(P, E)),
        "hours": same(await engine.report(P, E, start=hour, end=hour + timedelta(hours=30))),
        "to_end": same(await engine.report(P, E, start=hour, end=ended.ended_at)),
        "from_start": same(await engine.report(P, E, start=ended.started_at)),
        "corrected": same(await engine.report(P, E, correction="benjamini-hochberg")),
        "ingestion": same(await engine.ingestion_summary(P, E)),
    }
    series = await report_timeseries(engine, P, E, interval="hour", now=ended.ended_at)
    out["timeseries"] = msgspec.json.encode(
        [[same(p.variants), same(p.comparisons), p.srm_p_value] for p in series.points]
    )
    return out


def retention_at(engine: Engine, clock: list[datetime]) -> Retention:
    return Retention(
        engine.store,
        POLICY,
        3600.0,
        clock=lambda: clock[0],
        compactor=ExperimentCompactor(engine, POLICY),
    )


async def test_reports_are_unchanged_to_the_last_digit_after_compaction(
    engine: Engine, store_dsn: str | None
) -> None:
    ended = await setup(engine)
    assert ended.ended_at is not None
    before = await views(engine, ended)
    assert b'"exposed":0' not in before["report"]
    clock = [ended.ended_at + timedelta(days=30)]
    retention = retention_at(engine, clock)

    # Not due yet: nothing marked, nothing compacted, events still taken.
    first = await retention.run()
    assert first.experiments_marked == first.experiments_compacted == []
    stats = await retention.stats(0.0)
    (raw,) = [k for k in stats.kinds if k.kind == "raw_events"]
    assert raw.retention_days == 31
    assert raw.next_expiry_rows == 0
    assert raw.rows > 0
    assert raw.oldest is not None

    # Due: marked first; from then on its events are refused, on every process.
    clock[0] = ended.ended_at + timedelta(days=31, minutes=1)
    stats = await retention.stats(10_000.0)
    (raw,) = [k for k in stats.kinds if k.kind == "raw_events"]
    assert raw.next_expiry_rows == (raw.rows if store_dsn is not None else 0)
    marked = await retention.run()
    assert marked.experiments_marked == [E]
    assert marked.experiments_compacted == []
    got = await engine.service.get_object(SYSTEM_KEY, Experiment, P, E)
    assert got.compacted_at == clock[0]
    late = await engine.record_events(
        P, [Exposure(experiment=E, subject="u1", variant="control", timestamp=NOW)]
    )
    assert [r.code for r in late.rejected] == ["experiment_compacted"]
    assert await views(engine, ended) == before

    # One settling time later its raw events go, once.
    clock[0] += SETTLE
    compacted = await retention.run()
    assert compacted.experiments_compacted == [E]
    if store_dsn is not None:
        assert compacted.raw_events > 600
    again = await retention.run()
    assert again.experiments_compacted == []
    assert again.raw_events == 0
    stats = await retention.stats(20_000.0)
    (raw,) = [k for k in stats.kinds if k.kind == "raw_events"]
    assert raw.next_expiry_rows == 0
    if store_dsn is not None:
        assert raw.rows == 0
        assert raw.oldest is None

    after = await views(engine, ended)
    for view, want in before.items():
        assert after[view] == want, view


@pytest.fixture
async def pg_engine(pg_dsn: str) -> AsyncIterator[Engine]:
    config = EngineConfig(database_url=pg_dsn, pool_size=4)
    async with assay.open_engine(config, load_entry_points=False) as engine:
        yield engine


async def test_what_the_kept_data_cannot_answer_is_refused(pg_engine: Engine) -> None:
    """PostgreSQL only: the memory store keeps its raw events (see the module docstring)."""
    engine = pg_engine
    ended = await setup(engine)
    assert ended.ended_at is not None
    quiet = BASE - timedelta(hours=5, minutes=17)
    from_quiet = same(await engine.report(P, E, start=quiet))
    clock = [ended.ended_at + timedelta(days=32)]
    retention = retention_at(engine, clock)
    await retention.run()
    clock[0] += SETTLE
    assert (await retention.run()).experiments_compacted == [E]

    # A period edge inside an hour with first exposures, other than the start or end.
    inside = BASE + timedelta(hours=30, minutes=17)
    with pytest.raises(Conflict) as caught:
        await engine.report(P, E, start=inside)
    assert caught.value.code == "report_compacted"
    # Inside an hour nobody was first exposed in, an edge is exact (nothing there).
    assert same(await engine.report(P, E, start=quiet)) == from_quiet

    # A metric whose attribution changes cannot be rebuilt without its raw events.
    await engine.service.update_object(
        SYSTEM_KEY, Metric, P, "orders", {"attribution_window_hours": 48}
    )
    with pytest.raises(Conflict) as caught:
        await engine.report(P, E)
    assert caught.value.code == "report_compacted"
    assert "orders" in str(caught.value)


async def test_two_compactions_at_once_remove_the_rows_once(pg_engine: Engine) -> None:
    """The leader alone compacts (``Retention.run`` is the leader's, as
    tests/adapters/test_retention_postgres.py checks); a run by hand beside it must still
    not compact twice: the second finds the first's record under the same lock."""
    engine = pg_engine
    ended = await setup(engine)
    assert ended.ended_at is not None
    before = same(await engine.report(P, E))
    marked = await engine.service.mark_compacted(ended, ended.ended_at + timedelta(days=32))
    assert marked is not None
    request, _, _ = await engine.store_request(marked)
    compaction = Compaction(
        experiment_id=marked.id,
        request=request,
        windows={m.key: m.attribution_window_hours for m in engine.metrics_of(marked.project_id)},
        cuts=[ended.ended_at],
        now=ended.ended_at + timedelta(days=33),
    )
    results: list[int | None] = []

    async def compact() -> None:
        results.append(await engine.store.compact_experiment(compaction))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(compact)
        nursery.start_soon(compact)
    assert results.count(None) == 1
    assert max(r or 0 for r in results) > 600
    assert same(await engine.report(P, E)) == before
