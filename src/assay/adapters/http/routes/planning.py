"""``POST /api/v1/plan``: the power and sample-size calculator."""

# No ``from __future__ import annotations``: the route table reads real types.

from assay.adapters.http._routing import PROJECT, Call, JsonBody, Route
from assay.engine._planning_api import PlanInput, SampleSizePlan


async def plan(call: Call) -> SampleSizePlan:
    return await call.engine.plan(call.project, call.body, principal=call.key)


ROUTES = (
    Route(
        method="POST",
        path="/api/v1/plan",
        endpoint=plan,
        operation_id="planExperiment",
        summary="Plan an experiment's size",
        description="Subjects per variant (and days, given `daily_traffic`) to detect `mde` "
        "with `power` at `alpha`, for the fixed-horizon test and for the group-sequential "
        "design a planned experiment's verdict uses. The baseline is `baseline_rate`, or "
        "`baseline_mean` and `baseline_variance`, or estimated from `baseline_metric` in the "
        "control of `baseline_experiment` over the last `baseline_days`. ANALYST and above, "
        "as reports. A plan that cannot be met is a 422: `invalid_plan` (an MDE of "
        "zero, power or alpha outside (0, 1), no traffic, a treated rate outside (0, 1)), "
        "`zero_variance_baseline`, `no_baseline_data`. Store the answer on the experiment "
        "as its `plan` (`subjects_per_variant`, `mde`).",
        tag="experiments",
        query=(PROJECT,),
        body=JsonBody(
            PlanInput,
            example={"baseline_rate": 0.1, "mde": 0.05, "daily_traffic": 10000},
        ),
        response=SampleSizePlan,
    ),
)
