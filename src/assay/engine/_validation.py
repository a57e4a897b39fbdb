"""Cross-object validation at save time: everything decide relies on is checked here, so
bad configuration is a 422 when it is written, never a surprise when it is evaluated."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from assay.engine._core._snapshot import forced_key
from assay.engine._errors import ValidationFailed
from assay.engine._model import (
    Experiment,
    ExperimentRule,
    Flag,
    FlagType,
    ForceRule,
    HashFilter,
    Layer,
    Metric,
    RolloutRule,
)
from assay.engine._ports import StoreTransaction
from assay.engine._segments import check_segment_references

ConditionValidator = Callable[[Mapping[str, Any]], None]

_JSON_CHECKS: dict[FlagType, Callable[[Any], bool]] = {
    FlagType.BOOLEAN: lambda v: isinstance(v, bool),
    FlagType.STRING: lambda v: isinstance(v, str),
    FlagType.NUMBER: lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    FlagType.JSON: lambda v: True,
}


def _invalid(message: str, code: str, **details: Any) -> ValidationFailed:
    return ValidationFailed(message, code=code, details=details or None)


def check_value(flag_type: FlagType, value: Any, where: str) -> None:
    if not _JSON_CHECKS[flag_type](value):
        raise _invalid(
            f"{where} must be a {flag_type.value} value", "value_type_mismatch", field=where
        )


def _check_condition(
    condition: Mapping[str, Any] | None, where: str, validate: ConditionValidator
) -> None:
    if condition is None:
        return
    try:
        validate(condition)
    except ValidationFailed as exc:
        exc.details = {**(exc.details or {}), "field": where}
        raise


def _check_ranges(
    ranges: Sequence[tuple[float, float]], where: str, *, disjoint: bool = False
) -> None:
    for j, (start, end) in enumerate(ranges):
        if start > end:
            raise _invalid(
                f"range [{start}, {end}) starts after it ends",
                "invalid_range",
                field=f"{where}[{j}]",
            )
    if disjoint:
        ordered = sorted((r for r in ranges if r[0] < r[1]), key=lambda r: r[0])
        for (_, end), (start, _) in itertools.pairwise(ordered):
            if start < end:
                raise _invalid(
                    "bucket ranges overlap: a subject would be in two variants",
                    "overlapping_ranges",
                    field=where,
                )


def _check_filters(filters: Sequence[HashFilter], where: str) -> None:
    # Any non-empty attribute name is one (assay keeps no attribute schema, and GrowthBook
    # hashes whatever the name says), so only the ranges are checked.
    for j, f in enumerate(filters):
        _check_ranges(f.ranges, f"{where}[{j}].ranges")


def flag_references(flag: Flag) -> set[str]:
    """The flags ``flag``'s outcome reads: its prerequisites and its rules' parents."""
    refs = {p.flag for p in flag.prerequisites}
    for rule in flag.rules:
        refs.update(pc.flag for pc in rule.parent_conditions)
    return refs


async def validate_flag(tx: StoreTransaction, flag: Flag, validate: ConditionValidator) -> None:
    check_value(flag.type, flag.default_value, "default_value")
    if flag.key in flag_references(flag):
        raise _invalid("a flag cannot be its own prerequisite", "prerequisite_cycle")
    for i, pre in enumerate(flag.prerequisites):
        if await tx.get(Flag, flag.project_id, pre.flag) is None:
            raise _invalid(
                f"prerequisite flag {pre.flag!r} does not exist",
                "unknown_reference",
                field=f"prerequisites[{i}].flag",
            )
    await _check_prerequisite_cycle(tx, flag)
    rule_ids: set[str] = set()
    for i, rule in enumerate(flag.rules):
        where = f"rules[{i}]"
        if rule.id is not None:
            if rule.id in rule_ids:
                raise _invalid(f"duplicate rule id {rule.id!r}", "duplicate_rule_id", field=where)
            rule_ids.add(rule.id)
        # A parent that does not exist reads null (GrowthBook's rule), so it is allowed.
        for j, pc in enumerate(rule.parent_conditions):
            at = f"{where}.parent_conditions[{j}].condition"
            _check_condition(pc.condition, at, validate)
            await check_segment_references(tx, flag.project_id, pc.condition, at)
        match rule:
            case ForceRule() | RolloutRule():
                check_value(flag.type, rule.value, f"{where}.value")
                _check_condition(rule.condition, f"{where}.condition", validate)
                _check_filters(rule.filters, f"{where}.filters")
                if isinstance(rule, RolloutRule) and rule.range is not None:
                    _check_ranges([rule.range], f"{where}.range")
                await check_segment_references(
                    tx, flag.project_id, rule.condition, f"{where}.condition"
                )
            case ExperimentRule():
                experiment = await tx.get(Experiment, flag.project_id, rule.experiment)
                if experiment is None:
                    raise _invalid(
                        f"experiment {rule.experiment!r} does not exist",
                        "unknown_reference",
                        field=f"{where}.experiment",
                    )
                for v in experiment.variants:
                    check_value(flag.type, v.value, f"experiment {experiment.key} variant {v.key}")


async def _check_prerequisite_cycle(tx: StoreTransaction, flag: Flag) -> None:
    """Walk prerequisites and parent conditions from ``flag``; reaching it again is a
    cycle (decide would end it as GrowthBook does, with no value, but one made here is a
    mistake)."""
    seen: set[str] = set()
    stack = list(flag_references(flag))
    while stack:
        key = stack.pop()
        if key == flag.key:
            raise _invalid("prerequisites form a cycle", "prerequisite_cycle")
        if key in seen:
            continue
        seen.add(key)
        other = await tx.get(Flag, flag.project_id, key)
        if other is not None:
            stack.extend(flag_references(other))


MAX_WEIGHT = 1e6
MAX_PARTICIPATION_LIMIT = 1000
MAX_ATTRIBUTION_WINDOW_HOURS = 24 * 3650


async def validate_experiment(
    tx: StoreTransaction, experiment: Experiment, validate: ConditionValidator
) -> None:
    keys = [v.key for v in experiment.variants]
    if len(set(keys)) != len(keys):
        raise _invalid("variant keys must be unique", "duplicate_variant", field="variants")
    if any(not 0 <= v.weight <= MAX_WEIGHT for v in experiment.variants):
        # Python callers skip msgspec's bounds: the sum of weights must stay finite.
        raise _invalid(
            f"variant weights must be between 0 and {MAX_WEIGHT:g}",
            "invalid_weights",
            field="variants",
        )
    if experiment.variants and sum(v.weight for v in experiment.variants) <= 0:
        raise _invalid("variant weights must not all be zero", "invalid_weights", field="variants")
    _check_condition(experiment.condition, "condition", validate)
    if experiment.ranges is not None:
        if len(experiment.ranges) != len(experiment.variants):
            raise _invalid(
                "explicit ranges need one range per variant", "invalid_range", field="ranges"
            )
        _check_ranges(experiment.ranges, "ranges", disjoint=True)
    _check_filters(experiment.filters, "filters")
    forced: dict[tuple[str, tuple[int, Any] | None], str] = {}
    for i, fv in enumerate(experiment.forced_variations):
        if fv.variant not in keys:
            raise _invalid(
                f"forced variant {fv.variant!r} is not a variant of the experiment",
                "unknown_reference",
                field=f"forced_variations[{i}].variant",
            )
        for value in fv.values:
            previous = forced.setdefault((fv.attribute, forced_key(value)), fv.variant)
            if previous != fv.variant:
                raise _invalid(
                    f"{fv.attribute} {value!r} is forced into both {previous!r} and {fv.variant!r}",
                    "duplicate_forced_value",
                    field=f"forced_variations[{i}].values",
                )
    await check_segment_references(tx, experiment.project_id, experiment.condition, "condition")
    if experiment.layer is not None:
        if experiment.layer.start >= experiment.layer.end:
            raise _invalid("layer range start must be below end", "invalid_range", field="layer")
        if await tx.get(Layer, experiment.project_id, experiment.layer.layer) is None:
            raise _invalid(
                f"layer {experiment.layer.layer!r} does not exist",
                "unknown_reference",
                field="layer.layer",
            )
    if experiment.min_bucket_version > experiment.bucket_version:
        raise _invalid(
            "min_bucket_version above bucket_version would keep everyone out",
            "invalid_bucket_version",
            field="min_bucket_version",
        )
    limit = experiment.participation_limit
    if limit is not None and not 1 <= limit <= MAX_PARTICIPATION_LIMIT:
        raise _invalid(
            f"participation_limit must be between 1 and {MAX_PARTICIPATION_LIMIT}",
            "invalid_limit",
            field="participation_limit",
        )
    if experiment.holdout is not None:
        holdout = await tx.get(Experiment, experiment.project_id, experiment.holdout)
        if holdout is None or not holdout.is_holdout:
            raise _invalid(
                f"holdout {experiment.holdout!r} is not a holdout experiment",
                "unknown_reference",
                field="holdout",
            )
    for field in ("primary_metrics", "secondary_metrics", "guardrail_metrics"):
        for key in getattr(experiment, field):
            if await tx.get(Metric, experiment.project_id, key) is None:
                raise _invalid(f"metric {key!r} does not exist", "unknown_reference", field=field)
    if experiment.plan is not None:
        check_plan(experiment)


def check_plan(experiment: Experiment) -> None:
    """A plan the planned verdict can use: a size, a primary metric to judge."""
    plan = experiment.plan
    assert plan is not None
    if plan.subjects_per_variant is None and plan.days is None:
        raise _invalid("a plan needs subjects_per_variant or days", "invalid_plan", field="plan")
    if plan.subjects_per_variant is not None and plan.subjects_per_variant < 2:
        raise _invalid(
            "plan.subjects_per_variant must be at least 2",
            "invalid_plan",
            field="plan.subjects_per_variant",
        )
    if plan.days is not None and not (math.isfinite(plan.days) and plan.days > 0):
        raise _invalid("plan.days must be > 0", "invalid_plan", field="plan.days")
    if plan.mde is not None and not (math.isfinite(plan.mde) and plan.mde > 0):
        raise _invalid(
            "plan.mde must be > 0: no experiment detects an effect of zero",
            "invalid_plan",
            field="plan.mde",
        )
    if not 0 < plan.power < 1:
        raise _invalid("plan.power must be in (0, 1)", "invalid_plan", field="plan.power")
    if not experiment.primary_metrics:
        raise _invalid(
            "an experiment with a plan needs a primary metric: the plan is judged on it",
            "no_primary_metric",
            field="primary_metrics",
        )


async def validate_metric(tx: StoreTransaction, metric: Metric) -> None:
    window = metric.attribution_window_hours
    if window is not None and not 1 <= window <= MAX_ATTRIBUTION_WINDOW_HOURS:
        # Python callers skip msgspec's bounds; the window is an int4 in SQL.
        raise _invalid(
            f"attribution_window_hours must be between 1 and {MAX_ATTRIBUTION_WINDOW_HOURS}",
            "invalid_range",
            field="attribution_window_hours",
        )
    if metric.kind == "ratio":
        for field in ("numerator", "denominator"):
            key = getattr(metric, field)
            if key is None:
                raise _invalid(f"a ratio metric needs a {field}", "missing_field", field=field)
            part = None if key == metric.key else await tx.get(Metric, metric.project_id, key)
            if part is None:
                raise _invalid(
                    f"{field} metric {key!r} does not exist", "unknown_reference", field=field
                )
            # A CUPED ratio reads its parts' pre-exposure windows: they must be its own.
            if metric.cuped_days is not None and part.cuped_days != metric.cuped_days:
                raise _invalid(
                    f"a ratio with cuped_days {metric.cuped_days} needs its {field} metric "
                    f"{key!r} to set the same cuped_days (it has {part.cuped_days})",
                    "cuped_unsupported",
                    field="cuped_days",
                )
    if metric.kind == "percentile" and metric.percentile is None:
        raise _invalid(
            "a percentile metric needs a percentile", "missing_field", field="percentile"
        )
