"""``GET /api/v1/experiments/{key}/report``: an experiment's report over a period."""

# No ``from __future__ import annotations``: the route table reads real types.

from datetime import UTC, date, datetime

import msgspec

from assay.adapters.http._routing import PROJECT, Call, QueryParam, Route
from assay.engine import ValidationFailed
from assay.engine._core._stats import CORRECTIONS
from assay.engine._reports import Report


def _moment(call: Call, name: str) -> datetime | None:
    """An RFC 3339 date-time with an offset, or a date (midnight UTC)."""
    text = call.text(name)
    if text is None:
        return None
    try:
        if len(text) == 10:
            return datetime.combine(msgspec.convert(text, date), datetime.min.time(), UTC)
        moment = msgspec.convert(text, datetime)
    except msgspec.ValidationError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise ValidationFailed(
            f"query parameter {name!r} must be a date (YYYY-MM-DD) or an RFC 3339 date-time "
            "with an offset",
            code="invalid_parameter",
            details={"parameter": name},
        )
    return moment


async def experiment_report(call: Call) -> Report:
    return await call.engine.report(
        call.project,
        call.path["key"],
        start=_moment(call, "start"),
        end=_moment(call, "end"),
        correction=call.text("correction"),
        principal=call.key,
    )


_MOMENT = "A date (`YYYY-MM-DD`, midnight UTC) or an RFC 3339 date-time with an offset."

ROUTES = (
    Route(
        method="GET",
        path="/api/v1/experiments/{key}/report",
        endpoint=experiment_report,
        operation_id="getExperimentReport",
        summary="An experiment's report",
        description="Subjects first exposed in `[start, end)` (default: all), per variant "
        "(`assigned`, `crossovers`, `analysed`, as docs/reports.md defines them; "
        "`exposed` and `subjects` are older names of `assigned` and `analysed`); each "
        "metric's value per variant and every variant against control (the first): "
        "absolute and relative lift with Welch, sequential (always-valid) and Bayesian "
        "results, CUPED-adjusted when the metric sets `cuped_days`, p-values adjusted "
        "across metrics x variants by `correction` (default: the experiment's), a "
        "verdict per comparison, and an SRM check of the assigned subjects flagged at p "
        "< 0.001. Conversions count inside each metric's attribution window after the "
        "subject's first exposure. ANALYST and above.",
        tag="experiments",
        query=(
            PROJECT,
            QueryParam(name="start", description=f"Period start (inclusive). {_MOMENT}"),
            QueryParam(name="end", description=f"Period end (exclusive). {_MOMENT}"),
            QueryParam(
                name="correction",
                description="Multiple-testing correction; defaults to the experiment's.",
                choices=CORRECTIONS,
            ),
        ),
        response=Report,
    ),
)
