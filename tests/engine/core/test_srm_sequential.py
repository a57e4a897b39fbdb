"""The anytime-valid SRM test (``sequential_srm``): what it computes, and that checking it
again and again keeps false alarms at its level, where a repeated chi-square does not.

Simulations are seeded, so every rate is one fixed number; each is printed with its Monte
Carlo standard error (``pytest -s``) and bounded with room for that error. The default run
uses 20,000 A/A experiments at level 0.001 (5,000 at 0.05); ``-m slow`` runs 200,000.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import pytest
from scipy import stats as sps

from assay.engine._core._guardrails import judge_srm
from assay.engine._core._stats_srm import (
    SEQUENTIAL_SRM_CONCENTRATION,
    SRM_THRESHOLD,
    log_bayes_factor,
    sequential_srm,
    srm_check,
)

Floats = npt.NDArray[np.float64]


def test_the_bayes_factor_is_the_dirichlet_multinomial_over_the_multinomial() -> None:
    """Independently: scipy's Dirichlet-multinomial and multinomial probabilities of the
    same counts (their multinomial coefficients cancel in the ratio)."""
    weights = np.array([0.5, 0.3, 0.2])
    for counts in ([510, 290, 200], [5, 0, 1], [40_000, 23_000, 17_500], [0, 0, 1]):
        x = np.array(counts)
        prior = SEQUENTIAL_SRM_CONCENTRATION * weights
        expected = sps.dirichlet_multinomial.logpmf(x, prior, x.sum()) - sps.multinomial.logpmf(
            x, x.sum(), weights
        )
        assert float(log_bayes_factor(x.astype(float), weights)) == pytest.approx(
            expected, rel=1e-9, abs=1e-9
        )
        result = sequential_srm(counts, [5, 3, 2])  # weights on any scale
        assert result.log_bayes_factor == pytest.approx(expected, rel=1e-9, abs=1e-9)
        assert result.p_value == pytest.approx(min(1.0, math.exp(-expected)))


def test_edge_cases_match_the_fixed_horizon_check() -> None:
    # No traffic, a single live variant: nothing to test.
    assert sequential_srm([0, 0], [1, 1]).p_value == 1.0
    assert not sequential_srm([10, 0], [1, 0]).flagged
    # A variant with weight 0 that got subjects is a mismatch whatever the rest shows.
    zero = sequential_srm([10, 10, 1], [1, 1, 0])
    assert zero.flagged
    assert zero.p_value == 0.0
    assert srm_check([10, 10, 1], [1, 1, 0]).flagged
    # A gross mismatch is flagged by both.
    assert sequential_srm([6000, 4000], [1, 1]).flagged
    assert srm_check([6000, 4000], [1, 1]).flagged
    assert judge_srm([6000, 4000], [1, 1], min_units=100).status == "breached"


def looks_of_aa(
    rng: np.random.Generator, experiments: int, looks: int, per_look: int, weights: Floats
) -> Floats:
    """Cumulative assigned subjects per variant at each look: (experiments, looks, k)."""
    p = weights / weights.sum()
    return rng.multinomial(per_look, p, size=(experiments, looks)).cumsum(axis=1).astype(float)


def false_alarm_rates(
    experiments: int, seed: int, level: float, weights: Floats
) -> tuple[float, float]:
    """Share of A/A experiments flagged at least once in 100 looks: sequential, chi-square."""
    rng = np.random.default_rng(seed)
    p = weights / weights.sum()
    sequential = np.zeros(experiments, dtype=bool)
    chi_square = np.zeros(experiments, dtype=bool)
    for block in range(0, experiments, 5000):
        counts = looks_of_aa(rng, min(5000, experiments - block), 100, 200, weights)
        lbf = log_bayes_factor(counts, p)
        sequential[block : block + counts.shape[0]] = (lbf >= -math.log(level)).any(axis=1)
        total = counts.sum(axis=-1, keepdims=True)
        expected = total * p
        statistic = ((counts - expected) ** 2 / expected).sum(axis=-1)
        pvalue = sps.chi2.sf(statistic, len(p) - 1)
        chi_square[block : block + counts.shape[0]] = (pvalue < level).any(axis=1)
    return float(sequential.mean()), float(chi_square.mean())


def _report(label: str, rate: float, n: int) -> float:
    se = math.sqrt(max(rate, 1 / n) * (1 - rate) / n)
    print(f"{label}: {rate:.5f} +- {se:.5f} (Monte Carlo SE, {n} replications)")
    return se


@pytest.mark.parametrize(
    ("level", "weights"),
    [(SRM_THRESHOLD, [1.0, 1.0]), (0.05, [1.0, 1.0]), (0.05, [0.5, 0.3, 0.2])],
)
def test_checked_100_times_an_aa_experiment_false_alarms_at_most_at_the_level(
    level: float, weights: list[float]
) -> None:
    # A rare event needs many replications; at level 0.05 fewer give the same precision.
    n = 20_000 if level < 0.01 else 5_000
    sequential, chi_square = false_alarm_rates(n, 20261205, level, np.array(weights))
    se = _report(f"sequential SRM, level {level}, {weights}", sequential, n)
    _report(f"chi-square re-run 100 times, level {level}, {weights}", chi_square, n)
    # The guarantee (Ville's inequality) is the level itself; the estimate is below it.
    assert sequential <= level
    # Not vacuous: a fixed-horizon test looked at as often fires many times its level.
    assert chi_square > 4 * level + 3 * se


@pytest.mark.slow
def test_checked_100_times_200k_aa_experiments_false_alarm_at_most_at_the_level() -> None:
    n = 200_000
    sequential, chi_square = false_alarm_rates(n, 7, SRM_THRESHOLD, np.array([1.0, 1.0]))
    se = _report("sequential SRM, level 0.001 (slow)", sequential, n)
    _report("chi-square re-run 100 times, level 0.001 (slow)", chi_square, n)
    assert sequential + 2 * se <= SRM_THRESHOLD
    assert chi_square > 5 * SRM_THRESHOLD


def test_a_real_mismatch_is_found_while_checking() -> None:
    """A 52/48 split on equal weights, checked every 200 subjects up to 20,000: found in
    over 90% of experiments."""
    rng = np.random.default_rng(11)
    counts = looks_of_aa(rng, 2000, 100, 200, np.array([0.52, 0.48]))
    found = (log_bayes_factor(counts, np.array([0.5, 0.5])) >= -math.log(SRM_THRESHOLD)).any(axis=1)
    _report("sequential SRM power, 52/48 over 20,000 subjects", float(found.mean()), 2000)
    assert found.mean() > 0.9
