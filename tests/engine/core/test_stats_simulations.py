"""Seeded simulations and hand-worked examples: the statistics behave as they claim.

The large simulations call the vectorised kernels (``t_test``, ``sequential_test``, ...)
on thousands of experiments at once; ``test_kernels_are_what_compare_runs`` pins those
kernels to the struct-level ``compare`` that reports use. Everything is seeded, so each
rate below is one fixed number; the bounds leave room for the Monte Carlo error of that
number (several standard errors), not for flakiness.
"""

from __future__ import annotations

import math

import msgspec
import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps

from assay.engine._core._stats import (
    BayesianPrior,
    CupedStats,
    MeanStats,
    MetricStats,
    ProportionStats,
    QuantileStats,
    RatioStats,
    SrmResult,
    VariantComparison,
    absolute_lift,
    adjust_p_values,
    apply_correction,
    compare,
    compare_variants,
    describe,
    holm,
    lift_variance,
    quantile_interval_levels,
    quantile_stats,
    relative_lift,
    sequential_test,
    srm_check,
    t_test,
    welch_dof,
)
from assay.engine._errors import ValidationFailed

Floats = npt.NDArray[np.float64]
ALPHA = 0.05


def mean_stats(values: Floats) -> MeanStats:
    return MeanStats(n=values.size, sum=float(values.sum()), sum_squares=float(values @ values))


def proportion_stats(values: Floats) -> ProportionStats:
    return ProportionStats(n=values.size, sum=float(values.sum()))


# --- sequential testing under peeking ---------------------------------------------------


def peeking_experiments(
    rng: np.random.Generator, experiments: int, looks: int, chunk: int, rate: float
) -> tuple[Floats, Floats, Floats]:
    """Cumulative conversion rates of A/A experiments at each look: (rate_a, rate_b, n)."""
    n = chunk * np.arange(1, looks + 1, dtype=np.float64)
    conv_a = rng.binomial(chunk, rate, size=(experiments, looks)).cumsum(axis=1)
    conv_b = rng.binomial(chunk, rate, size=(experiments, looks)).cumsum(axis=1)
    return conv_a / n, conv_b / n, n


def test_sequential_survives_twenty_looks_where_fixed_horizon_does_not() -> None:
    rng = np.random.default_rng(20240601)
    pa, pb, n = peeking_experiments(rng, experiments=1000, looks=20, chunk=250, rate=0.2)
    va, vb = pa * (1 - pa), pb * (1 - pb)
    for relative in (False, True):
        est = relative_lift(pa, pb, pa) if relative else absolute_lift(pa, pb)
        var = lift_variance(va, pa, n, vb, pb, n, relative=relative)
        fixed = t_test(est, var, welch_dof(va, n, vb, n), ALPHA)
        seq = sequential_test(est, var, 2 * n, ALPHA, 5000.0)

        fixed_any = float(np.mean((fixed.p_value < ALPHA).any(axis=1)))
        seq_any = float(np.mean((seq.p_value < ALPHA).any(axis=1)))
        fixed_last = float(np.mean(fixed.p_value[:, -1] < ALPHA))
        # Peeking 20 times at a fixed-horizon test inflates its false positives several-fold
        # (about 25% here); the always-valid test stays within its 5% at every look.
        assert fixed_any > 0.15, fixed_any
        assert seq_any <= ALPHA, seq_any
        # Looked at once, the fixed-horizon test is itself valid: the inflation is peeking.
        assert 0.035 <= fixed_last <= 0.065, fixed_last
        # The interval and the p-value are one test: 0 lies outside exactly when p < alpha.
        excludes_zero = (seq.low > 0) | (seq.high < 0)
        assert np.array_equal(excludes_zero, seq.p_value < ALPHA)
        # Validity costs width: the sequential interval contains the fixed one.
        assert np.all(seq.low <= fixed.low)
        assert np.all(seq.high >= fixed.high)


def test_kernels_are_what_compare_runs() -> None:
    rng = np.random.default_rng(7)
    pa, pb, n = peeking_experiments(rng, experiments=5, looks=6, chunk=300, rate=0.3)
    va, vb = pa * (1 - pa), pb * (1 - pb)
    est = absolute_lift(pa, pb)
    var = lift_variance(va, pa, n, vb, pb, n, relative=False)
    fixed = t_test(est, var, welch_dof(va, n, vb, n), ALPHA)
    seq = sequential_test(est, var, 2 * n, ALPHA, 5000.0)
    for i in range(5):
        for j in range(6):
            c = compare(
                ProportionStats(n=int(n[j]), sum=round(pa[i, j] * n[j])),
                ProportionStats(n=int(n[j]), sum=round(pb[i, j] * n[j])),
            )
            assert c.absolute.fixed.p_value == pytest.approx(fixed.p_value[i, j], rel=1e-12)
            assert c.absolute.fixed.ci_low == pytest.approx(fixed.low[i, j], rel=1e-12)
            assert c.absolute.sequential.p_value == pytest.approx(seq.p_value[i, j], rel=1e-12)
            assert c.absolute.sequential.ci_high == pytest.approx(seq.high[i, j], rel=1e-12)


# --- power ------------------------------------------------------------------------------


def test_known_effect_on_a_proportion_is_detected_with_the_expected_power() -> None:
    rng = np.random.default_rng(11)
    experiments, n, p0, p1 = 2000, 10_000, 0.10, 0.11
    pa = rng.binomial(n, p0, experiments) / n
    pb = rng.binomial(n, p1, experiments) / n
    va, vb = pa * (1 - pa), pb * (1 - pb)
    var = lift_variance(va, pa, n, vb, pb, n, relative=False)
    result = t_test(absolute_lift(pa, pb), var, welch_dof(va, n, vb, n), ALPHA)
    observed = float(np.mean(result.p_value < ALPHA))

    se = math.sqrt(p0 * (1 - p0) / n + p1 * (1 - p1) / n)
    z = sps.norm.ppf(1 - ALPHA / 2)
    analytic = float(sps.norm.sf(z - (p1 - p0) / se) + sps.norm.cdf(-z - (p1 - p0) / se))
    assert 0.55 < analytic < 0.75  # a test with real uncertainty either way
    assert observed == pytest.approx(analytic, abs=0.035)


def test_known_effect_on_a_small_mean_has_the_t_distributions_power() -> None:
    rng = np.random.default_rng(12)
    experiments, n, delta = 4000, 20, 0.8
    a = rng.normal(0.0, 1.0, (experiments, n))
    b = rng.normal(delta, 1.0, (experiments, n))
    ma, mb = a.mean(axis=1), b.mean(axis=1)
    va, vb = a.var(axis=1, ddof=1), b.var(axis=1, ddof=1)
    var = lift_variance(va, ma, n, vb, mb, n, relative=False)
    result = t_test(absolute_lift(ma, mb), var, welch_dof(va, n, vb, n), ALPHA)
    observed = float(np.mean(result.p_value < ALPHA))

    # Equal variances and sizes: Welch's statistic is (nearly) noncentral t on 2n - 2 df.
    df, ncp = 2 * n - 2, delta / math.sqrt(2 / n)
    crit = sps.t.ppf(1 - ALPHA / 2, df)
    analytic = float(sps.nct.sf(crit, df, ncp) + sps.nct.cdf(-crit, df, ncp))
    assert observed == pytest.approx(analytic, abs=0.03)


# --- SRM --------------------------------------------------------------------------------


def test_srm_fires_on_52_48_at_100k_and_agrees_with_the_chi_square_by_hand() -> None:
    result = srm_check([52_000, 48_000], [0.5, 0.5])
    assert result.flagged
    # (2000**2 / 50000) * 2 = 160 on one degree of freedom.
    assert result.statistic == pytest.approx(160.0)
    assert result.p_value == pytest.approx(sps.chi2.sf(160.0, 1), rel=1e-9)
    assert result.expected == [50_000.0, 50_000.0]


def test_srm_stays_quiet_on_50_50_data() -> None:
    rng = np.random.default_rng(3)
    p_values = []
    for _ in range(500):
        a = int(rng.binomial(100_000, 0.5))
        result = srm_check([a, 100_000 - a], [1, 1])
        p_values.append(result.p_value)
        assert not result.flagged or result.p_value < 0.001
    flagged = sum(p < 0.001 for p in p_values)
    assert flagged <= 2  # expected 0.5 of 500
    # Under the null the p-values are uniform: about 5% fall below 0.05.
    assert 0.025 <= np.mean(np.array(p_values) < 0.05) <= 0.08
    assert not srm_check([50_000, 50_000], [0.5, 0.5]).flagged


def test_srm_with_uneven_and_missing_weights() -> None:
    assert not srm_check([50_100, 24_950, 24_950], [2, 1, 1]).flagged
    assert srm_check([50_100, 26_000, 23_900], [2, 1, 1]).flagged
    # Exposures in a variant configured to get none are a mismatch by definition.
    assert srm_check([500, 500, 3], [1, 1, 0]).flagged
    assert not srm_check([500, 505, 0], [1, 1, 0]).flagged
    assert srm_check([0, 0], [1, 1]).p_value == 1.0
    with pytest.raises(ValidationFailed):
        srm_check([1, 2], [1.0])


# --- CUPED ------------------------------------------------------------------------------


def cuped_arm(rng: np.random.Generator, n: int, rho: float, effect: float) -> tuple[Floats, Floats]:
    pre = rng.normal(10.0, 2.0, n)
    noise = rng.normal(0.0, 2.0, n)
    post = 10.0 + effect + rho * (pre - 10.0) + math.sqrt(1 - rho**2) * noise
    return pre, post


def cuped_stats(pre: Floats, post: Floats) -> CupedStats:
    return CupedStats(post=mean_stats(post), pre=mean_stats(pre), sum_post_pre=float(post @ pre))


def test_cuped_matches_a_regression_on_raw_data_and_shrinks_the_interval() -> None:
    rng = np.random.default_rng(5)
    pre_a, post_a = cuped_arm(rng, 4000, 0.7, 0.0)
    pre_b, post_b = cuped_arm(rng, 4100, 0.7, 0.1)
    adjusted = compare(cuped_stats(pre_a, post_a), cuped_stats(pre_b, post_b))
    plain = compare(mean_stats(post_a), mean_stats(post_b))

    # Independently: theta is the slope of post on pre over both arms pooled.
    pre, post = np.concatenate([pre_a, pre_b]), np.concatenate([post_a, post_b])
    cov = np.cov(post, pre)
    theta = cov[0, 1] / cov[1, 1]
    assert adjusted.cuped
    assert adjusted.cuped_theta == pytest.approx(theta, rel=1e-9)
    assert adjusted.control.adjusted_mean == pytest.approx(post_a.mean() - theta * pre_a.mean())
    assert adjusted.treatment.mean == pytest.approx(post_b.mean())
    residual_a, residual_b = post_a - theta * pre_a, post_b - theta * pre_b
    se = math.sqrt(residual_a.var(ddof=1) / 4000 + residual_b.var(ddof=1) / 4100)
    assert adjusted.absolute.fixed.std_error == pytest.approx(se, rel=1e-9)

    ratio = adjusted.absolute.fixed.std_error / plain.absolute.fixed.std_error
    assert ratio == pytest.approx(math.sqrt(1 - 0.7**2), abs=0.04)
    assert adjusted.absolute.fixed.p_value < plain.absolute.fixed.p_value


def test_cuped_reduces_the_spread_of_estimates_without_bias() -> None:
    rng = np.random.default_rng(6)
    plain, adjusted = [], []
    for _ in range(300):
        pre_a, post_a = cuped_arm(rng, 400, 0.8, 0.0)
        pre_b, post_b = cuped_arm(rng, 400, 0.8, 0.3)
        adjusted.append(
            compare(cuped_stats(pre_a, post_a), cuped_stats(pre_b, post_b)).absolute.fixed.estimate
        )
        plain.append(compare(mean_stats(post_a), mean_stats(post_b)).absolute.fixed.estimate)
    # Var(adjusted) / Var(plain) is about 1 - rho**2 = 0.36.
    assert np.var(adjusted) / np.var(plain) == pytest.approx(0.36, abs=0.08)
    # Both are centred on the true effect (0.3); 3 standard errors of the mean.
    assert np.mean(adjusted) == pytest.approx(0.3, abs=3 * np.std(adjusted) / math.sqrt(300))
    assert np.mean(plain) == pytest.approx(0.3, abs=3 * np.std(plain) / math.sqrt(300))


def test_cuped_is_harmless_without_correlation_and_works_on_proportions() -> None:
    rng = np.random.default_rng(8)
    pre_a, post_a = cuped_arm(rng, 5000, 0.0, 0.0)
    pre_b, post_b = cuped_arm(rng, 5000, 0.0, 0.0)
    adjusted = compare(cuped_stats(pre_a, post_a), cuped_stats(pre_b, post_b))
    plain = compare(mean_stats(post_a), mean_stats(post_b))
    assert adjusted.absolute.fixed.std_error == pytest.approx(
        plain.absolute.fixed.std_error, rel=0.01
    )

    # 0/1 pre and post from correlated latent normals: CUPED on proportions.
    def arm(n: int) -> CupedStats:
        z = rng.normal(size=n)
        pre = (z > 0.5).astype(np.float64)
        post = (0.9 * z + math.sqrt(1 - 0.81) * rng.normal(size=n) > 0.5).astype(np.float64)
        return CupedStats(
            post=proportion_stats(post), pre=proportion_stats(pre), sum_post_pre=float(post @ pre)
        )

    a, b = arm(5000), arm(5000)
    with_cuped = compare(a, b)
    without = compare(a.post, b.post)
    assert with_cuped.cuped
    assert with_cuped.absolute.fixed.std_error < 0.8 * without.absolute.fixed.std_error

    # A constant covariate gives nothing to regress on: CUPED steps aside.
    flat = CupedStats(post=a.post, pre=MeanStats(n=5000, sum=5000.0, sum_squares=5000.0),
                      sum_post_pre=a.post.sum)  # fmt: skip
    flat_b = CupedStats(post=b.post, pre=MeanStats(n=5000, sum=5000.0, sum_squares=5000.0),
                        sum_post_pre=b.post.sum)  # fmt: skip
    fallback = compare(flat, flat_b)
    assert not fallback.cuped
    assert fallback.absolute.fixed == without.absolute.fixed


# --- multiple testing -------------------------------------------------------------------


def test_holm_and_benjamini_hochberg_by_hand() -> None:
    p = [0.01, 0.04, 0.03, 0.005]
    # Holm: sorted 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 -> max(0.06, 0.04).
    assert adjust_p_values(p, "holm") == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # BH: p*m/rank = 0.02, 0.02, 0.04, 0.04, then the running minimum from the top.
    assert adjust_p_values(p, "benjamini-hochberg") == pytest.approx([0.02, 0.04, 0.04, 0.02])
    assert adjust_p_values(p, "none") == p
    # Capped at 1; BH's step-up lets a smaller rank borrow a later, smaller bound.
    assert adjust_p_values([0.5, 0.6], "holm") == pytest.approx([1.0, 1.0])
    assert adjust_p_values([0.5, 0.6], "benjamini-hochberg") == pytest.approx([0.6, 0.6])
    # Ties and a single test.
    assert adjust_p_values([0.02, 0.02, 0.5], "holm") == pytest.approx([0.06, 0.06, 0.5])
    assert adjust_p_values([0.03], "holm") == [0.03]
    assert adjust_p_values([], "holm") == []
    with pytest.raises(ValidationFailed):
        adjust_p_values([0.1], "bonferroni")
    with pytest.raises(ValidationFailed):
        adjust_p_values([1.5], "holm")


@given(st.lists(st.floats(min_value=0.0, max_value=1.0), min_size=1, max_size=30))
@settings(max_examples=200, deadline=None)
def test_corrections_order(p: list[float]) -> None:
    raw = np.array(p)
    h = holm(raw)
    bh = np.array(adjust_p_values(p, "benjamini-hochberg"))
    assert np.all(h >= bh - 1e-12)
    assert np.all(bh >= raw - 1e-12)
    assert np.all(h <= np.minimum(1.0, raw * raw.size) + 1e-12)
    # Adjusting keeps the order of the raw p-values.
    order = np.argsort(raw, kind="stable")
    assert np.all(np.diff(h[order]) >= -1e-12)


def test_apply_correction_across_metrics_and_variants() -> None:
    rng = np.random.default_rng(9)
    metrics = [
        [proportion_stats((rng.random(2000) < p).astype(np.float64)) for p in (0.10, 0.13, 0.10)],
        [mean_stats(rng.normal(m, 1.0, 500)) for m in (0.0, 0.05, 0.3)],
        [ProportionStats(n=100, sum=0.0), ProportionStats(n=100, sum=3.0)],  # refused
    ]
    family = [c for variants in metrics for c in compare_variants(variants)]
    corrected = apply_correction(family, "holm")
    live = [c for c in family if c.relative.error is None]
    assert len(live) == 4
    raw = [c.relative.fixed.p_value for c in live]
    expected = adjust_p_values(raw, "holm")
    got = [c.relative.fixed.adjusted_p_value for c in corrected if c.relative.error is None]
    assert got == pytest.approx(expected)
    assert corrected[-1].relative.fixed.adjusted_p_value is None
    # Everything but the adjusted p-values is untouched.
    assert [c.relative.fixed.p_value for c in corrected] == [
        c.relative.fixed.p_value for c in family
    ]
    bh = apply_correction(family, "benjamini-hochberg")
    for h, b in zip(corrected, bh, strict=True):
        if h.absolute.sequential.adjusted_p_value is not None:
            assert b.absolute.sequential.adjusted_p_value is not None
            assert b.absolute.sequential.adjusted_p_value <= h.absolute.sequential.adjusted_p_value


# --- every metric kind against numbers worked out independently ------------------------


@pytest.mark.parametrize(
    "draw",
    [
        pytest.param(lambda rng, n, k: rng.lognormal(1.0 + k, 1.0, n), id="mean-lognormal"),
        pytest.param(lambda rng, n, k: rng.poisson(2.0 + k, n).astype(np.float64), id="count"),
    ],
)
def test_mean_and_count_agree_with_scipys_welch_test(draw: object) -> None:
    rng = np.random.default_rng(13)
    a = draw(rng, 700, 0.0)  # type: ignore[operator]
    b = draw(rng, 650, 0.1)  # type: ignore[operator]
    c = compare(mean_stats(a), mean_stats(b))
    ref = sps.ttest_ind(b, a, equal_var=False)
    ci = ref.confidence_interval(1 - ALPHA)
    assert c.absolute.fixed.estimate == pytest.approx(b.mean() - a.mean(), rel=1e-12)
    assert c.absolute.fixed.p_value == pytest.approx(ref.pvalue, rel=1e-9)
    assert c.absolute.dof == pytest.approx(ref.df, rel=1e-9)
    assert (c.absolute.fixed.ci_low, c.absolute.fixed.ci_high) == pytest.approx(
        (ci.low, ci.high), rel=1e-9
    )
    assert c.control.mean == pytest.approx(a.mean())
    assert c.treatment.stddev == pytest.approx(b.std(ddof=1))
    # Relative lift: the ratio of means minus one, delta-method standard error.
    assert c.relative.fixed.estimate == pytest.approx(b.mean() / a.mean() - 1, rel=1e-12)
    grad = np.array([-b.mean() / a.mean() ** 2, 1 / a.mean()])
    cov = np.diag([a.var(ddof=1) / a.size, b.var(ddof=1) / b.size])
    assert c.relative.fixed.std_error == pytest.approx(math.sqrt(grad @ cov @ grad), rel=1e-9)


def test_proportion_uses_the_binomial_variance() -> None:
    rng = np.random.default_rng(14)
    a = (rng.random(5000) < 0.08).astype(np.float64)
    b = (rng.random(5200) < 0.09).astype(np.float64)
    c = compare(proportion_stats(a), proportion_stats(b))
    # p(1-p)/n per arm (numpy's ddof=0 variance) with Welch's degrees of freedom.
    ref = sps.ttest_ind_from_stats(
        b.mean(), b.std(), b.size, a.mean(), a.std(), a.size, equal_var=False
    )
    assert c.absolute.fixed.p_value == pytest.approx(ref.pvalue, rel=1e-9)
    # At this size it is the textbook unpooled two-proportion z-test.
    se = math.sqrt(a.mean() * (1 - a.mean()) / a.size + b.mean() * (1 - b.mean()) / b.size)
    z_p = 2 * sps.norm.sf(abs(b.mean() - a.mean()) / se)
    assert c.absolute.fixed.p_value == pytest.approx(z_p, rel=2e-3)
    assert describe(proportion_stats(a)).mean == pytest.approx(a.mean())


def test_relative_lift_interval_covers_the_truth() -> None:
    rng = np.random.default_rng(15)
    experiments, n = 2000, 1000
    a = rng.lognormal(0.0, 0.8, (experiments, n))
    b = rng.lognormal(math.log(1.05), 0.8, (experiments, n))  # true relative lift: 5%
    ma, mb = a.mean(axis=1), b.mean(axis=1)
    va, vb = a.var(axis=1, ddof=1), b.var(axis=1, ddof=1)
    var = lift_variance(va, ma, n, vb, mb, n, relative=True)
    result = t_test(relative_lift(ma, mb, ma), var, welch_dof(va, n, vb, n), ALPHA)
    coverage = float(np.mean((result.low <= 0.05) & (result.high >= 0.05)))
    assert coverage == pytest.approx(0.95, abs=0.015)


def ratio_arm(rng: np.random.Generator, n: int, per_session: float) -> tuple[Floats, Floats]:
    sessions = rng.poisson(3.0, n) + 1.0
    revenue = rng.gamma(2.0, per_session / 2.0, n) * sessions  # E[revenue/sessions] known
    return np.asarray(revenue, dtype=np.float64), sessions


def ratio_stats(x: Floats, y: Floats) -> RatioStats:
    return RatioStats(numerator=mean_stats(x), denominator=mean_stats(y), sum_xy=float(x @ y))


def test_ratio_matches_the_delta_method_on_raw_data_and_covers_the_truth() -> None:
    rng = np.random.default_rng(16)
    xa, ya = ratio_arm(rng, 3000, 5.0)
    xb, yb = ratio_arm(rng, 3100, 5.5)
    c = compare(ratio_stats(xa, ya), ratio_stats(xb, yb))

    def delta_variance(x: Floats, y: Floats) -> float:
        grad = np.array([1 / y.mean(), -x.mean() / y.mean() ** 2])
        return float(grad @ np.cov(x, y) @ grad / x.size)

    assert c.control.mean == pytest.approx(xa.sum() / ya.sum())
    assert c.absolute.fixed.estimate == pytest.approx(xb.sum() / yb.sum() - xa.sum() / ya.sum())
    se = math.sqrt(delta_variance(xa, ya) + delta_variance(xb, yb))
    assert c.absolute.fixed.std_error == pytest.approx(se, rel=1e-9)

    # Coverage over many experiments with a known true difference of 0.5 per session.
    hits = 0
    for _ in range(300):
        xa, ya = ratio_arm(rng, 800, 5.0)
        xb, yb = ratio_arm(rng, 800, 5.5)
        fixed = compare(ratio_stats(xa, ya), ratio_stats(xb, yb)).absolute.fixed
        hits += fixed.ci_low <= 0.5 <= fixed.ci_high
    assert hits / 300 == pytest.approx(0.95, abs=0.04)


def test_percentile_from_order_statistics() -> None:
    rng = np.random.default_rng(17)
    values = rng.exponential(10.0, 10_000)
    q = quantile_stats(values, 0.9)
    assert q.quantile == pytest.approx(np.percentile(values, 90))
    # The bounds are the sample quantiles at nu -/+ z sqrt(nu(1-nu)/n): with the exact
    # binomial order-statistic interval they differ by at most a rank or two here.
    lo, hi = quantile_interval_levels(0.9, values.size)
    assert (q.lower, q.upper) == pytest.approx(tuple(np.quantile(values, [lo, hi])))
    ordered = np.sort(values)
    k_lo = int(sps.binom.ppf(ALPHA / 2, values.size, 0.9))
    k_hi = int(sps.binom.ppf(1 - ALPHA / 2, values.size, 0.9))
    assert ordered[k_lo - 2] <= q.lower <= ordered[k_lo + 1]
    assert ordered[k_hi - 2] <= q.upper <= ordered[k_hi + 1]

    # Coverage of the true median (10 ln 2) over 2000 samples of 400.
    samples = rng.exponential(10.0, (2000, 400))
    lo, hi = quantile_interval_levels(0.5, 400)
    lower, upper = np.quantile(samples, [lo, hi], axis=1)
    truth = 10.0 * math.log(2.0)
    assert np.mean((lower <= truth) & (truth <= upper)) == pytest.approx(0.95, abs=0.015)


def test_percentile_comparison_holds_alpha_and_finds_a_shift() -> None:
    rng = np.random.default_rng(18)
    null_hits = shift_hits = 0
    for _ in range(300):
        a = quantile_stats(rng.exponential(10.0, 1500), 0.5)
        b = quantile_stats(rng.exponential(10.0, 1500), 0.5)
        c = quantile_stats(rng.exponential(12.0, 1500), 0.5)
        null_hits += compare(a, b).relative.fixed.p_value < ALPHA
        shift_hits += compare(a, c).relative.fixed.p_value < ALPHA
    assert null_hits / 300 <= 0.09
    assert shift_hits / 300 >= 0.9


# --- refusals and validation ------------------------------------------------------------


def test_refusals_are_reported_not_computed() -> None:
    nothing = compare(ProportionStats(n=1000, sum=0.0), ProportionStats(n=1000, sum=5.0))
    assert nothing.relative.error == "baseline_zero"
    assert nothing.absolute.error == "zero_variance"
    assert nothing.absolute.fixed.p_value == 1.0
    assert nothing.absolute.bayesian.chance_to_win == 0.5
    empty = compare(MeanStats(n=10, sum=10.0, sum_squares=30.0), MeanStats(n=0, sum=0.0,
                    sum_squares=0.0))  # fmt: skip
    assert empty.absolute.error == "no_units"
    few = QuantileStats(n=50, nu=0.99, quantile=9.0, lower=8.0, upper=10.0, n_star=50)
    assert compare(few, few).absolute.error == "zero_variance"


def test_results_and_statistics_travel_as_json() -> None:
    """Reports embed comparisons and SQL hands over statistics: both must round-trip."""
    stats = [
        ProportionStats(n=1000, sum=120.0),
        ProportionStats(n=990, sum=140.0),
        ProportionStats(n=10, sum=0.0),
    ]
    comparisons = apply_correction(compare_variants(stats), "benjamini-hochberg")
    encoded = msgspec.json.encode(comparisons)
    assert msgspec.json.decode(encoded, type=list[VariantComparison]) == comparisons
    srm = srm_check([5, 5, 1], [1, 1, 0])
    assert msgspec.json.decode(msgspec.json.encode(srm), type=SrmResult) == srm
    ratio = RatioStats(
        numerator=ProportionStats(n=4, sum=2.0),
        denominator=MeanStats(n=4, sum=9.0, sum_squares=25.0),
        sum_xy=5.0,
    )
    for s in (*stats, ratio):
        assert msgspec.json.decode(msgspec.json.encode(s), type=MetricStats) == s


def test_invalid_statistics_are_rejected() -> None:
    with pytest.raises(ValidationFailed):
        ProportionStats(n=10, sum=11.0)
    with pytest.raises(ValidationFailed):
        MeanStats(n=-1, sum=0.0, sum_squares=0.0)
    with pytest.raises(ValidationFailed):
        RatioStats(
            numerator=MeanStats(n=3, sum=1.0, sum_squares=1.0),
            denominator=MeanStats(n=4, sum=1.0, sum_squares=1.0),
            sum_xy=1.0,
        )
    with pytest.raises(ValidationFailed):
        QuantileStats(n=10, nu=1.5, quantile=1.0, lower=0.0, upper=2.0, n_star=10)
    with pytest.raises(ValidationFailed):
        compare(ProportionStats(n=10, sum=1.0), MeanStats(n=10, sum=1.0, sum_squares=1.0))
    with pytest.raises(ValidationFailed):
        compare(ProportionStats(n=10, sum=1.0), ProportionStats(n=10, sum=2.0), alpha=0.0)
    with pytest.raises(ValidationFailed):
        BayesianPrior(stddev=0.0)
