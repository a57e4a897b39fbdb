"""``assay report EXPERIMENT``: an experiment's report as a table (or JSON)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any

import msgspec

from assay.engine._core._stats import CORRECTIONS
from assay.engine._reports import MetricComparison, MetricReport, Report

EXIT_OK = 0


def _moment(text: str) -> datetime:
    """A date (midnight UTC) or an ISO 8601 date-time; one without an offset is UTC."""
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), datetime.min.time(), UTC)
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a date (YYYY-MM-DD) or date-time"
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def add_report_command(
    commands: Any, add_config_args: Callable[[argparse.ArgumentParser], None]
) -> None:
    report = commands.add_parser(
        "report",
        help="print an experiment's report",
        description="Per variant: assigned subjects, crossovers and analysed subjects; per "
        "metric: each variant's value and its lift against control with the always-valid 95% "
        "interval, the adjusted p-value and a verdict; and the SRM check.",
    )
    report.add_argument("experiment", metavar="EXPERIMENT", help="experiment key")
    report.add_argument("--project", required=True, help="project key")
    report.add_argument("--start", type=_moment, help="first exposures from (inclusive)")
    report.add_argument("--end", type=_moment, help="first exposures until (exclusive)")
    report.add_argument("--correction", choices=CORRECTIONS, help="default: the experiment's own")
    report.add_argument("--json", action="store_true", help="print the report as JSON")
    add_config_args(report)
    report.set_defaults(handler=_report)


def _report(args: argparse.Namespace) -> int:
    from assay.adapters.cli import load_config, run_on_engine

    config = load_config(args)
    result = run_on_engine(
        config,
        lambda engine: engine.report(
            args.project,
            args.experiment,
            start=args.start,
            end=args.end,
            correction=args.correction,
        ),
    )
    if args.json:
        print(msgspec.json.encode(result).decode())
    else:
        print(render(result))
    return EXIT_OK


def _pct(x: float) -> str:
    return f"{x * 100:+.2f}%"


def _num(x: float) -> str:
    return f"{x:.4g}"


def _verdict(c: MetricComparison, metric: MetricReport) -> str:
    match c.verdict:
        case "better":
            return f"{c.variant} better (significant{_how(c)})"
        case "worse":
            return f"{c.variant} worse (significant{_how(c)})"
        case "no_detectable_difference":
            return "no detectable difference"
        case _:
            error = c.reason or c.result.relative.error or c.result.absolute.error or "no data"
            return f"not computable ({error})"


def _how(c: MetricComparison) -> str:
    match c.verdict_method:
        case "planned":
            return ", planned test"
        case "guardrail":
            return ", guardrail breached"
        case _:
            return ", exploratory" if c.exploratory else ""


def _lift(c: MetricComparison) -> tuple[str, str]:
    """The lift with its always-valid interval, relative when it can be, and its p-value."""
    relative = c.result.relative
    if relative.error is None:
        s = relative.sequential
        text = f"{_pct(s.estimate)} [{_pct(s.ci_low)}, {_pct(s.ci_high)}]"
    else:
        s = c.result.absolute.sequential
        text = f"{s.estimate:+.4g} [{s.ci_low:+.4g}, {s.ci_high:+.4g}]"
        if c.result.absolute.error is not None:
            return "-", "-"
    p = s.adjusted_p_value if s.adjusted_p_value is not None else s.p_value
    return text, f"{p:.3g}"


def render(report: Report) -> str:
    """The report as a plain-text table."""
    lines: list[str] = []
    period = (
        f"{report.start.isoformat() if report.start else 'beginning'} .. "
        f"{report.end.isoformat() if report.end else 'now'}"
    )
    lines.append(
        f"Experiment {report.experiment} ({report.status.value}); first exposures "
        f"{period}; correction: {report.correction}"
    )
    lines.append("")
    lines.append(f"  {'variant':<20} {'assigned':>10} {'crossovers':>11} {'analysed':>10} weight")
    for v in report.variants:
        label = f"{v.key} (control)" if v.key == report.control else v.key
        lines.append(
            f"  {label:<20} {v.assigned:>10,} {v.crossovers:>11,} {v.analysed:>10,} {v.weight:g}"
        )
    srm = report.srm
    if srm.flagged:
        lines.append(
            f"  WARNING: sample ratio mismatch (SRM p = {srm.p_value:.3g} < {srm.threshold:g}, "
            "assigned subjects): the split does not match the weights; do not trust the "
            "results below."
        )
    else:
        lines.append(f"  SRM check passed (p = {srm.p_value:.3g}, assigned subjects)")
    lines.append(f"  pending conversions: {report.pending:,}")
    if report.plan is not None:
        plan = report.plan
        upcoming = (
            "final look taken"
            if plan.final
            else f"next look at {plan.next_look_fraction:.0%}"
            if plan.next_look_fraction is not None
            else ""
        )
        lines.append(
            f"  plan: {plan.fraction:.0%} of the planned size, {plan.looks} look(s); {upcoming}"
        )
    if report.verdict_basis:
        lines.append(f"  verdicts: {report.verdict_basis}")
    for m in report.metrics:
        lines.append("")
        direction = "higher is better" if m.higher_is_better else "lower is better"
        cuped = ", CUPED" if m.cuped else ""
        lines.append(f"Metric {m.key} ({m.kind}, {m.role}, {direction}{cuped})")
        if m.error is not None:
            lines.append(f"  not analysed: {m.error}")
            continue
        lines.append(
            f"  {'variant':<20} {'n':>10} {'value':>12}  "
            f"{'lift vs control [95% always-valid]':<36} {'p (adj.)':>9}  verdict"
        )
        by_variant = {c.variant: c for c in m.comparisons}
        for value in m.values:
            c = by_variant.get(value.variant)
            row = f"  {value.variant:<20} {value.n:>10,} {_num(value.value):>12}  "
            if c is None:
                lines.append(row.rstrip())
                continue
            lift, p = _lift(c)
            lines.append(f"{row}{lift:<36} {p:>9}  {_verdict(c, m)}")
    return "\n".join(lines)
