"""Sufficient statistics of one variant's metric, and the per-unit moments derived from them.

A report never sees raw rows: SQL reduces each variant to a handful of sums, and everything
statistical is computed from those. The variance formulas follow gbstats
(``gbstats.models.statistics``) term for term, because assay's numbers must agree with
GrowthBook's on the same sums:

* a proportion's variance is ``p (1 - p)`` (the plug-in binomial variance, not ``n - 1``);
* a mean's variance is the unbiased sample variance ``(sum_squares - sum**2/n) / (n - 1)``;
* a ratio's variance is the delta-method variance of ``mean(x) / mean(y)`` per unit;
* a CUPED (regression-adjusted) mean is ``post - theta * pre`` with ``theta`` fitted on the
  control and treatment pooled, so that both arms are adjusted by the same line; a CUPED
  ratio does the same on the ratios' delta-method linearisations (``RatioCupedStats``);
* a quantile's variance is read back from its order-statistic interval (see ``_stats_quantile``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Final, NamedTuple

import msgspec
import numpy as np
import numpy.typing as npt

from assay.engine._errors import ValidationFailed

__all__ = [
    "QUANTILE_BOUND_ALPHA",
    "QUANTILE_BOUND_Z",
    "Component",
    "CupedStats",
    "MeanStats",
    "MetricStats",
    "Moments",
    "ProportionStats",
    "QuantileStats",
    "RatioCupedStats",
    "RatioStats",
    "component_variance",
    "cuped_theta",
    "moments",
    "pair_moments",
    "ratio_cuped_theta",
]

_INVALID: Final = "invalid_statistics"

# gbstats reads a quantile's interval as a 95% interval whatever alpha the analysis uses
# (the SQL computes the bounds at fixed levels), so the z that converts it back is fixed too.
QUANTILE_BOUND_ALPHA: Final = 0.05
# The standard library's inverse normal CDF (accurate to about 1e-15), so that importing
# this module does not import scipy.
QUANTILE_BOUND_Z: Final = NormalDist().inv_cdf(1 - QUANTILE_BOUND_ALPHA / 2)


def _invalid(message: str) -> ValidationFailed:
    return ValidationFailed(message, code=_INVALID)


def _check_count(name: str, n: int) -> None:
    if n < 0:
        raise _invalid(f"{name} must be >= 0, got {n}")


def _check_finite(**values: float) -> None:
    for name, value in values.items():
        if not math.isfinite(value):
            raise _invalid(f"{name} must be finite, got {value}")


class ProportionStats(msgspec.Struct, frozen=True, kw_only=True, tag="proportion"):
    """A 0/1 metric per unit: ``n`` units of which ``sum`` converted."""

    n: int
    sum: float

    def __post_init__(self) -> None:
        _check_count("n", self.n)
        _check_finite(sum=self.sum)
        if not 0 <= self.sum <= self.n:
            raise _invalid(f"a proportion's sum must be in [0, n], got {self.sum} of {self.n}")

    @property
    def sum_squares(self) -> float:
        # x**2 == x for 0/1 values.
        return self.sum

    @property
    def mean(self) -> float:
        return self.sum / self.n if self.n else 0.0

    @property
    def variance(self) -> float:
        p = self.mean
        return p * (1.0 - p)


class MeanStats(msgspec.Struct, frozen=True, kw_only=True, tag="mean"):
    """A numeric metric per unit (a count, a value): ``n`` units, their sum and sum of squares."""

    n: int
    sum: float
    sum_squares: float

    def __post_init__(self) -> None:
        _check_count("n", self.n)
        _check_finite(sum=self.sum, sum_squares=self.sum_squares)
        if self.sum_squares < 0:
            raise _invalid(f"sum_squares must be >= 0, got {self.sum_squares}")

    @property
    def mean(self) -> float:
        return self.sum / self.n if self.n else 0.0

    @property
    def variance(self) -> float:
        if self.n <= 1:
            return 0.0
        return (self.sum_squares - self.sum * self.sum / self.n) / (self.n - 1)


Component = ProportionStats | MeanStats


def component_variance(c: Component) -> float:
    return c.variance


def _covariance(n: int, sum_xy: float, x: Component, y: Component) -> float:
    if n <= 1:
        return 0.0
    return (sum_xy - x.sum * y.sum / n) / (n - 1)


class RatioStats(msgspec.Struct, frozen=True, kw_only=True, tag="ratio"):
    """A ratio of two per-unit metrics (e.g. revenue per session): numerator, denominator and
    the sum over units of numerator * denominator, which the delta method needs."""

    numerator: Component
    denominator: Component
    sum_xy: float

    def __post_init__(self) -> None:
        _check_finite(sum_xy=self.sum_xy)
        if self.numerator.n != self.denominator.n:
            raise _invalid("a ratio's numerator and denominator must count the same units")

    @property
    def n(self) -> int:
        return self.numerator.n

    @property
    def mean(self) -> float:
        d = self.denominator.sum
        return self.numerator.sum / d if d else 0.0

    @property
    def covariance(self) -> float:
        return _covariance(self.n, self.sum_xy, self.numerator, self.denominator)

    @property
    def variance(self) -> float:
        """Per-unit delta-method variance: Var(mean_x/mean_y) * n."""
        mx, my = self.numerator.mean, self.denominator.mean
        if my == 0 or self.n <= 1:
            return 0.0
        return (
            self.numerator.variance / my**2
            - 2 * self.covariance * mx / my**3
            + mx**2 * self.denominator.variance / my**4
        )


class CupedStats(msgspec.Struct, frozen=True, kw_only=True, tag="cuped"):
    """A metric (``post``) with its pre-exposure covariate (``pre``) for the same units, and
    the sum over units of post * pre: what CUPED's regression adjustment needs."""

    post: Component
    pre: Component
    sum_post_pre: float

    def __post_init__(self) -> None:
        _check_finite(sum_post_pre=self.sum_post_pre)
        if self.post.n != self.pre.n:
            raise _invalid("CUPED's post and pre statistics must count the same units")

    @property
    def n(self) -> int:
        return self.post.n

    @property
    def mean(self) -> float:
        return self.post.mean

    @property
    def covariance(self) -> float:
        return _covariance(self.n, self.sum_post_pre, self.post, self.pre)


class RatioCupedStats(msgspec.Struct, frozen=True, kw_only=True, tag="ratio_cuped"):
    """A ratio metric (``post``: numerator x over denominator y) with the same ratio before
    exposure as its covariate (``pre``: numerator u over denominator v), for the same
    units, and the four cross sums over units between the post and the pre parts.

    CUPED for ratios (GrowthBook's "ratio metric" regression adjustment): each ratio is
    linearised by the delta method, ``(x - R y) / mean(y)`` per unit, and the post ratio is
    regressed on the pre ratio through those linearisations: ``R_adj = R - theta R_pre``
    with ``theta = Cov(R, R_pre) / Var(R_pre)`` fitted on both arms pooled, and per-unit
    variance ``V_post + theta**2 V_pre - 2 theta C``, each term a quadratic form of the
    4 x 4 covariance of (x, y, u, v) with the ratios' gradients. With constant denominators
    (y = v = 1) this is exactly ``CupedStats`` of x on u.
    """

    post: RatioStats
    pre: RatioStats
    sum_xu: float
    sum_xv: float
    sum_yu: float
    sum_yv: float

    def __post_init__(self) -> None:
        _check_finite(
            sum_xu=self.sum_xu, sum_xv=self.sum_xv, sum_yu=self.sum_yu, sum_yv=self.sum_yv
        )
        if self.post.n != self.pre.n:
            raise _invalid("a ratio's post and pre statistics must count the same units")

    @property
    def n(self) -> int:
        return self.post.n

    @property
    def mean(self) -> float:
        return self.post.mean


class QuantileStats(msgspec.Struct, frozen=True, kw_only=True, tag="quantile"):
    """A quantile (level ``nu``) of ``n`` values and its 95% order-statistic interval
    ``[lower, upper]``, read at the levels ``quantile_interval_levels(nu, n_star)`` gives;
    ``n_star`` is the sample size those levels were computed for (normally ``n``)."""

    n: int
    nu: float
    quantile: float
    lower: float
    upper: float
    n_star: int

    def __post_init__(self) -> None:
        _check_count("n", self.n)
        _check_count("n_star", self.n_star)
        _check_finite(quantile=self.quantile, lower=self.lower, upper=self.upper)
        if not 0 < self.nu < 1:
            raise _invalid(f"a quantile's level must be in (0, 1), got {self.nu}")
        if not self.lower <= self.upper:
            raise _invalid("a quantile's lower bound must not exceed its upper bound")

    @property
    def mean(self) -> float:
        return self.quantile

    @property
    def _raw_variance(self) -> float:
        """Per-unit variance implied by the interval: its half-width is z * sd / sqrt(n_star)."""
        if self.n <= 1:
            return 0.0
        half_width = (self.upper - self.lower) / (2 * QUANTILE_BOUND_Z)
        return (self.n_star / self.n) * (self.n - 1) * half_width**2

    @property
    def variance(self) -> float:
        # gbstats floors the variance of large samples so that tied values (an interval of
        # width zero) do not make a test impossible.
        v = self._raw_variance
        return v if self.n < 100 else max(v, 1e-5)

    @property
    def degenerate(self) -> bool:
        """Too few values for the interval to lie inside the sample, or no spread at all."""
        z2 = QUANTILE_BOUND_Z**2
        if self.n <= z2 * self.nu / (1 - self.nu) or self.n <= z2 * (1 - self.nu) / self.nu:
            return True
        return self._raw_variance <= 0 and self.n < 1000


MetricStats = (
    ProportionStats | MeanStats | RatioStats | CupedStats | RatioCupedStats | QuantileStats
)


@dataclass(frozen=True, slots=True)
class Moments:
    """What a two-sample test needs from one arm.

    ``mean`` is the (possibly CUPED-adjusted) estimate, ``unadjusted_mean`` the plain one
    (relative lifts divide by it), ``variance`` the per-unit variance of ``mean``, so that
    ``variance / n`` is the squared standard error. ``degenerate`` marks an arm whose variance
    cannot support a test.
    """

    n: int
    mean: float
    unadjusted_mean: float
    variance: float
    degenerate: bool


def moments(stats: Component | RatioStats | QuantileStats) -> Moments:
    """Moments of one arm without any adjustment."""
    variance = stats.variance
    degenerate = stats.degenerate if isinstance(stats, QuantileStats) else variance <= 0
    return Moments(stats.n, stats.mean, stats.mean, variance, degenerate)


def _pooled(a: Component, b: Component) -> Component:
    if isinstance(a, ProportionStats) and isinstance(b, ProportionStats):
        return ProportionStats(n=a.n + b.n, sum=a.sum + b.sum)
    if isinstance(a, MeanStats) and isinstance(b, MeanStats):
        return MeanStats(n=a.n + b.n, sum=a.sum + b.sum, sum_squares=a.sum_squares + b.sum_squares)
    raise _invalid("a metric's statistics must be of the same kind in every variant")


def cuped_theta(control: CupedStats, treatment: CupedStats) -> float:
    """The regression slope of post on pre over both arms pooled (0 when either is constant).

    Pooling makes the adjustment the same line in both arms, so it shifts their difference
    only by theta times the chance imbalance in the covariate, which has mean zero under
    randomisation: the adjusted lift stays unbiased while its variance shrinks by about the
    squared correlation of pre and post.
    """
    n = control.n + treatment.n
    post = _pooled(control.post, treatment.post)
    pre = _pooled(control.pre, treatment.pre)
    if pre.variance <= 0 or post.variance <= 0:
        return 0.0
    return _covariance(n, control.sum_post_pre + treatment.sum_post_pre, post, pre) / pre.variance


def _adjusted(stats: CupedStats, theta: float) -> Moments:
    variance = stats.post.variance + theta**2 * stats.pre.variance - 2 * theta * stats.covariance
    mean = stats.post.mean - theta * stats.pre.mean
    return Moments(stats.n, mean, stats.post.mean, variance, variance <= 0)


class _RatioPair(NamedTuple):
    """Sums of (x, y, u, v) and of their products over some units: a ratio with its
    pre-exposure covariate, ready for the delta method."""

    n: int
    sums: npt.NDArray[np.float64]  # (4,)
    products: npt.NDArray[np.float64]  # (4, 4)

    @classmethod
    def of(cls, s: RatioCupedStats) -> _RatioPair:
        x, y = s.post.numerator, s.post.denominator
        u, v = s.pre.numerator, s.pre.denominator
        sums = np.array([x.sum, y.sum, u.sum, v.sum])
        products = np.array(
            [
                [x.sum_squares, s.post.sum_xy, s.sum_xu, s.sum_xv],
                [s.post.sum_xy, y.sum_squares, s.sum_yu, s.sum_yv],
                [s.sum_xu, s.sum_yu, u.sum_squares, s.pre.sum_xy],
                [s.sum_xv, s.sum_yv, s.pre.sum_xy, v.sum_squares],
            ]
        )
        return cls(s.n, sums, products)

    def __add__(self, other: object) -> _RatioPair:
        assert isinstance(other, _RatioPair)
        return _RatioPair(self.n + other.n, self.sums + other.sums, self.products + other.products)

    def terms(self) -> tuple[float, float, float, float, float] | None:
        """(R, R_pre, V_post, V_pre, C) per unit; None when a denominator's mean is zero
        or there are fewer than two units."""
        if self.n <= 1:
            return None
        mx, my, mu, mv = (self.sums / self.n).tolist()
        if my == 0 or mv == 0:
            return None
        cov = (self.products - np.outer(self.sums, self.sums) / self.n) / (self.n - 1)
        a = np.array([1 / my, -mx / my**2, 0.0, 0.0])
        b = np.array([0.0, 0.0, 1 / mv, -mu / mv**2])
        return (
            mx / my,
            mu / mv,
            float(a @ cov @ a),
            float(b @ cov @ b),
            float(a @ cov @ b),
        )


def ratio_cuped_theta(control: RatioCupedStats, treatment: RatioCupedStats) -> float:
    """The slope of the post ratio on the pre ratio (delta-method linearisations), over
    both arms pooled, as ``cuped_theta`` pools; 0 when either has no variance."""
    pooled = (_RatioPair.of(control) + _RatioPair.of(treatment)).terms()
    if pooled is None:
        return 0.0
    _, _, v_post, v_pre, c = pooled
    if v_pre <= 0 or v_post <= 0:
        return 0.0
    return c / v_pre


def _ratio_adjusted(stats: RatioCupedStats, theta: float) -> Moments | None:
    terms = _RatioPair.of(stats).terms()
    if terms is None:
        return None
    r, r_pre, v_post, v_pre, c = terms
    variance = v_post + theta**2 * v_pre - 2 * theta * c
    return Moments(stats.n, r - theta * r_pre, r, variance, variance <= 0)


def pair_moments(control: MetricStats, treatment: MetricStats) -> tuple[Moments, Moments, float]:
    """Moments of control and treatment for one comparison, and CUPED's theta (0: unadjusted).

    A CUPED pair whose pooled covariate (or metric) has no variance falls back to the
    unadjusted metric, as gbstats does: there is nothing to regress on.
    """
    if type(control) is not type(treatment):
        raise _invalid(
            f"cannot compare a {type(control).__name__} with a {type(treatment).__name__}"
        )
    if isinstance(control, CupedStats) and isinstance(treatment, CupedStats):
        theta = cuped_theta(control, treatment)
        if theta == 0:
            return moments(control.post), moments(treatment.post), 0.0
        return _adjusted(control, theta), _adjusted(treatment, theta), theta
    if isinstance(control, RatioCupedStats) and isinstance(treatment, RatioCupedStats):
        theta = ratio_cuped_theta(control, treatment)
        a = _ratio_adjusted(control, theta) if theta != 0 else None
        b = _ratio_adjusted(treatment, theta) if theta != 0 else None
        if a is None or b is None:
            return moments(control.post), moments(treatment.post), 0.0
        return a, b, theta
    assert not isinstance(control, CupedStats | RatioCupedStats)
    assert not isinstance(treatment, CupedStats | RatioCupedStats)
    return moments(control), moments(treatment), 0.0
