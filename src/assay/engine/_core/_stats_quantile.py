"""Percentile metrics: a quantile, its confidence interval, and the levels SQL must read.

The interval is the order-statistic (binomial) interval in its normal approximation, the
one gbstats' quantile metrics use: the number of values below the true ``nu``-quantile is
Binomial(n, nu), so with probability about 1 - alpha the quantile lies between the sample
quantiles at levels ``nu -/+ z * sqrt(nu (1 - nu) / n)``. SQL reads the point estimate and
both bounds with ``PERCENTILE_CONT`` (linear interpolation, numpy's default ``quantile``),
so no raw value leaves the database. The interval is always read at 95%, because gbstats
converts it back into a standard error with the 95% z (``QUANTILE_BOUND_Z``); a comparison
at another alpha goes through that standard error, not through the bounds.

For a comparison, the interval's half-width over z is the quantile's standard error, and
the two-sample Welch machinery runs on it as on any mean (gbstats' ``QuantileStatistic``).
"""

from __future__ import annotations

import math
from typing import Final

import numpy as np
import numpy.typing as npt

from assay.engine._core._stats_sufficient import (
    QUANTILE_BOUND_ALPHA,
    QUANTILE_BOUND_Z,
    QuantileStats,
)
from assay.engine._errors import ValidationFailed

__all__ = ["QUANTILE_INTERVAL_ALPHA", "quantile_interval_levels", "quantile_stats"]

QUANTILE_INTERVAL_ALPHA: Final = QUANTILE_BOUND_ALPHA

# GrowthBook keeps the levels strictly inside (0, 1) so PERCENTILE_CONT always accepts them.
_LEVEL_FLOOR: Final = 1e-8


def quantile_interval_levels(nu: float, n: int) -> tuple[float, float]:
    """The quantile levels whose sample quantiles bound the 95% interval of the
    ``nu``-quantile of ``n`` values (clamped into (0, 1))."""
    if not 0 < nu < 1:
        raise ValidationFailed(
            f"quantile level must be in (0, 1), got {nu}", code="invalid_statistics"
        )
    if n <= 0:
        return _LEVEL_FLOOR, 1 - _LEVEL_FLOOR
    se = math.sqrt(nu * (1 - nu) / n)
    return (
        max(nu - QUANTILE_BOUND_Z * se, _LEVEL_FLOOR),
        min(nu + QUANTILE_BOUND_Z * se, 1 - _LEVEL_FLOOR),
    )


def quantile_stats(values: npt.ArrayLike, nu: float) -> QuantileStats:
    """The sufficient statistics of a percentile metric computed from raw values, exactly as
    the SQL path computes them (for in-memory storage and for checking the SQL)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    n = int(v.size)
    if n == 0:
        return QuantileStats(n=0, nu=nu, quantile=0.0, lower=0.0, upper=0.0, n_star=0)
    lo, hi = quantile_interval_levels(nu, n)
    q, lower, upper = (float(x) for x in np.quantile(v, [nu, lo, hi]))
    return QuantileStats(n=n, nu=nu, quantile=q, lower=lower, upper=upper, n_star=n)
