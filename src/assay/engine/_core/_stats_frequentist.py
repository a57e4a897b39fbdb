"""Frequentist lifts: Welch's t-test (fixed horizon) and the mixture-SPRT sequential test.

The kernels take and return numpy arrays so a simulation can run thousands of experiments
in one call; ``_stats.compare`` calls them with scalars. They reproduce gbstats'
``TwoSidedTTest`` and ``SequentialTwoSidedTTest`` (``gbstats.frequentist.tests``):

* the absolute lift is ``mean_b - mean_a``, its variance ``var_b/n_b + var_a/n_a``;
* the relative lift is ``(mean_b - mean_a) / mean_a`` (``mean_b/mean_a - 1``) with the
  delta-method variance ``var_b/(mean_a**2 n_b) + var_a mean_b**2/(mean_a**4 n_a)``, taken
  at the unadjusted means when CUPED adjusts the numerator;
* the degrees of freedom are Welch-Satterthwaite's on the per-arm variances, for relative and
  absolute lifts alike;
* the sequential interval is the asymptotic confidence sequence of Waudby-Smith et al.
  (2023, eq. 9), with the mixture width ``rho`` chosen so the interval is tightest near
  ``tuning`` total units, and its p-value is the reciprocal of the mixture e-value. Both
  hold at every sample size simultaneously, so peeking after every unit is allowed.

The one deliberate difference: the two-sided p-value is ``2 * sf(|t|)`` rather than
``2 * (1 - cdf(|t|))``, which keeps p-values below 1e-16 instead of rounding them to 0.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, NamedTuple

import numpy as np
import numpy.typing as npt

from assay.engine._core._scipy import special

if TYPE_CHECKING:
    from assay.engine._core._stats_sufficient import Moments

__all__ = [
    "AnalysisError",
    "FloatArray",
    "IntervalTest",
    "absolute_lift",
    "lift_error",
    "lift_estimate",
    "lift_variance",
    "relative_lift",
    "sequential_rho",
    "sequential_test",
    "t_test",
    "welch_dof",
]

FloatArray = npt.NDArray[np.float64]
Floats = float | FloatArray


class IntervalTest(NamedTuple):
    """A two-sided interval and its p-value, elementwise over the inputs."""

    low: FloatArray
    high: FloatArray
    p_value: FloatArray


def _f(x: Floats) -> FloatArray:
    return np.asarray(x, dtype=np.float64)


def absolute_lift(mean_a: Floats, mean_b: Floats) -> FloatArray:
    return _f(mean_b) - _f(mean_a)


def relative_lift(mean_a: Floats, mean_b: Floats, unadjusted_mean_a: Floats) -> FloatArray:
    """``(b - a) / a``; with CUPED ``a`` and ``b`` are adjusted, the divisor is not."""
    return (_f(mean_b) - _f(mean_a)) / _f(unadjusted_mean_a)


def lift_variance(
    var_a: Floats,
    mean_a: Floats,
    n_a: Floats,
    var_b: Floats,
    mean_b: Floats,
    n_b: Floats,
    *,
    relative: bool,
) -> FloatArray:
    """Variance of the lift estimate from per-unit variances (means are the unadjusted ones)."""
    va, vb, ma, mb, na, nb = _f(var_a), _f(var_b), _f(mean_a), _f(mean_b), _f(n_a), _f(n_b)
    if relative:
        return vb / (ma**2 * nb) + va * mb**2 / (ma**4 * na)
    return vb / nb + va / na


AnalysisError = Literal["baseline_zero", "no_units", "zero_variance"]
"""Why the lift between two arms cannot be computed."""


def lift_error(a: Moments, b: Moments, *, relative: bool) -> AnalysisError | None:
    """Why the lift of ``b`` over ``a`` cannot be computed, or None: a relative lift over a
    zero baseline, an arm without units, or an arm without variance."""
    if relative and (a.mean == 0 or a.unadjusted_mean == 0):
        return "baseline_zero"
    if a.n == 0 or b.n == 0:
        return "no_units"
    if a.degenerate or b.degenerate or a.n < 2 or b.n < 2:
        return "zero_variance"
    return None


def lift_estimate(a: Moments, b: Moments, *, relative: bool) -> tuple[float, float]:
    """The lift of arm ``b`` over arm ``a`` and the variance of that estimate (for a pair
    ``lift_error`` finds nothing wrong with)."""
    if relative:
        estimate = float(relative_lift(a.mean, b.mean, a.unadjusted_mean))
    else:
        estimate = float(absolute_lift(a.mean, b.mean))
    variance = float(
        lift_variance(
            a.variance, a.unadjusted_mean, a.n, b.variance, b.unadjusted_mean, b.n,
            relative=relative,
        )
    )  # fmt: skip
    return estimate, variance


def welch_dof(var_a: Floats, n_a: Floats, var_b: Floats, n_b: Floats) -> FloatArray:
    """Welch-Satterthwaite degrees of freedom (needs n > 1 in both arms)."""
    va, vb, na, nb = _f(var_a), _f(var_b), _f(n_a), _f(n_b)
    return (vb / nb + va / na) ** 2 / (vb**2 / (nb**2 * (nb - 1)) + va**2 / (na**2 * (na - 1)))


def t_test(estimate: Floats, variance: Floats, dof: Floats, alpha: float) -> IntervalTest:
    """Fixed-horizon two-sided t interval and p-value for ``H0: lift = 0``."""
    est, se, df = _f(estimate), np.sqrt(_f(variance)), _f(dof)
    # scipy's t.ppf and t.sf are these special functions (the same bits) behind per-call
    # argument checking that costs more than they do.
    half_width = special.stdtrit(df, 1 - alpha / 2) * se
    p_value = 2 * special.stdtr(df, -np.abs(est / se))
    return IntervalTest(_f(est - half_width), _f(est + half_width), _f(p_value))


def sequential_rho(alpha: float, tuning: float) -> float:
    """Mixture width that makes the confidence sequence tightest at ``tuning`` units
    (Waudby-Smith et al. 2023, eq. 161)."""
    log_alpha = float(np.log(alpha))
    return float(np.sqrt((-2 * log_alpha + np.log(-2 * log_alpha + 1)) / tuning))


def sequential_test(
    estimate: Floats, variance: Floats, n_total: Floats, alpha: float, tuning: float
) -> IntervalTest:
    """Always-valid interval and p-value after ``n_total`` units in both arms together.

    ``variance`` is the lift estimate's variance; ``variance * n_total`` is the per-unit
    variance the confidence sequence is written in.
    """
    est, var, n = _f(estimate), _f(variance), _f(n_total)
    rho2 = sequential_rho(alpha, tuning) ** 2
    spread = n * rho2 + 1
    half_width = np.sqrt(var * n) * np.sqrt(
        2 * spread * np.log(np.sqrt(spread) / alpha) / (n**2 * rho2)
    )
    # The e-value exp(rho2 * t2 / (2 spread)) / sqrt(spread) overflows for large effects;
    # its logarithm does not, and p = min(1, 1/e) needs only that.
    t2 = est**2 * n / var
    log_e_value = rho2 * t2 / (2 * spread) - 0.5 * np.log(spread)
    p_value = np.exp(-np.maximum(log_e_value, 0.0))
    return IntervalTest(_f(est - half_width), _f(est + half_width), _f(p_value))
