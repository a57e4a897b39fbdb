"""Experiment pages: the list with alerts, an experiment's results with its numbers over
time, downloads (CSV and JSON), and lifecycle actions behind a confirmation.

Everything shown comes from the engine's public API with the signed-in key as principal
(``Engine.report``, ``report_timeseries``, ``guardrail_triggers``, ``ConfigService``), so
the console can show nothing its key could not read over HTTP, and an action its role may
not take is refused by the service even if someone forges the form.
"""

from __future__ import annotations

import csv
import io
import math
from datetime import UTC, date, datetime, time
from functools import partial
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

import msgspec
import trio
from quart import Blueprint, Response, redirect, request

from assay.adapters.http.console import _format
from assay.adapters.http.console._charts import ForestRow, forest_plot
from assay.adapters.http.console._over_time import OverTime, over_time_charts
from assay.adapters.http.console._web import PREFIX, Console, Visit, gather
from assay.engine import (
    Experiment,
    ExperimentStatus,
    Resource,
    Transition,
    ValidationFailed,
)
from assay.engine._core._lifecycle import next_status
from assay.engine._core._stats import CORRECTIONS
from assay.engine._report_timeseries import EarlierPoints, earlier_points, with_last_point

if TYPE_CHECKING:
    from assay.engine._guardrails import GuardrailTrigger
    from assay.engine._reports import Report

# The console offers these; archiving stays with the API and the CLI.
ACTIONS = (
    Transition.START,
    Transition.PAUSE,
    Transition.RESUME,
    Transition.COMPLETE,
    Transition.ROLLBACK,
)
ACTION_LABELS = {
    Transition.START: "Start",
    Transition.PAUSE: "Pause",
    Transition.RESUME: "Resume",
    Transition.COMPLETE: "Complete",
    Transition.ROLLBACK: "Roll back",
}
ACTION_EFFECTS = {
    Transition.START: "Subjects start being assigned to its variants.",
    Transition.PAUSE: "Assignment stops; subjects get the flag's next rule or default.",
    Transition.RESUME: "Assignment starts again with the same variants.",
    Transition.COMPLETE: "The experiment ends; its report keeps its numbers.",
    Transition.ROLLBACK: "Every subject gets the control value until it is archived.",
}
STATUSES = tuple(s.value for s in ExperimentStatus)
LIST_CONCURRENCY = 4


def _day(text: str | None, name: str) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.combine(date.fromisoformat(text), time.min, UTC)
    except ValueError:
        raise ValidationFailed(
            f"{name} must be a date (YYYY-MM-DD)",
            code="invalid_parameter",
            details={"parameter": name},
        ) from None


def days_running(experiment: Experiment, now: datetime) -> int | None:
    if experiment.started_at is None:
        return None
    until = experiment.ended_at if experiment.ended_at is not None else now
    if experiment.status is ExperimentStatus.RUNNING:
        until = now
    return max(0, (until - experiment.started_at).days)


def actions_for(visit: Visit, experiment: Experiment) -> list[Transition]:
    """What the signed-in role may do to the experiment in its current status."""
    if not visit.may_act:
        return []
    return [t for t in ACTIONS if next_status(experiment.status, t) is not None]


def _alerts(
    report: Report | None, triggers: list[GuardrailTrigger], crossover_limit: float
) -> list[str]:
    alerts = []
    if report is not None:
        if report.srm.flagged:
            alerts.append(f"SRM ({_format.p_is(report.srm.p_value)})")
        exposed = sum(v.exposed for v in report.variants)
        if exposed and report.crossovers / exposed > crossover_limit:
            alerts.append(f"Crossovers {_format.percent(report.crossovers / exposed)}")
    seen = set()
    for t in triggers:
        if t.kind == "guardrail" and t.check not in seen:
            alerts.append(f"Guardrail: {t.metric} ({t.action})")
        elif t.kind == "no_traffic" and "no_traffic" not in seen:
            alerts.append("No traffic")
        elif t.kind == "crossover_rate" and report is None and "crossover" not in seen:
            alerts.append("Crossover rate")
        seen.add(t.check if t.kind == "guardrail" else t.kind)
    return alerts


def _lift_rows(report: Report) -> list[dict[str, Any]]:
    """One dict per metric, its rows per variant, the control first."""
    metrics = []
    for metric in report.metrics:
        comparisons = {c.variant: c for c in metric.comparisons}
        rows = []
        for value in metric.values:
            c = comparisons.get(value.variant)
            row: dict[str, Any] = {
                "variant": value.variant,
                "n": value.n,
                "value": value.value,
                "control": c is None,
            }
            if c is not None:
                absolute, relative = c.result.absolute, c.result.relative
                # The lift the verdict reads: relative, else absolute, else none (then
                # neither a p-value nor a chance means anything).
                judged = relative if relative.error is None else absolute
                p = judged.sequential
                computable = judged.error is None
                row.update(
                    absolute=absolute.sequential if absolute.error is None else None,
                    relative=relative.sequential if relative.error is None else None,
                    p_value=(p.adjusted_p_value if p.adjusted_p_value is not None else p.p_value)
                    if computable
                    else None,
                    chance=judged.bayesian.chance_to_win if computable else None,
                    verdict=c.verdict,
                )
            rows.append(row)
        metrics.append({"metric": metric, "rows": rows})
    return metrics


def _forest(report: Report) -> Any:
    rows = []
    for metric in report.metrics:
        for c in metric.comparisons:
            lift = c.result.relative.sequential
            if c.result.relative.error is not None:
                continue
            rows.append(
                ForestRow(
                    label=f"{metric.name or metric.key} · {c.variant}",
                    estimate=lift.estimate,
                    low=lift.ci_low,
                    high=lift.ci_high,
                    text=_format.interval(lift.estimate, lift.ci_low, lift.ci_high, relative=True),
                    verdict=c.verdict,
                )
            )
    if not rows:
        return None
    return forest_plot(
        rows,
        title="Relative lift against control, with 95% always-valid intervals",
        axis=lambda v: _format.percent(v, signed=True),
    )


def report_csv(report: Report) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(
        [
            "metric", "role", "variant", "subjects", "value", "absolute_lift",
            "absolute_ci_low", "absolute_ci_high", "relative_lift", "relative_ci_low",
            "relative_ci_high", "p_value", "adjusted_p_value", "chance_to_beat_control",
            "verdict",
        ]
    )  # fmt: skip
    for metric in report.metrics:
        comparisons = {c.variant: c for c in metric.comparisons}
        for value in metric.values:
            c = comparisons.get(value.variant)
            row: list[Any] = [metric.key, metric.role, value.variant, value.n, value.value]
            if c is None:
                row += [""] * 10
            else:
                a, r = c.result.absolute.sequential, c.result.relative.sequential
                row += [
                    a.estimate, a.ci_low, a.ci_high, r.estimate, r.ci_low, r.ci_high,
                    r.p_value, r.adjusted_p_value, c.result.relative.bayesian.chance_to_win,
                    c.verdict,
                ]  # fmt: skip
            writer.writerow(["" if isinstance(v, float) and not math.isfinite(v) else v
                             for v in row])  # fmt: skip
    return out.getvalue()


def register(bp: Blueprint, console: Console) -> None:
    engine = console.engine

    async def experiments(project: str) -> Response:
        visit = await console.visit()
        status = request.args.get("status") or None
        if status is not None and status not in STATUSES:
            raise ValidationFailed(
                f"status must be one of {', '.join(STATUSES)}", code="invalid_parameter"
            )
        found = await engine.service.resolve_project(visit.key, project)
        items: list[Experiment] = []
        cursor = None
        while True:
            page = await engine.service.list_objects(
                visit.key, Experiment, project, cursor=cursor, limit=500
            )
            items += page.items
            cursor = page.next_cursor
            if cursor is None:
                break
        if status is not None:
            items = [e for e in items if e.status.value == status]
        now = datetime.now(UTC)
        reads_reports = visit.may(Resource.REPORT)
        reads_guardrails = visit.may(Resource.GUARDRAIL)
        # A few experiments' reports at once: the list costs about its slowest few
        # reports, while the database pool is not flooded by a long list.
        limiter = trio.CapacityLimiter(LIST_CONCURRENCY)

        async def row(e: Experiment) -> dict[str, Any]:
            report = None
            triggers: list[GuardrailTrigger] = []
            if e.status is not ExperimentStatus.DRAFT:
                async with limiter:
                    if reads_reports:
                        report = await engine.report(project, e.key, principal=visit.key)
                    if reads_guardrails:
                        page_t = await engine.guardrail_triggers(
                            project, e.key, limit=20, principal=visit.key
                        )
                        triggers = [t for t in page_t.items if t.experiment_revision == e.revision]
            return {
                "experiment": e,
                "days": days_running(e, now),
                "subjects": None if report is None else sum(v.subjects for v in report.variants),
                "alerts": _alerts(report, triggers, engine.config.guardrail_crossover_limit),
            }

        rows = await gather(*(partial(row, e) for e in items))
        return await console.page(
            "experiments.html",
            visit,
            project=found,
            rows=rows,
            chosen=status,
            statuses=STATUSES,
            reads_reports=reads_reports,
        )

    async def _report(visit: Visit, project: str, key: str) -> tuple[Report, dict[str, str]]:
        args = request.args
        correction = args.get("correction") or None
        if correction is not None and correction not in CORRECTIONS:
            raise ValidationFailed(
                f"correction must be one of {', '.join(CORRECTIONS)}", code="invalid_correction"
            )
        start, end = _day(args.get("start"), "start"), _day(args.get("end"), "end")
        report = await engine.report(
            project, key, start=start, end=end, correction=correction, principal=visit.key
        )
        query = {k: v for k, v in (("start", args.get("start")), ("end", args.get("end")),
                                   ("correction", correction)) if v}  # fmt: skip
        return report, query

    async def _earlier_points(visit: Visit, project: str, key: str) -> EarlierPoints | str:
        """The series over time but its last point (the whole report, read beside it), or
        why there is none (too many points at this interval)."""
        correction = request.args.get("correction") or None
        try:
            return await earlier_points(
                engine,
                project,
                key,
                interval=request.args.get("interval") or "day",
                correction=correction if correction in CORRECTIONS else None,
                principal=visit.key,
            )
        except ValidationFailed as exc:
            if exc.code != "timeseries_too_long":
                raise
            return exc.message

    async def experiment(project: str, key: str) -> Response:
        visit = await console.visit()

        async def nothing() -> Any:
            return None

        async def triggers_of() -> list[GuardrailTrigger]:
            page = await engine.guardrail_triggers(project, key, limit=20, principal=visit.key)
            return page.items

        reads_reports = visit.may(Resource.REPORT)
        period = bool(request.args.get("start") or request.args.get("end"))

        async def whole() -> Report:
            correction = request.args.get("correction") or None
            return await engine.report(project, key, correction=correction, principal=visit.key)

        # Each read checks access itself; they are independent, so they run at once: the
        # charts over time (one pass over the rollups) beside the report they end with.
        found, target, reported, triggers, earlier, whole_report = await gather(
            lambda: engine.service.resolve_project(visit.key, project),
            lambda: engine.service.get_object(visit.key, Experiment, project, key),
            (lambda: _report(visit, project, key)) if reads_reports else nothing,
            triggers_of if visit.may(Resource.GUARDRAIL) else nothing,
            (lambda: _earlier_points(visit, project, key)) if reads_reports else nothing,
            whole if reads_reports and period else nothing,
        )
        report, query = reported if reported is not None else (None, {})
        over = None
        if report is not None and isinstance(earlier, str):
            over = OverTime(interval=request.args.get("interval") or "day", note=earlier)
        elif report is not None:
            over = over_time_charts(target, with_last_point(earlier, whole_report or report))
        triggers = triggers or []
        variants = {v.key: v for v in report.variants} if report is not None else {}
        total_weight = sum(v.weight for v in target.variants) or 1.0
        return await console.page(
            "experiment.html",
            visit,
            project=found,
            experiment=target,
            days=days_running(target, datetime.now(UTC)),
            report=report,
            variants=variants,
            total_weight=total_weight,
            metrics=_lift_rows(report) if report is not None else [],
            forest=_forest(report) if report is not None else None,
            over=over,
            triggers=triggers,
            actions=actions_for(visit, target),
            labels=ACTION_LABELS,
            corrections=CORRECTIONS,
            query=query,
            args=request.args,
        )

    async def download(project: str, key: str, fmt: str) -> Response:
        visit = await console.visit()
        report, _ = await _report(visit, project, key)
        if fmt == "csv":
            body, media = report_csv(report).encode(), "text/csv; charset=utf-8"
        else:
            body, media = msgspec.json.encode(report), "application/json"
        response = Response(body, content_type=media)
        response.headers["Content-Disposition"] = f'attachment; filename="{key}-report.{fmt}"'
        return response

    async def over_time(project: str, key: str) -> Response:
        # The charts over time used to have this page of their own; they are on the
        # results page now, so old links and bookmarks land on them there.
        await console.visit()
        query = {k: v for k, v in request.args.items() if k in ("interval", "correction") and v}
        target = f"{PREFIX}/projects/{quote(project)}/experiments/{quote(key)}"
        if query:
            target += "?" + urlencode(query)
        return redirect(target + "#over-time", 301)  # type: ignore[return-value]

    async def confirm(project: str, key: str, action: str) -> Response:
        visit = await console.visit()
        transition = _transition(action)
        found = await engine.service.resolve_project(visit.key, project)
        target = await engine.service.get_object(visit.key, Experiment, project, key)
        if transition not in actions_for(visit, target):
            raise ValidationFailed(
                f"{ACTION_LABELS[transition].lower()} is not possible for this experiment "
                "with your role and its status",
                code="action_not_available",
            )
        return await console.page(
            "confirm.html",
            visit,
            project=found,
            experiment=target,
            action=transition,
            label=ACTION_LABELS[transition],
            effect=ACTION_EFFECTS[transition],
        )

    async def act(project: str, key: str, action: str) -> Response:
        visit = await console.visit()
        form = await console.checked_form(visit)
        transition = _transition(action)
        revision = form.get("revision", "")
        await engine.service.transition_experiment(
            visit.key,
            project,
            key,
            transition,
            expected_revision=int(revision) if revision.isdigit() else None,
            reason=(form.get("reason") or "").strip()[:500] or "from the console",
        )
        return redirect(f"{PREFIX}/projects/{project}/experiments/{key}", 303)  # type: ignore[return-value]

    base = "/projects/<project>/experiments"
    bp.add_url_rule(base, view_func=experiments, endpoint="experiments")
    bp.add_url_rule(f"{base}/<key>", view_func=experiment, endpoint="experiment")
    bp.add_url_rule(
        f"{base}/<key>/report.csv", view_func=download, endpoint="report_csv",
        defaults={"fmt": "csv"},
    )  # fmt: skip
    bp.add_url_rule(
        f"{base}/<key>/report.json", view_func=download, endpoint="report_json",
        defaults={"fmt": "json"},
    )  # fmt: skip
    bp.add_url_rule(f"{base}/<key>/over-time", view_func=over_time, endpoint="over_time")
    bp.add_url_rule(f"{base}/<key>/actions/<action>", view_func=confirm, endpoint="confirm")
    bp.add_url_rule(
        f"{base}/<key>/actions/<action>", view_func=act, endpoint="act", methods=["POST"]
    )


def _transition(action: str) -> Transition:
    for t in ACTIONS:
        if t.value == action:
            return t
    raise ValidationFailed(f"unknown action {action!r}", code="unknown_action")
