"""assay's statistics agree with GrowthBook's gbstats on every case of the reference fixture.

``fixtures/gbstats_reference.json`` is written by ``scripts/gbstats_reference.py``, which runs
gbstats 0.8.0 in its own virtual environment (gbstats pins numpy<2, so it is never a
dependency of assay). Each case holds the sufficient statistics of every variant and what
gbstats' ``TwoSidedTTest``, ``SequentialTwoSidedTTest``, ``EffectBayesianABTest`` and
``check_srm`` answered. A missing fixture fails the suite: agreement is never skipped.

"Agree" means four significant digits (relative tolerance 1e-4). Numbers that are zero in
all but rounding (far below the lift's standard error, or probabilities below 1e-12) are
compared absolutely: there gbstats rounds ``1 - cdf`` to 0 where assay keeps the tail.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

import msgspec
import pytest
from scipy import stats as sps

from assay.engine._core._stats import (
    BayesianPrior,
    FrequentistResult,
    LiftAnalysis,
    MetricStats,
    compare_variants,
    srm_check,
)

FIXTURE = Path(__file__).parent / "fixtures" / "gbstats_reference.json"
REL = 1e-4
# For probabilities, as an absolute tolerance of 1e-12 on the ``close`` scale.
PROBABILITY = 1e-2

# gbstats' message -> the assay error codes that mean the same refusal. gbstats checks a
# zero control mean even for absolute lifts and reports an empty arm as zero variance in
# its frequentist tests; assay reports the underlying reason.
ERRORS = {
    "ZERO_NEGATIVE_BASELINE_VARIATION": {"baseline_zero", "zero_variance", "no_units"},
    "ZERO_NEGATIVE_VARIANCE": {"zero_variance", "no_units"},
    "NO_UNITS_IN_VARIATION": {"no_units"},
}


def _load() -> dict[str, Any]:
    if not FIXTURE.is_file():
        raise FileNotFoundError(
            f"{FIXTURE} is missing; regenerate it with scripts/gbstats_reference.py"
        )
    data: dict[str, Any] = json.loads(FIXTURE.read_text(encoding="utf-8"))
    return data


DATA = _load()
CASES: list[dict[str, Any]] = DATA["cases"]


def close(mine: float, theirs: float | None, *, scale: float, what: str) -> None:
    """Four significant digits, or within 1e-10 of ``scale`` (the lift's standard error)."""
    assert theirs is not None, f"{what}: gbstats gave a non-finite value"
    abs_tol = 1e-10 * scale
    assert math.isclose(mine, theirs, rel_tol=REL, abs_tol=abs_tol), (
        f"{what}: assay {mine!r} != gbstats {theirs!r}"
    )


def check_frequentist(mine: FrequentistResult, theirs: dict[str, Any], what: str) -> None:
    scale = theirs["stddev"] or 1.0
    close(mine.estimate, theirs["expected"], scale=scale, what=f"{what} estimate")
    close(mine.std_error, theirs["stddev"], scale=scale, what=f"{what} std error")
    close(mine.ci_low, theirs["ci"][0], scale=scale, what=f"{what} ci low")
    close(mine.ci_high, theirs["ci"][1], scale=scale, what=f"{what} ci high")
    close(mine.p_value, theirs["p_value"], scale=PROBABILITY, what=f"{what} p")


def check_lift(lift: LiftAnalysis, result: dict[str, Any], relative: bool, what: str) -> None:
    fixed, sequential, bayes = result["frequentist"], result["sequential"], result["bayesian"]
    if "unguarded" in fixed:
        # Deliberate difference: gbstats refuses an absolute lift when the control mean is
        # zero; assay computes it, and must then agree with gbstats' own formulas.
        assert not relative
        assert lift.error is None, what
        check_frequentist(lift.fixed, fixed["unguarded"], f"{what} fixed")
        check_frequentist(lift.sequential, sequential["unguarded"], f"{what} sequential")
    elif fixed["error"] is not None:
        assert lift.error in ERRORS[fixed["error"]], (what, lift.error, fixed["error"])
        assert sequential["error"] is not None
        check_frequentist(lift.fixed, fixed, f"{what} fixed default")
        check_frequentist(lift.sequential, sequential, f"{what} sequential default")
    else:
        assert lift.error is None, (what, lift.error)
        check_frequentist(lift.fixed, fixed, f"{what} fixed")
        check_frequentist(lift.sequential, sequential, f"{what} sequential")

    b = lift.bayesian
    if bayes["error"] == "ZeroDivisionError":
        # gbstats divides by the zero control mean when rescaling its relative prior; assay
        # falls back to the data alone, i.e. the posterior is the likelihood.
        g = fixed["unguarded"]
        close(b.expected, g["expected"], scale=g["stddev"], what=f"{what} posterior mean")
        close(b.stddev, g["stddev"], scale=g["stddev"], what=f"{what} posterior sd")
        expected_ctw = float(sps.norm.sf(0, g["expected"], g["stddev"]))
        close(b.chance_to_win, expected_ctw, scale=PROBABILITY, what=f"{what} chance to win")
        return
    if bayes["error"] is not None:
        assert lift.error in ERRORS[bayes["error"]], (what, lift.error, bayes["error"])
    elif lift.error is None:
        pass
    else:
        # Only gbstats' frequentist-only refusal (absolute lift, zero control) may make
        # assay refuse where gbstats' Bayesian test answered; that case is handled above.
        pytest.fail(f"{what}: assay refused ({lift.error}) where gbstats answered")
    scale = bayes["stddev"] or 1.0
    close(b.expected, bayes["expected"], scale=scale, what=f"{what} posterior mean")
    close(b.stddev, bayes["stddev"], scale=scale, what=f"{what} posterior sd")
    close(b.ci_low, bayes["ci"][0], scale=scale, what=f"{what} credible low")
    close(b.ci_high, bayes["ci"][1], scale=scale, what=f"{what} credible high")
    close(b.chance_to_win, bayes["chance_to_win"], scale=PROBABILITY, what=f"{what} chance to win")
    close(b.risk_control, bayes["risk"][0], scale=scale, what=f"{what} risk of control")
    close(b.risk_treatment, bayes["risk"][1], scale=scale, what=f"{what} risk of treatment")


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_agrees_with_gbstats(case: dict[str, Any]) -> None:
    variants = [msgspec.convert(v, MetricStats) for v in case["variants"]]
    comparisons = compare_variants(
        variants,
        alpha=case["alpha"],
        inverse=case["inverse"],
        prior=BayesianPrior(**case["prior"]),
        sequential_tuning=case["sequential_tuning"],
    )
    assert len(comparisons) == len(variants) - 1
    for result in case["results"]:
        comparison = comparisons[result["variant"] - 1]
        relative = result["difference"] == "relative"
        lift = comparison.relative if relative else comparison.absolute
        check_lift(
            lift, result, relative, f"{case['id']} v{result['variant']} {result['difference']}"
        )
        # CUPED is in force exactly when the case carries a covariate that varies.
        assert comparison.cuped == (case["kind"] == "cuped" and comparison.cuped_theta != 0)

    srm = srm_check([v.n for v in variants], case["weights"])
    close(srm.p_value, case["srm_p_value"], scale=PROBABILITY, what="SRM p")
    assert srm.flagged == (case["srm_p_value"] < 0.001)


def test_fixture_covers_what_it_must() -> None:
    """A regenerated fixture that silently lost a kind of input would weaken the check."""
    assert DATA["meta"]["gbstats"] == "0.8.0"
    assert len(CASES) >= 300
    kinds = Counter(c["kind"] for c in CASES)
    assert set(kinds) == {"proportion", "mean", "ratio", "cuped", "quantile"}
    assert min(kinds.values()) >= 40
    assert {len(c["variants"]) for c in CASES} == {2, 3}
    results = [r for c in CASES for r in c["results"]]
    assert Counter(r["difference"] for r in results).keys() == {"relative", "absolute"}
    clean = [r for r in results if r["frequentist"]["error"] is None]
    assert len(clean) >= 800
    # Significant and non-significant results, proper and flat priors, inverse metrics,
    # non-default alphas and tunings, SRM and no SRM, and refusals are all present.
    assert any(r["frequentist"]["p_value"] < 0.001 for r in clean)
    assert any(r["frequentist"]["p_value"] > 0.5 for r in clean)
    assert any(r["sequential"]["p_value"] < 0.05 for r in clean)
    assert any(r["sequential"]["p_value"] == 1.0 for r in clean)
    assert any(c["prior"]["proper"] for c in CASES)
    assert any(c["inverse"] for c in CASES)
    assert {c["alpha"] for c in CASES} >= {0.01, 0.05, 0.1}
    assert len({c["sequential_tuning"] for c in CASES}) >= 3
    assert any(c["srm_p_value"] < 0.001 for c in CASES)
    assert any(c["srm_p_value"] > 0.5 for c in CASES)
    assert any(r["frequentist"]["error"] is not None for r in results)
    cuped_sizes = [c["variants"][0]["post"]["n"] for c in CASES if c["kind"] == "cuped"]
    assert min(cuped_sizes) < 100 < 100_000 < max(cuped_sizes)
    sizes = [c["variants"][0]["n"] for c in CASES if c["kind"] == "proportion"]
    assert min(sizes) < 100
    assert max(sizes) >= 1_000_000
