"""Planning, in process: the power and sample-size calculator behind ``engine.plan``,
``POST /api/v1/plan`` and ``assay plan``. Mixed into ``Engine`` as ``PlanningAPI``.

The arithmetic is ``_core._planning.plan_sample_size`` (pure); this layer adds the one thing
that needs the store: a baseline estimated from a metric's recent data, read from an
experiment's report (the control's value of that metric among subjects first exposed in
the last ``baseline_days``), so the plan is computed on the numbers the report will show.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import msgspec

from assay.engine._access import Action, Resource, authorize
from assay.engine._core._planning import PlanInput, SampleSizePlan, plan_sample_size
from assay.engine._errors import ValidationFailed
from assay.engine._service import SYSTEM_KEY

if TYPE_CHECKING:
    from assay.engine._model import ApiKey
    from assay.engine._reports import Report
    from assay.engine._service import ConfigService

__all__ = ["PlanInput", "PlanningAPI", "SampleSizePlan"]


class PlanningAPI:
    """``plan``: mixed into ``Engine`` (beside ``ReportAPI``, whose ``report`` it reads)."""

    # Provided by Engine.
    service: ConfigService

    async def report(  # provided by ReportAPI
        self,
        project: str | None,
        experiment: str,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
        correction: str | None = None,
        principal: ApiKey = SYSTEM_KEY,
    ) -> Report:
        raise NotImplementedError

    async def plan(
        self, project: str | None, request: PlanInput, *, principal: ApiKey = SYSTEM_KEY
    ) -> SampleSizePlan:
        """Subjects per variant and days for ``request``. Raises ``ValidationFailed``
        (``invalid_plan``, ``zero_variance_baseline``, ``no_baseline_data``) for a plan
        that cannot be met or computed, ``NotFound`` for an unknown project, experiment or
        metric, or one the principal may not read reports of (ANALYST and up)."""
        # Planning belongs to analysis: who may read a project's reports may plan in it.
        found = await self.service.resolve_project(principal, project)
        authorize(principal, Resource.REPORT, Action.READ, project_id=found.id)
        if request.baseline_metric is None:
            return plan_sample_size(request)
        if request.baseline_experiment is None:
            raise ValidationFailed(
                "baseline_metric needs baseline_experiment: the experiment whose control "
                "gives the metric's recent value",
                code="invalid_plan",
                details={"field": "baseline_experiment"},
            )
        given = [
            f
            for f in ("baseline_rate", "baseline_mean", "baseline_variance")
            if getattr(request, f) is not None
        ]
        if given:
            raise ValidationFailed(
                f"give either baseline_metric or {', '.join(given)}, not both",
                code="invalid_plan",
                details={"field": given[0]},
            )
        now = datetime.now(UTC)
        report = await self.report(
            project,
            request.baseline_experiment,
            start=now - timedelta(days=request.baseline_days),
            principal=principal,
        )
        metric = next((m for m in report.metrics if m.key == request.baseline_metric), None)
        if metric is None:
            raise ValidationFailed(
                f"metric {request.baseline_metric!r} is not a metric of experiment "
                f"{request.baseline_experiment!r}",
                code="no_baseline_data",
                details={"field": "baseline_metric"},
            )
        control = next((v for v in metric.values if v.variant == report.control), None)
        if metric.error is not None or control is None or control.n < 2:
            raise ValidationFailed(
                f"no data to estimate a baseline from: metric {metric.key!r} has "
                f"{control.n if control else 0} subjects in the control of "
                f"{request.baseline_experiment!r} over the last {request.baseline_days} days",
                code="no_baseline_data",
                details={"field": "baseline_metric"},
            )
        source = (
            f"metric {metric.key} in the control of {request.baseline_experiment}, last "
            f"{request.baseline_days} days ({control.n} subjects)"
        )
        if metric.kind == "proportion":
            resolved = msgspec.structs.replace(request, baseline_rate=control.value)
        else:
            resolved = msgspec.structs.replace(
                request, baseline_mean=control.value, baseline_variance=control.stddev**2
            )
        return msgspec.structs.replace(plan_sample_size(resolved), baseline_source=source)
