"""``assay plan``: the power and sample-size calculator on the command line.

With a baseline given as numbers it computes on the spot (no database); with
``--metric`` and ``--experiment`` it opens the engine to estimate the baseline from that
metric's recent data, as ``POST /api/v1/plan`` does.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import msgspec

from assay.engine._core._planning import PlanInput, SampleSizePlan, plan_sample_size

EXIT_OK = 0


def add_plan_command(
    commands: Any, add_config_args: Callable[[argparse.ArgumentParser], None]
) -> None:
    plan = commands.add_parser(
        "plan",
        help="how many subjects and days an experiment needs",
        description="Subjects per variant and days to detect a minimum detectable effect, "
        "for the fixed-horizon test and for the group-sequential design a planned "
        "experiment's verdict uses. Baseline: --baseline-rate, or --baseline-mean with "
        "--baseline-variance, or --metric with --experiment (estimated from the metric's "
        "recent data in that experiment's control).",
    )
    baseline = plan.add_argument_group("baseline (one of)")
    baseline.add_argument("--baseline-rate", type=float, help="a conversion rate, e.g. 0.1")
    baseline.add_argument("--baseline-mean", type=float, help="a per-subject mean")
    baseline.add_argument("--baseline-variance", type=float, help="its per-subject variance")
    baseline.add_argument("--metric", help="estimate the baseline from this metric")
    baseline.add_argument("--experiment", help="... in this experiment's control")
    baseline.add_argument(
        "--days", type=int, default=28, help="... over this many recent days (default 28)"
    )
    plan.add_argument("--project", help="project key (with --metric)")
    plan.add_argument(
        "--mde", type=float, required=True, help="minimum detectable effect, e.g. 0.05"
    )
    plan.add_argument(
        "--absolute",
        action="store_true",
        help="the MDE is in the metric's units (default: relative to the baseline)",
    )
    plan.add_argument("--alpha", type=float, default=0.05, help="default 0.05")
    plan.add_argument("--power", type=float, default=0.8, help="default 0.8")
    plan.add_argument("--variants", type=int, default=2, help="arms including control")
    plan.add_argument("--daily-traffic", type=float, help="subjects per day, all variants")
    plan.add_argument("--json", action="store_true", help="print the plan as JSON")
    add_config_args(plan)
    plan.set_defaults(handler=_plan)


def _input(args: argparse.Namespace) -> PlanInput:
    try:
        return msgspec.convert(
            {
                "baseline_rate": args.baseline_rate,
                "baseline_mean": args.baseline_mean,
                "baseline_variance": args.baseline_variance,
                "baseline_metric": args.metric,
                "baseline_experiment": args.experiment,
                "baseline_days": args.days,
                "mde": args.mde,
                "mde_type": "absolute" if args.absolute else "relative",
                "alpha": args.alpha,
                "power": args.power,
                "variants": args.variants,
                "daily_traffic": args.daily_traffic,
            },
            PlanInput,
        )
    except msgspec.ValidationError as exc:
        from assay.engine import ValidationFailed

        raise ValidationFailed(str(exc), code="invalid_plan") from None


def _plan(args: argparse.Namespace) -> int:
    request = _input(args)
    if request.baseline_metric is None:
        result = plan_sample_size(request)
    else:
        from assay.adapters.cli import load_config, run_on_engine

        config = load_config(args)
        result = run_on_engine(config, lambda engine: engine.plan(args.project, request))
    print(msgspec.json.encode(result).decode() if args.json else render(result))
    return EXIT_OK


def _days(days: float | None) -> str:
    return "" if days is None else f"{days:>10.1f}"


def render(plan: SampleSizePlan) -> str:
    relative = "" if plan.relative_effect is None else f" ({plan.relative_effect:+.2%})"
    lines = [
        f"baseline {plan.baseline_mean:.4g} (variance {plan.baseline_variance:.4g}; "
        f"{plan.baseline_source}); effect {plan.absolute_effect:+.4g}{relative}",
        f"alpha {plan.alpha:g} ({plan.alpha_per_comparison:.4g} per comparison), power "
        f"{plan.power:g}, {plan.variants} variants",
        "",
        f"  {'design':<16} {'per variant':>12} {'total':>12}"
        + (f" {'days':>10}" if plan.daily_traffic else ""),
        f"  {'fixed horizon':<16} {plan.fixed_subjects_per_variant:>12,} "
        f"{plan.fixed_subjects:>12,} {_days(plan.fixed_days)}".rstrip(),
        f"  {'sequential':<16} {plan.sequential_subjects_per_variant:>12,} "
        f"{plan.sequential_subjects:>12,} {_days(plan.sequential_days)}".rstrip(),
        "",
        f"sequential: {plan.sequential_design} (x{plan.sequential_inflation:.3f}); "
        f"store it on the experiment as plan.subjects_per_variant = "
        f"{plan.sequential_subjects_per_variant}",
    ]
    return "\n".join(lines)
