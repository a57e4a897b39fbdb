"""The planned verdict through a whole engine, on both stores: looks are taken as data
arrives (not on every read), stored, and their decisions shown; a period report and an
experiment without a plan say which test they use instead; bad plans are refused."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import msgspec
import pytest

import assay
from assay.engine import (
    SYSTEM_KEY,
    Engine,
    Experiment,
    ExperimentSpec,
    Metric,
    MetricSpec,
    ProjectSpec,
    ValidationFailed,
    Variant,
)
from assay.engine._core._planning import PlanInput, plan_sample_size
from assay.engine._events import Conversion, Event, Exposure
from assay.engine._model import ExperimentPlan, Guardrail
from assay.engine._reports import MetricComparison, Report
from tests.engine.experiment_setup import engine_config, start_experiment

P, E = "shop", "planned"


@pytest.fixture
async def engine(store_dsn: str | None) -> AsyncIterator[Engine]:
    async with assay.open_engine(engine_config(store_dsn), load_entry_points=False) as engine:
        yield engine


async def setup(engine: Engine, plan: ExperimentPlan | None) -> None:
    await start_experiment(
        engine,
        P,
        E,
        [MetricSpec(key=key) for key in ("converted", "clicks", "errors")],
        primary_metrics=["converted"],
        secondary_metrics=["clicks"],
        guardrail_metrics=["errors"],
        guardrails=[Guardrail(metric="errors", harmful_direction="increase", min_sample=50)],
        plan=plan,
    )


async def arrive(engine: Engine, first: int, last: int, control: float, treatment: float) -> None:
    """Subjects ``first..last-1`` in each arm; the first ``rate`` share of every 10 convert."""
    events: list[Event] = []
    for i in range(first, last):
        for arm, rate in (("control", control), ("treatment", treatment)):
            subject = f"{arm}-{i}"
            events.append(Exposure(experiment=E, subject=subject, variant=arm))
            if i % 10 < rate * 10:
                events.append(Conversion(experiment=E, metric="converted", subject=subject))
                events.append(Conversion(experiment=E, metric="clicks", subject=subject))
            if i % 10 < 2:
                events.append(Conversion(experiment=E, metric="errors", subject=subject))
    result = await engine.record_events(P, events)
    assert not result.rejected, result.rejected[:3]


def primary(report: Report) -> MetricComparison:
    return next(m for m in report.metrics if m.role == "primary").comparisons[0]


async def test_looks_are_taken_as_information_grows_and_decisions_stick(engine: Engine) -> None:
    await setup(engine, ExperimentPlan(subjects_per_variant=1000, mde=0.05))
    # 3% of the plan: too early for a look.
    await arrive(engine, 0, 30, 0.1, 0.6)
    early = await engine.report(P, E)
    assert early.plan is not None
    assert early.plan.looks == 0
    assert early.plan.fraction == pytest.approx(0.03)
    assert primary(early).verdict == "no_detectable_difference"
    assert primary(early).verdict_method == "planned"
    assert "no look taken yet" in primary(early).reason

    # 12%: the first look, and an overwhelming effect decides at once.
    await arrive(engine, 30, 120, 0.1, 0.6)
    first = await engine.report(P, E)
    assert first.plan is not None
    assert (first.plan.looks, first.plan.last_look_fraction) == (1, pytest.approx(0.12))
    assert first.plan.next_look_fraction == pytest.approx(0.17)
    assert first.plan.alpha_per_comparison == pytest.approx(0.05)
    decided = primary(first)
    assert decided.verdict == "better"
    assert decided.planned is not None
    assert decided.planned.decided_at_look == 1
    assert "planned" in first.verdict_basis
    assert "boundaries spend 95% of it" in first.verdict_basis

    # Reading again takes no look; new data that erases the effect cannot undo it.
    again = await engine.report(P, E)
    assert again.plan is not None
    assert again.plan.looks == 1
    await arrive(engine, 120, 400, 0.35, 0.1)
    later = await engine.report(P, E)
    assert later.plan is not None
    assert later.plan.looks == 2
    assert primary(later).verdict == "better"
    assert primary(later).planned is not None
    assert primary(later).planned.decided_at_look == 1

    # The other families: secondary metrics exploratory (BH), the guardrail metric judged
    # by its guardrail (errors are equal: it holds).
    by_role = {m.role: m.comparisons[0] for m in later.metrics}
    assert (by_role["secondary"].family, by_role["secondary"].correction) == (
        "secondary",
        "benjamini-hochberg",
    )
    assert by_role["secondary"].exploratory
    assert by_role["secondary"].verdict_method == "always_valid"
    assert by_role["guardrail"].verdict_method == "guardrail"
    assert by_role["guardrail"].verdict == "no_detectable_difference"
    assert "guardrail holds" in by_role["guardrail"].reason

    # A period report does not take looks and says what it uses instead.
    now = datetime.now(UTC)
    period = await engine.report(P, E, start=now - timedelta(days=1), end=now + timedelta(days=1))
    assert period.plan is None
    assert primary(period).verdict_method == "always_valid"
    assert "covers a period" in period.verdict_basis
    assert (await engine.report(P, E)).plan.looks == 2  # type: ignore[union-attr]


async def test_the_final_look_concludes(engine: Engine) -> None:
    await setup(engine, ExperimentPlan(subjects_per_variant=200))
    await arrive(engine, 0, 250, 0.2, 0.2)  # past the plan at the first read: the final look
    report = await engine.report(P, E)
    assert report.plan is not None
    assert report.plan.final
    assert report.plan.next_look_fraction is None
    assert primary(report).verdict == "no_detectable_difference"
    assert "final look" in primary(report).reason
    await arrive(engine, 250, 300, 0.2, 0.9)
    assert (await engine.report(P, E)).plan.looks == 1  # type: ignore[union-attr]


async def test_without_a_plan_the_report_says_it_uses_the_always_valid_test(
    engine: Engine,
) -> None:
    await setup(engine, None)
    await arrive(engine, 0, 100, 0.1, 0.6)
    report = await engine.report(P, E)
    assert report.plan is None
    assert report.verdict_basis.startswith("no plan")
    assert primary(report).verdict_method == "always_valid"


@pytest.mark.parametrize(
    ("plan", "primary_metrics", "code"),
    [
        (ExperimentPlan(subjects_per_variant=1000), [], "no_primary_metric"),
        (ExperimentPlan(subjects_per_variant=1000, mde=0.0), ["converted"], "invalid_plan"),
        (ExperimentPlan(), ["converted"], "invalid_plan"),
        (ExperimentPlan(days=0.0), ["converted"], "invalid_plan"),
        (ExperimentPlan(days=14, power=1.0), ["converted"], "invalid_plan"),
    ],
)
async def test_a_plan_that_cannot_be_judged_is_refused(
    engine: Engine, plan: ExperimentPlan, primary_metrics: list[str], code: str
) -> None:
    await engine.service.create_project(SYSTEM_KEY, ProjectSpec(key=P))
    await engine.service.create_object(SYSTEM_KEY, Metric, P, MetricSpec(key="converted"))
    with pytest.raises(ValidationFailed) as caught:
        await engine.service.create_object(
            SYSTEM_KEY,
            Experiment,
            P,
            ExperimentSpec(
                key=E,
                variants=[Variant(key="a", value=0), Variant(key="b", value=1)],
                primary_metrics=primary_metrics,
                plan=plan,
            ),
        )
    assert caught.value.code == code


async def test_a_plan_estimates_its_baseline_from_a_metrics_recent_data(engine: Engine) -> None:
    await setup(engine, None)
    await arrive(engine, 0, 200, 0.2, 0.2)
    request = PlanInput(
        baseline_metric="converted", baseline_experiment=E, mde=0.1, daily_traffic=1000
    )
    plan = await engine.plan(P, request)
    assert plan.baseline_mean == pytest.approx(0.2)
    assert plan.baseline_variance == pytest.approx(0.16)
    assert plan.fixed_subjects_per_variant == (
        plan_sample_size(PlanInput(baseline_rate=0.2, mde=0.1)).fixed_subjects_per_variant
    )
    assert "converted" in plan.baseline_source
    assert "200 subjects" in plan.baseline_source

    for bad, code in (
        (msgspec.structs.replace(request, baseline_metric="nope"), "no_baseline_data"),
        (msgspec.structs.replace(request, baseline_experiment=None), "invalid_plan"),
        (msgspec.structs.replace(request, baseline_rate=0.1), "invalid_plan"),
        (msgspec.structs.replace(request, baseline_days=1, mde=0.0), "invalid_plan"),
    ):
        with pytest.raises(ValidationFailed) as caught:
            await engine.plan(P, bad)
        assert caught.value.code == code


async def test_no_data_is_no_baseline(engine: Engine) -> None:
    await setup(engine, None)
    with pytest.raises(ValidationFailed) as caught:
        await engine.plan(P, PlanInput(baseline_metric="converted", baseline_experiment=E, mde=0.1))
    assert caught.value.code == "no_baseline_data"


async def test_a_sample_ratio_mismatch_withholds_every_verdict_and_every_look(
    engine: Engine,
) -> None:
    await setup(engine, ExperimentPlan(subjects_per_variant=1000))
    await arrive(engine, 0, 300, 0.1, 0.6)
    extra: list[Event] = [
        Exposure(experiment=E, subject=f"extra-{i}", variant="control") for i in range(200)
    ]
    assert not (await engine.record_events(P, extra)).rejected
    report = await engine.report(P, E)
    assert report.srm.flagged
    assert report.plan is not None
    assert report.plan.looks == 0  # no alpha spent on a broken split
    verdicts = {c.verdict for m in report.metrics for c in m.comparisons}
    assert verdicts == {"not_computable"}
    assert all("sample ratio mismatch" in c.reason for m in report.metrics for c in m.comparisons)
    assert report.verdict_basis.startswith("no verdicts: sample ratio mismatch")
