"""Segments as the condition compiler sees them: GrowthBook's saved groups.

A project's segments are handed to the condition compiler in the shape a GrowthBook
payload's ``savedGroups`` has (``{"type": "list", "attributeKey", "values"}`` or
``{"type": "condition", "condition"}``), so ``$inGroup``, ``$notInGroup`` and
``$savedGroup`` compile with the SDK's semantics whichever way the segment arrived. The
compiled predicates hold the values themselves: decide never looks a segment up.

This module also finds the segments a condition refers to, which saving needs (a reference
to a missing segment, or to one of the wrong type, is refused then, never at decide time)
and which a snapshot needs (a flag whose conditions use segments must miss the decision
cache when one of them changes). Pure: no I/O.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal

from assay.engine._model import Segment

__all__ = [
    "SegmentReference",
    "saved_groups",
    "segment_references",
    "segments_version",
]

SegmentReference = tuple[Literal["$inGroup", "$notInGroup", "$savedGroup"], str]
"""How a condition names a segment, and the segment's key."""


def saved_groups(segments: Sequence[Segment]) -> dict[str, Any]:
    """The segments as a GrowthBook ``savedGroups`` object, by key."""
    groups: dict[str, Any] = {}
    for s in segments:
        if s.type == "list":
            groups[s.key] = {"type": "list", "attributeKey": s.attribute, "values": s.values}
        else:
            groups[s.key] = {"type": "condition", "condition": s.condition or {}}
    return groups


def segments_version(groups: Mapping[str, Any]) -> str:
    """A short digest naming the content of ``groups`` (for cache keys)."""
    if not groups:
        return ""
    text = json.dumps(groups, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def segment_references(condition: Any) -> list[SegmentReference]:
    """Every segment ``condition`` names, in the order written (duplicates kept).

    Walks the whole JSON value, so references nested in ``$and``/``$or``/``$not``,
    ``$elemMatch`` and the like are found; a ``$savedGroup`` whose argument is not
    ``{"id": KEY}`` is reported with key "" (invalid).
    """
    return list(_walk(condition))


def _walk(value: Any) -> Iterator[SegmentReference]:
    if isinstance(value, Mapping):
        for key, item in value.items():
            if key in ("$inGroup", "$notInGroup"):
                yield (key, item if isinstance(item, str) else "")
            elif key == "$savedGroup":
                ref = item.get("id") if isinstance(item, Mapping) else None
                yield ("$savedGroup", ref if isinstance(ref, str) else "")
            else:
                yield from _walk(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _walk(item)
