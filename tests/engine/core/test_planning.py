"""The sample-size calculator against a textbook formula and statsmodels' power functions
(to 1%), its sequential size against the exact power of the design, and bad plans."""

from __future__ import annotations

import math

import pytest
from scipy import stats as sps
from statsmodels.stats.power import NormalIndPower, TTestIndPower
from statsmodels.stats.proportion import proportion_effectsize

from assay.engine._core._planning import PlanInput, plan_sample_size
from assay.engine._core._stats_group_sequential import (
    DESIGN_LOOKS,
    crossing_probability,
    planned_boundaries,
)
from assay.engine._errors import ValidationFailed

RATES = [(0.1, 0.05), (0.02, 0.1), (0.3, 0.02), (0.5, 0.01), (0.05, 0.2)]
MEANS = [(10.0, 25.0, 0.03), (100.0, 900.0, 0.01), (2.5, 4.0, 0.1)]


def fleiss(p1: float, p2: float, alpha: float, power: float) -> float:
    """Fleiss, Levin and Paik (2003), *Statistical Methods for Rates and Proportions*,
    eq. 4.14 without the continuity correction: pooled variance under H0."""
    za, zb = sps.norm.isf(alpha / 2), sps.norm.ppf(power)
    pbar = (p1 + p2) / 2
    top = za * math.sqrt(2 * pbar * (1 - pbar)) + zb * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))
    return top**2 / (p2 - p1) ** 2


@pytest.mark.parametrize(("rate", "mde"), RATES)
@pytest.mark.parametrize(("alpha", "power"), [(0.05, 0.8), (0.01, 0.9), (0.1, 0.5)])
def test_rates_agree_with_a_textbook_formula_and_statsmodels(
    rate: float, mde: float, alpha: float, power: float
) -> None:
    plan = plan_sample_size(PlanInput(baseline_rate=rate, mde=mde, alpha=alpha, power=power))
    n = plan.fixed_subjects_per_variant
    treated = rate * (1 + mde)
    assert plan.treatment_mean == pytest.approx(treated)
    assert n == pytest.approx(fleiss(rate, treated, alpha, power), rel=0.01)
    # statsmodels' z-test power with the same (unpooled) standardised effect...
    pooled_sd = math.sqrt((rate * (1 - rate) + treated * (1 - treated)) / 2)
    sm = NormalIndPower().solve_power(
        effect_size=(treated - rate) / pooled_sd, alpha=alpha, power=power, ratio=1.0
    )
    assert n == pytest.approx(sm, rel=0.01)
    # ... and with Cohen's arcsine effect size for proportions.
    h = proportion_effectsize(treated, rate)
    sm_h = NormalIndPower().solve_power(effect_size=h, alpha=alpha, power=power, ratio=1.0)
    assert n == pytest.approx(sm_h, rel=0.01)


@pytest.mark.parametrize(("mean", "variance", "mde"), MEANS)
def test_means_agree_with_statsmodels_t_test_power(
    mean: float, variance: float, mde: float
) -> None:
    plan = plan_sample_size(PlanInput(baseline_mean=mean, baseline_variance=variance, mde=mde))
    d = mde * mean / math.sqrt(variance)
    sm = TTestIndPower().solve_power(effect_size=d, alpha=0.05, power=0.8, ratio=1.0)
    assert plan.fixed_subjects_per_variant == pytest.approx(sm, rel=0.01)
    absolute = plan_sample_size(
        PlanInput(
            baseline_mean=mean, baseline_variance=variance, mde=mde * mean, mde_type="absolute"
        )
    )
    assert absolute.fixed_subjects_per_variant == plan.fixed_subjects_per_variant


def test_variants_split_alpha_and_traffic_gives_days() -> None:
    two = plan_sample_size(PlanInput(baseline_rate=0.1, mde=0.05, daily_traffic=10_000))
    four = plan_sample_size(
        PlanInput(baseline_rate=0.1, mde=0.05, variants=4, daily_traffic=10_000)
    )
    assert four.alpha_per_comparison == pytest.approx(0.05 / 3)
    sm = NormalIndPower().solve_power(
        effect_size=0.005 / math.sqrt((0.09 + 0.105 * 0.895) / 2), alpha=0.05 / 3, power=0.8
    )
    assert four.fixed_subjects_per_variant == pytest.approx(sm, rel=0.01)
    assert four.fixed_subjects == 4 * four.fixed_subjects_per_variant
    assert two.fixed_days == pytest.approx(two.fixed_subjects / 10_000)
    assert four.sequential_days == pytest.approx(four.sequential_subjects / 10_000)
    assert plan_sample_size(PlanInput(baseline_rate=0.1, mde=0.05)).fixed_days is None


@pytest.mark.parametrize("power", [0.8, 0.9])
def test_the_sequential_size_reaches_the_power_of_the_design(power: float) -> None:
    plan = plan_sample_size(PlanInput(baseline_rate=0.1, mde=0.05, power=power))
    fractions = [(k + 1) / DESIGN_LOOKS for k in range(DESIGN_LOOKS)]
    bounds = planned_boundaries(fractions, 0.05)
    # E[Z] at the planned size grows with sqrt(n): the fixed size gives z_a + z_b.
    z = sps.norm.isf(0.025) + sps.norm.ppf(power)
    at_fixed = crossing_probability(fractions, bounds, z)
    at_sequential = crossing_probability(
        fractions, bounds, z * math.sqrt(plan.sequential_inflation)
    )
    assert at_fixed < power
    assert at_sequential == pytest.approx(power, abs=1e-6)
    assert plan.sequential_subjects_per_variant > plan.fixed_subjects_per_variant


@pytest.mark.parametrize(
    ("fields", "code", "field"),
    [
        ({"baseline_rate": 0.1, "mde": 0.0}, "invalid_plan", "mde"),
        ({"baseline_rate": 0.1, "mde": -0.1}, "invalid_plan", "mde"),
        ({"baseline_rate": 0.1, "mde": 0.05, "power": 1.0}, "invalid_plan", "power"),
        ({"baseline_rate": 0.1, "mde": 0.05, "power": 0.0}, "invalid_plan", "power"),
        ({"baseline_rate": 0.1, "mde": 0.05, "alpha": 1.5}, "invalid_plan", "alpha"),
        (
            {"baseline_rate": 0.1, "mde": 0.05, "daily_traffic": 0.0},
            "invalid_plan",
            "daily_traffic",
        ),
        ({"baseline_rate": 0.9, "mde": 0.2}, "invalid_plan", "mde"),
        ({"baseline_rate": 0.1, "mde": math.inf}, "invalid_plan", "mde"),
        ({"mde": 0.05}, "invalid_plan", "baseline_rate"),
        (
            {"baseline_rate": 0.1, "baseline_mean": 1.0, "mde": 0.05},
            "invalid_plan",
            "baseline_rate",
        ),
        ({"baseline_rate": 0.0, "mde": 0.05}, "zero_variance_baseline", "baseline_rate"),
        ({"baseline_rate": 1.0, "mde": 0.05}, "zero_variance_baseline", "baseline_rate"),
        (
            {"baseline_mean": 3.0, "baseline_variance": 0.0, "mde": 0.05},
            "zero_variance_baseline",
            "baseline_variance",
        ),
        ({"baseline_mean": 0.0, "baseline_variance": 1.0, "mde": 0.05}, "invalid_plan", "mde_type"),
    ],
)
def test_plans_that_cannot_be_met_are_refused_with_a_code(
    fields: dict[str, float], code: str, field: str
) -> None:
    with pytest.raises(ValidationFailed) as caught:
        plan_sample_size(PlanInput(**fields))  # type: ignore[arg-type]
    assert caught.value.code == code
    assert caught.value.details == {"field": field}
