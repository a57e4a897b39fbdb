"""Generate the gbstats reference fixture that assay's statistics are checked against.

gbstats (GrowthBook's statistics engine) pins ``numpy<2`` and ``pandas<2``, so it must never
enter assay's own dependencies. This script runs in a separate, throwaway virtual
environment; its output, ``tests/engine/core/fixtures/gbstats_reference.json``, is committed
and read by ``tests/engine/core/test_stats_gbstats_agreement.py``.

Run it from the repository root:

    python3 -m venv /tmp/gbstats-venv
    /tmp/gbstats-venv/bin/pip install 'gbstats==0.8.0' 'numpy<2' 'pandas<2' scipy
    /tmp/gbstats-venv/bin/python scripts/gbstats_reference.py

The inputs are generated from a fixed seed, so re-running it with the same gbstats version
rewrites the same file. Each case is one metric of one experiment: the sufficient
statistics of every variant (control first), the analysis settings, and what gbstats'
``TwoSidedTTest``, ``SequentialTwoSidedTTest`` and ``EffectBayesianABTest`` answer for
every treatment against control, relative and absolute, plus ``check_srm`` on the units.
The tests are configured the way ``gbstats.gbstats.get_configured_test`` configures them
(the Bayesian prior is a relative-scale ``GaussianPrior`` built from the metric's prior
settings), except that the Bayesian test is also given the case's alpha: that pipeline
leaves it at 0.05 whatever the analysis' alpha, while assay uses one alpha for every
interval of a comparison.
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from gbstats.bayesian.tests import EffectBayesianABTest, EffectBayesianConfig, GaussianPrior
from gbstats.frequentist.tests import (
    FrequentistConfig,
    SequentialConfig,
    SequentialTwoSidedTTest,
    TwoSidedTTest,
)
from gbstats.messages import BASELINE_VARIATION_ZERO_MESSAGE
from gbstats.models.statistics import (
    ProportionStatistic,
    QuantileStatistic,
    RatioStatistic,
    RegressionAdjustedStatistic,
    SampleMeanStatistic,
)
from gbstats.utils import check_srm
from scipy.stats import norm

SEED = 20240605
OUT = Path(__file__).resolve().parents[1] / "tests/engine/core/fixtures/gbstats_reference.json"

Json = dict[str, Any]


# --- sufficient statistics, in the fixture's neutral form -------------------------------


def proportion(n: int, successes: float) -> Json:
    return {"type": "proportion", "n": int(n), "sum": float(successes)}


def mean(values: np.ndarray) -> Json:
    v = np.asarray(values, dtype=np.float64)
    return {
        "type": "mean",
        "n": int(v.size),
        "sum": float(v.sum()),
        "sum_squares": float(np.dot(v, v)),
    }


def component(values: np.ndarray, kind: str) -> Json:
    """A numerator, denominator, post or pre component from per-unit values."""
    if kind == "proportion":
        return proportion(values.size, float(values.sum()))
    return mean(values)


def to_gbstats(stats: Json) -> Any:
    match stats["type"]:
        case "proportion":
            return ProportionStatistic(n=stats["n"], sum=stats["sum"])
        case "mean":
            return SampleMeanStatistic(
                n=stats["n"], sum=stats["sum"], sum_squares=stats["sum_squares"]
            )
        case "ratio":
            return RatioStatistic(
                n=stats["numerator"]["n"],
                m_statistic=to_gbstats(stats["numerator"]),
                d_statistic=to_gbstats(stats["denominator"]),
                m_d_sum_of_products=stats["sum_xy"],
            )
        case "cuped":
            return RegressionAdjustedStatistic(
                n=stats["post"]["n"],
                post_statistic=to_gbstats(stats["post"]),
                pre_statistic=to_gbstats(stats["pre"]),
                post_pre_sum_of_products=stats["sum_post_pre"],
                theta=0,
            )
        case "quantile":
            return QuantileStatistic(
                n=stats["n"],
                n_star=stats["n_star"],
                nu=stats["nu"],
                quantile_hat=stats["quantile"],
                quantile_lower=stats["lower"],
                quantile_upper=stats["upper"],
            )
    raise ValueError(stats["type"])


def units(stats: Json) -> int:
    match stats["type"]:
        case "ratio":
            return int(stats["numerator"]["n"])
        case "cuped":
            return int(stats["post"]["n"])
    return int(stats["n"])


# --- cases ------------------------------------------------------------------------------


@dataclass
class Case:
    id: str
    kind: str
    variants: list[Json]
    weights: list[float]
    alpha: float = 0.05
    tuning: float = 5000.0
    inverse: bool = False
    prior: Json = field(default_factory=lambda: {"mean": 0.0, "stddev": 0.1, "proper": False})


def proportion_cases(rng: np.random.Generator) -> list[Case]:
    cases = []
    rates = [0.0005, 0.01, 0.1, 0.5, 0.9, 0.99, 0.9995]
    sizes = [40, 300, 5_000, 200_000, 10_000_000]
    i = 0
    for rate in rates:
        for n in sizes:
            k = 3 if i % 3 == 0 else 2
            lifts = [0.0, *rng.choice([0.0, 0.02, -0.05, 0.1, 0.3], size=k - 1)]
            ns = [int(n * rng.uniform(0.97, 1.03)) for _ in range(k)]
            variants = []
            for lift, nv in zip(lifts, ns, strict=True):
                p = min(max(rate * (1 + lift), 0.0), 1.0)
                variants.append(proportion(nv, int(rng.binomial(nv, p))))
            cases.append(Case(f"proportion-{i}", "proportion", variants, [1.0 / k] * k))
            i += 1
    return cases


def mean_cases(rng: np.random.Generator) -> list[Case]:
    cases = []
    draws = {
        "poisson": lambda n, lift: rng.poisson(2.0 * (1 + lift), n),
        "lognormal": lambda n, lift: rng.lognormal(1.0 + math.log1p(lift), 1.2, n),
        "normal-signed": lambda n, lift: rng.normal(0.5 + lift, 3.0, n),
        "zero-inflated": lambda n, lift: (
            rng.exponential(50 * (1 + lift), n) * (rng.random(n) < 0.05)
        ),
        "unequal-variance": None,
    }
    i = 0
    for name, draw in draws.items():
        for n in [12, 80, 1_000, 30_000, 400_000]:
            k = 3 if i % 4 == 1 else 2
            lifts = [0.0, *rng.choice([0.0, 0.03, 0.1, -0.08], size=k - 1)]
            variants = []
            for j, lift in enumerate(lifts):
                nv = int(n * rng.uniform(0.9, 1.1)) if n > 12 else n + j
                if draw is None:
                    # Treatment variance four times control's: Welch's case.
                    values = rng.normal(10 * (1 + lift), 2.0 * (1 + j), nv)
                else:
                    values = draw(nv, lift)
                variants.append(mean(values))
            weights = [1.0 / k] * k if i % 5 else [0.4] + [0.6 / (k - 1)] * (k - 1)
            cases.append(Case(f"mean-{name}-{i}", "mean", variants, weights))
            i += 1
    return cases


def ratio_cases(rng: np.random.Generator) -> list[Case]:
    cases = []
    i = 0
    for numerator_kind in ["mean", "proportion"]:
        for n in [25, 400, 8_000, 150_000]:
            for corr in [0.0, 0.8]:
                k = 3 if i % 3 == 2 else 2
                variants = []
                for j in range(k):
                    lift = 0.0 if j == 0 else float(rng.choice([0.0, 0.05, 0.2]))
                    nv = int(n * rng.uniform(0.95, 1.05))
                    sessions = rng.poisson(3.0, nv) + 1.0
                    if numerator_kind == "proportion":
                        p = np.clip(0.2 * (1 + lift) * (1 + corr * (sessions - 4) / 4), 0, 1)
                        numer = (rng.random(nv) < p).astype(np.float64)
                    else:
                        numer = rng.gamma(2.0, 5.0 * (1 + lift), nv) * (
                            corr * sessions + (1 - corr) * 4.0
                        )
                    denom_kind = "proportion" if i % 8 == 7 else "mean"
                    if denom_kind == "proportion":
                        sessions = (sessions > 2).astype(np.float64)
                        sessions[0] = 1.0  # a denominator that is never all zero
                    variants.append(
                        {
                            "type": "ratio",
                            "numerator": component(numer, numerator_kind),
                            "denominator": component(sessions, denom_kind),
                            "sum_xy": float(np.dot(numer, sessions)),
                        }
                    )
                cases.append(Case(f"ratio-{i}", "ratio", variants, [1.0 / k] * k))
                i += 1
    return cases


def cuped_cases(rng: np.random.Generator) -> list[Case]:
    cases = []
    i = 0
    for kind in ["mean", "proportion"]:
        for n in [30, 600, 20_000, 300_000]:
            for rho in [0.0, 0.4, 0.9]:
                k = 3 if i % 4 == 3 else 2
                variants = []
                for j in range(k):
                    lift = 0.0 if j == 0 else float(rng.choice([0.0, 0.02, 0.1]))
                    nv = int(n * rng.uniform(0.95, 1.05))
                    z = rng.normal(size=nv)
                    pre_raw = z
                    post_raw = rho * z + math.sqrt(1 - rho * rho) * rng.normal(size=nv)
                    if kind == "proportion":
                        # Thresholded latent normals: correlated 0/1 pre and post.
                        pre = (pre_raw > 0.8).astype(np.float64)
                        post = (post_raw > 0.8 - lift * 3).astype(np.float64)
                    else:
                        pre = 20 + 5 * pre_raw
                        post = 20 * (1 + lift) + 5 * post_raw
                    variants.append(
                        {
                            "type": "cuped",
                            "post": component(post, kind),
                            "pre": component(pre, kind),
                            "sum_post_pre": float(np.dot(post, pre)),
                        }
                    )
                cases.append(Case(f"cuped-{kind}-{i}", "cuped", variants, [1.0 / k] * k))
                i += 1
    return cases


def quantile_bounds(nu: float, n_star: int, alpha: float = 0.05) -> tuple[float, float]:
    """The order-statistic levels GrowthBook's SQL reads the interval from."""
    z = float(norm.ppf(1 - alpha / 2))
    se = math.sqrt(nu * (1 - nu) / n_star)
    return max(nu - z * se, 1e-8), min(nu + z * se, 1 - 1e-8)


def quantile_cases(rng: np.random.Generator) -> list[Case]:
    cases = []
    i = 0
    for nu in [0.5, 0.9, 0.95, 0.99]:
        for n in [30, 150, 2_000, 60_000]:
            k = 3 if i % 5 == 4 else 2
            variants = []
            for j in range(k):
                lift = 0.0 if j == 0 else float(rng.choice([0.0, 0.05, 0.15]))
                nv = int(n * rng.uniform(0.9, 1.1))
                values = rng.lognormal(3.0 + math.log1p(lift), 0.8, nv)
                # Sometimes read the bounds at a coarser n_star than n, as GrowthBook's SQL
                # does with its grid of precomputed levels.
                n_star = nv if i % 2 == 0 else max(10, int(nv * 0.8))
                lo, hi = quantile_bounds(nu, n_star)
                q, ql, qh = np.quantile(values, [nu, lo, hi])
                variants.append(
                    {
                        "type": "quantile",
                        "n": nv,
                        "n_star": n_star,
                        "nu": nu,
                        "quantile": float(q),
                        "lower": float(ql),
                        "upper": float(qh),
                    }
                )
            cases.append(Case(f"quantile-{i}", "quantile", variants, [1.0 / k] * k))
            i += 1
    return cases


def settings_cases(rng: np.random.Generator) -> list[Case]:
    """The same kind of data under non-default alpha, tuning, priors and inverse metrics."""
    cases = []
    settings: list[dict[str, Any]] = [
        {"alpha": 0.1},
        {"alpha": 0.01},
        {"tuning": 1000.0},
        {"tuning": 50_000.0},
        {"inverse": True},
        {"prior": {"mean": 0.0, "stddev": 0.1, "proper": True}},
        {"prior": {"mean": 0.05, "stddev": 0.3, "proper": True}},
        {"prior": {"mean": -0.02, "stddev": 0.02, "proper": True}, "inverse": True},
    ]
    i = 0
    for s in settings:
        for n in [200, 20_000]:
            control = mean(rng.lognormal(2.0, 1.0, n))
            treatment = mean(rng.lognormal(2.05, 1.0, n + 7))
            cases.append(Case(f"settings-mean-{i}", "mean", [control, treatment], [0.5, 0.5], **s))
            control_p = proportion(n, int(rng.binomial(n, 0.2)))
            treatment_p = proportion(n - 3, int(rng.binomial(n - 3, 0.22)))
            cases.append(
                Case(f"settings-prop-{i}", "proportion", [control_p, treatment_p], [0.5, 0.5], **s)
            )
            i += 1
    return cases


def random_variant(rng: np.random.Generator, kind: str, n: int, lift: float, k: Json) -> Json:
    """One variant of ``kind`` with ``n`` units; ``k`` holds the case's shared parameters."""
    if kind == "proportion":
        return proportion(n, int(rng.binomial(n, min(k["rate"] * (1 + lift), 1.0))))
    if kind == "mean":
        return mean(rng.gamma(k["shape"], k["scale"] * (1 + lift), n))
    if kind == "ratio":
        denom = rng.poisson(k["shape"], n) + 1.0
        numer = rng.gamma(k["shape"], k["scale"] * (1 + lift), n) * denom ** k["rho"]
        return {
            "type": "ratio",
            "numerator": mean(numer),
            "denominator": mean(denom),
            "sum_xy": float(np.dot(numer, denom)),
        }
    if kind == "cuped":
        pre = rng.gamma(k["shape"], k["scale"], n)
        post = (1 + lift) * (k["rho"] * pre + (1 - k["rho"]) * rng.gamma(k["shape"], k["scale"], n))
        return {
            "type": "cuped",
            "post": mean(post),
            "pre": mean(pre),
            "sum_post_pre": float(np.dot(post, pre)),
        }
    values = rng.gamma(k["shape"], k["scale"] * (1 + lift), n)
    lo, hi = quantile_bounds(k["nu"], n)
    q, ql, qh = np.quantile(values, [k["nu"], lo, hi])
    return {
        "type": "quantile",
        "n": n,
        "n_star": n,
        "nu": k["nu"],
        "quantile": float(q),
        "lower": float(ql),
        "upper": float(qh),
    }


def random_cases(rng: np.random.Generator, count: int) -> list[Case]:
    """Kinds, sizes, shapes and settings drawn at random, to cover what the grids miss."""
    cases = []
    for i in range(count):
        kind = str(rng.choice(["proportion", "mean", "ratio", "cuped", "quantile"]))
        n = int(10 ** rng.uniform(1.3, 5.5))
        shared = {
            "rate": float(10 ** rng.uniform(-3, -0.05)),
            "shape": float(rng.uniform(0.3, 5)),
            "scale": float(10 ** rng.uniform(-2, 3)),
            "rho": float(rng.uniform(0, 1)),
            "nu": float(rng.choice([0.25, 0.5, 0.75, 0.9, 0.95])),
        }
        k = int(rng.choice([2, 2, 3]))
        weights = [float(w) for w in rng.dirichlet([5.0] * k)]
        # Half the cases follow their weights closely (SRM quiet), half do not (SRM fires).
        spread = 0.01 if i % 2 else 0.2
        variants = [
            random_variant(
                rng,
                kind,
                max(2, int(n * k * weights[j] * rng.uniform(1 - spread, 1 + spread))),
                0.0 if j == 0 else float(rng.normal(0, 0.1)),
                shared,
            )
            for j in range(k)
        ]
        proper = bool(rng.random() < 0.3)
        cases.append(
            Case(
                f"random-{kind}-{i}",
                kind,
                variants,
                weights,
                alpha=float(rng.choice([0.01, 0.05, 0.1])),
                tuning=float(rng.choice([500.0, 5000.0, 5000.0, 25_000.0])),
                inverse=bool(rng.random() < 0.2),
                prior={
                    "mean": float(rng.normal(0, 0.05)) if proper else 0.0,
                    "stddev": float(rng.uniform(0.02, 0.5)) if proper else 0.1,
                    "proper": proper,
                },
            )
        )
    return cases


def edge_cases(rng: np.random.Generator) -> list[Case]:
    """Inputs where gbstats declines to compute, and a few lopsided or degenerate ones."""
    signed = np.array([-2.0, 2.0, -1.0, 1.0, 0.0, -3.0, 3.0, 0.5, -0.5, 0.0])
    return [
        # No conversions in control: zero variance.
        Case("edge-zero-control", "proportion", [proportion(500, 0), proportion(500, 4)], [1, 1]),
        # Every unit converted in treatment: zero variance.
        Case("edge-all-treatment", "proportion", [proportion(50, 45), proportion(50, 50)], [1, 1]),
        # An empty treatment.
        Case("edge-empty-treatment", "mean", [mean(rng.normal(5, 1, 40)), mean(np.zeros(0))],
             [1, 1]),
        # A single unit in treatment.
        Case("edge-one-unit", "mean", [mean(rng.normal(5, 1, 40)), mean(np.array([4.0]))], [1, 1]),
        # Control mean exactly zero with positive variance: relative is undefined, absolute
        # is not (see the agreement test for how assay differs here).
        Case("edge-zero-mean", "mean", [mean(signed), mean(signed + 0.7)], [1, 1]),
        # Identical variants.
        Case("edge-identical", "proportion", [proportion(1000, 100), proportion(1000, 100)],
             [1, 1]),
        # Lopsided traffic against its configured weights: SRM.
        Case(
            "edge-srm",
            "proportion",
            [proportion(52_000, 5_200), proportion(48_000, 4_900)],
            [0.5, 0.5],
        ),
        Case(
            "edge-srm-weighted",
            "mean",
            [mean(rng.normal(1, 1, 2_000)), mean(rng.normal(1, 1, 8_200))],
            [0.2, 0.8],
        ),
        # Huge effect: p-values underflow, chance to win saturates.
        Case("edge-huge-effect", "proportion",
             [proportion(10**6, 10**5), proportion(10**6, 2 * 10**5)], [1, 1]),
        # CUPED whose covariate is constant: gbstats falls back to the unadjusted test.
        Case(
            "edge-cuped-constant-pre",
            "cuped",
            [
                {
                    "type": "cuped",
                    "post": mean(post := rng.normal(3, 1, 300)),
                    "pre": mean(np.full(300, 2.0)),
                    "sum_post_pre": float(post.sum() * 2.0),
                },
                {
                    "type": "cuped",
                    "post": mean(post2 := rng.normal(3.2, 1, 310)),
                    "pre": mean(np.full(310, 2.0)),
                    "sum_post_pre": float(post2.sum() * 2.0),
                },
            ],
            [1, 1],
        ),
        # A quantile with too few events for its level: gbstats treats it as zero variance.
        Case(
            "edge-quantile-few",
            "quantile",
            [
                {"type": "quantile", "n": 60, "n_star": 60, "nu": 0.99,
                 "quantile": 40.0, "lower": 30.0, "upper": 50.0},
                {"type": "quantile", "n": 60, "n_star": 60, "nu": 0.99,
                 "quantile": 42.0, "lower": 31.0, "upper": 52.0},
            ],
            [1, 1],
        ),
    ]  # fmt: skip


# --- running gbstats --------------------------------------------------------------------


def finite(x: Any) -> float | None:
    """JSON has no inf or nan; None stands for them (gbstats produces them only in extremes)."""
    x = float(x)
    return x if math.isfinite(x) else None


def frequentist(test: Any) -> Json:
    res = test.compute_result()
    out: Json = {
        "expected": finite(res.expected),
        "ci": [finite(res.ci[0]), finite(res.ci[1])],
        "p_value": finite(res.p_value),
        "stddev": finite(res.uplift.stddev),
        "error": res.error_message,
    }
    if (
        res.error_message == BASELINE_VARIATION_ZERO_MESSAGE
        and not test.relative
        and not test._has_zero_variance()
    ):
        # gbstats refuses an absolute lift against a zero control mean although the formula
        # is well defined; record what its formulas give so assay can be checked against
        # them (assay computes the absolute lift in that case).
        out["unguarded"] = {
            "expected": finite(test.point_estimate),
            "ci": [finite(v) for v in test.confidence_interval],
            "p_value": finite(test.p_value),
            "stddev": finite(math.sqrt(test.variance)),
        }
    return out


def bayesian(test: Any) -> Json:
    try:
        res = test.compute_result()
    except ZeroDivisionError:
        # gbstats rescales its relative prior by the control mean for an absolute analysis
        # and divides by the result, which is zero when that mean is zero (even for a flat
        # prior). Recorded as such; assay analyses that case with the data alone.
        return {"error": "ZeroDivisionError"}
    return {
        "expected": finite(res.expected),
        "ci": [finite(res.ci[0]), finite(res.ci[1])],
        "stddev": finite(res.uplift.stddev),
        "chance_to_win": finite(res.chance_to_win),
        "risk": [finite(res.risk[0]), finite(res.risk[1])],
        "error": res.error_message,
    }


def run(case: Case) -> Json:
    results = []
    for v in range(1, len(case.variants)):
        for difference in ["relative", "absolute"]:
            # Fresh statistics per test: gbstats writes CUPED's theta into them.
            def pair() -> tuple[Any, Any]:
                return to_gbstats(case.variants[0]), to_gbstats(case.variants[v])  # noqa: B023

            base = {"difference_type": difference, "traffic_proportion_b": case.weights[v]}
            fixed = TwoSidedTTest(*pair(), FrequentistConfig(**base, alpha=case.alpha))
            seq = SequentialTwoSidedTTest(
                *pair(),
                SequentialConfig(**base, alpha=case.alpha, sequential_tuning_parameter=case.tuning),
            )
            prior = GaussianPrior(
                mean=case.prior["mean"],
                variance=case.prior["stddev"] ** 2,
                proper=case.prior["proper"],
            )
            bayes = EffectBayesianABTest(
                *pair(),
                EffectBayesianConfig(
                    **base,
                    alpha=case.alpha,
                    inverse=case.inverse,
                    prior_effect=prior,
                    prior_type="relative",
                ),
            )
            results.append(
                {
                    "variant": v,
                    "difference": difference,
                    "frequentist": frequentist(fixed),
                    "sequential": frequentist(seq),
                    "bayesian": bayesian(bayes),
                }
            )
    srm = check_srm([units(s) for s in case.variants], case.weights)
    return {
        "id": case.id,
        "kind": case.kind,
        "alpha": case.alpha,
        "sequential_tuning": case.tuning,
        "inverse": case.inverse,
        "prior": case.prior,
        "weights": [float(w) for w in case.weights],
        "variants": case.variants,
        "srm_p_value": finite(srm),
        "results": results,
    }


def main() -> None:
    rng = np.random.default_rng(SEED)
    cases = (
        proportion_cases(rng)
        + mean_cases(rng)
        + ratio_cases(rng)
        + cuped_cases(rng)
        + quantile_cases(rng)
        + settings_cases(rng)
        + edge_cases(rng)
        + random_cases(rng, 200)
    )
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        # gbstats overflows quietly on extreme inputs (an e-value of inf gives p = 0); that
        # is part of what is recorded.
        warnings.simplefilter("ignore")
        rows = [run(c) for c in cases]
    header = {
        "generator": "scripts/gbstats_reference.py",
        "seed": SEED,
        "gbstats": importlib.metadata.version("gbstats"),
        "numpy": np.__version__,
        "scipy": importlib.metadata.version("scipy"),
        "python": sys.version.split()[0],
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    # One case per line: diffs stay readable and the file stays small.
    lines = [json.dumps(r, allow_nan=False, separators=(",", ":")) for r in rows]
    body = ",\n".join(lines)
    OUT.write_text(
        '{"meta":' + json.dumps(header) + ',\n"cases":[\n' + body + "\n]}\n", encoding="utf-8"
    )
    print(f"wrote {len(rows)} cases to {OUT}")


if __name__ == "__main__":
    main()
