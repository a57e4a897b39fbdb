"""Built-in metric kinds: proportion, count, mean, ratio and percentile.

Registered exactly like a third-party plugin (``assay_metric_kinds``). Per exposed subject:

- ``proportion``: 1 if the subject converted at least once (in the attribution window);
- ``count``: the number of conversion events;
- ``mean``: the sum of conversion values (a value defaults to 1);
- ``ratio``: sum over subjects of the ``numerator`` metric's value sum over the same of the
  ``denominator`` metric (each in its own window), analysed with the delta method;
- ``percentile``: the ``Metric.percentile`` quantile (``PERCENTILE_CONT``) of the value sums
  of the subjects who converted (non-converters are left out: a p90 of order values should
  not be the p90 of mostly zeros), with its order-statistic interval.

The first three support CUPED (``Metric.cuped_days``): the covariate is the same per-subject
quantity over the days before the subject's first exposure. So does ``ratio``, when its
numerator and denominator set the same ``cuped_days``: the covariate is the same ratio
before exposure, through the delta method (``RatioCupedStats``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from assay.engine._core._stats import (
    CupedStats,
    MeanStats,
    MetricStats,
    ProportionStats,
    QuantileStats,
    RatioCupedStats,
    RatioStats,
    quantile_interval_levels,
    quantile_stats,
)
from assay.engine._errors import ValidationFailed
from assay.engine._metric_kinds import (
    TOTALS_COLUMNS,
    MemorySource,
    MetricKind,
    Row,
    SqlPlan,
    SqlQuery,
    SqlSource,
)
from assay.engine._model import MetricSpec
from assay.engine.hookspecs import hookimpl


def _by_variant(rows: Sequence[Mapping[str, Any]]) -> dict[str, Row]:
    return {
        str(r["variant"]): {k: float(v or 0.0) for k, v in r.items() if k != "variant"}
        for r in rows
    }


class _TotalsKind:
    """A kind read from ``totals``: proportion, count and mean differ only in which
    per-subject quantity (indicator, count or value sum) they take."""

    supports_cuped = True

    def __init__(self, post: str, pre: str, square: str, pre_square: str, cross: str) -> None:
        self._post, self._pre = post, pre
        self._square, self._pre_square, self._cross = square, pre_square, cross

    def check(self, metric: MetricSpec) -> None:
        pass

    def inputs(self, metric: MetricSpec) -> tuple[str, ...]:
        return (metric.key,)

    def reads_totals_only(self, metric: MetricSpec) -> bool:
        return True

    def sql(self, metric: MetricSpec, source: SqlSource) -> SqlPlan:
        q = SqlQuery()
        columns = ", ".join(f"t.{c}" for c in TOTALS_COLUMNS)
        q.text = f"SELECT t.variant, {columns} FROM {source.totals(q, metric.key)} t"
        rows = yield q
        return _by_variant(rows)

    def aggregate(self, metric: MetricSpec, source: MemorySource) -> Mapping[str, Row]:
        return source.totals(metric.key)

    def _component(self, n: int, s: float, ss: float) -> ProportionStats | MeanStats:
        if self._square == "":
            return ProportionStats(n=n, sum=s)
        return MeanStats(n=n, sum=s, sum_squares=ss)

    def statistics(self, metric: MetricSpec, row: Row) -> MetricStats:
        n = int(row.get("n", 0.0))
        post = self._component(n, row.get(self._post, 0.0), row.get(self._square, 0.0))
        if metric.cuped_days is None:
            return post
        pre = self._component(n, row.get(self._pre, 0.0), row.get(self._pre_square, 0.0))
        return CupedStats(post=post, pre=pre, sum_post_pre=row.get(self._cross, 0.0))


PROPORTION = _TotalsKind("n_post", "n_pre", "", "", "x_ind")
COUNT = _TotalsKind("s_count", "s_pre_count", "ss_count", "ss_pre_count", "x_count")
MEAN = _TotalsKind("s_sum", "s_pre_sum", "ss_sum", "ss_pre_sum", "x_sum")


class RatioKind:
    """Sum of one metric over the sum of another, per subject, by the delta method; with
    ``cuped_days`` (which its numerator and denominator must share), regression-adjusted on
    the same ratio before exposure (``RatioCupedStats``)."""

    supports_cuped = True

    def check(self, metric: MetricSpec) -> None:
        for field in ("numerator", "denominator"):
            if getattr(metric, field) is None:
                raise ValidationFailed(
                    f"a ratio metric needs a {field}",
                    code="missing_field",
                    details={"field": field},
                )

    def inputs(self, metric: MetricSpec) -> tuple[str, ...]:
        assert metric.numerator is not None
        assert metric.denominator is not None
        return (metric.numerator, metric.denominator)

    def sql(self, metric: MetricSpec, source: SqlSource) -> SqlPlan:
        numerator, denominator = self.inputs(metric)
        q = SqlQuery()
        units = source.units(q)
        a = source.subjects(q, numerator)
        b = source.subjects(q, denominator)
        sums = ",\n            ".join(
            f"coalesce(sum({' * '.join(f'p.{f}' for f in c.split(' * '))}), 0) AS {name}"
            for name, c in _RATIO_SUMS.items()
        )
        # FULL JOIN: a subject may have converted on one part only; the other is then 0.
        # x, y: numerator and denominator after exposure; u, v: the same before (CUPED).
        q.text = f"""
        SELECT u.variant, u.n,
            {sums}
        FROM {units} u
        LEFT JOIN (
            SELECT coalesce(a.variant, b.variant) AS variant,
                coalesce(a.post_sum, 0) AS x, coalesce(b.post_sum, 0) AS y,
                coalesce(a.pre_sum, 0) AS u, coalesce(b.pre_sum, 0) AS v
            FROM {a} a FULL JOIN {b} b ON a.subject = b.subject
        ) p ON p.variant = u.variant
        GROUP BY u.variant, u.n
        """
        rows = yield q
        return _by_variant(rows)

    def aggregate(self, metric: MetricSpec, source: MemorySource) -> Mapping[str, Row]:
        numerator, denominator = self.inputs(metric)
        a, b = source.subjects(numerator), source.subjects(denominator)
        out: dict[str, Row] = {}
        for variant, n in source.units().items():
            parts: dict[str, dict[str, float]] = {"x": {}, "y": {}, "u": {}, "v": {}}
            for values, post, pre in ((a, "x", "u"), (b, "y", "v")):
                if variant in values:
                    found = values[variant]
                    parts[post] = dict(zip(found.subject, found.post_sum.tolist(), strict=True))
                    parts[pre] = dict(zip(found.subject, found.pre_sum.tolist(), strict=True))
            keys = sorted(set().union(*(p.keys() for p in parts.values())))
            columns = {
                name: np.array([part.get(k, 0.0) for k in keys], dtype=np.float64)
                for name, part in parts.items()
            }
            row: dict[str, float] = {"n": float(n)}
            for name, expression in _RATIO_SUMS.items():
                left, _, right = expression.partition(" * ")
                product = columns[left] * columns[right] if right else columns[left]
                row[name] = float(product.sum())
            out[variant] = row
        return out

    def statistics(self, metric: MetricSpec, row: Row) -> MetricStats:
        n = int(row.get("n", 0.0))

        def ratio(num: str, den: str) -> RatioStats:
            return RatioStats(
                numerator=MeanStats(
                    n=n, sum=row.get(f"s_{num}", 0.0), sum_squares=row.get(f"ss_{num}", 0.0)
                ),
                denominator=MeanStats(
                    n=n, sum=row.get(f"s_{den}", 0.0), sum_squares=row.get(f"ss_{den}", 0.0)
                ),
                sum_xy=row.get(f"s_{num}{den}", 0.0),
            )

        post = ratio("x", "y")
        if metric.cuped_days is None:
            return post
        return RatioCupedStats(
            post=post,
            pre=ratio("u", "v"),
            sum_xu=row.get("s_xu", 0.0),
            sum_xv=row.get("s_xv", 0.0),
            sum_yu=row.get("s_yu", 0.0),
            sum_yv=row.get("s_yv", 0.0),
        )


# A ratio's row: sums and sums of products of x, y (after exposure) and u, v (before).
_RATIO_SUMS = {
    "s_x": "x",
    "ss_x": "x * x",
    "s_y": "y",
    "ss_y": "y * y",
    "s_xy": "x * y",
    "s_u": "u",
    "ss_u": "u * u",
    "s_v": "v",
    "ss_v": "v * v",
    "s_uv": "u * v",
    "s_xu": "x * u",
    "s_xv": "x * v",
    "s_yu": "y * u",
    "s_yv": "y * v",
}


class PercentileKind:
    """A quantile of converted subjects' value sums, with its order-statistic interval."""

    supports_cuped = False

    def check(self, metric: MetricSpec) -> None:
        if metric.percentile is None:
            raise ValidationFailed(
                "a percentile metric needs a percentile",
                code="missing_field",
                details={"field": "percentile"},
            )

    def inputs(self, metric: MetricSpec) -> tuple[str, ...]:
        return (metric.key,)

    def sql(self, metric: MetricSpec, source: SqlSource) -> SqlPlan:
        nu = metric.percentile
        assert nu is not None
        q = SqlQuery()
        q.text = (
            f"SELECT s.variant, count(*) AS n FROM {source.subjects(q, metric.key)} s "
            "WHERE s.post_count > 0 GROUP BY s.variant"
        )
        counts = {str(r["variant"]): int(r["n"]) for r in (yield q)}
        if not counts:
            return {}
        # The interval's levels depend on each variant's n, so they are computed here (by
        # the same function the memory path uses) and sent back as parameters.
        variants = sorted(counts)
        levels = [quantile_interval_levels(nu, counts[v]) for v in variants]
        q = SqlQuery()
        subjects = source.subjects(q, metric.key)
        q.text = f"""
        SELECT s.variant, count(*) AS n,
            percentile_cont(ARRAY[l.nu, l.lo, l.hi]) WITHIN GROUP (ORDER BY s.post_sum) AS q
        FROM {subjects} s
        JOIN unnest({q.param(variants)}::text[], {q.param([nu] * len(variants))}::float8[],
                    {q.param([lv[0] for lv in levels])}::float8[],
                    {q.param([lv[1] for lv in levels])}::float8[]) AS l(variant, nu, lo, hi)
            ON l.variant = s.variant
        WHERE s.post_count > 0
        GROUP BY s.variant, l.nu, l.lo, l.hi
        """
        rows = yield q
        return {
            str(r["variant"]): {
                "n": float(r["n"]),
                "quantile": float(r["q"][0]),
                "lower": float(r["q"][1]),
                "upper": float(r["q"][2]),
            }
            for r in rows
        }

    def aggregate(self, metric: MetricSpec, source: MemorySource) -> Mapping[str, Row]:
        nu = metric.percentile
        assert nu is not None
        out: dict[str, Row] = {}
        for variant, values in source.subjects(metric.key).items():
            converted = values.post_sum[values.post_count > 0]
            if converted.size == 0:
                continue
            stats = quantile_stats(converted, nu)
            out[variant] = {
                "n": float(stats.n),
                "quantile": stats.quantile,
                "lower": stats.lower,
                "upper": stats.upper,
            }
        return out

    def statistics(self, metric: MetricSpec, row: Row) -> MetricStats:
        nu = metric.percentile
        assert nu is not None
        n = int(row.get("n", 0.0))
        return QuantileStats(
            n=n,
            nu=nu,
            quantile=row.get("quantile", 0.0),
            lower=row.get("lower", 0.0),
            upper=row.get("upper", 0.0),
            n_star=n,
        )


BUILTIN_KINDS: Mapping[str, MetricKind] = {
    "proportion": PROPORTION,
    "count": COUNT,
    "mean": MEAN,
    "ratio": RatioKind(),
    "percentile": PercentileKind(),
}


@hookimpl
def assay_metric_kinds() -> Mapping[str, MetricKind]:
    return BUILTIN_KINDS
