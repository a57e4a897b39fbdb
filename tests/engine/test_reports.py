"""Reports through a running engine, on both stores: every metric kind against numbers
worked out independently from the raw events with numpy, attribution-window edges,
crossovers, period filtering, CUPED, the correction choice and save-time kind checks.

On PostgreSQL the first report builds the rollups from the event tables and the events sent
after it are rolled up incrementally by the triggers; both must give the numpy numbers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
import trio

import assay
from assay.adapters.embedded import EmbeddedPostgres
from assay.engine import (
    SYSTEM_KEY,
    Engine,
    Metric,
    MetricSpec,
    ProjectSpec,
    ValidationFailed,
)
from assay.engine._core._stats import (
    CupedStats,
    MeanStats,
    MetricStats,
    ProportionStats,
    RatioCupedStats,
    RatioStats,
    adjust_p_values,
    compare,
    quantile_stats,
)
from assay.engine._events import Conversion, Event, Exposure
from assay.engine._reports import Report
from tests.engine.experiment_setup import engine_config, start_experiment

P = "shop"
E = "checkout"
WINDOW = 24
CUPED_DAYS = 2
BASE = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=6)

METRICS = [
    MetricSpec(key="converted", kind="proportion", attribution_window_hours=WINDOW),
    MetricSpec(key="orders", kind="count", attribution_window_hours=WINDOW),
    # Conversions before exposure are stored at once (no pending) and are the covariate.
    MetricSpec(
        key="revenue",
        kind="mean",
        attribution_window_hours=WINDOW,
        cuped_days=CUPED_DAYS,
        requires_exposure=False,
    ),
    MetricSpec(key="per_order", kind="ratio", numerator="revenue", denominator="orders"),
    MetricSpec(key="basket", kind="percentile", percentile=0.75),
]


@pytest.fixture
async def engine(store_dsn: str | None) -> AsyncIterator[Engine]:
    async with assay.open_engine(engine_config(store_dsn), load_entry_points=False) as engine:
        yield engine


async def setup(engine: Engine, metrics: list[MetricSpec] = METRICS) -> None:
    keys = [m.key for m in metrics]
    await start_experiment(
        engine, P, E, metrics, primary_metrics=keys[:2], secondary_metrics=keys[2:]
    )


# --- raw events and the numpy model of what a report must say ---------------------------


@dataclass
class World:
    first: dict[str, tuple[str, datetime]] = field(default_factory=dict)
    crossed: set[str] = field(default_factory=set)
    conversions: list[tuple[str, str, float, datetime]] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)


def simulate(seed: int, subjects: range, world: World) -> list[list[Event]]:
    """Exposures over three days, some crossovers, and conversions of every metric before,
    inside and after the window. Conversions for metrics that require exposure come before
    their exposure in the list half of the time (they wait as pending, then count)."""
    rng = np.random.default_rng(seed)
    groups: list[list[Event]] = []
    for i in subjects:
        subject = f"u{i}"
        variant = "treatment" if rng.random() < 0.5 else "control"
        at = BASE + timedelta(minutes=float(rng.uniform(0, 3 * 24 * 60)))
        exposure = Exposure(experiment=E, subject=subject, variant=variant, timestamp=at)
        conversions: list[Event] = []
        lift = 1.3 if variant == "treatment" else 1.0
        for metric in ("converted", "orders", "revenue", "basket"):
            for _ in range(int(rng.poisson(0.8 * lift))):
                offset = timedelta(hours=float(rng.uniform(-60, 40)))
                value = float(np.round(rng.gamma(2.0, 10.0 * lift), 2))
                when = min(at + offset, BASE + timedelta(days=5, hours=23))
                conversions.append(
                    Conversion(
                        experiment=E, metric=metric, subject=subject, value=value, timestamp=when
                    )
                )
                world.conversions.append((metric, subject, value, when))
        group = [*conversions, exposure] if rng.random() < 0.5 else [exposure, *conversions]
        groups.append(group)
        world.first[subject] = (variant, at)
        if rng.random() < 0.03:
            other = "control" if variant == "treatment" else "treatment"
            group.append(
                Exposure(
                    experiment=E, subject=subject, variant=other, timestamp=at + timedelta(hours=1)
                )
            )
            world.crossed.add(subject)
    return groups


def window_class(at: datetime, exposed_at: datetime, window: int | None, pre: int | None) -> int:
    if at >= exposed_at:
        return 1 if window is None or at <= exposed_at + timedelta(hours=window) else 0
    if pre is not None and at >= exposed_at - timedelta(hours=pre):
        return 2
    return 0


def expected_values(
    world: World,
    metric: MetricSpec,
    variant: str,
    start: datetime | None = None,
    end: datetime | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per analysed subject of ``variant``: post count, post sum, pre count, pre sum."""
    subjects = sorted(
        s
        for s, (v, at) in world.first.items()
        if v == variant
        and s not in world.crossed
        and (start is None or at >= start)
        and (end is None or at < end)
    )
    index = {s: i for i, s in enumerate(subjects)}
    out = np.zeros((4, len(subjects)))
    pre = None if metric.cuped_days is None else metric.cuped_days * 24
    for key, subject, value, when in world.conversions:
        if key != metric.key or subject not in index:
            continue
        where = window_class(when, world.first[subject][1], metric.attribution_window_hours, pre)
        if where == 0:
            continue
        row = 0 if where == 1 else 2
        out[row, index[subject]] += 1
        out[row + 1, index[subject]] += value
    return out[0], out[1], out[2], out[3]


def expected_stats(world: World, metric: MetricSpec, variant: str, **period: Any) -> MetricStats:
    by_key = {m.key: m for m in METRICS}
    post_count, post_sum, _, pre_sum = expected_values(world, metric, variant, **period)
    n = post_count.size
    match metric.kind:
        case "proportion":
            return ProportionStats(n=n, sum=float((post_count > 0).sum()))
        case "count":
            return MeanStats(n=n, sum=post_count.sum(), sum_squares=(post_count**2).sum())
        case "mean":
            post = MeanStats(n=n, sum=post_sum.sum(), sum_squares=(post_sum**2).sum())
            pre = MeanStats(n=n, sum=pre_sum.sum(), sum_squares=(pre_sum**2).sum())
            return CupedStats(post=post, pre=pre, sum_post_pre=float((post_sum * pre_sum).sum()))
        case "ratio":
            assert metric.numerator is not None
            assert metric.denominator is not None
            x = expected_values(world, by_key[metric.numerator], variant, **period)[1]
            y = expected_values(world, by_key[metric.denominator], variant, **period)[1]
            return RatioStats(
                numerator=MeanStats(n=n, sum=x.sum(), sum_squares=(x * x).sum()),
                denominator=MeanStats(n=n, sum=y.sum(), sum_squares=(y * y).sum()),
                sum_xy=float((x * y).sum()),
            )
        case "percentile":
            assert metric.percentile is not None
            return quantile_stats(post_sum[post_count > 0], metric.percentile)
    raise AssertionError(metric.kind)


def check(report: Report, world: World, **period: Any) -> None:
    by_key = {m.key: m for m in report.metrics}
    for metric in METRICS:
        got = by_key[metric.key]
        assert got.error is None, got
        control = expected_stats(world, metric, "control", **period)
        treatment = expected_stats(world, metric, "treatment", **period)
        for value, stats in zip(got.values, (control, treatment), strict=True):
            assert value.n == stats.n, metric.key
            mean = stats.post.mean if isinstance(stats, CupedStats) else stats.mean
            assert value.value == pytest.approx(mean, rel=1e-9, abs=1e-12), metric.key
        want = compare(control, treatment, inverse=not metric.higher_is_better)
        result = got.comparisons[0].result
        assert result.cuped == want.cuped, metric.key
        for scale in ("absolute", "relative"):
            a, b = getattr(result, scale), getattr(want, scale)
            assert a.error == b.error
            for attribute in ("estimate", "std_error", "p_value"):
                assert getattr(a.fixed, attribute) == pytest.approx(
                    getattr(b.fixed, attribute), rel=1e-6, abs=1e-12
                ), (metric.key, scale, attribute)
            assert a.bayesian.chance_to_win == pytest.approx(b.bayesian.chance_to_win, abs=1e-9)
            assert a.sequential.ci_low == pytest.approx(b.sequential.ci_low, rel=1e-6, abs=1e-12)
    variants = {v.key: v for v in report.variants}
    for key in ("control", "treatment"):
        selected = [
            s
            for s, (v, at) in world.first.items()
            if v == key
            and (period.get("start") is None or at >= period["start"])
            and (period.get("end") is None or at < period["end"])
        ]
        assert variants[key].exposed == len(selected)
        assert variants[key].crossovers == len([s for s in selected if s in world.crossed])
        assert variants[key].subjects == variants[key].exposed - variants[key].crossovers


async def send(engine: Engine, events: list[list[Event]], *, senders: int = 1) -> None:
    """Groups of events (one subject's each) in batches of up to 500, from ``senders``
    concurrent tasks. A subject's events are never split between batches, so the outcome
    does not depend on the order batches land in."""
    batches: list[list[Event]] = [[]]
    for group in events:
        if len(batches[-1]) + len(group) > 500:
            batches.append([])
        batches[-1].extend(group)

    async def sender(mine: list[list[Event]]) -> None:
        for batch in mine:
            result = await engine.record_events(P, batch)
            assert not result.rejected, result.rejected[:3]

    async with trio.open_nursery() as nursery:
        for k in range(senders):
            nursery.start_soon(sender, batches[k::senders])


async def test_every_kind_matches_numpy_before_and_after_incremental_rollup(
    engine: Engine,
) -> None:
    await setup(engine)
    world = World()
    await send(engine, simulate(1, range(0, 700), world))
    check(await engine.report(P, E), world)  # PostgreSQL: rollups built from the tables
    await send(engine, simulate(2, range(700, 1400), world), senders=4)
    report = await engine.report(P, E)  # PostgreSQL: maintained by the triggers
    check(report, world)
    assert report.crossovers == len(world.crossed) > 0
    revenue = next(m for m in report.metrics if m.key == "revenue")
    assert revenue.cuped
    assert revenue.comparisons[0].result.cuped
    # Mid-hour boundaries: whole hours come from the rollups, the edges row by row.
    start = BASE + timedelta(hours=7, minutes=13, seconds=7)
    end = BASE + timedelta(days=2, hours=1, minutes=48)
    period = await engine.report(P, E, start=start, end=end)
    check(period, world, start=start, end=end)
    assert period.variants[0].exposed < report.variants[0].exposed
    # A period inside one hour is read row by row only.
    inside = await engine.report(
        P,
        E,
        start=BASE + timedelta(hours=30, minutes=5),
        end=BASE + timedelta(hours=30, minutes=55),
    )
    check(
        inside,
        world,
        start=BASE + timedelta(hours=30, minutes=5),
        end=BASE + timedelta(hours=30, minutes=55),
    )


async def test_attribution_window_edges_and_crossovers(engine: Engine) -> None:
    await setup(engine, [MetricSpec(key="orders", kind="count", attribution_window_hours=2)])
    await engine.report(P, E)  # rollups exist first: everything below is incremental
    t0 = BASE + timedelta(days=1, minutes=30)
    window = timedelta(hours=2)
    tiny = timedelta(microseconds=1)
    events: list[Event] = [
        Exposure(experiment=E, subject="a", variant="control", timestamp=t0),
        Exposure(experiment=E, subject="b", variant="treatment", timestamp=t0),
        Exposure(experiment=E, subject="x", variant="treatment", timestamp=t0),
        Exposure(experiment=E, subject="x", variant="control", timestamp=t0 + tiny),
    ]
    for subject in ("a", "b", "x"):
        for when in (t0 - tiny, t0, t0 + window, t0 + window + tiny):
            events.append(
                Conversion(experiment=E, metric="orders", subject=subject, timestamp=when)
            )
    await send(engine, [events])
    report = await engine.report(P, E)
    values = {v.variant: v for v in report.metrics[0].values}
    # At the exposure and at its window's end count; a microsecond outside does not. The
    # one before the exposure waited as pending and was attributed outside the window.
    assert values["control"].n == 1
    assert values["control"].value == 2.0
    assert values["treatment"].n == 1
    assert values["treatment"].value == 2.0
    assert report.crossovers == 1
    assert [(v.exposed, v.crossovers, v.subjects) for v in report.variants] == [
        (1, 0, 1),
        (2, 1, 1),
    ]


async def test_a_later_crossover_takes_its_subject_out_of_a_maintained_rollup(
    engine: Engine,
) -> None:
    """A subject whose conversions were rolled up in an earlier transaction, and who then
    crosses over, leaves the rollup: its sums are taken out, not only its exposure. (A
    crossover in the same batch as the conversions is kept out from the start.)"""
    await setup(engine, [MetricSpec(key="orders", kind="count")])
    await engine.report(P, E)  # rollups exist first: everything below is incremental
    t0 = BASE + timedelta(days=1)
    first: list[Event] = [
        Exposure(experiment=E, subject="x", variant="control", timestamp=t0),
        Exposure(experiment=E, subject="y", variant="control", timestamp=t0),
        Conversion(experiment=E, metric="orders", subject="y", timestamp=t0),
    ]
    first += [
        Conversion(experiment=E, metric="orders", subject="x", timestamp=t0) for _ in range(3)
    ]
    await send(engine, [first])
    before = (await engine.report(P, E)).metrics[0].values
    assert [(v.variant, v.n, v.value) for v in before] == [
        ("control", 2, 2.0),
        ("treatment", 0, 0.0),
    ]
    crossing = Exposure(
        experiment=E, subject="x", variant="treatment", timestamp=t0 + timedelta(hours=1)
    )
    await send(engine, [[crossing]])
    report = await engine.report(P, E)
    assert report.crossovers == 1
    # Only y is left: one subject, one order.
    assert [(v.variant, v.n, v.value) for v in report.metrics[0].values] == [
        ("control", 1, 1.0),
        ("treatment", 0, 0.0),
    ]


async def test_correction_choice(engine: Engine) -> None:
    await setup(engine)
    world = World()
    await send(engine, simulate(3, range(0, 400), world))
    reports = {
        c: await engine.report(P, E, correction=c) for c in ("holm", "benjamini-hochberg", "none")
    }
    default = await engine.report(P, E)
    assert default.correction == "holm"  # the experiment's own

    def p_values(report: Report, role: str, adjusted: bool) -> list[float | None]:
        return [
            c.result.relative.fixed.adjusted_p_value
            if adjusted
            else c.result.relative.fixed.p_value
            for m in report.metrics
            if m.role == role
            for c in m.comparisons
            if c.result.relative.error is None
        ]

    primary = p_values(reports["none"], "primary", adjusted=False)
    secondary = p_values(reports["none"], "secondary", adjusted=False)
    assert (len(primary), len(secondary)) == (2, len(METRICS) - 2)
    for method, report in reports.items():
        # The requested correction adjusts the primary family; secondary metrics are
        # always their own Benjamini-Hochberg family, labelled exploratory.
        assert report.families == {
            "primary": method,
            "secondary": "benjamini-hochberg",
            "guardrail": "none",
        }
        assert p_values(report, "primary", adjusted=True) == pytest.approx(
            adjust_p_values(primary, method)  # type: ignore[arg-type]
        )
        assert p_values(report, "secondary", adjusted=True) == pytest.approx(
            adjust_p_values(secondary, "benjamini-hochberg")  # type: ignore[arg-type]
        )
        for m in report.metrics:
            for c in m.comparisons:
                assert c.family == m.role
                assert c.exploratory == (m.role == "secondary")
                assert c.correction == report.families[m.role]
    with pytest.raises(ValidationFailed) as caught:
        await engine.report(P, E, correction="bonferroni")
    assert caught.value.code == "invalid_correction"
    with pytest.raises(ValidationFailed) as caught:
        await engine.report(P, E, start=BASE, end=BASE)
    assert caught.value.code == "invalid_period"


async def test_metric_kinds_are_checked_when_saved(engine: Engine) -> None:
    await engine.service.create_project(SYSTEM_KEY, ProjectSpec(key=P))
    for spec, code in (
        (MetricSpec(key="m1", kind="median"), "unknown_metric_kind"),
        (MetricSpec(key="m2", kind="percentile"), "missing_field"),
        (
            MetricSpec(key="m3", kind="percentile", percentile=0.5, cuped_days=7),
            "cuped_unsupported",
        ),
    ):
        with pytest.raises(ValidationFailed) as caught:
            await engine.service.create_object(SYSTEM_KEY, Metric, P, spec)
        assert caught.value.code == code


async def test_changing_a_window_changes_the_report(engine: Engine) -> None:
    await setup(engine, [MetricSpec(key="orders", kind="count", attribution_window_hours=1)])
    t0 = BASE + timedelta(days=1)
    await send(
        engine,
        [
            [
                Exposure(experiment=E, subject="a", variant="control", timestamp=t0),
                Conversion(
                    experiment=E, metric="orders", subject="a", timestamp=t0 + timedelta(hours=3)
                ),
            ]
        ],
    )
    before = await engine.report(P, E)
    assert before.metrics[0].values[0].value == 0.0
    await engine.service.update_object(
        SYSTEM_KEY, Metric, P, "orders", {"attribution_window_hours": 5}
    )
    after = await engine.report(P, E)
    assert after.metrics[0].values[0].value == 1.0


async def test_ingestion_with_a_rollup_probes_the_event_tables_instead_of_reading_them(
    pg_dsn: str, embedded_pg: EmbeddedPostgres
) -> None:
    """Once a report has built an experiment's rollups, every ingestion batch runs the
    rollup triggers. They must probe assay_exposures for the batch's subjects, not read it
    whole: the ingestion transaction's own planner settings (nested loops off) once
    reached the triggers and made each batch cost as much as the table (migration 0007).
    Counted in rows PostgreSQL read, in the inserting transaction itself, so the test
    depends neither on the machine's speed nor on when statistics are flushed."""
    from urllib.parse import urlsplit

    from assay.adapters.postgres._events import _BATCH_JOINS
    from assay.engine._events import Conversion, Exposure

    now = datetime.now(UTC) - timedelta(minutes=5)
    async with assay.open_engine(engine_config(pg_dsn), load_entry_points=False) as engine:
        await setup(engine, [MetricSpec(key="orders", kind="count")])
        exposures: list[Event] = [
            Exposure(experiment=E, subject=f"s{i}", variant="control", timestamp=now)
            for i in range(6_000)
        ]
        for start in range(0, len(exposures), 2_000):
            await engine.record_events(P, exposures[start : start + 2_000])
        await engine.report(P, E)  # builds the rollup the triggers then maintain
        conversions: list[Event] = [
            Conversion(experiment=E, metric="orders", subject=f"s{i}", timestamp=now)
            for i in range(100)
        ]
        assert (await engine.record_events(P, conversions)).recorded == 100
        report = await engine.report(P, E)
    # The triggers kept the rollup up to date: the report counts the 100 orders.
    (orders,) = [m for m in report.metrics if m.key == "orders"]
    assert sum(v.value * v.n for v in orders.values) == pytest.approx(100)

    # A bigger table, its statistics left as they were (as on any busy experiment: the
    # planner must not need fresh ones to probe), then 100 more conversions under the
    # ingestion transaction's settings, rolled back.
    database = urlsplit(pg_dsn).path.lstrip("/")
    embedded_pg.psql(
        """
        INSERT INTO assay_exposures (experiment_id, subject, variant, exposed_at)
        SELECT r.experiment_id, 'more-' || g, 'treatment', now() - interval '1 hour'
        FROM assay_report_rollups r, generate_series(1, 200000) g;
        """,
        database=database,
    )
    read = embedded_pg.psql(
        f"""
        BEGIN;
        {_BATCH_JOINS};
        INSERT INTO assay_conversions
            (experiment_id, metric_key, subject, value, converted_at, idempotency_key)
        SELECT r.experiment_id, 'orders', 's' || g, 1, now() - interval '1 minute', NULL
        FROM assay_report_rollups r, generate_series(100, 199) g;
        -- Rows and index entries read, from the table and every index on it.
        SELECT sum(pg_stat_get_xact_tuples_returned(oid)) FROM pg_class
        WHERE oid = 'assay_exposures'::regclass
           OR oid IN (SELECT indexrelid FROM pg_index
                      WHERE indrelid = 'assay_exposures'::regclass);
        ROLLBACK;
        """,
        database=database,
    )
    # A few probes per conversion, not the 206,000 rows.
    assert 0 < int(read.split()[-1]) < 20_000, read


def test_the_crossover_trigger_does_nothing_for_a_statement_that_adds_no_crossover(
    pg_dsn: str, embedded_pg: EmbeddedPostgres
) -> None:
    """Every ingestion transaction runs one INSERT into assay_crossovers, which almost
    always inserts nothing, and its statement-level trigger fires all the same. It must
    return before touching its temporary table: creating and truncating that table cost
    about 1 ms of PostgreSQL CPU per transaction (migration 0008). Whether the table
    exists in the session shows whether the trigger got that far."""
    from urllib.parse import urlsplit

    database = urlsplit(pg_dsn).path.lstrip("/")
    exists = "SELECT to_regclass('pg_temp.assay_report_crossed') IS NOT NULL"
    read = embedded_pg.psql(
        f"""
        BEGIN;
        INSERT INTO assay_crossovers SELECT * FROM assay_crossovers WHERE false;
        {exists};
        INSERT INTO assay_crossovers (experiment_id, subject, variant, seen_at)
        VALUES ('exp_none', 's1', 'treatment', now());
        {exists};
        ROLLBACK;
        """,
        database=database,
    )
    # Idle for the empty statement; at work (the table made) once a crossover is added.
    assert read.split() == ["f", "t"], read


async def test_a_ratio_with_cuped_days_is_regression_adjusted(engine: Engine) -> None:
    """Revenue per session, both parts with the same CUPED window: the report's comparison
    is ``compare`` of the ``RatioCupedStats`` computed here from the events themselves."""
    metrics = [
        MetricSpec(key="revenue", kind="mean", cuped_days=3, requires_exposure=False),
        MetricSpec(key="sessions", kind="count", cuped_days=3, requires_exposure=False),
        MetricSpec(
            key="per_session", kind="ratio", numerator="revenue", denominator="sessions",
            cuped_days=3,
        ),
    ]  # fmt: skip
    await start_experiment(engine, P, E, metrics, primary_metrics=["per_session"])
    rng = np.random.default_rng(15)
    t0 = BASE + timedelta(days=3)
    units: dict[str, list[list[float]]] = {"control": [], "treatment": []}
    groups: list[list[Event]] = []
    for i in range(300):
        variant = "treatment" if i % 2 else "control"
        subject = f"r{i}"
        activity = float(rng.gamma(2.0, 1.5))
        row = [0.0, 0.0, 0.0, 0.0]  # x (revenue after), y (sessions after), u, v (before)
        events: list[Event] = [
            Exposure(experiment=E, subject=subject, variant=variant, timestamp=t0)
        ]
        for before in (True, False):
            for _ in range(int(rng.poisson(activity)) + 1):
                hours = float(rng.uniform(-60, -1) if before else rng.uniform(1, 60))
                at = t0 + timedelta(hours=hours)
                value = float(np.round(rng.gamma(3.0, 2.0), 2))
                events += [
                    Conversion(experiment=E, metric="sessions", subject=subject, timestamp=at),
                    Conversion(
                        experiment=E, metric="revenue", subject=subject, value=value, timestamp=at
                    ),
                ]
                row[3 if before else 1] += 1
                row[2 if before else 0] += value
        units[variant].append(row)
        groups.append(events)
    await send(engine, groups)

    def stats(rows: list[list[float]]) -> RatioCupedStats:
        x, y, u, v = np.array(rows).T

        def mean(a: Any) -> MeanStats:
            return MeanStats(n=a.size, sum=float(a.sum()), sum_squares=float(a @ a))

        return RatioCupedStats(
            post=RatioStats(numerator=mean(x), denominator=mean(y), sum_xy=float(x @ y)),
            pre=RatioStats(numerator=mean(u), denominator=mean(v), sum_xy=float(u @ v)),
            sum_xu=float(x @ u), sum_xv=float(x @ v), sum_yu=float(y @ u), sum_yv=float(y @ v),
        )  # fmt: skip

    expected = compare(stats(units["control"]), stats(units["treatment"]))
    report = await engine.report(P, E)
    got = report.metrics[0].comparisons[0].result
    assert got.cuped
    assert got.cuped_theta == pytest.approx(expected.cuped_theta, rel=1e-9)
    for scale in ("absolute", "relative"):
        assert getattr(got, scale).fixed.estimate == pytest.approx(
            getattr(expected, scale).fixed.estimate, rel=1e-9
        )
        assert getattr(got, scale).fixed.std_error == pytest.approx(
            getattr(expected, scale).fixed.std_error, rel=1e-9
        )

    with pytest.raises(ValidationFailed) as caught:
        await engine.service.create_object(
            SYSTEM_KEY,
            Metric,
            P,
            MetricSpec(
                key="bad_ratio", kind="ratio", numerator="revenue", denominator="sessions",
                cuped_days=7,
            ),
        )  # fmt: skip
    assert caught.value.code == "cuped_unsupported"
