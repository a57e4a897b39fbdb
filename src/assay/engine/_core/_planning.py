"""Planning: how many subjects, and how many days, an experiment needs.

``plan_sample_size`` answers, from a baseline (a rate, or a mean and a variance), a minimum
detectable effect (MDE), alpha, power, the number of variants and the expected daily
traffic: subjects per variant and days, for the fixed-horizon test and for the
group-sequential design the planned verdict uses (``_stats_group_sequential``).

The fixed-horizon size is the textbook two-sample formula for a two-sided test of a
difference in means (e.g. Chow, Shao and Wang, *Sample Size Calculations in Clinical
Research*, 3.2.1; for rates with unpooled variances, 4.2)::

    n per variant = (z_{1 - alpha'/2} + z_{power})**2 * (var_control + var_treatment) / delta**2

with ``delta`` the absolute effect (``mde * baseline`` for a relative MDE), the treatment's
variance ``p (1 - p)`` at the treated rate for a rate and the baseline's for a mean, and
``alpha' = alpha / (variants - 1)``: each treatment is compared with control, and a
Bonferroni share keeps the family of treatments at alpha (Holm, which reports use, is never
less powerful). The sequential size multiplies it by the design's inflation factor, the
price of being allowed to stop early (about 5% for 20 looks at 80% power).

Pure: no I/O. Bad plans raise ``ValidationFailed`` with a code (docs/api.md).
"""

from __future__ import annotations

import math
from typing import Annotated, Final, Literal

import msgspec

from assay.engine._core._scipy import sps
from assay.engine._core._stats_group_sequential import DESIGN_LOOKS, sequential_inflation
from assay.engine._errors import ValidationFailed

__all__ = ["PlanInput", "SampleSizePlan", "plan_sample_size"]

MdeType = Literal["relative", "absolute"]

_INVALID: Final = "invalid_plan"


class PlanInput(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What a plan is computed from. Give the baseline as ``baseline_rate`` (a 0/1 metric)
    or as ``baseline_mean`` and ``baseline_variance`` (per subject)."""

    baseline_rate: float | None = None
    baseline_mean: float | None = None
    baseline_variance: float | None = None
    mde: float
    """The smallest effect worth detecting: a share of the baseline (``relative``, 0.05 =
    +5%) or in the metric's units (``absolute``)."""
    mde_type: MdeType = "relative"
    alpha: float = 0.05
    power: float = 0.8
    variants: Annotated[int, msgspec.Meta(ge=2, le=100)] = 2
    """Arms including control, equally weighted."""
    daily_traffic: float | None = None
    """Subjects entering the experiment per day, all variants together; none: no days."""
    baseline_metric: str | None = None
    """Instead of a baseline: estimate it from this metric's recent data, its value in the
    control of ``baseline_experiment`` over the last ``baseline_days`` (the engine's
    ``plan`` resolves it; the pure ``plan_sample_size`` needs the numbers)."""
    baseline_experiment: str | None = None
    baseline_days: Annotated[int, msgspec.Meta(ge=1, le=365)] = 28


class SampleSizePlan(msgspec.Struct, frozen=True, kw_only=True):
    """Subjects per variant (and in total, and days when traffic is given) for the
    fixed-horizon test and for assay's group-sequential design."""

    baseline_mean: float
    baseline_variance: float
    treatment_mean: float
    treatment_variance: float
    absolute_effect: float
    relative_effect: float | None
    alpha: float
    alpha_per_comparison: float
    power: float
    variants: int
    daily_traffic: float | None
    fixed_subjects_per_variant: int
    fixed_subjects: int
    fixed_days: float | None
    sequential_subjects_per_variant: int
    sequential_subjects: int
    sequential_days: float | None
    sequential_inflation: float
    """``sequential / fixed`` subjects (before rounding up)."""
    sequential_design: str
    method: str
    baseline_source: str = "given"
    """``given``, or where the baseline was estimated from (metric, experiment, days)."""


def _plan_error(message: str, field: str, code: str = _INVALID) -> ValidationFailed:
    return ValidationFailed(message, code=code, details={"field": field})


def _finite(value: float | None, field: str) -> None:
    if value is not None and not math.isfinite(value):
        raise _plan_error(f"{field} must be a finite number", field)


def _baseline(p: PlanInput) -> tuple[float, float, bool]:
    """(mean, variance, is_rate)."""
    for field in ("baseline_rate", "baseline_mean", "baseline_variance", "mde", "daily_traffic"):
        _finite(getattr(p, field), field)
    if p.baseline_rate is not None:
        if p.baseline_mean is not None or p.baseline_variance is not None:
            raise _plan_error(
                "give either baseline_rate or baseline_mean and baseline_variance", "baseline_rate"
            )
        rate = p.baseline_rate
        if not 0 < rate < 1:
            raise _plan_error(
                f"baseline_rate must be in (0, 1), got {rate}: a rate of 0 or 1 has no "
                "variance, so no sample size can detect a change in it",
                "baseline_rate",
                code="zero_variance_baseline",
            )
        return rate, rate * (1 - rate), True
    if p.baseline_mean is None or p.baseline_variance is None:
        raise _plan_error(
            "a baseline is needed: baseline_rate, or baseline_mean and baseline_variance",
            "baseline_rate",
        )
    if p.baseline_variance < 0:
        raise _plan_error("baseline_variance must be >= 0", "baseline_variance")
    if p.baseline_variance == 0:
        raise _plan_error(
            "the baseline has zero variance: every subject has the same value, so the "
            "test statistic is undefined",
            "baseline_variance",
            code="zero_variance_baseline",
        )
    return p.baseline_mean, p.baseline_variance, False


def plan_sample_size(p: PlanInput) -> SampleSizePlan:
    """Subjects per variant and days for ``p`` (see the module docstring)."""
    mean, variance, is_rate = _baseline(p)
    if not 0 < p.alpha < 1:
        raise _plan_error(f"alpha must be in (0, 1), got {p.alpha}", "alpha")
    if not 0 < p.power < 1:
        raise _plan_error(f"power must be in (0, 1), got {p.power}", "power")
    if not p.mde > 0:
        raise _plan_error(
            f"mde must be > 0, got {p.mde}: no sample size detects an effect of zero", "mde"
        )
    if p.daily_traffic is not None and not p.daily_traffic > 0:
        raise _plan_error(
            f"daily_traffic must be > 0, got {p.daily_traffic}: without traffic the "
            "experiment never reaches its size",
            "daily_traffic",
        )
    if p.mde_type == "relative":
        if mean == 0:
            raise _plan_error(
                "a relative mde needs a non-zero baseline mean; give an absolute mde",
                "mde_type",
            )
        delta = p.mde * abs(mean)
    else:
        delta = p.mde
    treated = mean + delta
    if is_rate:
        if not 0 < treated < 1:
            raise _plan_error(
                f"the treated rate {treated:g} is outside (0, 1): the mde cannot be met",
                "mde",
            )
        treated_variance = treated * (1 - treated)
    else:
        treated_variance = variance
    comparisons = p.variants - 1
    alpha_each = p.alpha / comparisons
    z = float(sps.norm.isf(alpha_each / 2) + sps.norm.ppf(p.power))
    n_fixed = z**2 * (variance + treated_variance) / delta**2
    inflation = sequential_inflation(alpha_each, p.power)
    n_seq = n_fixed * inflation
    fixed_n, seq_n = math.ceil(n_fixed), math.ceil(n_seq)

    def days(per_variant: int) -> float | None:
        if p.daily_traffic is None:
            return None
        return per_variant * p.variants / p.daily_traffic

    return SampleSizePlan(
        baseline_mean=mean,
        baseline_variance=variance,
        treatment_mean=treated,
        treatment_variance=treated_variance,
        absolute_effect=delta,
        relative_effect=delta / mean if mean else None,
        alpha=p.alpha,
        alpha_per_comparison=alpha_each,
        power=p.power,
        variants=p.variants,
        daily_traffic=p.daily_traffic,
        fixed_subjects_per_variant=fixed_n,
        fixed_subjects=fixed_n * p.variants,
        fixed_days=days(fixed_n),
        sequential_subjects_per_variant=seq_n,
        sequential_subjects=seq_n * p.variants,
        sequential_days=days(seq_n),
        sequential_inflation=inflation,
        sequential_design=f"group-sequential, Lan-DeMets O'Brien-Fleming-like spending, "
        f"{DESIGN_LOOKS} equally spaced looks",
        method="two-sided two-sample z test, unpooled variances; Bonferroni across "
        f"{comparisons} treatment(s)",
    )
