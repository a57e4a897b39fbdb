"""Multiple-testing corrections across a report's family of tests (metrics x variants).

Holm controls the family-wise error rate (the chance of any false positive) under any
dependence; Benjamini-Hochberg controls the false discovery rate (the expected share of
false positives among the significant results), which is less strict and has more power.
scipy has Benjamini-Hochberg (``false_discovery_control``); Holm's step-down is not in
scipy and is written here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, Literal, get_args

import numpy as np

from assay.engine._core._scipy import sps
from assay.engine._errors import ValidationFailed

if TYPE_CHECKING:
    from collections.abc import Sequence

    from assay.engine._core._stats_frequentist import FloatArray

__all__ = ["CORRECTIONS", "Correction", "adjust_p_values", "holm"]

Correction = Literal["holm", "benjamini-hochberg", "none"]
CORRECTIONS: Final[tuple[str, ...]] = get_args(Correction)


def holm(p_values: Sequence[float] | FloatArray) -> FloatArray:
    """Holm's step-down adjusted p-values, in the input order.

    The i-th smallest p-value (from 1) is multiplied by ``m - i + 1``; a running maximum
    keeps the adjusted values in the same order as the raw ones, and 1 caps them.
    """
    p = np.asarray(p_values, dtype=np.float64)
    m = p.size
    order = np.argsort(p, kind="stable")
    scaled = p[order] * (m - np.arange(m))
    stepped = np.minimum(np.maximum.accumulate(scaled), 1.0)
    adjusted = np.empty_like(p)
    adjusted[order] = stepped
    return adjusted


def adjust_p_values(p_values: Sequence[float], method: str) -> list[float]:
    """Adjust a family of p-values by ``method``: "holm", "benjamini-hochberg" or "none"."""
    if method not in CORRECTIONS:
        raise ValidationFailed(
            f"unknown correction {method!r}; expected one of {', '.join(CORRECTIONS)}",
            code="invalid_correction",
        )
    p = np.asarray(p_values, dtype=np.float64)
    if p.ndim != 1 or np.any(~np.isfinite(p)) or np.any((p < 0) | (p > 1)):
        raise ValidationFailed("p-values must lie in [0, 1]", code="invalid_statistics")
    if p.size <= 1:
        # A family of one is its own adjustment under every method (Holm and BH both
        # multiply by 1 and cap at 1, which a p-value already is): no need for either.
        return [float(x) for x in p]
    match method:
        case "holm":
            adjusted = holm(p)
        case "benjamini-hochberg":
            adjusted = np.asarray(sps.false_discovery_control(p, method="bh"), dtype=np.float64)
        case _:
            adjusted = p
    return [float(x) for x in adjusted]
