"""Guardrail judgement: is a running experiment harming a metric, or unhealthy?

Pure and synchronous, like the rest of ``_core``: the guardrail actor gathers per-variant
sufficient statistics and traffic counts and calls these functions on every check.

**Why the sequential test.** A guardrail is looked at on every interval (every minute by
default) for as long as the experiment runs. A fixed-horizon test looked at that often
finds a "significant" harm in most harmless experiments sooner or later (each look is
another chance of a false alarm). The sequential interval of ``_stats_frequentist`` is a
confidence *sequence*: with probability at least 1 - alpha it contains the true lift at
every sample size at once, so the chance that it ever wrongly excludes the truth, over any
number of looks, stays below alpha. A breach is declared only when that interval lies
entirely beyond the threshold in the harmful direction, so a harmless experiment (true
lift inside the threshold) triggers with probability at most alpha over its whole run.

The interval is computed exactly as reports compute their ``sequential`` result
(``compare(...).relative.sequential`` / ``.absolute.sequential``): the same kernels, on the
same moments. It is not computed through ``compare`` itself only because that also
computes the fixed-horizon and Bayesian results, which a guardrail does not need and which
cost a hundred times more on every check.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Final, Literal

import msgspec

from assay.engine._core._durations import describe_duration
from assay.engine._core._stats_frequentist import (
    lift_error,
    lift_estimate,
    sequential_test,
)
from assay.engine._core._stats_srm import SRM_THRESHOLD, sequential_srm
from assay.engine._core._stats_sufficient import MetricStats, pair_moments

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from assay.engine._model import Guardrail

__all__ = [
    "DEFAULT_GUARDRAIL_TUNING",
    "CheckStatus",
    "HealthVerdict",
    "PairVerdict",
    "judge_crossover_rate",
    "judge_guardrail",
    "judge_no_traffic",
    "judge_pair",
    "judge_srm",
]

DEFAULT_GUARDRAIL_TUNING: Final = 5000.0
"""Total units at which the confidence sequence is tightest (gbstats' default, as reports)."""

CheckStatus = Literal["ok", "breached", "insufficient_sample", "not_computable"]


class PairVerdict(msgspec.Struct, frozen=True, kw_only=True):
    """One treatment against control on one guardrail."""

    status: CheckStatus
    variant: str | None = None
    n_control: int = 0
    n_treatment: int = 0
    estimate: float | None = None
    """The lift (relative or absolute, as the guardrail's threshold is)."""
    ci_low: float | None = None
    ci_high: float | None = None
    """The always-valid interval of the lift at the guardrail's (corrected) alpha."""
    p_value: float | None = None
    """The sequential p-value for no lift."""
    error: str | None = None
    """Why no interval could be computed (``baseline_zero``, ``no_units``,
    ``zero_variance``) when ``status`` is ``not_computable``."""


def judge_pair(
    control: MetricStats,
    treatment: MetricStats,
    *,
    harmful_direction: Literal["increase", "decrease"],
    threshold: float,
    relative: bool,
    min_sample: int,
    alpha: float,
    tuning: float = DEFAULT_GUARDRAIL_TUNING,
    variant: str | None = None,
) -> PairVerdict:
    """Judge ``treatment`` against ``control``.

    Breached when both arms have ``min_sample`` units and the sequential interval lies
    entirely beyond ``threshold`` in the harmful direction: its lower end above
    ``+threshold`` for ``increase``, its upper end below ``-threshold`` for ``decrease``.

    Only one end of the interval can ever trigger, so the two-sided sequence is taken at
    level 1 - 2 * ``alpha``: each of its ends is then a one-sided always-valid bound at
    level 1 - ``alpha`` (the mixture is symmetric), and a harmless treatment triggers with
    probability at most ``alpha`` over the whole run. ``ci_low``/``ci_high`` report that
    two-sided interval.
    """
    a, b, _ = pair_moments(control, treatment)
    base = PairVerdict(status="ok", variant=variant, n_control=a.n, n_treatment=b.n)
    if a.n < min_sample or b.n < min_sample:
        return msgspec.structs.replace(base, status="insufficient_sample")
    # The same conditions under which ``_stats.compare`` reports an error.
    error = lift_error(a, b, relative=relative)
    if error is not None:
        return msgspec.structs.replace(base, status="not_computable", error=error)
    estimate, variance = lift_estimate(a, b, relative=relative)
    test = sequential_test(estimate, variance, a.n + b.n, 2 * alpha, tuning)
    low, high, p_value = float(test.low), float(test.high), float(test.p_value)
    if not (math.isfinite(low) and math.isfinite(high)):
        return msgspec.structs.replace(base, status="not_computable", error="zero_variance")
    breached = low > threshold if harmful_direction == "increase" else high < -threshold
    return msgspec.structs.replace(
        base,
        status="breached" if breached else "ok",
        estimate=estimate,
        ci_low=low,
        ci_high=high,
        p_value=p_value,
    )


_STATUS_RANK: Final[dict[str, int]] = {
    "breached": 3,
    "ok": 2,
    "not_computable": 1,
    "insufficient_sample": 0,
}


def judge_guardrail(
    guardrail: Guardrail,
    statistics: Mapping[str, MetricStats],
    variants: Sequence[str],
    *,
    tuning: float = DEFAULT_GUARDRAIL_TUNING,
) -> PairVerdict:
    """Judge every treatment (``variants[1:]``) against control (``variants[0]``) and
    return the verdict that matters most: a breach if any (the most harmful one), else the
    treatment closest to breaching.

    With several treatments each is a separate chance of a false alarm, so alpha is divided
    among them (Bonferroni): the guardrail as a whole still false-alarms at most alpha.
    Variants with no statistics count as having no units.
    """
    if len(variants) < 2:
        return PairVerdict(status="not_computable", error="no_variants")
    control_key, treatments = variants[0], variants[1:]
    control = statistics.get(control_key)
    if control is None:
        return PairVerdict(status="insufficient_sample", variant=None)
    alpha = guardrail.alpha / len(treatments)
    relative = guardrail.threshold_type == "relative"
    best: PairVerdict | None = None
    for key in treatments:
        treatment = statistics.get(key)
        if treatment is None:
            verdict = PairVerdict(status="insufficient_sample", variant=key, n_control=control.n)
        else:
            verdict = judge_pair(
                control,
                treatment,
                harmful_direction=guardrail.harmful_direction,
                threshold=guardrail.threshold,
                relative=relative,
                min_sample=guardrail.min_sample,
                alpha=alpha,
                tuning=tuning,
                variant=key,
            )
        if best is None or _more_important(verdict, best, guardrail.harmful_direction):
            best = verdict
    assert best is not None
    return best


def _harm(verdict: PairVerdict, direction: str) -> float:
    """The interval's end nearest the harmful side: higher means closer to (or deeper
    into) a breach."""
    if verdict.ci_low is None or verdict.ci_high is None:
        return -math.inf
    return verdict.ci_low if direction == "increase" else -verdict.ci_high


def _more_important(new: PairVerdict, old: PairVerdict, direction: str) -> bool:
    rank_new, rank_old = _STATUS_RANK[new.status], _STATUS_RANK[old.status]
    if rank_new != rank_old:
        return rank_new > rank_old
    return _harm(new, direction) > _harm(old, direction)


# --- health checks --------------------------------------------------------------------


class HealthVerdict(msgspec.Struct, frozen=True, kw_only=True):
    """One health check of one experiment: SRM, no traffic, or crossover rate."""

    status: CheckStatus
    observed: float | None = None
    """SRM: the anytime-valid p-value; no traffic: minutes without a new exposure;
    crossovers: the rate."""
    threshold: float
    statistic: float | None = None
    """SRM: the log Bayes factor of the sequential multinomial test."""
    message: str = ""


def judge_srm(
    assigned: Sequence[int],
    weights: Sequence[float],
    *,
    min_units: int,
    threshold: float = SRM_THRESHOLD,
) -> HealthVerdict:
    """Sample ratio mismatch of the assigned subjects (crossovers included) against the
    configured weights, by the anytime-valid sequential multinomial test
    (``sequential_srm``): checked on every interval for as long as the experiment runs, a
    correctly split experiment is flagged with probability at most ``threshold`` over the
    whole run, not at every check."""
    total = sum(assigned)
    if total < min_units or len(assigned) < 2:
        return HealthVerdict(
            status="insufficient_sample",
            threshold=threshold,
            message=f"{total} assigned subjects; SRM is tested from {min_units}",
        )
    result = sequential_srm(assigned, weights, level=threshold)
    return HealthVerdict(
        status="breached" if result.flagged else "ok",
        observed=result.p_value,
        threshold=threshold,
        statistic=result.log_bayes_factor,
        message=f"assigned subjects {list(assigned)} against expected "
        f"{[round(e, 1) for e in result.expected]}: anytime-valid p = {result.p_value:.3g}",
    )


def judge_no_traffic(last_activity: datetime, now: datetime, *, minutes: float) -> HealthVerdict:
    """Breached when no new subject was exposed for ``minutes`` (counting from the later of
    the last exposure and the experiment's last change, so a fresh start or a resume gets
    its full allowance)."""
    idle = max((now - last_activity) / timedelta(minutes=1), 0.0)
    breached = idle > minutes
    return HealthVerdict(
        status="breached" if breached else "ok",
        observed=idle,
        threshold=minutes,
        message=f"no new exposure for {describe_duration(idle * 60)} "
        f"(limit {describe_duration(minutes * 60)})",
    )


def judge_crossover_rate(
    crossovers: int, assigned: int, *, limit: float, min_units: int
) -> HealthVerdict:
    """Share of assigned subjects seen in more than one variant; above ``limit`` is a
    breach (assignment is not sticky: a changing hash attribute, a cache, a bug)."""
    if assigned < min_units:
        return HealthVerdict(
            status="insufficient_sample",
            threshold=limit,
            message=f"{assigned} assigned subjects; the crossover rate is judged from {min_units}",
        )
    rate = crossovers / assigned
    return HealthVerdict(
        status="breached" if rate > limit else "ok",
        observed=rate,
        threshold=limit,
        message=f"{crossovers} of {assigned} assigned subjects crossed variants "
        f"({rate:.2%}, limit {limit:.2%})",
    )
