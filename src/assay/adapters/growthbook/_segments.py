"""GrowthBook's saved groups imported as assay segments, or inlined where they cannot be kept.

A payload's ``savedGroups`` object holds each group by id: a list of values (the legacy
form), ``{"type": "list", "attributeKey", "values"}`` or ``{"type": "condition",
"condition"}``. A condition that refers to groups is kept as written, its groups becoming
segments of the same key, whenever assay decides the reference exactly as the SDK does:

- ``$inGroup``/``$notInGroup`` on a list group (either form);
- ``$savedGroup`` on a typed list group whose attribute is known (the reference's
  ``attributeKey``, else the group's), or on a condition group whose own references are
  kept by the same rules and that does not reach itself.

Anything else (a group missing from the payload, a reference assay would refuse, a cycle,
a group type this import does not know) is inlined by ``SavedGroupSegments.inline``, which
reproduces the SDK's answer for it (or raises ``Skip`` for a group type it does not know,
and the importer skips the rule). Only the groups kept references reach become segments.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from assay.adapters.growthbook._values import Skip
from assay.engine._core._segments import segment_references
from assay.engine._model import SegmentSpec

__all__ = ["SavedGroupSegments"]

_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
_MAX_VALUES = 100_000
_NAME = "Imported from GrowthBook (saved group)."
_NEVER: dict[str, Any] = {"$not": {}}
"""A condition that never holds, in GrowthBook's language as in assay's."""


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

    def inline(self, condition: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
        """``condition`` with every saved-group reference replaced by what the SDK makes of
        it, and the groups inlined (sorted). Raises ``Skip`` when that cannot be done."""
        used: set[str] = set()
        return self._inline(condition, used, frozenset()), sorted(used)

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

    def _group(self, group_id: Any) -> Any:
        if not isinstance(group_id, str):
            raise Skip(f"saved group reference {group_id!r} is not an id; rule skipped")
        if group_id not in self._groups:
            return None
        return self._groups[group_id]

    def _list_group(self, group_id: Any, used: set[str]) -> list[Any] | None:
        """The values of a list group; None for a condition group (never a member)."""
        entry = self._group(group_id)
        used.add(str(group_id))
        if entry is None:
            # The SDK treats a group it does not know as empty; so does the import.
            return []
        if isinstance(entry, list):
            return entry
        if (
            isinstance(entry, Mapping)
            and entry.get("type") == "list"
            and isinstance(entry.get("values"), list)
        ):
            return list(entry["values"])
        if isinstance(entry, Mapping) and entry.get("type") == "condition":
            return None
        raise Skip(f"saved group {group_id!r} is not a list of values; rule skipped")

    def _inline(
        self, condition: Mapping[str, Any], used: set[str], visiting: frozenset[str]
    ) -> dict[str, Any]:
        """``condition`` with every saved-group reference replaced by its content."""
        out: dict[str, Any] = {}
        extra: list[dict[str, Any]] = []
        for key, value in condition.items():
            if key in ("$or", "$nor", "$and") and isinstance(value, list):
                out[key] = [
                    self._inline(c, used, visiting) if isinstance(c, Mapping) else c for c in value
                ]
            elif key == "$not" and isinstance(value, Mapping):
                out[key] = self._inline(value, used, visiting)
            elif key == "$savedGroup":
                extra.append(self._saved_group(value, used, visiting))
            elif key == "$savedGroups":
                raise Skip("$savedGroups conditions are not imported; rule skipped")
            else:
                out[key] = self._inline_value(value, used, visiting)
        if not extra:
            return out
        parts = [out, *extra] if out else extra
        return parts[0] if len(parts) == 1 else {"$and": parts}

    def _saved_group(
        self, reference: Any, used: set[str], visiting: frozenset[str]
    ) -> dict[str, Any]:
        # The SDK evaluates a malformed reference, a group missing from the payload or in
        # the old bare-list form, a group closing a cycle, and a list group with no
        # attribute as false: so does a condition that never holds.
        if not isinstance(reference, Mapping) or not isinstance(reference.get("id"), str):
            return dict(_NEVER)
        group_id = reference["id"]
        entry = self._group(group_id)
        if not isinstance(entry, Mapping) or group_id in visiting:
            return dict(_NEVER)
        used.add(str(group_id))
        if entry.get("type") == "list":
            attribute = reference.get("attributeKey", entry.get("attributeKey"))
            if not isinstance(attribute, str) or not isinstance(entry.get("values"), list):
                return dict(_NEVER)
            return {attribute: {"$in": self._list_group(group_id, used)}}
        if entry.get("type") == "condition" and isinstance(entry.get("condition"), Mapping):
            return self._inline(entry["condition"], used, visiting | {str(group_id)})
        raise Skip(f"saved group {group_id!r} has an unknown type; rule skipped")

    def _inline_value(self, value: Any, used: set[str], visiting: frozenset[str]) -> Any:
        if not isinstance(value, Mapping) or not all(
            isinstance(k, str) and k.startswith("$") for k in value
        ):
            return value  # a literal, compared as is
        out: dict[str, Any] = {}
        for op, argument in value.items():
            if op in ("$inGroup", "$notInGroup"):
                # $in/$nin test membership exactly as $inGroup/$notInGroup do; on a
                # condition group both are false in the SDK, as $in: [] is.
                target = "$in" if op == "$inGroup" else "$nin"
                values = self._list_group(argument, used)
                if values is None:
                    target, values = "$in", []
                if target in value or target in out:
                    raise Skip(f"{op} beside {target} cannot be inlined; rule skipped")
                out[target] = values
            elif op in ("$not", "$size"):
                out[op] = self._inline_value(argument, used, visiting)
            elif op == "$elemMatch" and isinstance(argument, Mapping):
                is_operators = all(isinstance(k, str) and k.startswith("$") for k in argument)
                out[op] = (
                    self._inline_value(argument, used, visiting)
                    if is_operators
                    else self._inline(argument, used, visiting)
                )
            else:
                out[op] = argument
        return out


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
