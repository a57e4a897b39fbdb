"""Group-sequential boundaries: the planned verdict's test (Lan and DeMets, 1983).

An experiment with a plan knows its planned size, so its primary metrics are judged by a
group-sequential design over the *information fraction* ``t = analysed subjects / planned
subjects``: at each analysis (look) the z statistic of a comparison is compared with a
boundary, and crossing it decides. The boundaries spend alpha along the O'Brien-Fleming-like
spending function of Lan and DeMets,

    alpha_1(t) = 2 - 2 * Phi(z_{1 - alpha_1/2} / sqrt(t)),     alpha_1(1) = alpha_1,

on each side (``alpha / 2`` one-sided, two-sided ``alpha(t) = 4 - 4 Phi(z_{1 - alpha/4} /
sqrt(t))``, as ``gsDesign``'s ``sfLDOF`` for a symmetric test), so that, whatever the number
and timing of the looks (as long as they do not depend on the observed effects), the chance
of ever crossing under no effect is alpha: little is spent
early (the first looks need an overwhelming effect) and almost all of it is left for the
planned size, where the boundary is close to the fixed-horizon 1.96. Reference: K. K. G.
Lan and D. L. DeMets, "Discrete sequential boundaries for clinical trials", Biometrika 70
(1983); C. Jennison and B. W. Turnbull, *Group Sequential Methods with Applications to
Clinical Trials* (2000), ch. 7 and 19 (the numerical recursion used here).

The z statistics at looks ``t_1 < ... < t_K`` behave as Brownian motion on the B-value
scale ``W(t) = Z(t) sqrt(t)`` (independent increments of variance ``t_k - t_{k-1}``). The
boundaries are found look by look: the density of W over the paths that have not crossed
yet is carried on a grid, and each look's boundary is the one at which the mass crossing
there equals that look's share of alpha. Pure numpy/scipy; a few milliseconds for 20 looks.

The planned verdict's boundaries (``planned_boundaries``) spend ``SPENT_SHARE`` (95%) of
alpha, not all of it. On normal statistics the design spends exactly what it is given, but
a report's z comes from counts, and on binomial data its error rate sits within a few
hundredths of a point of nominal on either side (the normal approximation, as for a
fixed-horizon test on the same data); the 5% margin keeps the rate at or under alpha with
room that a seeded simulation can show, for about 0.6 points of power at 80%.
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING, Final

import numpy as np
import numpy.typing as npt

from assay.engine._core._scipy import special, sps
from assay.engine._errors import ValidationFailed

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "DESIGN_LOOKS",
    "crossing_probability",
    "obf_spending",
    "planned_boundaries",
    "sequential_inflation",
    "two_sided_boundaries",
]

Floats = npt.NDArray[np.float64]

DESIGN_LOOKS: Final = 20
"""The design assay plans for: an analysis at every 5% of the planned information (a
report records a new look only once that much more has arrived), the last at 100%."""

SPENT_SHARE: Final = 0.95
"""The share of alpha the planned verdict's boundaries spend (the rest is a margin for the
normal approximation on count data; see the module docstring)."""

_GRID: Final = 401
_SPAN: Final = 9.0  # where no boundary applies, the grid spans +-9 standard deviations of W
_NEVER: Final = 1e-15  # spending increments below this cannot be crossed: boundary = inf
_ROOT_2PI: Final = math.sqrt(2 * math.pi)


def obf_spending(t: float | Floats, alpha: float) -> Floats:
    """Two-sided alpha spent by information fraction t: the Lan-DeMets O'Brien-Fleming-like
    function at ``alpha / 2`` on each side."""
    tt = np.clip(np.asarray(t, dtype=np.float64), 1e-12, 1.0)
    z = -special.ndtri(alpha / 4)
    return np.asarray(4 * special.ndtr(-z / np.sqrt(tt)), dtype=np.float64)


def _check(fractions: Sequence[float], alpha: float) -> Floats:
    if not 0 < alpha < 1:
        raise ValidationFailed(f"alpha must be in (0, 1), got {alpha}", code="invalid_statistics")
    t = np.asarray(fractions, dtype=np.float64)
    if t.size == 0 or np.any(t <= 0) or np.any(t > 1) or np.any(np.diff(t) <= 0):
        raise ValidationFailed(
            "look fractions must increase within (0, 1]", code="invalid_statistics"
        )
    return t


class _Paths:
    """The density of W over the paths that have not crossed yet, on a grid spanning the
    continuation region exactly (so the trapezoid rule integrates a smooth function)."""

    def __init__(self, drift: float) -> None:
        self.drift = drift
        self.t = 0.0
        self.grid: Floats | None = None  # None: W(0) = 0, a point mass
        self.density: Floats = np.ones(1)

    def _weights(self) -> Floats:
        assert self.grid is not None
        w: Floats = self.density * float(self.grid[1] - self.grid[0])
        w[0] *= 0.5
        w[-1] *= 0.5
        return w

    def exceed(self, t: float, b: float) -> float:
        """Mass of the running paths beyond +-b (W scale) at t."""
        sd = math.sqrt(t - self.t)
        mean = self.drift * (t - self.t)
        if self.grid is None:
            return float(special.ndtr((mean - b) / sd) + special.ndtr((-b - mean) / sd))
        x = self.grid + mean
        return float(self._weights() @ (special.ndtr((x - b) / sd) + special.ndtr((-b - x) / sd)))

    def advance(self, t: float, b: float) -> None:
        """Move to look ``t`` and drop the paths beyond +-b."""
        half = min(b, _SPAN * math.sqrt(t))
        grid = np.linspace(-half, half, _GRID)
        sd = math.sqrt(t - self.t)
        mean = self.drift * (t - self.t)
        if self.grid is None:
            u = (grid - mean) / sd
            density = np.exp(-0.5 * u * u) / (sd * _ROOT_2PI)
        else:
            u = (grid[:, None] - self.grid[None, :] - mean) / sd
            density = (np.exp(-0.5 * u * u) / (sd * _ROOT_2PI)) @ self._weights()
        self.t, self.grid, self.density = t, grid, np.asarray(density, dtype=np.float64)


def two_sided_boundaries(fractions: Sequence[float], alpha: float) -> list[float]:
    """Z-scale boundaries ``c_k`` for looks at ``fractions`` (increasing, in (0, 1]):
    reject at look k when ``|Z_k| >= c_k`` (and no earlier look rejected). A boundary is
    ``inf`` where the look's share of alpha is too small to spend (a look very early)."""
    from scipy.optimize import brentq

    t = _check(fractions, alpha)
    increments = np.diff(np.concatenate([[0.0], obf_spending(t, alpha)]))
    paths = _Paths(0.0)
    bounds: list[float] = []
    for tk, share in zip(t.tolist(), increments.tolist(), strict=True):
        top = _SPAN * math.sqrt(tk)
        if share < _NEVER or paths.exceed(tk, top) >= share:
            b = math.inf
        else:
            b = float(
                brentq(
                    lambda b, tk=tk, share=share: paths.exceed(tk, b) - share, 1e-9, top, xtol=1e-12
                )
            )
        paths.advance(tk, b)
        bounds.append(b / math.sqrt(tk))
    return bounds


def planned_boundaries(fractions: Sequence[float], alpha: float) -> list[float]:
    """The planned verdict's boundaries: ``two_sided_boundaries`` spending ``SPENT_SHARE``
    of ``alpha``, so that the error rate stays at or under alpha on count data."""
    return two_sided_boundaries(fractions, alpha * SPENT_SHARE)


def crossing_probability(
    fractions: Sequence[float], z_bounds: Sequence[float], drift: float
) -> float:
    """Chance of crossing some boundary when ``E[Z(1)] = drift`` (power; alpha at 0)."""
    paths = _Paths(drift)
    total = 0.0
    for tk, c in zip(fractions, z_bounds, strict=True):
        b = c * math.sqrt(tk)
        if math.isfinite(b):
            total += paths.exceed(tk, b)
        paths.advance(tk, b)
    return total


@functools.lru_cache(maxsize=256)
def sequential_inflation(alpha: float, power: float, looks: int = DESIGN_LOOKS) -> float:
    """How much larger than a fixed-horizon test's the planned size must be for the
    planned verdict (``looks`` equally spaced analyses, ``planned_boundaries``) to reach
    ``power``:
    ``(drift / (z_{1-alpha/2} + z_power))**2`` for the drift at which it does. Cached:
    it takes a few tenths of a second and depends on three numbers."""
    from scipy.optimize import brentq

    fractions = [(k + 1) / looks for k in range(looks)]
    bounds = planned_boundaries(fractions, alpha)
    fixed = float(sps.norm.isf(alpha / 2) + sps.norm.ppf(power))
    drift = brentq(
        lambda d: crossing_probability(fractions, bounds, d) - power,
        fixed * 0.9,
        fixed * 1.5,
        xtol=1e-10,
    )
    return float((drift / fixed) ** 2)
