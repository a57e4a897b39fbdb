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
from typing import TYPE_CHECKING, Final, Literal, NamedTuple

import msgspec

from assay.engine._access import Action, Resource, authorize
from assay.engine._core._guardrails import judge_pair
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
from assay.engine._core._stats_group_sequential import SPENT_SHARE
from assay.engine._errors import AssayError, ValidationFailed
from assay.engine._metric_kinds import (
    MetricKind,
    ReportMetric,
    ReportRequest,
    RollupSpec,
    Row,
)
from assay.engine._model import ApiKey, Experiment, ExperimentPlan, ExperimentStatus, Metric
from assay.engine._planned_verdict import (
    LOOK_STEP,
    LookDecision,
    PlannedLook,
    information_fraction,
    look_due,
    take_look,
)
from assay.engine._service import SYSTEM_KEY

if TYPE_CHECKING:
    from collections.abc import Sequence

    from assay.engine._ports import Store
    from assay.engine._service import ConfigService

ALPHA = 0.05
"""Every interval is a 95% interval; significance is judged at 5%."""

MetricRole = Literal["primary", "secondary", "guardrail"]
Verdict = Literal["better", "worse", "no_detectable_difference", "not_computable"]
VerdictMethod = Literal["always_valid", "planned", "guardrail"]

SECONDARY_CORRECTION: Final = "benjamini-hochberg"
"""Secondary metrics are exploratory: the false discovery rate is the right error to bound."""


class _Out(msgspec.Struct, frozen=True, kw_only=True):
    pass


class PlanStatus(_Out, frozen=True, kw_only=True):
    """Where an experiment with a plan stands (whole-experiment reports only)."""

    plan: ExperimentPlan
    fraction: float
    """Information so far: analysed subjects over planned, or days over planned days."""
    looks: int
    """Looks taken so far (a look is taken every 5% of the plan, and at 100%)."""
    last_look_fraction: float | None
    next_look_fraction: float | None
    """None once the final look is taken."""
    final: bool
    alpha_per_comparison: float
    """The plan's alpha over primary metrics x treatments (Bonferroni)."""
    method: str


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
    """Read in the metric's direction; how it was reached is ``verdict_method``."""
    verdict_method: VerdictMethod = "always_valid"
    """``planned``: the group-sequential test of the experiment's plan (primary metrics of
    a planned experiment, whole-experiment reports); ``always_valid``: the sequential
    test's adjusted p-value below alpha; ``guardrail``: the experiment's guardrail on the
    metric (breached: ``worse``)."""
    family: MetricRole = "primary"
    """The correction family the p-values were adjusted in (the metric's role)."""
    correction: str = "holm"
    """How that family was adjusted: the experiment's correction for primary metrics,
    ``benjamini-hochberg`` for secondary ones, ``none`` for guardrail metrics."""
    exploratory: bool = False
    """Secondary metrics: a hint for the next experiment, not a decision."""
    planned: LookDecision | None = None
    """The planned verdict's state for this comparison at the last look."""
    reason: str = ""
    """Why the verdict is what it is, when that is not plain (no decision yet, not
    computable, judged by a guardrail)."""


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
    families: dict[str, str] = {}
    """Each correction family and how it was adjusted (``primary``, ``secondary``,
    ``guardrail``)."""
    plan: PlanStatus | None = None
    verdict_basis: str = ""
    """How the primary metrics' verdicts were reached, in a sentence."""


class PreparedReport(NamedTuple):
    """A report's experiment, metric roles, metrics and store request (``report_request``)."""

    experiment: Experiment
    roles: dict[str, MetricRole]
    metrics: dict[str, Metric]
    request: ReportRequest


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
        target, roles, metrics, request = await self.report_request(
            principal, project, experiment, start=start, end=end
        )
        aggregates = await self.store.report_aggregates(request)
        report = build_report(
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
        if target.plan is not None and (start is not None or end is not None):
            report = msgspec.structs.replace(
                report,
                verdict_basis="the experiment has a plan, but this report covers a period: "
                "the planned verdict reads the whole experiment, so the primary metrics here "
                "are judged by the always-valid sequential test",
            )
        elif target.plan is not None:
            report = await self._planned(target, report)
        return withhold_on_srm(report)

    async def report_request(
        self,
        principal: ApiKey,
        project: str | None,
        experiment: str,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> PreparedReport:
        """What a report of ``experiment`` over ``[start, end)`` asks of the store, after
        the access checks (``NotFound`` for what the principal may not read)."""
        found = await self.service.resolve_project(principal, project)
        authorize(principal, Resource.REPORT, Action.READ, project_id=found.id)
        target = await self.service.get_object(principal, Experiment, found.key, experiment)
        request, roles, metrics = await self.store_request(target, start=start, end=end)
        return PreparedReport(target, roles, metrics, request)

    async def store_request(
        self,
        target: Experiment,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> tuple[ReportRequest, dict[str, MetricRole], dict[str, Metric]]:
        """What the store aggregates for ``target``'s report over ``[start, end)``: every
        metric it reads (inputs of ratios too) with its attribution; and the metrics'
        roles and definitions."""
        roles = _role_of(target)
        metrics: dict[str, Metric] = {}
        async with self.store.read() as tx:
            pending_keys = list(roles)
            while pending_keys:
                key = pending_keys.pop()
                if key in metrics:
                    continue
                metric = await tx.get(Metric, target.project_id, key)
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
        request = ReportRequest(
            experiment_id=target.id,
            start=start,
            end=end,
            until=target.ended_at,
            rollups=tuple(inputs.values()),
            metrics=tuple(requested),
            now=datetime.now(UTC),
        )
        return request, roles, metrics

    async def _planned(self, experiment: Experiment, report: Report) -> Report:
        """Take a look if one is due, and judge the primary metrics by the looks taken."""
        now = datetime.now(UTC)
        fraction = information_fraction(experiment, report.analysed, now) or 0.0
        looks = await self.store.planned_looks(experiment.id)
        primary = [(m, c) for m in report.metrics if m.role == "primary" for c in m.comparisons]
        comparisons = len(experiment.primary_metrics) * max(len(experiment.variants) - 1, 1)
        alpha = looks[0].alpha if looks else ALPHA / comparisons
        due = look_due(looks, fraction)
        # A broken split makes every statistic suspect: no alpha is spent on it.
        if due is not None and primary and not report.srm.flagged:
            look = take_look(
                experiment.id,
                looks,
                due,
                {(m.key, c.variant): _z(c) for m, c in primary},
                {m.key: m.higher_is_better for m, _ in primary},
                alpha,
                now,
            )
            # False: another report took this look first; its look is the one that counts.
            await self.store.record_planned_look(look)
            looks = await self.store.planned_looks(experiment.id)
        return apply_plan(experiment, report, looks, fraction, alpha)


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
    slots: list[tuple[int, MetricRole, list[VariantComparison]]] = []
    guarded: dict[str, dict[str, tuple[Verdict, str]]] = {}
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
        slots.append((len(reports), role, compared))
        if role == "guardrail":
            guarded[key] = _guardrail_verdicts(experiment, key, stats, variants)
        reports.append(msgspec.structs.replace(base, values=values))
    families = {"primary": correction, "secondary": SECONDARY_CORRECTION, "guardrail": "none"}
    adjusted: dict[int, list[VariantComparison]] = {}
    for family, method in families.items():
        members = [(i, c) for i, (_, role, c) in enumerate(slots) if role == family]
        flat = apply_correction([c for _, cs in members for c in cs], method)
        position = 0
        for i, cs in members:
            adjusted[i] = flat[position : position + len(cs)]
            position += len(cs)
    for i, (index, role, _) in enumerate(slots):
        report = reports[index]
        out = []
        for v, c in zip(variants[1:], adjusted[i], strict=True):
            comparison = MetricComparison(
                variant=v.key,
                result=c,
                verdict=_verdict(c, report.higher_is_better),
                family=role,
                correction=families[role],
                exploratory=role == "secondary",
            )
            if comparison.verdict == "not_computable":
                comparison = msgspec.structs.replace(comparison, reason=_not_computable(c))
            if role == "guardrail" and (v.key in guarded.get(report.key, {})):
                verdict, reason = guarded[report.key][v.key]
                comparison = msgspec.structs.replace(
                    comparison, verdict=verdict, verdict_method="guardrail", reason=reason
                )
            out.append(comparison)
        reports[index] = msgspec.structs.replace(report, comparisons=out)
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
        families=families,
        verdict_basis="no plan: primary metrics are judged by the always-valid sequential "
        f"test (its {correction}-adjusted p-value below {ALPHA}), valid however often the "
        "report is read; give the experiment a plan for near fixed-horizon power",
    )


def withhold_on_srm(report: Report) -> Report:
    """With a sample ratio mismatch no verdict can be justified: every comparison's verdict
    becomes ``not_computable`` and says why (the numbers stay, for diagnosis)."""
    if not report.srm.flagged:
        return report
    reason = (
        f"sample ratio mismatch (p = {report.srm.p_value:.3g} < {report.srm.threshold:g}): "
        "the assigned subjects do not match the weights, so no verdict can be trusted"
    )
    return msgspec.structs.replace(
        report,
        metrics=[
            msgspec.structs.replace(
                m,
                comparisons=[
                    msgspec.structs.replace(c, verdict="not_computable", reason=reason)
                    for c in m.comparisons
                ],
            )
            for m in report.metrics
        ],
        verdict_basis=f"no verdicts: {reason}",
    )


def _z(c: MetricComparison) -> float | None:
    """The z statistic the planned verdict reads: the absolute lift's, None when it cannot
    be computed. Absolute and relative lifts test the same hypothesis (equal means), but the
    relative lift's delta-method z is lopsided (its variance grows with the treatment's
    mean), which both distorts the error rate and costs power far from the null."""
    lift = c.result.absolute
    if lift.error is not None or not lift.fixed.std_error > 0:
        return None
    return lift.fixed.estimate / lift.fixed.std_error


def apply_plan(
    experiment: Experiment,
    report: Report,
    looks: Sequence[PlannedLook],
    fraction: float,
    alpha: float,
) -> Report:
    """The report with its primary metrics judged by the plan's looks (pure)."""
    assert experiment.plan is not None
    last = looks[-1] if looks else None
    decisions = {(d.metric, d.variant): d for d in last.decisions} if last else {}
    final = last is not None and last.final
    next_look = None if final else _next_look(last.fraction if last else 0.0)
    metrics = []
    for m in report.metrics:
        if m.role != "primary":
            metrics.append(m)
            continue
        judged = []
        for c in m.comparisons:
            d = decisions.get((m.key, c.variant))
            verdict: Verdict
            if d is not None and d.decision is not None:
                verdict = d.decision
                reason = (
                    f"crossed the group-sequential boundary ({d.boundary:.3g}) at look "
                    f"{d.decided_at_look}: decided"
                )
            elif c.verdict == "not_computable":
                verdict, reason = "not_computable", c.reason
            elif last is None or d is None:
                verdict = "no_detectable_difference"
                reason = (
                    f"no look taken yet; the first comes at {next_look:.0%} of the plan"
                    if next_look is not None
                    else "no look taken"
                )
            elif final:
                verdict = "no_detectable_difference"
                reason = "final look taken at the planned size: no significant difference"
            else:
                verdict = "no_detectable_difference"
                z = "not computable" if d.z is None else f"{abs(d.z):.3g}"
                reason = (
                    f"|z| {z} below the boundary {d.boundary:.3g} at look {last.index} "
                    f"({last.fraction:.0%} of the plan); next look at {next_look:.0%}"
                )
            judged.append(
                msgspec.structs.replace(
                    c, verdict=verdict, verdict_method="planned", planned=d, reason=reason
                )
            )
        metrics.append(msgspec.structs.replace(m, comparisons=judged))
    status = PlanStatus(
        plan=experiment.plan,
        fraction=fraction,
        looks=len(looks),
        last_look_fraction=last.fraction if last else None,
        next_look_fraction=next_look,
        final=final,
        alpha_per_comparison=alpha,
        method=PLANNED_METHOD,
    )
    return msgspec.structs.replace(
        report,
        metrics=metrics,
        plan=status,
        verdict_basis=f"planned: primary metrics are judged by a {PLANNED_METHOD} at alpha "
        f"{alpha:.3g} per comparison (its boundaries spend {SPENT_SHARE:.0%} of it, a margin "
        f"for the normal approximation on counts); a look is taken every {LOOK_STEP:.0%} of "
        "the plan and its decision shown until the next, so reading the report does not "
        "spend alpha",
    )


def _next_look(last: float) -> float | None:
    if last >= 1.0:
        return None
    return min(last + LOOK_STEP, 1.0)


PLANNED_METHOD: Final = (
    "group-sequential test with Lan-DeMets O'Brien-Fleming-like alpha spending over the "
    "plan's information fraction"
)


def _not_computable(c: VariantComparison) -> str:
    error = c.relative.error if c.absolute.error is None else c.absolute.error
    match error:
        case "no_units":
            return "an arm has no analysed subjects yet"
        case "zero_variance":
            return "an arm has no variance (every subject has the same value, or fewer than 2)"
        case "baseline_zero":
            return "the control's value is zero, so no relative lift exists"
        case _:
            return "no test could be made"


def _guardrail_verdicts(
    experiment: Experiment,
    metric: str,
    stats: Sequence[MetricStats],
    variants: Sequence[ReportVariant],
) -> dict[str, tuple[Verdict, str]]:
    """A guardrail metric's verdict per treatment, by the experiment's (first) guardrail
    on it: the guardrail's own sequential test at its threshold and alpha, exactly what
    the guardrail actor judges. No guardrail on it: nothing (the always-valid verdict)."""
    guardrail = next((g for g in experiment.guardrails if g.metric == metric), None)
    if guardrail is None or len(stats) < 2:
        return {}
    alpha = guardrail.alpha / (len(stats) - 1)
    out: dict[str, tuple[Verdict, str]] = {}
    for v, treatment in zip(variants[1:], stats[1:], strict=True):
        judged = judge_pair(
            stats[0],
            treatment,
            harmful_direction=guardrail.harmful_direction,
            threshold=guardrail.threshold,
            relative=guardrail.threshold_type == "relative",
            min_sample=guardrail.min_sample,
            alpha=alpha,
        )
        harm = "rise" if guardrail.harmful_direction == "increase" else "fall"
        limit = (
            f"{guardrail.threshold:.2%}"
            if guardrail.threshold_type == "relative"
            else f"{guardrail.threshold:g}"
        )
        match judged.status:
            case "breached":
                out[v.key] = ("worse", f"guardrail breached: must not {harm} by more than {limit}")
            case "ok":
                out[v.key] = (
                    "no_detectable_difference",
                    f"guardrail holds: no {harm} beyond {limit} shown",
                )
            case "insufficient_sample":
                out[v.key] = (
                    "not_computable",
                    f"guardrail judged from {guardrail.min_sample} subjects per variant",
                )
            case _:
                out[v.key] = ("not_computable", f"guardrail cannot be judged: {judged.error}")
    return out


__all__ = [
    "ALPHA",
    "MetricComparison",
    "MetricReport",
    "MetricValue",
    "PlanStatus",
    "PreparedReport",
    "Report",
    "ReportAPI",
    "ReportVariant",
    "SrmReport",
    "apply_plan",
    "build_report",
    "withhold_on_srm",
]
