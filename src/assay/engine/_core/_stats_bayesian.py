"""Bayesian lifts: a Gaussian posterior on the effect, chance to beat control, expected loss.

This is gbstats' ``EffectBayesianABTest`` (``gbstats.bayesian.tests``): the data enter as
a normal likelihood for the lift (the same estimate and variance as the frequentist test),
combined with a Gaussian prior on the lift when the prior is proper, or alone when it is
flat (gbstats' default for a metric). The prior is stated on the relative scale, as a
metric's prior is in GrowthBook, and rescaled by the control mean for an absolute lift.

Expected loss (risk) is ``E[max(-lift, 0)]`` for shipping the treatment and
``E[max(lift, 0)]`` for keeping control, computed as a probability times a truncated-normal
mean with scipy, like gbstats; for a metric where lower is better the two swap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import msgspec
import numpy as np

from assay.engine._core._scipy import sps
from assay.engine._errors import ValidationFailed

if TYPE_CHECKING:
    from assay.engine._core._stats_frequentist import FloatArray, Floats

__all__ = ["BayesianPrior", "Posterior", "chance_to_win", "expected_loss", "posterior"]


class BayesianPrior(msgspec.Struct, frozen=True, kw_only=True):
    """A Gaussian prior on the relative lift; ``proper=False`` is the flat prior (the data
    alone decide), gbstats' default. ``mean`` and ``stddev`` are gbstats' metric defaults."""

    mean: float = 0.0
    stddev: float = 0.1
    proper: bool = False

    def __post_init__(self) -> None:
        if not self.stddev > 0:
            raise ValidationFailed(
                f"a prior's stddev must be > 0, got {self.stddev}", code="invalid_statistics"
            )


class Posterior(NamedTuple):
    mean: FloatArray
    stddev: FloatArray


def _f(x: Floats) -> FloatArray:
    return np.asarray(x, dtype=np.float64)


def posterior(
    estimate: Floats,
    variance: Floats,
    prior: BayesianPrior,
    *,
    relative: bool,
    control_mean: Floats = 1.0,
) -> Posterior:
    """Normal-normal update of the lift. ``control_mean`` (unadjusted) rescales the relative
    prior for an absolute lift; a zero control mean leaves nothing to rescale by, and the
    data alone are used (gbstats divides by zero there)."""
    est, var = _f(estimate), _f(variance)
    if not prior.proper:
        return Posterior(est, np.sqrt(var))
    scale = np.ones_like(est) if relative else np.abs(_f(control_mean))
    prior_mean = prior.mean * scale
    prior_var = prior.stddev**2 * scale**2
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(scale > 0, 1 / var + 1 / prior_var, 1 / var)
        mean = np.where(scale > 0, (est / var + prior_mean / prior_var) / precision, est)
    return Posterior(_f(mean), _f(np.sqrt(1 / precision)))


def chance_to_win(mean: Floats, stddev: Floats, *, inverse: bool = False) -> FloatArray:
    """P(lift > 0), or P(lift < 0) for a metric where lower is better."""
    if inverse:
        return _f(sps.norm.cdf(0.0, loc=mean, scale=stddev))
    return _f(sps.norm.sf(0.0, loc=mean, scale=stddev))


def expected_loss(
    mean: Floats, stddev: Floats, *, inverse: bool = False
) -> tuple[FloatArray, FloatArray]:
    """(risk of keeping control, risk of shipping treatment) under the posterior."""
    mu, sigma = _f(mean), _f(stddev)
    cut = -mu / sigma  # zero, in standard units
    p_negative = _f(sps.norm.cdf(cut))
    # E[lift | lift > 0] and E[lift | lift < 0] from scipy's truncated normal, which stays
    # accurate far in the tails where mu * Phi + sigma * phi would cancel.
    # scipy derives the mean together with the higher moments, whose skewness divides by
    # an underflowed variance far in the tails; the mean itself stays right, so that
    # floating-point warning is noise.
    with np.errstate(invalid="ignore", divide="ignore", over="ignore", under="ignore"):
        mean_positive = sps.truncnorm.mean(cut, np.inf, loc=mu, scale=sigma)
        mean_negative = sps.truncnorm.mean(-np.inf, cut, loc=mu, scale=sigma)
    risk_control = _f(sps.norm.sf(cut) * mean_positive)
    risk_treatment = _f(-p_negative * mean_negative)
    if inverse:
        return risk_treatment, risk_control
    return risk_control, risk_treatment
