"""``GET /api/v1/experiments/{key}/report/timeseries``: the report's numbers over time."""

# No ``from __future__ import annotations``: the route table reads real types.

from assay.adapters.http._routing import PROJECT, Call, QueryParam, Route
from assay.engine import Timeseries, report_timeseries
from assay.engine._core._stats import CORRECTIONS
from assay.engine._report_timeseries import INTERVALS, MAX_POINTS


async def experiment_timeseries(call: Call) -> Timeseries:
    return await report_timeseries(
        call.engine,
        call.project,
        call.path["key"],
        interval=call.text("interval") or "day",
        correction=call.text("correction"),
        principal=call.key,
    )


ROUTES = (
    Route(
        method="GET",
        path="/api/v1/experiments/{key}/report/timeseries",
        endpoint=experiment_timeseries,
        operation_id="getExperimentReportTimeseries",
        summary="An experiment's report over time",
        description="Cumulative numbers at each hour or UTC day since the experiment "
        "started, the last point being its end (or now): at each point `at`, the report "
        "over subjects first exposed before `at` (from the same rollups, read once for all "
        "points and summed cumulatively: each point equals that report), per variant "
        "(exposed, crossovers, analysed) and, per metric and treatment, both values, the "
        "absolute and relative lift with the always-valid (sequential) 95% interval and "
        "adjusted p-value, chance to beat control and the verdict. Conversions count as in "
        "the report (inside each metric's attribution window, as of now). More than "
        f"{MAX_POINTS} points is 422 `timeseries_too_long`. A DRAFT experiment has no "
        "points. ANALYST and above.",
        tag="experiments",
        query=(
            PROJECT,
            QueryParam(
                name="interval",
                description="Spacing of the points (default `day`).",
                choices=INTERVALS,
            ),
            QueryParam(
                name="correction",
                description="Multiple-testing correction; defaults to the experiment's.",
                choices=CORRECTIONS,
            ),
        ),
        response=Timeseries,
    ),
)
