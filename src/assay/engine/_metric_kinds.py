"""Metric kinds: how one metric's events become per-variant sufficient statistics.

A metric kind is contributed by a plugin (hook ``assay_metric_kinds``); the built-ins
(proportion, count, mean, ratio, percentile) live in ``assay.plugins.metrics`` and are
registered like any third-party plugin. A kind has two halves:

* **aggregation**, run by the store: ``sql`` for PostgreSQL (one or more parameterised
  queries, so no raw row leaves the database) and ``aggregate`` for the memory store. Both
  read the same three relations, which the store has already restricted to one experiment,
  one report period (on the subject's first exposure), analysed subjects only (crossovers
  excluded) and each metric's attribution window:

  - ``units``: ``(variant, n)``, the analysed subjects per variant;
  - ``totals(key)``: ``(variant, n, n_post, s_count, ss_count, s_sum, ss_sum, n_pre,
    s_pre_count, ss_pre_count, s_pre_sum, ss_pre_sum, x_ind, x_count, x_sum)``: per
    variant, over the analysed subjects, the sums of each subject's conversion count and
    value sum (``s_``) and of their squares (``ss_``), inside the attribution window and, for
    CUPED, inside the pre-exposure window (``_pre_``); ``n_post``/``n_pre`` count subjects
    with at least one such conversion, and ``x_`` are the sums of post * pre products
    (``x_ind`` of the 0/1 indicators). Subjects without conversions contribute zeros.
    This relation is cheap whatever the data size (PostgreSQL keeps it as hourly rollups);
  - ``subjects(key)``: one row per analysed subject with any conversion of the metric in
    either window: ``(variant, subject, post_count, post_sum, pre_count, pre_sum)``. Its
    cost grows with the number of converted subjects.

  Each answers one ``Row`` (column name -> number) per variant.
* **analysis**: ``statistics`` turns one variant's row into the sufficient-statistics
  Struct that ``assay.engine._core._stats.compare`` takes.

Everything here is pure: the engine never runs SQL itself; the PostgreSQL adapter drives
``sql`` (a generator that yields each query and receives its rows).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator, Mapping, Sequence
from datetime import datetime
from typing import Any, NamedTuple, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt
import pluggy

from assay.engine._core._stats import MetricStats
from assay.engine._errors import ValidationFailed
from assay.engine._model import MetricSpec

log = logging.getLogger("assay.engine.metrics")

Row = Mapping[str, float]
"""One variant's aggregated numbers, by column name."""

TOTALS_COLUMNS: tuple[str, ...] = (
    "n",
    "n_post",
    "s_count",
    "ss_count",
    "s_sum",
    "ss_sum",
    "n_pre",
    "s_pre_count",
    "ss_pre_count",
    "s_pre_sum",
    "ss_pre_sum",
    "x_ind",
    "x_count",
    "x_sum",
)
"""The columns of ``totals(key)`` besides ``variant``, in order."""


class SqlQuery:
    """A query under construction: text plus positional parameters (``$1``...)."""

    def __init__(self) -> None:
        self.text = ""
        self.params: list[Any] = []

    def param(self, value: Any) -> str:
        """The placeholder for ``value``; add a cast in the text where the type matters."""
        self.params.append(value)
        return f"${len(self.params)}"


class SqlSource(Protocol):
    """The relations a kind's SQL may read (PostgreSQL). Each method returns a
    parenthesised subquery, adding its parameters to ``query``."""

    def units(self, query: SqlQuery) -> str: ...

    def totals(self, query: SqlQuery, metric_key: str) -> str: ...

    def subjects(self, query: SqlQuery, metric_key: str) -> str: ...


class SubjectValues(NamedTuple):
    """Per-subject values of one metric in one variant, aligned by position: the subjects
    with any conversion in either window (the others are all zeros)."""

    subject: Sequence[str]
    post_count: npt.NDArray[np.float64]
    post_sum: npt.NDArray[np.float64]
    pre_count: npt.NDArray[np.float64]
    pre_sum: npt.NDArray[np.float64]


class MemorySource(Protocol):
    """The same relations for the memory store, as Python values."""

    def units(self) -> Mapping[str, int]: ...

    def totals(self, metric_key: str) -> Mapping[str, Row]: ...

    def subjects(self, metric_key: str) -> Mapping[str, SubjectValues]: ...


SqlPlan = Generator[SqlQuery, Sequence[Mapping[str, Any]], Mapping[str, Row]]
"""A kind's SQL: yields each query to run, is sent back its rows, returns a row per
variant. Most kinds need one query; a percentile needs two (counts, then the levels its
interval depends on)."""


class MetricKind(Protocol):
    """What a plugin implements for one metric kind (see the module docstring)."""

    supports_cuped: bool
    """Whether ``Metric.cuped_days`` applies: ``statistics`` then returns ``CupedStats``."""

    def check(self, metric: MetricSpec) -> None:
        """Refuse a metric this kind cannot analyse (raise ``ValidationFailed``); called
        when the metric is saved. Cross-object references are checked by the engine."""
        ...

    def inputs(self, metric: MetricSpec) -> tuple[str, ...]:
        """The metric keys whose events this metric reads (itself; a ratio its parts)."""
        ...

    def sql(self, metric: MetricSpec, source: SqlSource) -> SqlPlan:
        """Aggregate in PostgreSQL: one row per variant."""
        ...

    def aggregate(self, metric: MetricSpec, source: MemorySource) -> Mapping[str, Row]:
        """Aggregate in memory: the same rows ``sql`` would give."""
        ...

    def statistics(self, metric: MetricSpec, row: Row) -> MetricStats:
        """One variant's sufficient statistics from its row."""
        ...


@runtime_checkable
class TotalsKind(Protocol):
    """A kind whose row per variant is its metric's ``totals`` row, read as it is (the
    built-in proportion, count and mean). Totals add up hour by hour, so a store can give
    such a metric at many period ends in one pass over its hourly rollups
    (``Store.report_series``); any other kind is aggregated once per end."""

    def reads_totals_only(self, metric: MetricSpec) -> bool:
        """True when ``sql``/``aggregate`` answer ``totals(metric.key)`` unchanged."""
        ...


def totals_of(units: Mapping[str, int], values: Mapping[str, SubjectValues]) -> dict[str, Row]:
    """``totals`` computed from per-subject values: what the memory store answers, and
    the definition the PostgreSQL rollups must match."""
    out: dict[str, Row] = {}
    for variant, n in units.items():
        v = values.get(variant)
        if v is None:
            empty = np.zeros(0)
            v = SubjectValues((), empty, empty, empty, empty)
        post_ind = (v.post_count > 0).astype(np.float64)
        pre_ind = (v.pre_count > 0).astype(np.float64)
        out[variant] = {
            "n": float(n),
            "n_post": float(post_ind.sum()),
            "s_count": float(v.post_count.sum()),
            "ss_count": float((v.post_count**2).sum()),
            "s_sum": float(v.post_sum.sum()),
            "ss_sum": float((v.post_sum**2).sum()),
            "n_pre": float(pre_ind.sum()),
            "s_pre_count": float(v.pre_count.sum()),
            "ss_pre_count": float((v.pre_count**2).sum()),
            "s_pre_sum": float(v.pre_sum.sum()),
            "ss_pre_sum": float((v.pre_sum**2).sum()),
            "x_ind": float((post_ind * pre_ind).sum()),
            "x_count": float((v.post_count * v.pre_count).sum()),
            "x_sum": float((v.post_sum * v.pre_sum).sum()),
        }
    return out


def collect_metric_kinds(pm: pluggy.PluginManager) -> dict[str, MetricKind]:
    """Every plugin's metric kinds. pluggy answers last-registered first, so answers are
    applied in reverse: a later plugin overrides an earlier one's kind of the same name."""
    kinds: dict[str, MetricKind] = {}
    for answer in reversed(pm.hook.assay_metric_kinds()):
        kinds.update(answer)
    return kinds


MetricValidator = Callable[[MetricSpec], None]


def metric_kind_validator(kinds: Mapping[str, MetricKind]) -> MetricValidator:
    """The save-time check of a metric's kind: registered (422 ``unknown_metric_kind``
    otherwise), CUPED only where the kind supports it, and the kind's own checks."""

    def validate(metric: MetricSpec) -> None:
        kind = kinds.get(metric.kind)
        if kind is None:
            raise ValidationFailed(
                f"unknown metric kind {metric.kind!r}; registered: {', '.join(sorted(kinds))}",
                code="unknown_metric_kind",
                details={"field": "kind", "accepted": sorted(kinds)},
            )
        if metric.cuped_days is not None and not kind.supports_cuped:
            raise ValidationFailed(
                f"metric kind {metric.kind!r} does not support CUPED (cuped_days)",
                code="cuped_unsupported",
                details={"field": "cuped_days"},
            )
        kind.check(metric)

    return validate


# --- what a report asks of the store, and what it answers --------------------------------


class RollupSpec(NamedTuple):
    """How one metric's conversions are attributed: within ``window_hours`` after the
    subject's first exposure (None: no limit), and, for CUPED, within ``pre_hours``
    before it (None: no covariate). Stores may keep per-metric rollups built for these."""

    metric_key: str
    window_hours: int | None
    pre_hours: int | None


class ReportMetric(NamedTuple):
    metric: MetricSpec
    kind: MetricKind


class ReportRequest(NamedTuple):
    """One report's aggregation: the experiment, the period on first exposures
    ``[start, end)`` (None: open), the experiment's end (conversions after it never
    count), how each input metric is attributed, and the metrics to aggregate."""

    experiment_id: str
    start: datetime | None
    end: datetime | None
    until: datetime | None
    rollups: tuple[RollupSpec, ...]
    metrics: tuple[ReportMetric, ...]
    now: datetime


class VariantUnits(NamedTuple):
    exposed: int
    """Subjects first exposed to the variant in the period, crossovers included."""
    crossovers: int
    """Of those, subjects later exposed to another variant (excluded from analysis)."""


class ReportAggregates(NamedTuple):
    units: Mapping[str, VariantUnits]
    pending: int
    """Conversions waiting for their subject's exposure (not expired)."""
    rows: Mapping[str, Mapping[str, Row]]
    """Per metric key, the kind's row per variant."""
