"""Experiment reports: per-variant exposures and metrics, each treatment against control.

The store aggregates (``Store.report_aggregates``: SQL into sufficient statistics, or
in-memory sums); everything statistical happens here, on those few numbers, through
``assay.engine._core._stats``. Mixed into ``Engine`` as ``ReportAPI``.

What a report means:

- the **period** ``[start, end)`` selects subjects by their first exposure; each selected
  subject's conversions count inside its metric's attribution window (and never after
  the experiment ended), so a period's numbers do not depend on when the report is run
  once the windows have passed;
- three counts, defined once in docs/reports.md: **assigned** subjects (first exposed to
  the variant, crossovers included), **crossovers** (of those, later exposed to another
  variant: counted, shown, never analysed) and **analysed** subjects (assigned minus
  crossovers);
- the first variant is the **control**; every other variant is compared with it per
  metric: Welch (fixed horizon), sequential (always valid) and Bayesian, absolute and
  relative, CUPED-adjusted when the metric sets ``cuped_days``;
- p-values are adjusted across every metric x variant comparison by the experiment's
  ``correction`` (Holm by default; overridable per request);
- the **verdict** reads the sequential test's adjusted p-value, because reports are
  looked at again and again while an experiment runs and only that test stays valid
  under such peeking;
- **SRM**: a chi-square test of the assigned subjects per variant against the weights,
  flagged at p < 0.001.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

import msgspec

from assay.engine._access import Action, Resource, authorize
from assay.engine._core._stats import (
    CORRECTIONS,
    SRM_THRESHOLD,
    MetricStats,
    VariantComparison,
    apply_correction,
    compare_variants,
    describe,
    sequential_srm,
    srm_check,
)
from assay.engine._errors import AssayError, ValidationFailed
from assay.engine._metric_kinds import (
    MetricKind,
    ReportMetric,
    ReportRequest,
    RollupSpec,
    Row,
)
from assay.engine._model import ApiKey, Experiment, ExperimentStatus, Metric
from assay.engine._service import SYSTEM_KEY

if TYPE_CHECKING:
    from assay.engine._ports import Store
    from assay.engine._service import ConfigService

ALPHA = 0.05
"""Every interval is a 95% interval; significance is judged at 5%."""

MetricRole = Literal["primary", "secondary", "guardrail"]
Verdict = Literal["better", "worse", "no_detectable_difference", "not_computable"]


class _Out(msgspec.Struct, frozen=True, kw_only=True):
    pass


class ReportVariant(_Out, frozen=True, kw_only=True):
    """One variant's subjects, in the three counts docs/reports.md defines."""

    key: str
    name: str
    weight: float
    assigned: int
    """Subjects first exposed to this variant in the period, crossovers included."""
    crossovers: int
    """Of those, subjects later exposed to another variant: excluded from analysis."""
    analysed: int
    """Analysed subjects: ``assigned - crossovers``."""
    exposed: int
    """Older name of ``assigned`` (same number), kept for existing clients."""
    subjects: int
    """Older name of ``analysed`` (same number), kept for existing clients."""


class SrmReport(_Out, frozen=True, kw_only=True):
    """Sample ratio mismatch: assigned subjects (crossovers included) per variant against
    the weights. A crossover rate that differs by variant would hide or fake a mismatch in
    the analysed subjects, so the test counts every subject where it was first assigned."""

    p_value: float
    statistic: float | None
    observed: list[int]
    """Assigned subjects per variant, in the variants' order."""
    expected: list[float]
    threshold: float
    flagged: bool
    counts: Literal["assigned"] = "assigned"
    """Which count ``observed`` holds (always assigned subjects)."""
    sequential_p_value: float = 1.0
    """The anytime-valid p-value of the same counts (``sequential_srm``): what the
    guardrails' repeated health check reads. ``flagged`` follows the chi-square."""


class MetricValue(_Out, frozen=True, kw_only=True):
    """One variant's value of a metric (its kind's per-subject mean, ratio or quantile)."""

    variant: str
    n: int
    value: float
    stddev: float


class MetricComparison(_Out, frozen=True, kw_only=True):
    variant: str
    result: VariantComparison
    verdict: Verdict
    """From the sequential test's adjusted p-value of the relative lift (absolute when the
    relative one cannot be computed), read in the metric's direction."""


class MetricReport(_Out, frozen=True, kw_only=True):
    key: str
    name: str
    kind: str
    role: MetricRole
    higher_is_better: bool
    cuped: bool
    """Whether CUPED was asked for (``cuped_days``); each comparison says if it applied."""
    values: list[MetricValue] = []
    comparisons: list[MetricComparison] = []
    error: str | None = None
    """Why the metric could not be analysed (e.g. ``unknown_metric_kind``)."""


class Report(_Out, frozen=True, kw_only=True):
    experiment: str
    status: ExperimentStatus
    control: str | None
    start: datetime | None
    end: datetime | None
    correction: str
    alpha: float
    generated_at: datetime
    variants: list[ReportVariant]
    crossovers: int
    """Crossover subjects among those first exposed in the period."""
    assigned: int
    """Subjects first exposed in the period, crossovers included (all variants)."""
    analysed: int
    """``assigned - crossovers`` (all variants)."""
    pending: int
    """Conversions waiting for their subject's exposure (the whole experiment)."""
    srm: SrmReport
    metrics: list[MetricReport]


def _role_of(experiment: Experiment) -> dict[str, MetricRole]:
    roles: dict[str, MetricRole] = {}
    for role, keys in (
        ("primary", experiment.primary_metrics),
        ("secondary", experiment.secondary_metrics),
        ("guardrail", experiment.guardrail_metrics),
    ):
        for key in keys:
            roles.setdefault(key, role)  # type: ignore[arg-type]
    return roles


def _verdict(c: VariantComparison, higher_is_better: bool) -> Verdict:
    lift = c.relative if c.relative.error is None else c.absolute
    if lift.error is not None:
        return "not_computable"
    p = lift.sequential.adjusted_p_value
    if p is None:
        p = lift.sequential.p_value
    if p >= ALPHA:
        return "no_detectable_difference"
    up = lift.sequential.estimate > 0
    return "better" if up == higher_is_better else "worse"


def check_period(start: datetime | None, end: datetime | None) -> None:
    for name, value in (("start", start), ("end", end)):
        if value is not None and value.tzinfo is None:
            raise ValidationFailed(
                f"{name} must carry a UTC offset", code="invalid_period", details={"field": name}
            )
    if start is not None and end is not None and start >= end:
        raise ValidationFailed("start must be before end", code="invalid_period")


def check_correction(correction: str | None) -> None:
    if correction is not None and correction not in CORRECTIONS:
        raise ValidationFailed(
            f"unknown correction {correction!r}; expected one of {', '.join(CORRECTIONS)}",
            code="invalid_correction",
            details={"accepted": list(CORRECTIONS)},
        )


def _rollup(metric: Metric) -> RollupSpec:
    return RollupSpec(
        metric.key,
        metric.attribution_window_hours,
        None if metric.cuped_days is None else metric.cuped_days * 24,
    )


class ReportAPI:
    """Experiment reports, in process. Mixed into ``Engine``."""

    # Provided by Engine.
    store: Store
    service: ConfigService
    metric_kinds: Mapping[str, MetricKind]

    async def report(
        self,
        project: str | None,
        experiment: str,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
        correction: str | None = None,
        principal: ApiKey = SYSTEM_KEY,
    ) -> Report:
        """The report of ``experiment`` over first exposures in ``[start, end)``.

        Raises ``NotFound`` for an experiment (or project) the principal cannot see or
        when it may not read reports, ``ValidationFailed`` (``invalid_period``,
        ``invalid_correction``) for bad arguments.
        """
        check_period(start, end)
        check_correction(correction)
        found = await self.service.resolve_project(principal, project)
        authorize(principal, Resource.REPORT, Action.READ, project_id=found.id)
        target = await self.service.get_object(principal, Experiment, found.key, experiment)
        roles = _role_of(target)
        metrics: dict[str, Metric] = {}
        async with self.store.read() as tx:
            pending_keys = list(roles)
            while pending_keys:
                key = pending_keys.pop()
                if key in metrics:
                    continue
                metric = await tx.get(Metric, found.id, key)
                if metric is None:
                    continue
                metrics[key] = metric
                kind = self.metric_kinds.get(metric.kind)
                if kind is not None:
                    pending_keys.extend(kind.inputs(metric))
        requested: list[ReportMetric] = []
        inputs: dict[str, RollupSpec] = {}
        for key in roles:
            metric = metrics.get(key)
            kind = None if metric is None else self.metric_kinds.get(metric.kind)
            if metric is None or kind is None:
                continue
            keys = kind.inputs(metric)
            if any(k not in metrics for k in keys):
                continue
            requested.append(ReportMetric(metric, kind))
            for k in keys:
                inputs[k] = _rollup(metrics[k])
        aggregates = await self.store.report_aggregates(
            ReportRequest(
                experiment_id=target.id,
                start=start,
                end=end,
                until=target.ended_at,
                rollups=tuple(inputs.values()),
                metrics=tuple(requested),
                now=datetime.now(UTC),
            )
        )
        return build_report(
            target,
            roles,
            metrics,
            self.metric_kinds,
            aggregates.units,
            aggregates.rows,
            pending=aggregates.pending,
            start=start,
            end=end,
            correction=correction or target.correction,
        )


def build_report(
    experiment: Experiment,
    roles: Mapping[str, MetricRole],
    metrics: Mapping[str, Metric],
    kinds: Mapping[str, MetricKind],
    units: Mapping[str, tuple[int, int]],
    rows: Mapping[str, Mapping[str, Row]],
    *,
    pending: int,
    start: datetime | None,
    end: datetime | None,
    correction: str,
) -> Report:
    """Assemble a report from aggregated numbers (pure: no store, no I/O)."""
    variants: list[ReportVariant] = []
    for declared in experiment.variants:
        assigned, crossovers = units.get(declared.key, (0, 0))
        variants.append(
            ReportVariant(
                key=declared.key,
                name=declared.name,
                weight=declared.weight,
                assigned=assigned,
                crossovers=crossovers,
                analysed=assigned - crossovers,
                exposed=assigned,
                subjects=assigned - crossovers,
            )
        )
    srm = srm_check([v.assigned for v in variants], [v.weight for v in variants])
    reports: list[MetricReport] = []
    comparisons: list[VariantComparison] = []
    slots: list[tuple[int, list[VariantComparison]]] = []
    for key, role in roles.items():
        metric = metrics.get(key)
        if metric is None:
            reports.append(
                MetricReport(
                    key=key,
                    name="",
                    kind="",
                    role=role,
                    higher_is_better=True,
                    cuped=False,
                    error="unknown_metric",
                )
            )
            continue
        base = MetricReport(
            key=key,
            name=metric.name,
            kind=metric.kind,
            role=role,
            higher_is_better=metric.higher_is_better,
            cuped=metric.cuped_days is not None,
        )
        kind = kinds.get(metric.kind)
        if kind is None:
            reports.append(msgspec.structs.replace(base, error="unknown_metric_kind"))
            continue
        if any(k not in metrics for k in kind.inputs(metric)):
            reports.append(msgspec.structs.replace(base, error="unknown_metric"))
            continue
        metric_rows = rows.get(key, {})
        try:
            stats: list[MetricStats] = [
                kind.statistics(metric, metric_rows.get(v.key, {})) for v in variants
            ]
            values = []
            for v, s in zip(variants, stats, strict=True):
                estimate = describe(s)
                values.append(
                    MetricValue(
                        variant=v.key, n=estimate.n, value=estimate.mean, stddev=estimate.stddev
                    )
                )
            compared = (
                compare_variants(stats, alpha=ALPHA, inverse=not metric.higher_is_better)
                if len(stats) >= 2
                else []
            )
        except AssayError as exc:
            reports.append(msgspec.structs.replace(base, error=exc.code))
            continue
        slots.append((len(reports), compared))
        comparisons.extend(compared)
        reports.append(msgspec.structs.replace(base, values=values))
    adjusted = apply_correction(comparisons, correction)
    position = 0
    for index, compared in slots:
        report = reports[index]
        mine = adjusted[position : position + len(compared)]
        position += len(compared)
        reports[index] = msgspec.structs.replace(
            report,
            comparisons=[
                MetricComparison(
                    variant=v.key, result=c, verdict=_verdict(c, report.higher_is_better)
                )
                for v, c in zip(variants[1:], mine, strict=True)
            ],
        )
    return Report(
        experiment=experiment.key,
        status=experiment.status,
        control=variants[0].key if variants else None,
        start=start,
        end=end,
        correction=correction,
        alpha=ALPHA,
        generated_at=datetime.now(UTC),
        variants=variants,
        crossovers=sum(v.crossovers for v in variants),
        assigned=sum(v.assigned for v in variants),
        analysed=sum(v.analysed for v in variants),
        pending=pending,
        srm=SrmReport(
            p_value=srm.p_value,
            statistic=srm.statistic,
            observed=[v.assigned for v in variants],
            expected=srm.expected,
            threshold=SRM_THRESHOLD,
            flagged=srm.flagged,
            sequential_p_value=sequential_srm(
                [v.assigned for v in variants], [v.weight for v in variants]
            ).p_value,
        ),
        metrics=reports,
    )


__all__ = [
    "ALPHA",
    "MetricComparison",
    "MetricReport",
    "MetricValue",
    "Report",
    "ReportAPI",
    "ReportVariant",
    "SrmReport",
    "build_report",
]
