"""Save-time rules for segments and for the conditions that use them.

A segment is a project's named audience (``Segment``); conditions name it by key. Every
check that keeps those names valid runs when something is saved, so decide never meets a
dangling reference:

- a condition (a rule's, a rule's parent conditions', an experiment's or a condition
  segment's) may only name segments that exist in its project (``segment_not_found``),
  and ``$inGroup``/``$notInGroup`` only ``list`` segments (``segment_type_mismatch``);
- a ``list`` segment has values and no condition, a ``condition`` segment a condition and
  no values (``invalid_segment``); condition segments may use other segments but never
  reach themselves (``segment_cycle``);
- a segment's type cannot change (``immutable_field``), and a segment still used by a flag,
  an experiment or another segment cannot be deleted (``in_use``, from the service).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from assay.engine._core._segments import segment_references
from assay.engine._errors import ValidationFailed
from assay.engine._model import Experiment, ExperimentRule, Flag, Segment
from assay.engine._ports import StoreTransaction

__all__ = ["check_segment_references", "segment_users", "validate_segment"]

ConditionValidator = Callable[[Mapping[str, Any]], None]


async def check_segment_references(
    tx: StoreTransaction, project_id: str, condition: Mapping[str, Any] | None, where: str
) -> None:
    """Refuse ``condition`` if it names a segment that is missing or of the wrong type."""
    if not condition:
        return
    for operator, key in segment_references(condition):
        if not key:
            form = '{"id": KEY}' if operator == "$savedGroup" else "a segment key"
            raise ValidationFailed(
                f"{operator} takes {form}",
                code="invalid_segment_reference",
                details={"field": where},
            )
        segment = await tx.get(Segment, project_id, key)
        if segment is None:
            raise ValidationFailed(
                f"segment {key!r} does not exist",
                code="segment_not_found",
                details={"field": where, "segment": key},
            )
        if operator != "$savedGroup" and segment.type != "list":
            raise ValidationFailed(
                f"{operator} needs a list segment; {key!r} is a condition segment "
                '(use {"$savedGroup": {"id": KEY}})',
                code="segment_type_mismatch",
                details={"field": where, "segment": key},
            )


async def validate_segment(
    tx: StoreTransaction,
    segment: Segment,
    validate_condition: ConditionValidator,
    previous: Segment | None,
) -> None:
    """Check a segment about to be saved (``previous``: the stored one, on update)."""
    if previous is not None and previous.type != segment.type:
        raise ValidationFailed(
            "a segment's type cannot change", code="immutable_field", details={"field": "type"}
        )
    if segment.type == "list":
        if segment.condition is not None:
            raise ValidationFailed(
                "a list segment has values, not a condition",
                code="invalid_segment",
                details={"field": "condition"},
            )
        return
    if segment.values:
        raise ValidationFailed(
            "a condition segment has a condition, not values",
            code="invalid_segment",
            details={"field": "values"},
        )
    if not segment.condition:
        raise ValidationFailed(
            "a condition segment needs a non-empty condition",
            code="invalid_segment",
            details={"field": "condition"},
        )
    try:
        validate_condition(segment.condition)
    except ValidationFailed as exc:
        exc.details = {**(exc.details or {}), "field": "condition"}
        raise
    await check_segment_references(tx, segment.project_id, segment.condition, "condition")
    await _check_cycle(tx, segment)


async def _check_cycle(tx: StoreTransaction, segment: Segment) -> None:
    """Walk the segments ``segment`` uses; reaching it again would be a cycle."""
    seen: set[str] = set()
    stack = [key for _, key in segment_references(segment.condition)]
    while stack:
        key = stack.pop()
        if key == segment.key:
            raise ValidationFailed(
                f"segment {segment.key!r} would use itself",
                code="segment_cycle",
                details={"field": "condition"},
            )
        if key in seen:
            continue
        seen.add(key)
        other = await tx.get(Segment, segment.project_id, key)
        if other is not None and other.condition:
            stack.extend(k for _, k in segment_references(other.condition))


def segment_users(
    segment: Segment, flags: list[Flag], experiments: list[Experiment], segments: list[Segment]
) -> list[str]:
    """What uses ``segment``, named as ``"flag KEY"``, ``"experiment KEY"``, ``"segment KEY"``."""

    def uses(condition: Mapping[str, Any] | None) -> bool:
        return bool(condition) and any(k == segment.key for _, k in segment_references(condition))

    def flag_uses(flag: Flag) -> bool:
        return any(
            (not isinstance(r, ExperimentRule) and uses(r.condition))
            or any(uses(pc.condition) for pc in r.parent_conditions)
            for r in flag.rules
        )

    return (
        [f"flag {f.key}" for f in flags if flag_uses(f)]
        + [f"experiment {e.key}" for e in experiments if uses(e.condition)]
        + [f"segment {s.key}" for s in segments if s.key != segment.key and uses(s.condition)]
    )
