"""Statistics for reports: one treatment against control, from sufficient statistics.

Everything here is pure and synchronous: the report gathers each variant's sums in SQL and
calls ``compare`` (or ``compare_variants``) once per metric, ``apply_correction`` once over
the whole family of comparisons, and ``srm_check`` once on the exposures.

For every comparison the answer carries, for the absolute lift (treatment - control) and
the relative lift (treatment / control - 1) alike:

* the fixed-horizon Welch t interval and p-value (valid when looked at once, at the end);
* the sequential (always-valid) interval and p-value (valid however often one looks);
* the Bayesian posterior: credible interval, chance to beat control, expected loss.

The numbers agree with GrowthBook's gbstats (``TwoSidedTTest``, ``SequentialTwoSidedTTest``,
``EffectBayesianABTest`` and ``RegressionAdjustedStatistic`` for CUPED) to at least four
significant digits on the same sums; ``tests/engine/core/test_stats_gbstats_agreement.py``
checks it against a fixture gbstats produced. Where assay departs from gbstats it says so
at that spot: an absolute lift is computed even when the control mean is zero, a relative
prior is dropped (not divided by zero) when it cannot be rescaled, tiny p-values are
computed from the survival function instead of rounding to zero, and the credible interval
uses the comparison's alpha (gbstats' pipeline leaves its Bayesian test at 0.05).

When a comparison cannot be made (``error`` is set: a zero control mean for a relative lift,
an arm without units, or no variance), its numbers are gbstats' uninformative defaults:
estimate 0, interval [0, 0], p-value 1, chance to win 0.5, risk 0. Show the error instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec
import numpy as np

from assay.engine._core._scipy import special
from assay.engine._core._stats_bayesian import (
    BayesianPrior,
    chance_to_win,
    expected_loss,
    posterior,
)
from assay.engine._core._stats_frequentist import (
    AnalysisError,
    IntervalTest,
    absolute_lift,
    lift_error,
    lift_estimate,
    lift_variance,
    relative_lift,
    sequential_rho,
    sequential_test,
    t_test,
    welch_dof,
)
from assay.engine._core._stats_multiple import (
    CORRECTIONS,
    Correction,
    adjust_p_values,
    holm,
)
from assay.engine._core._stats_quantile import (
    QUANTILE_INTERVAL_ALPHA,
    quantile_interval_levels,
    quantile_stats,
)
from assay.engine._core._stats_srm import (
    SRM_THRESHOLD,
    SequentialSrm,
    SrmResult,
    sequential_srm,
    srm_check,
)
from assay.engine._core._stats_sufficient import (
    Component,
    CupedStats,
    MeanStats,
    MetricStats,
    Moments,
    ProportionStats,
    QuantileStats,
    RatioCupedStats,
    RatioStats,
    cuped_theta,
    moments,
    pair_moments,
)
from assay.engine._errors import ValidationFailed

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "CORRECTIONS",
    "DEFAULT_SEQUENTIAL_TUNING",
    "QUANTILE_INTERVAL_ALPHA",
    "SRM_THRESHOLD",
    "AnalysisError",
    "BayesianPrior",
    "BayesianResult",
    "Component",
    "Correction",
    "CupedStats",
    "FrequentistResult",
    "IntervalTest",
    "LiftAnalysis",
    "MeanStats",
    "MetricStats",
    "ProportionStats",
    "QuantileStats",
    "RatioCupedStats",
    "RatioStats",
    "SequentialSrm",
    "SrmResult",
    "VariantComparison",
    "VariantEstimate",
    "absolute_lift",
    "adjust_p_values",
    "apply_correction",
    "chance_to_win",
    "compare",
    "compare_variants",
    "cuped_theta",
    "describe",
    "expected_loss",
    "holm",
    "lift_variance",
    "posterior",
    "quantile_interval_levels",
    "quantile_stats",
    "relative_lift",
    "sequential_rho",
    "sequential_srm",
    "sequential_test",
    "srm_check",
    "t_test",
    "welch_dof",
]

# gbstats' default: the confidence sequence is tightest around 5,000 units in total.
DEFAULT_SEQUENTIAL_TUNING = 5000.0


class _Result(msgspec.Struct, frozen=True, kw_only=True):
    pass


class VariantEstimate(_Result, frozen=True, kw_only=True):
    """One arm of a comparison: units, the metric's value, and its CUPED-adjusted value
    (equal to ``mean`` without CUPED; with it, specific to the pair compared)."""

    n: int
    mean: float
    adjusted_mean: float
    stddev: float


class FrequentistResult(_Result, frozen=True, kw_only=True):
    """A lift with its (1 - alpha) confidence interval and two-sided p-value for no lift."""

    estimate: float
    std_error: float
    ci_low: float
    ci_high: float
    p_value: float
    # Set by ``apply_correction``; None until then (and for comparisons with an error).
    adjusted_p_value: float | None = None


class BayesianResult(_Result, frozen=True, kw_only=True):
    """The posterior of a lift: mean, standard deviation, (1 - alpha) credible interval."""

    expected: float
    stddev: float
    ci_low: float
    ci_high: float
    chance_to_win: float
    # Expected loss, in the lift's units, of keeping control and of shipping treatment.
    risk_control: float
    risk_treatment: float


class LiftAnalysis(_Result, frozen=True, kw_only=True):
    """One lift (absolute or relative) three ways; ``dof`` is Welch's degrees of freedom."""

    fixed: FrequentistResult
    sequential: FrequentistResult
    bayesian: BayesianResult
    dof: float
    error: AnalysisError | None = None


class VariantComparison(_Result, frozen=True, kw_only=True):
    """Treatment against control for one metric: what a report embeds per variant.

    ``cuped`` says whether the estimates are regression-adjusted (``cuped_theta`` is the
    slope used); ``absolute`` and ``relative`` are the two lifts.
    """

    control: VariantEstimate
    treatment: VariantEstimate
    absolute: LiftAnalysis
    relative: LiftAnalysis
    cuped: bool
    cuped_theta: float
    alpha: float


_NO_FREQUENTIST = FrequentistResult(
    estimate=0.0, std_error=0.0, ci_low=0.0, ci_high=0.0, p_value=1.0
)
_NO_BAYESIAN = BayesianResult(
    expected=0.0,
    stddev=0.0,
    ci_low=0.0,
    ci_high=0.0,
    chance_to_win=0.5,
    risk_control=0.0,
    risk_treatment=0.0,
)


def _estimate(m: Moments) -> VariantEstimate:
    return VariantEstimate(
        n=m.n,
        mean=m.unadjusted_mean,
        adjusted_mean=m.mean,
        stddev=float(np.sqrt(m.variance)) if m.variance > 0 else 0.0,
    )


def describe(stats: MetricStats) -> VariantEstimate:
    """One variant on its own (no CUPED adjustment: that needs the pair)."""
    return _estimate(
        moments(stats.post if isinstance(stats, CupedStats | RatioCupedStats) else stats)
    )


def _frequentist(test: IntervalTest, estimate: float, variance: float) -> FrequentistResult:
    return FrequentistResult(
        estimate=estimate,
        std_error=float(np.sqrt(variance)),
        ci_low=float(test.low),
        ci_high=float(test.high),
        p_value=float(test.p_value),
    )


def _lift(
    a: Moments,
    b: Moments,
    *,
    relative: bool,
    alpha: float,
    inverse: bool,
    prior: BayesianPrior,
    tuning: float,
) -> LiftAnalysis:
    error = lift_error(a, b, relative=relative)
    if error is not None:
        return LiftAnalysis(
            fixed=_NO_FREQUENTIST,
            sequential=_NO_FREQUENTIST,
            bayesian=_NO_BAYESIAN,
            dof=0.0,
            error=error,
        )
    est, var = lift_estimate(a, b, relative=relative)
    dof = float(welch_dof(a.variance, a.n, b.variance, b.n))
    post = posterior(est, var, prior, relative=relative, control_mean=a.unadjusted_mean)
    mean, stddev = float(post.mean), float(post.stddev)
    risk_control, risk_treatment = expected_loss(mean, stddev, inverse=inverse)
    # norm.ppf(q, loc, scale) as scipy computes it (ndtri(q) * scale + loc, the same bits)
    # without its per-call argument checking, which cost more than the arithmetic.
    low, high = special.ndtri(np.array([alpha / 2, 1 - alpha / 2])) * stddev + mean
    return LiftAnalysis(
        fixed=_frequentist(t_test(est, var, dof, alpha), est, var),
        sequential=_frequentist(sequential_test(est, var, a.n + b.n, alpha, tuning), est, var),
        bayesian=BayesianResult(
            expected=mean,
            stddev=stddev,
            ci_low=float(low),
            ci_high=float(high),
            chance_to_win=float(chance_to_win(mean, stddev, inverse=inverse)),
            risk_control=float(risk_control),
            risk_treatment=float(risk_treatment),
        ),
        dof=dof,
    )


def compare(
    control: MetricStats,
    treatment: MetricStats,
    *,
    alpha: float = 0.05,
    inverse: bool = False,
    prior: BayesianPrior | None = None,
    sequential_tuning: float = DEFAULT_SEQUENTIAL_TUNING,
) -> VariantComparison:
    """Compare ``treatment`` with ``control`` (statistics of the same kind).

    ``alpha`` sets every interval's level (1 - alpha); ``inverse`` marks a metric where lower
    is better (it flips chance to win and risk, not the lifts); ``prior`` is the Bayesian
    prior on the relative lift (flat by default); ``sequential_tuning`` is the total sample
    size at which the sequential interval is tightest.
    """
    if not 0 < alpha < 1:
        raise ValidationFailed(f"alpha must be in (0, 1), got {alpha}", code="invalid_statistics")
    if not sequential_tuning > 0:
        raise ValidationFailed("sequential_tuning must be > 0", code="invalid_statistics")
    a, b, theta = pair_moments(control, treatment)
    chosen_prior = prior if prior is not None else BayesianPrior()

    def lift(relative: bool) -> LiftAnalysis:
        return _lift(
            a,
            b,
            relative=relative,
            alpha=alpha,
            inverse=inverse,
            prior=chosen_prior,
            tuning=sequential_tuning,
        )

    return VariantComparison(
        control=_estimate(a),
        treatment=_estimate(b),
        absolute=lift(False),
        relative=lift(True),
        cuped=theta != 0,
        cuped_theta=theta,
        alpha=alpha,
    )


def compare_variants(
    variants: Sequence[MetricStats],
    *,
    control: int = 0,
    alpha: float = 0.05,
    inverse: bool = False,
    prior: BayesianPrior | None = None,
    sequential_tuning: float = DEFAULT_SEQUENTIAL_TUNING,
) -> list[VariantComparison]:
    """Every variant but ``control`` compared with it, in order."""
    if not 0 <= control < len(variants):
        raise ValidationFailed("control must index a variant", code="invalid_statistics")
    return [
        compare(
            variants[control],
            v,
            alpha=alpha,
            inverse=inverse,
            prior=prior,
            sequential_tuning=sequential_tuning,
        )
        for i, v in enumerate(variants)
        if i != control
    ]


def _with_adjusted(
    lift: LiftAnalysis, fixed: float | None, sequential: float | None
) -> LiftAnalysis:
    return msgspec.structs.replace(
        lift,
        fixed=msgspec.structs.replace(lift.fixed, adjusted_p_value=fixed),
        sequential=msgspec.structs.replace(lift.sequential, adjusted_p_value=sequential),
    )


def apply_correction(
    comparisons: Sequence[VariantComparison], method: Correction | str
) -> list[VariantComparison]:
    """Fill ``adjusted_p_value`` across a family of comparisons (all metrics x variants).

    Four families are adjusted separately, since each is read on its own: fixed-horizon and
    sequential p-values, of absolute and of relative lifts. Comparisons with an error made
    no test and are not counted in the family; their adjusted p-value stays None.
    """
    adjusted: dict[tuple[str, str], list[float | None]] = {}
    for scale in ("absolute", "relative"):
        for kind in ("fixed", "sequential"):
            live = [i for i, c in enumerate(comparisons) if getattr(c, scale).error is None]
            raw = [getattr(getattr(comparisons[i], scale), kind).p_value for i in live]
            family: list[float | None] = [None] * len(comparisons)
            for i, p in zip(live, adjust_p_values(raw, method), strict=True):
                family[i] = p
            adjusted[scale, kind] = family
    return [
        msgspec.structs.replace(
            c,
            absolute=_with_adjusted(
                c.absolute, adjusted["absolute", "fixed"][i], adjusted["absolute", "sequential"][i]
            ),
            relative=_with_adjusted(
                c.relative, adjusted["relative", "fixed"][i], adjusted["relative", "sequential"][i]
            ),
        )
        for i, c in enumerate(comparisons)
    ]
