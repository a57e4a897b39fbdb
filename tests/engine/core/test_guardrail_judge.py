"""The guardrail judge: false alarms stay under alpha however often it looks, real harm is
caught, and the interval is the reports' sequential interval.

The simulations drive ``judge_pair`` directly with cumulative sufficient statistics, as
the guardrail actor would see them on each interval: seeded, so every run gives the same
figures.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from assay.engine._core._guardrails import (
    judge_crossover_rate,
    judge_guardrail,
    judge_no_traffic,
    judge_pair,
    judge_srm,
)
from assay.engine._core._stats import compare
from assay.engine._core._stats_sufficient import MeanStats, ProportionStats
from assay.engine._model import Guardrail

ALPHA = 0.05
EXPERIMENTS = 500
LOOKS = 50
STEP = 200
"""Units per arm added between two looks: 50 looks reach 10,000 units per arm."""


def _simulate(
    rate: float, lift: float, *, seed: int, step: int = STEP, threshold: float = 0.0
) -> tuple[float, float, list[int]]:
    """Run ``EXPERIMENTS`` experiments of ``LOOKS`` checks each; return the share that
    ever triggered (sequential judge), the share a fixed-horizon z-test peeked at every
    look would have flagged, and the units per arm at each sequential trigger."""
    rng = np.random.default_rng(seed)
    control = rng.binomial(step, rate, size=(EXPERIMENTS, LOOKS)).cumsum(axis=1)
    treatment = rng.binomial(step, rate * (1 + lift), size=(EXPERIMENTS, LOOKS)).cumsum(axis=1)
    triggered, naive, when = 0, 0, []
    for e in range(EXPERIMENTS):
        naive_hit = False
        for look in range(LOOKS):
            n = step * (look + 1)
            verdict = judge_pair(
                ProportionStats(n=n, sum=float(control[e, look])),
                ProportionStats(n=n, sum=float(treatment[e, look])),
                harmful_direction="increase",
                threshold=threshold,
                relative=True,
                min_sample=STEP,
                alpha=ALPHA,
            )
            pc, pt = control[e, look] / n, treatment[e, look] / n
            se = np.sqrt(pc * (1 - pc) / n + pt * (1 - pt) / n)
            naive_hit = naive_hit or (se > 0 and (pt - pc) / se > 1.6449)
            if verdict.status == "breached":
                triggered += 1
                when.append(n)
                break
        naive += naive_hit
    return triggered / EXPERIMENTS, naive / EXPERIMENTS, when


def test_an_aa_test_checked_on_every_interval_false_alarms_at_most_alpha() -> None:
    rate, naive, _ = _simulate(0.10, 0.0, seed=20240601)
    # The guardrail looked 50 times at each of 500 harmless experiments, with the strictest
    # threshold (any rise at all): it may false-alarm in at most alpha of them.
    assert rate <= ALPHA, rate
    # What peeking does to a fixed-horizon test at the same nominal level: this is why the
    # guardrail uses the sequential interval.
    assert naive > 3 * ALPHA, naive


def test_a_rare_event_metric_does_not_false_alarm_either() -> None:
    # 1% base rate: the normal approximation is at its weakest; min_sample guards it.
    rate, _, _ = _simulate(0.01, 0.0, seed=7, step=400)
    assert rate <= ALPHA, rate


def test_a_real_ten_percent_harm_is_caught() -> None:
    rate, _, when = _simulate(0.20, 0.10, seed=99, step=500)
    assert rate >= 0.95, rate
    # ... typically well before the run's end (25,000 units per arm).
    assert np.median(when) < 25_000


def test_a_harm_within_the_threshold_is_tolerated() -> None:
    # A 1% rise under a 5% threshold: not a breach, however long it runs.
    rate, _, _ = _simulate(0.20, 0.01, seed=5, step=500, threshold=0.05)
    assert rate <= ALPHA, rate


def test_the_interval_is_the_reports_sequential_interval() -> None:
    control = ProportionStats(n=5000, sum=500)
    treatment = ProportionStats(n=5000, sum=560)
    for relative in (True, False):
        verdict = judge_pair(
            control,
            treatment,
            harmful_direction="increase",
            threshold=0.0,
            relative=relative,
            min_sample=1,
            alpha=ALPHA,
        )
        # One end of a two-sided (1 - 2 alpha) sequence is a one-sided (1 - alpha) bound.
        report = compare(control, treatment, alpha=2 * ALPHA)
        lift = report.relative if relative else report.absolute
        assert verdict.estimate == pytest.approx(lift.sequential.estimate)
        assert verdict.ci_low == pytest.approx(lift.sequential.ci_low)
        assert verdict.ci_high == pytest.approx(lift.sequential.ci_high)
        assert verdict.p_value == pytest.approx(lift.sequential.p_value)


def test_directions_thresholds_and_minimum_sample() -> None:
    control = MeanStats(n=4000, sum=4000.0, sum_squares=8000.0)  # mean 1, variance ~1
    worse = MeanStats(n=4000, sum=3600.0, sum_squares=6840.0)  # mean 0.9

    def judge(**kwargs: object) -> str:
        args: dict[str, object] = {
            "harmful_direction": "decrease",
            "threshold": 0.0,
            "relative": True,
            "min_sample": 100,
            "alpha": ALPHA,
        }
        args.update(kwargs)
        return judge_pair(control, worse, **args).status  # type: ignore[arg-type]

    assert judge() == "breached"
    assert judge(harmful_direction="increase") == "ok"  # a fall is harmless here
    assert judge(threshold=0.5) == "ok"  # a 10% fall is tolerated under 50%
    assert judge(relative=False, threshold=0.01) == "breached"  # -0.1 in metric units
    assert judge(min_sample=5000) == "insufficient_sample"
    zero = ProportionStats(n=1000, sum=0)
    baseline = judge_pair(
        zero,
        ProportionStats(n=1000, sum=10),
        harmful_direction="increase",
        threshold=0.0,
        relative=True,
        min_sample=100,
        alpha=ALPHA,
    )
    assert (baseline.status, baseline.error) == ("not_computable", "baseline_zero")


def test_a_guardrail_reports_its_worst_treatment_and_splits_alpha() -> None:
    guardrail = Guardrail(metric="errors", harmful_direction="increase", min_sample=100)
    stats = {
        "control": ProportionStats(n=5000, sum=500),
        "a": ProportionStats(n=5000, sum=505),
        "b": ProportionStats(n=5000, sum=650),
    }
    verdict = judge_guardrail(guardrail, stats, ["control", "a", "b"])
    assert (verdict.status, verdict.variant) == ("breached", "b")
    # With two treatments each is judged at alpha / 2: a wider interval than alone.
    alone = judge_guardrail(guardrail, stats, ["control", "b"])
    assert alone.ci_low is not None
    assert verdict.ci_low is not None
    assert verdict.ci_low < alone.ci_low
    missing = judge_guardrail(guardrail, {"control": stats["control"]}, ["control", "a"])
    assert missing.status == "insufficient_sample"


def test_health_checks() -> None:
    assert judge_srm([5000, 5000], [1, 1], min_units=100).status == "ok"
    assert judge_srm([5000, 4500], [1, 1], min_units=100).status == "breached"
    assert judge_srm([50, 10], [1, 1], min_units=100).status == "insufficient_sample"
    assert judge_srm([4000, 6000], [0.4, 0.6], min_units=100).status == "ok"

    assert judge_crossover_rate(5, 1000, limit=0.01, min_units=100).status == "ok"
    crossed = judge_crossover_rate(50, 1000, limit=0.01, min_units=100)
    assert (crossed.status, crossed.observed) == ("breached", 0.05)
    assert judge_crossover_rate(50, 60, limit=0.01, min_units=100).status == "insufficient_sample"

    now = datetime(2025, 1, 1, 12, tzinfo=UTC)
    assert judge_no_traffic(now - timedelta(minutes=59), now, minutes=60).status == "ok"
    idle = judge_no_traffic(now - timedelta(minutes=90), now, minutes=60)
    assert (idle.status, idle.observed) == ("breached", 90.0)
