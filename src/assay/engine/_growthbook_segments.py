"""GrowthBook's saved groups imported as assay segments, and its sticky-bucketing fields.

A payload's ``savedGroups`` object holds each group by id: a list of values (the legacy
form), ``{"type": "list", "attributeKey", "values"}`` or ``{"type": "condition",
"condition"}``. A condition that refers to groups is kept as written, its groups becoming
segments of the same key, whenever assay decides the reference exactly as the SDK does:

- ``$inGroup``/``$notInGroup`` on a list group (either form);
- ``$savedGroup`` on a typed list group whose attribute is known (the reference's
  ``attributeKey``, else the group's), or on a condition group whose own references are
  kept by the same rules and that does not reach itself.

Anything else (a group missing from the payload, a reference assay would refuse, a cycle,
a group type this import does not know) is left to the importer's inlining, which
reproduces the SDK's answer for it (or skips the rule for a group type it does not know).
Only the groups kept references reach become segments.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from assay.engine._core._segments import segment_references
from assay.engine._model import SegmentSpec

__all__ = ["SavedGroupSegments", "sticky_bucketing"]

_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
_MAX_VALUES = 100_000
_NAME = "Imported from GrowthBook (saved group)."


class SavedGroupSegments:
    """Decides which references stay references, and collects the segments they need."""

    def __init__(self, saved_groups: Mapping[str, Any]) -> None:
        self._groups = saved_groups
        self._used: dict[str, SegmentSpec] = {}

    def keep(self, condition: Mapping[str, Any]) -> bool:
        """Whether ``condition`` refers to groups and may keep every reference as written;
        when True, its groups (and theirs) are recorded as segments to create."""
        refs = segment_references(condition)
        if not refs or _mentions_saved_groups_list(condition):
            return False
        if not all(self._exact(op, key, condition, ()) for op, key in refs):
            return False
        for _, key in refs:
            self._use(key)
        return True

    def segments(self) -> list[SegmentSpec]:
        """The segments the kept conditions need, in the order first used."""
        return list(self._used.values())

    def _values(self, key: str) -> list[Any] | None:
        entry = self._groups.get(key)
        if isinstance(entry, list):
            return entry
        if isinstance(entry, Mapping) and entry.get("type") == "list":
            values = entry.get("values")
            return values if isinstance(values, list) else None
        return None

    def _exact(
        self, op: str, key: str, condition: Mapping[str, Any], visiting: tuple[str, ...]
    ) -> bool:
        if not _KEY.match(key) or key in visiting:
            return False
        entry = self._groups.get(key)
        if op != "$savedGroup":
            values = self._values(key)
            return values is not None and len(values) <= _MAX_VALUES
        if not isinstance(entry, Mapping):
            return False
        if entry.get("type") == "list":
            values = self._values(key)
            if values is None or len(values) > _MAX_VALUES:
                return False
            # The attribute: each reference's own attributeKey, else the group's.
            return all(
                isinstance(self._attribute(ref, entry), str)
                for ref in _saved_group_refs(condition, key)
            )
        inner = entry.get("condition")
        if entry.get("type") != "condition" or not isinstance(inner, Mapping) or not inner:
            return False
        return all(self._exact(o, k, inner, (*visiting, key)) for o, k in segment_references(inner))

    @staticmethod
    def _attribute(reference: Mapping[str, Any], entry: Mapping[str, Any]) -> Any:
        return reference.get("attributeKey", entry.get("attributeKey"))

    def _use(self, key: str) -> None:
        if key in self._used:
            return
        entry = self._groups.get(key)
        if isinstance(entry, Mapping) and entry.get("type") == "condition":
            condition = dict(entry["condition"])
            self._used[key] = SegmentSpec(
                key=key, description=_NAME, type="condition", condition=condition
            )
            for _, inner in segment_references(condition):
                self._use(inner)
            return
        attribute = entry.get("attributeKey") if isinstance(entry, Mapping) else None
        self._used[key] = SegmentSpec(
            key=key,
            description=_NAME,
            type="list",
            attribute=attribute if isinstance(attribute, str) and attribute else "id",
            values=list(self._values(key) or []),
        )


def _saved_group_refs(condition: Any, key: str) -> list[Mapping[str, Any]]:
    """Every ``$savedGroup`` reference to ``key`` in ``condition``."""
    found: list[Mapping[str, Any]] = []
    if isinstance(condition, Mapping):
        for k, v in condition.items():
            if k == "$savedGroup" and isinstance(v, Mapping) and v.get("id") == key:
                found.append(v)
            else:
                found.extend(_saved_group_refs(v, key))
    elif isinstance(condition, list):
        for item in condition:
            found.extend(_saved_group_refs(item, key))
    return found


def _mentions_saved_groups_list(condition: Any) -> bool:
    """Whether ``$savedGroups`` (which the SDK evaluates as false) appears anywhere."""
    if isinstance(condition, Mapping):
        return any(
            k == "$savedGroups" or _mentions_saved_groups_list(v) for k, v in condition.items()
        )
    if isinstance(condition, list):
        return any(_mentions_saved_groups_list(item) for item in condition)
    return False


def sticky_bucketing(
    rule: Mapping[str, Any], loc: str, warn: Callable[[str, str], None]
) -> dict[str, Any] | None:
    """An experiment rule's sticky-bucketing fields as assay's, or None when it has none.

    GrowthBook sends ``bucketVersion``/``minBucketVersion`` on experiment rules when sticky
    bucketing is on; ``disableStickyBucketing`` turns it off for one rule. Versions are
    non-negative integers (``bucketVersion || 0``); anything else is reported and read as 0.
    Raises ``ValueError`` when ``minBucketVersion`` exceeds ``bucketVersion``.
    """
    if rule.get("disableStickyBucketing") or (
        rule.get("bucketVersion") is None and rule.get("minBucketVersion") is None
    ):
        return None
    versions: dict[str, int] = {}
    for field, name in (
        ("bucketVersion", "bucket_version"),
        ("minBucketVersion", "min_bucket_version"),
    ):
        value = rule.get(field)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            versions[name] = value
            continue
        if value is not None:
            warn(f"{loc}.{field}", f"{value!r} is not a non-negative integer; read as 0")
        versions[name] = 0
    if versions["min_bucket_version"] > versions["bucket_version"]:
        # GrowthBook would enrol a subject once, then block it at its next evaluation;
        # assay refuses such an experiment when saved.
        raise ValueError("minBucketVersion above bucketVersion; rule skipped")
    return {"sticky_bucketing": True, **versions}
