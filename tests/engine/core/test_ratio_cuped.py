"""CUPED for ratio metrics (``RatioCupedStats``): against an independent computation on
unit-level data (the delta-method linearisations and a least-squares fit with numpy), equal
to plain CUPED when the denominators are constant, and an interval that still covers."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from assay.engine._core._stats import (
    CupedStats,
    MeanStats,
    RatioCupedStats,
    RatioStats,
    compare,
)
from assay.engine._core._stats_sufficient import pair_moments

Floats = npt.NDArray[np.float64]


def unit_data(rng: np.random.Generator, n: int, lift: float = 0.0) -> dict[str, Floats]:
    """Sessions (v before, y after exposure) and revenue (u before, x after), per user, the
    after strongly tied to the before."""
    activity = rng.gamma(2.0, 1.5, size=n)
    v = rng.poisson(activity) + 1.0
    y = rng.poisson(activity) + 1.0
    spend = rng.gamma(3.0, 2.0, size=n)
    u = rng.poisson(v * spend * 0.5).astype(np.float64)
    x = rng.poisson(y * spend * 0.5 * (1 + lift)).astype(np.float64)
    return {"x": x, "y": y, "u": u, "v": v}


def mean_stats(values: Floats) -> MeanStats:
    return MeanStats(n=values.size, sum=float(values.sum()), sum_squares=float(values @ values))


def ratio_cuped(d: dict[str, Floats]) -> RatioCupedStats:
    x, y, u, v = d["x"], d["y"], d["u"], d["v"]
    return RatioCupedStats(
        post=RatioStats(numerator=mean_stats(x), denominator=mean_stats(y), sum_xy=float(x @ y)),
        pre=RatioStats(numerator=mean_stats(u), denominator=mean_stats(v), sum_xy=float(u @ v)),
        sum_xu=float(x @ u),
        sum_xv=float(x @ v),
        sum_yu=float(y @ u),
        sum_yv=float(y @ v),
    )


def independent(
    a: dict[str, Floats], b: dict[str, Floats]
) -> tuple[float, list[tuple[float, float]]]:
    """theta by least squares of the pooled post linearisation on the pooled pre one, and
    per arm (adjusted ratio, per-unit variance of the adjusted linearisation)."""
    pooled = {k: np.concatenate([a[k], b[k]]) for k in a}

    def linear(d: dict[str, Floats]) -> tuple[Floats, Floats, float, float]:
        r, r_pre = d["x"].mean() / d["y"].mean(), d["u"].mean() / d["v"].mean()
        post = (d["x"] - r * d["y"]) / d["y"].mean()
        pre = (d["u"] - r_pre * d["v"]) / d["v"].mean()
        return post, pre, float(r), float(r_pre)

    post, pre, _, _ = linear(pooled)
    design = np.column_stack([np.ones_like(pre), pre])
    theta = float(np.linalg.lstsq(design, post, rcond=None)[0][1])
    arms = []
    for d in (a, b):
        post, pre, r, r_pre = linear(d)
        arms.append((r - theta * r_pre, float(np.var(post - theta * pre, ddof=1))))
    return theta, arms


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_agrees_with_a_regression_on_unit_level_data(seed: int) -> None:
    rng = np.random.default_rng(seed)
    a, b = unit_data(rng, 3000), unit_data(rng, 2500, lift=0.05)
    control, treatment = ratio_cuped(a), ratio_cuped(b)
    ma, mb, theta = pair_moments(control, treatment)
    expected_theta, arms = independent(a, b)
    assert theta == pytest.approx(expected_theta, rel=1e-9)
    for got, (mean, variance) in zip((ma, mb), arms, strict=True):
        assert got.mean == pytest.approx(mean, rel=1e-9)
        assert got.variance == pytest.approx(variance, rel=1e-9)
    assert ma.unadjusted_mean == pytest.approx(a["x"].sum() / a["y"].sum(), rel=1e-12)
    # The adjustment pays: the standard error shrinks against the plain ratio.
    plain = compare(control.post, treatment.post)
    adjusted = compare(control, treatment)
    assert adjusted.cuped
    assert adjusted.absolute.fixed.std_error < 0.8 * plain.absolute.fixed.std_error


def test_with_constant_denominators_it_is_plain_cuped() -> None:
    rng = np.random.default_rng(4)
    a, b = unit_data(rng, 2000), unit_data(rng, 2000, lift=0.03)
    for d in (a, b):
        d["y"] = np.ones_like(d["y"])
        d["v"] = np.ones_like(d["v"])

    def plain(d: dict[str, Floats]) -> CupedStats:
        return CupedStats(
            post=mean_stats(d["x"]), pre=mean_stats(d["u"]), sum_post_pre=float(d["x"] @ d["u"])
        )

    ratio = compare(ratio_cuped(a), ratio_cuped(b))
    cuped = compare(plain(a), plain(b))
    assert ratio.cuped_theta == pytest.approx(cuped.cuped_theta, rel=1e-9)
    for scale in ("absolute", "relative"):
        for kind in ("fixed", "sequential"):
            got = getattr(getattr(ratio, scale), kind)
            want = getattr(getattr(cuped, scale), kind)
            for field in ("estimate", "std_error", "ci_low", "ci_high", "p_value"):
                assert getattr(got, field) == pytest.approx(getattr(want, field), rel=1e-9)


def test_without_a_usable_covariate_it_is_the_plain_ratio() -> None:
    rng = np.random.default_rng(5)
    a, b = unit_data(rng, 500), unit_data(rng, 500)
    for d in (a, b):
        d["u"] = np.zeros_like(d["u"])
        d["v"] = np.zeros_like(d["v"])  # no pre-period at all
    result = compare(ratio_cuped(a), ratio_cuped(b))
    plain = compare(ratio_cuped(a).post, ratio_cuped(b).post)
    assert not result.cuped
    assert result.absolute.fixed.p_value == pytest.approx(plain.absolute.fixed.p_value)


def test_the_adjusted_interval_covers_an_aa_lift() -> None:
    """Seeded A/A: the fixed-horizon 95% interval of the adjusted lift covers 0 about 95% of
    the time (600 experiments: 95% +- 0.9%)."""
    rng = np.random.default_rng(6)
    covered = 0
    runs = 600
    for _ in range(runs):
        result = compare(ratio_cuped(unit_data(rng, 400)), ratio_cuped(unit_data(rng, 400)))
        covered += result.absolute.fixed.ci_low <= 0 <= result.absolute.fixed.ci_high
    rate = covered / runs
    print(f"A/A coverage of the CUPED ratio interval: {rate:.3f} over {runs}")
    assert 0.92 <= rate <= 0.98
