"""Sample ratio mismatch: do the exposures per variant fit the configured weights?

A chi-square goodness-of-fit test (``scipy.stats.chisquare``) of the observed exposures
against the counts the weights predict for the same total, flagged at p < 0.001: the
threshold GrowthBook uses, strict because the check runs on every report and a real
mismatch (a bucketing or logging bug) produces p-values far smaller than that.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import msgspec
import numpy as np

from assay.engine._core._scipy import sps
from assay.engine._errors import ValidationFailed

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["SRM_THRESHOLD", "SrmResult", "srm_check"]

SRM_THRESHOLD: Final = 0.001


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
    """Test ``observed`` exposures per variant against ``weights`` (any positive scale).

    Agrees with gbstats' ``check_srm`` when every weight is positive. A variant configured
    with weight 0 that still received exposures is a mismatch whatever the others show, so
    it is flagged outright (p = 0); gbstats would leave it out of the statistic while still
    counting it in the total and the degrees of freedom.
    """
    if len(observed) != len(weights):
        raise ValidationFailed("SRM needs one weight per variant", code="invalid_statistics")
    obs = np.asarray(observed, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    if np.any(obs < 0) or np.any(w < 0) or not np.all(np.isfinite(w)):
        raise ValidationFailed(
            "SRM needs non-negative exposures and weights", code="invalid_statistics"
        )
    total = float(obs.sum())
    live = w > 0
    expected = np.where(live, w / w.sum(), 0.0) * total if w.sum() > 0 else np.zeros_like(w)
    if np.any(obs[~live] > 0):
        return SrmResult(p_value=0.0, statistic=None, expected=expected.tolist(), flagged=True)
    if total == 0 or int(live.sum()) < 2:
        # Nothing to test: no traffic yet, or a single variant takes all of it.
        return SrmResult(p_value=1.0, statistic=0.0, expected=expected.tolist(), flagged=False)
    result = sps.chisquare(obs[live], expected[live])
    p_value = float(result.pvalue)
    return SrmResult(
        p_value=p_value,
        statistic=float(result.statistic),
        expected=expected.tolist(),
        flagged=p_value < threshold,
    )
