"""The planned verdict's group-sequential test: boundaries, error rate and power.

Boundaries are checked against published values (gsDesign's ``sfLDOF``, 5 looks); the
error rate and power are checked two ways: exactly (the numerical recursion) and by seeded
simulation of conversion data analysed as a report analyses it, with Monte Carlo standard
errors printed (``pytest -s``). The default run uses 200,000 A/A and 2,000 powered
experiments; ``-m slow`` runs ten times as many.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

import msgspec
import numpy as np
import numpy.typing as npt
import pytest

from assay.engine._core._planning import PlanInput, plan_sample_size
from assay.engine._core._stats_frequentist import (
    absolute_lift,
    lift_variance,
    relative_lift,
    t_test,
    welch_dof,
)
from assay.engine._core._stats_group_sequential import (
    SPENT_SHARE,
    crossing_probability,
    obf_spending,
    planned_boundaries,
    sequential_inflation,
    two_sided_boundaries,
)
from assay.engine._errors import ValidationFailed
from assay.engine._planned_verdict import PlannedLook, look_due, take_look

Floats = npt.NDArray[np.float64]
ALPHA = 0.05
TWENTY = [(k + 1) / 20 for k in range(20)]


def test_boundaries_match_gsdesign_for_five_looks() -> None:
    # gsDesign::gsDesign(k=5, test.type=2, alpha=0.025, sfu=sfLDOF)$upper$bound
    published = [4.8769, 3.3570, 2.6803, 2.2898, 2.0310]
    assert two_sided_boundaries([0.2, 0.4, 0.6, 0.8, 1.0], ALPHA) == pytest.approx(
        published, abs=2e-4
    )


def test_alpha_is_spent_exactly_and_the_spending_function_reaches_alpha() -> None:
    assert float(obf_spending(1.0, ALPHA)) == pytest.approx(ALPHA)
    for fractions in (TWENTY, [0.13, 0.5, 0.71, 1.0], [0.05, 0.1, 1.0], [1.0]):
        bounds = two_sided_boundaries(fractions, ALPHA)
        assert crossing_probability(fractions, bounds, 0.0) == pytest.approx(ALPHA, abs=1e-6)
    # Looks that stop short of the plan spend only what their last fraction allows.
    partial = [0.25, 0.5]
    assert crossing_probability(partial, two_sided_boundaries(partial, ALPHA), 0.0) == (
        pytest.approx(float(obf_spending(0.5, ALPHA)), abs=1e-7)
    )
    # One look at the end is the fixed-horizon test.
    assert two_sided_boundaries([1.0], ALPHA)[0] == pytest.approx(1.959964, abs=1e-5)


def test_bad_looks_are_refused() -> None:
    for fractions in ([], [0.5, 0.4], [0.0, 1.0], [0.5, 1.2]):
        with pytest.raises(ValidationFailed):
            two_sided_boundaries(fractions, ALPHA)


def test_the_design_loses_little_power_at_the_planned_size() -> None:
    """Exactly (no simulation): with 20 looks and the fixed-horizon size, the chance of a
    decision by the planned size is over 90% of the fixed test's 80%; the planned verdict's
    boundaries spend 95% of alpha."""
    bounds = planned_boundaries(TWENTY, ALPHA)
    assert crossing_probability(TWENTY, bounds, 0.0) == pytest.approx(SPENT_SHARE * ALPHA)
    drift = float(1.959964 + 0.841621)  # E[Z(1)] at which a fixed test has 80% power
    power = crossing_probability(TWENTY, bounds, drift)
    print(f"exact power at the fixed-horizon size: {power:.4f} (fixed test 0.8000)")
    assert power >= 0.9 * 0.8
    assert 1.0 < sequential_inflation(ALPHA, 0.8) < 1.1


# --- simulations, analysed as a report analyses them --------------------------------------

CHUNK = 50_000  # experiments simulated at once (bounds memory at ~100 MB)


def planned_and_fixed(
    rng: np.random.Generator,
    experiments: int,
    per_arm: int,
    rate_a: float,
    rate_b: float,
) -> tuple[Floats, Floats, Floats]:
    """For each experiment: did the planned verdict (20 looks, the absolute lift's z against
    ``planned_boundaries``, as ``_reports._z``) decide, did the same looks against
    boundaries spending all of alpha decide (for comparison), and did a fixed-horizon Welch
    test of the relative lift (what a report shows) at the planned size reject?"""
    chunk = per_arm // 20
    n = chunk * np.arange(1, 21, dtype=np.float64)
    planned_bounds = np.array(planned_boundaries(TWENTY, ALPHA))
    full_bounds = np.array(two_sided_boundaries(TWENTY, ALPHA))
    planned, full, fixed = [], [], []
    for start in range(0, experiments, CHUNK):
        size = min(CHUNK, experiments - start)
        with np.errstate(divide="ignore", invalid="ignore"):  # no conversions yet: no z
            pa = rng.binomial(chunk, rate_a, size=(size, 20)).cumsum(axis=1) / n
            pb = rng.binomial(chunk, rate_b, size=(size, 20)).cumsum(axis=1) / n
            va, vb = pa * (1 - pa), pb * (1 - pb)
            z = np.abs(
                absolute_lift(pa, pb) / np.sqrt(lift_variance(va, pa, n, vb, pb, n, relative=False))
            )
            planned.append((z >= planned_bounds).any(axis=1))
            full.append((z >= full_bounds).any(axis=1))
            est = relative_lift(pa[:, -1], pb[:, -1], pa[:, -1])
            var = lift_variance(
                va[:, -1], pa[:, -1], n[-1], vb[:, -1], pb[:, -1], n[-1], relative=True
            )
            dof = welch_dof(va[:, -1], n[-1], vb[:, -1], n[-1])
            fixed.append(t_test(est, var, dof, ALPHA).p_value < ALPHA)
    return tuple(np.concatenate(x).astype(float) for x in (planned, full, fixed))  # type: ignore[return-value]


def _rate(label: str, hits: Floats) -> tuple[float, float]:
    rate = float(hits.mean())
    se = math.sqrt(max(rate * (1 - rate), 1e-12) / hits.size)
    print(f"{label}: {rate:.4%} +- {se:.4%} (Monte Carlo SE, {hits.size} replications)")
    return rate, se


def check_aa(experiments: int, seed: int, per_arm: int = 20_000, base: float = 0.10) -> None:
    rng = np.random.default_rng(seed)
    planned, full, fixed = planned_and_fixed(rng, experiments, per_arm, base, base)
    label = f"A/A, 20 looks, {per_arm} per arm at {base:.0%}: planned verdict false positives"
    rate, se = _rate(label, planned)
    _rate("A/A, 20 looks: boundaries spending all of alpha (comparison)", full)
    _rate("A/A: fixed-horizon Welch at the end (one look)", fixed)
    # The target is the rate at or under alpha: the estimate plus two Monte Carlo standard
    # errors (a one-sided 97.7% upper bound) must be. The boundaries spend 95% of alpha,
    # so the true rate is about 4.6-4.8% (20,000 per arm at 10% down to 1,000 at 1%) and
    # this holds with room in the seeded run.
    print(f"upper bound (estimate + 2 SE): {rate + 2 * se:.4%} (alpha {ALPHA:.2%})")
    assert rate + 2 * se <= ALPHA


def check_power(experiments: int, seed: int) -> None:
    plan = plan_sample_size(PlanInput(baseline_rate=0.10, mde=0.05, power=0.8))
    per_arm = plan.fixed_subjects_per_variant // 20 * 20
    rng = np.random.default_rng(seed)
    planned, full, fixed = planned_and_fixed(rng, experiments, per_arm, 0.10, 0.105)
    p_rate, p_se = _rate(f"planned verdict power at {per_arm} per arm", planned)
    _rate("boundaries spending all of alpha (comparison)", full)
    f_rate, f_se = _rate("fixed-horizon Welch power at the same size", fixed)
    ratio = p_rate / f_rate
    # Paired on the same data, so the ratio's error is below the independent bound.
    ratio_se = ratio * math.sqrt((p_se / p_rate) ** 2 + (f_se / f_rate) ** 2)
    print(f"power ratio: {ratio:.4f} +- {ratio_se:.4f}")
    assert ratio >= 0.9


def test_aa_with_twenty_looks_keeps_alpha() -> None:
    check_aa(200_000, 1205)


def test_aa_at_a_small_planned_size_keeps_alpha() -> None:
    """Few conversions per look (2 expected at the first): the normal approximation is at
    its worst, and a fixed Welch test of the relative lift rejects in about 5.5%."""
    check_aa(200_000, 1207, per_arm=2_000, base=0.02)


def test_power_at_the_planned_size_is_near_fixed_horizon() -> None:
    check_power(2_000, 1206)


@pytest.mark.slow
def test_aa_and_power_large() -> None:
    check_aa(2_000_000, 2205)
    check_aa(1_000_000, 2207, per_arm=2_000, base=0.02)
    check_aa(1_000_000, 2208, per_arm=1_000, base=0.01)
    check_power(20_000, 2206)


# --- looks ------------------------------------------------------------------------------


def test_looks_are_taken_every_five_percent_and_decisions_stick() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    looks: list[PlannedLook] = []
    assert look_due(looks, 0.04) is None
    assert look_due(looks, 0.05) == 0.05
    looks.append(take_look("x", looks, 0.05, {("m", "b"): 9.0}, {"m": True}, ALPHA, now))
    # Too early to spend anything: even z = 9 does not decide at 5%.
    assert looks[0].decisions[0].decision is None
    assert math.isinf(looks[0].decisions[0].boundary)
    assert look_due(looks, 0.09) is None
    assert look_due(looks, 0.4) == 0.4
    looks.append(take_look("x", looks, 0.4, {("m", "b"): -4.0}, {"m": True}, ALPHA, now))
    assert looks[1].decisions[0].decision == "worse"
    assert looks[1].decisions[0].decided_at_look == 2
    # Later data cannot undo a decision.
    assert look_due(looks, 1.7) == 1.0
    looks.append(take_look("x", looks, 1.0, {("m", "b"): 0.1}, {"m": True}, ALPHA, now))
    assert looks[2].decisions[0].decision == "worse"
    assert looks[2].final
    assert look_due(looks, 2.0) is None
    # The boundary of each look is computed from the looks actually taken.
    assert looks[2].decisions[0].boundary == pytest.approx(
        planned_boundaries([0.05, 0.4, 1.0], ALPHA)[-1]
    )


def test_information_fraction_by_subjects_or_by_days() -> None:
    from datetime import timedelta

    from assay.engine._model import Experiment, ExperimentPlan, Variant
    from assay.engine._planned_verdict import information_fraction

    now = datetime(2026, 3, 10, tzinfo=UTC)
    base = Experiment(
        key="e",
        id="exp_1",
        project_id="prj_1",
        variants=[Variant(key="a", value=0), Variant(key="b", value=1), Variant(key="c", value=2)],
        created_at=now,
        updated_at=now,
    )
    assert information_fraction(base, 500, now) is None
    by_subjects = msgspec.structs.replace(base, plan=ExperimentPlan(subjects_per_variant=1000))
    assert information_fraction(by_subjects, 1500, now) == pytest.approx(0.5)
    by_days = msgspec.structs.replace(base, plan=ExperimentPlan(days=14))
    assert information_fraction(by_days, 10, now) == 0.0  # not started
    started = msgspec.structs.replace(by_days, started_at=now - timedelta(days=7))
    assert information_fraction(started, 10, now) == pytest.approx(0.5)
    ended = msgspec.structs.replace(started, ended_at=now - timedelta(days=3, hours=12))
    assert information_fraction(ended, 10, now) == pytest.approx(0.25)
