"""Sticky bucketing's data, as GrowthBook's SDK keeps it.

A subject's sticky assignments are documents keyed by (attribute name, attribute value),
the attribute being the one the experiment hashed (its hash attribute, else its fallback).
A document maps ``"<experiment key>__<bucket version>"`` to the assigned variant's key.
``decide`` reads them from a ``StickyDocs`` mapping it is handed (no I/O) and reports, in
``Decision.sticky_bucket``, the assignment to store when the documents lack it. Where the
documents come from and where that assignment goes is the engine's business
(``assay.engine._sticky_buckets``; the design is in docs/design.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeAlias

import msgspec

__all__ = ["StickyAssignment", "StickyDocs", "sticky_bucket_key"]

StickyDocs: TypeAlias = Mapping[tuple[str, str], Mapping[str, str]]
"""A subject's sticky documents: ``{(attribute, value): {"exp__0": "variant", ...}}``."""


def sticky_bucket_key(experiment_key: str, bucket_version: int) -> str:
    """GrowthBook's key of an assignment: ``<experiment key>__<bucket version>``."""
    return f"{experiment_key}__{bucket_version}"


class StickyAssignment(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """An assignment decide made that the subject's documents do not hold yet: store it
    (merged into the document of ``(attribute, value)``) to keep the subject there."""

    attribute: str
    value: str
    key: str
    """``"<experiment key>__<bucket version>"``."""
    variant: str
