"""Sample ratio mismatch: do the assigned subjects per variant fit the configured weights?

Two tests, for two ways of looking:

* ``srm_check``: a chi-square goodness-of-fit test (``scipy.stats.chisquare``) of the
  observed counts against the counts the weights predict for the same total, flagged at
  p < 0.001 (the threshold GrowthBook uses). Valid when looked at once: a report.
* ``sequential_srm``: the sequential multinomial test of Lindon and Malek (2020,
  "Anytime-Valid Inference for Multinomial Count Data", section 3): a Dirichlet-multinomial
  Bayes factor against the weights, which under no mismatch is a nonnegative martingale
  with mean 1 in the number of subjects. By Ville's inequality the chance that it *ever*
  reaches 1/level is at most level, so it may be checked after every subject (the
  guardrails check it on every interval) without raising the false-alarm rate. Its
  p-value, 1/Bayes factor, is valid at any look; the running minimum over looks is too.

Both take the counts of *assigned* subjects (crossovers included): a crossover rate that
differs by variant would hide or create a mismatch in the analysed subjects.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Final

import msgspec
import numpy as np
import numpy.typing as npt

from assay.engine._core._scipy import special
from assay.engine._errors import ValidationFailed

Floats = npt.NDArray[np.float64]

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "SEQUENTIAL_SRM_CONCENTRATION",
    "SRM_THRESHOLD",
    "SequentialSrm",
    "SrmResult",
    "sequential_srm",
    "srm_check",
]

SRM_THRESHOLD: Final = 0.001

SEQUENTIAL_SRM_CONCENTRATION: Final = 100.0
"""The Dirichlet prior of ``sequential_srm`` is ``concentration * weights`` (normalised):
centred on the configured split, about as informative as 100 subjects. Larger values
detect small mismatches sooner in large experiments and large ones later in small ones."""


class SrmResult(msgspec.Struct, frozen=True, kw_only=True):
    """``statistic`` is the chi-square statistic; None when a zero-weight variant got traffic
    (no statistic is needed to call that a mismatch)."""

    p_value: float
    statistic: float | None
    expected: list[float]
    flagged: bool


def srm_check(
    observed: Sequence[int], weights: Sequence[float], *, threshold: float = SRM_THRESHOLD
) -> SrmResult:
    """Test ``observed`` assigned subjects per variant against ``weights`` (any positive
    scale), once.

    Agrees with gbstats' ``check_srm`` when every weight is positive. A variant configured
    with weight 0 that still received exposures is a mismatch whatever the others show, so
    it is flagged outright (p = 0); gbstats would leave it out of the statistic while still
    counting it in the total and the degrees of freedom.
    """
    obs, w = _checked(observed, weights)
    total = float(obs.sum())
    live = w > 0
    expected = np.where(live, w / w.sum(), 0.0) * total if w.sum() > 0 else np.zeros_like(w)
    if np.any(obs[~live] > 0):
        return SrmResult(p_value=0.0, statistic=None, expected=expected.tolist(), flagged=True)
    if total == 0 or int(live.sum()) < 2:
        # Nothing to test: no traffic yet, or a single variant takes all of it.
        return SrmResult(p_value=1.0, statistic=0.0, expected=expected.tolist(), flagged=False)
    # Pearson's chi-square as scipy.stats.chisquare computes it (the same bits), without
    # its generic machinery, which cost more than the test.
    o, e = obs[live], expected[live]
    statistic = float(((o - e) ** 2 / e).sum())
    p_value = float(special.chdtrc(o.size - 1, statistic))
    return SrmResult(
        p_value=p_value,
        statistic=statistic,
        expected=expected.tolist(),
        flagged=p_value < threshold,
    )


class SequentialSrm(msgspec.Struct, frozen=True, kw_only=True):
    """The anytime-valid SRM test at one look. ``log_bayes_factor`` is the log of the
    Dirichlet-multinomial Bayes factor against the weights; ``p_value`` is
    ``min(1, 1 / Bayes factor)``; ``flagged`` when it is below the level."""

    p_value: float
    log_bayes_factor: float
    expected: list[float]
    flagged: bool


def _checked(observed: Sequence[int], weights: Sequence[float]) -> tuple[Floats, Floats]:
    if len(observed) != len(weights):
        raise ValidationFailed("SRM needs one weight per variant", code="invalid_statistics")
    obs = np.asarray(observed, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    if np.any(obs < 0) or np.any(w < 0) or not np.all(np.isfinite(w)):
        raise ValidationFailed(
            "SRM needs non-negative exposures and weights", code="invalid_statistics"
        )
    return obs, w


def log_bayes_factor(
    counts: Floats, probabilities: Floats, concentration: float = SEQUENTIAL_SRM_CONCENTRATION
) -> Floats:
    """Lindon and Malek's log Bayes factor, over the last axis of ``counts`` (so a
    simulation can pass many experiments and looks at once). ``probabilities`` must be
    positive and sum to 1."""
    x = np.asarray(counts, dtype=np.float64)
    prior = concentration * np.asarray(probabilities, dtype=np.float64)
    n = x.sum(axis=-1)
    marginal = (
        special.gammaln(prior.sum())
        - special.gammaln(prior.sum() + n)
        + (special.gammaln(prior + x) - special.gammaln(prior)).sum(axis=-1)
    )
    null = (x * np.log(probabilities)).sum(axis=-1)
    return np.asarray(marginal - null, dtype=np.float64)


def sequential_srm(
    observed: Sequence[int],
    weights: Sequence[float],
    *,
    level: float = SRM_THRESHOLD,
    concentration: float = SEQUENTIAL_SRM_CONCENTRATION,
) -> SequentialSrm:
    """Test ``observed`` assigned subjects per variant against ``weights``, anytime-valid.

    As ``srm_check``, a variant with weight 0 that got subjects is flagged outright, and
    variants with weight 0 and no subjects take no part in the test.
    """
    if not 0 < level < 1:
        raise ValidationFailed(f"level must be in (0, 1), got {level}", code="invalid_statistics")
    obs, w = _checked(observed, weights)
    live = w > 0
    total = float(obs.sum())
    expected = np.where(live, w / w.sum(), 0.0) * total if w.sum() > 0 else np.zeros_like(w)
    if np.any(obs[~live] > 0):
        return SequentialSrm(
            p_value=0.0, log_bayes_factor=math.inf, expected=expected.tolist(), flagged=True
        )
    if total == 0 or int(live.sum()) < 2:
        return SequentialSrm(
            p_value=1.0, log_bayes_factor=0.0, expected=expected.tolist(), flagged=False
        )
    theta = w[live] / w[live].sum()
    log_bf = float(log_bayes_factor(obs[live], theta, concentration))
    p_value = math.exp(-max(log_bf, 0.0))
    return SequentialSrm(
        p_value=p_value,
        log_bayes_factor=log_bf,
        expected=expected.tolist(),
        flagged=log_bf >= -math.log(level),
    )
