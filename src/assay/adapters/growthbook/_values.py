"""Reading GrowthBook payload values as GrowthBook's SDK reads them: numbers, truthiness,
flag types, hash versions, hash ranges (clamped, made disjoint as first-match bucketing
reads them), rollout coverage, weights and sticky-bucketing versions. Pure helpers of the
GrowthBook import (``_import``), which turns the two exceptions here into "rule
skipped" warnings or silent omissions.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, TypeGuard

from assay.engine._model import FlagType

__all__ = [
    "NeverApplies",
    "Skip",
    "clamped_range",
    "explicit_ranges",
    "hash_version",
    "is_number",
    "js_truthy",
    "pair",
    "rollout_coverage",
    "sticky_bucketing",
    "valid_weights",
    "value_flag_type",
]


class Skip(Exception):
    """The rule (or feature) cannot be imported faithfully: skip it, saying why."""


class NeverApplies(Exception):
    """GrowthBook would pass the rule over for every subject (e.g. a filter with no
    range, a hash version it cannot hash): it is left out, without a warning."""


def is_number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def js_truthy(value: Any) -> bool:
    if value is None or value is False or value == "":
        return False
    if is_number(value):
        return value == value and value != 0
    return True


def pair(raw: Any) -> tuple[float, float]:
    if (
        not isinstance(raw, (list, tuple))
        or len(raw) != 2
        or not all(is_number(b) and math.isfinite(b) for b in raw)
    ):
        raise Skip(f"range {raw!r} is not [start, end]; rule skipped")
    return float(raw[0]), float(raw[1])


def clamped_range(raw: Any) -> tuple[float, float] | None:
    """A GrowthBook range ``[start, end)`` within [0, 1] (hashes lie in [0, 1), so the
    same hashes fall in it); None when no hash does."""
    start, end = pair(raw)
    start, end = max(start, 0.0), min(end, 1.0)
    return (start, end) if start < end else None


def _subtract(
    pieces: list[tuple[float, float]], cut: tuple[float, float]
) -> list[tuple[float, float]]:
    out = []
    for a, b in pieces:
        c, d = cut
        if d <= a or b <= c:
            out.append((a, b))
            continue
        if a < c:
            out.append((a, c))
        if d < b:
            out.append((d, b))
    return out


def explicit_ranges(raw: Any, n: int) -> list[tuple[float, float]]:
    """GrowthBook's ``ranges`` as one disjoint range per variation.

    GrowthBook gives a hash the first range containing it: each range loses what earlier
    ones cover (a range split in two cannot be expressed, and skips the rule); ranges past
    the last variation assign no one, like hashing outside every range; a variation
    without a range gets an empty one.
    """
    if not isinstance(raw, list):
        raise Skip(f"ranges {raw!r} is not a list; rule skipped")
    given = [pair(r) for r in raw]
    out: list[tuple[float, float]] = []
    earlier: list[tuple[float, float]] = []
    for start, end in given[:n]:
        start, end = max(start, 0.0), min(end, 1.0)
        pieces = [(start, end)] if start < end else []
        for cut in earlier:
            pieces = _subtract(pieces, cut)
        if len(pieces) > 1:
            raise Skip(
                f"ranges {raw!r} overlap so that a variation would own two ranges; rule skipped"
            )
        out.append(pieces[0] if pieces else (0.0, 0.0))
        if start < end:
            earlier.append((start, end))
    out.extend([(0.0, 0.0)] * (n - len(out)))
    return out


def rollout_coverage(coverage: float, hash_version: int) -> float:
    """The assay rollout coverage including exactly the subjects GrowthBook includes.

    GrowthBook includes hash ``n`` when ``n < coverage``; assay when ``n <= coverage``.
    ``n`` is ``k / 1000`` (v1) or ``k / 10000`` (v2), computed by that float division, so
    the two agree unless ``coverage`` equals one of those values exactly; then the
    coverage moves half a step down, strictly between two possible hashes, where ``<`` and
    ``<=`` agree (and where they would keep agreeing were either side to switch).
    """
    if coverage <= 0:
        return 0.0
    if coverage >= 1:
        return 1.0
    steps = 1000 if hash_version == 1 else 10000
    k = math.ceil(coverage * steps)
    # Correct for rounding in the multiplication: k / steps is the smallest hash >= coverage.
    while k > 0 and (k - 1) / steps >= coverage:
        k -= 1
    while k / steps < coverage:
        k += 1
    if k / steps != coverage:
        return coverage
    return (k - 0.5) / steps


def valid_weights(weights: Any, n: int) -> TypeGuard[list[float]]:
    # GrowthBook's rule for using the given weights: one finite, non-negative number per
    # variation, summing to 0.99..1.01; anything else buckets with equal weights.
    if not isinstance(weights, list) or len(weights) != n:
        return False
    if not all(is_number(w) and math.isfinite(w) and w >= 0 for w in weights):
        return False
    total = 0.0
    for w in weights:
        total += w
    return 0.99 <= total <= 1.01


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


def value_flag_type(value: Any) -> FlagType:
    """The assay flag type of a feature's value."""
    if isinstance(value, bool):
        return FlagType.BOOLEAN
    if isinstance(value, str):
        return FlagType.STRING
    if is_number(value):
        return FlagType.NUMBER
    return FlagType.JSON


def hash_version(rule: Mapping[str, Any]) -> int:
    # GrowthBook: ``hashVersion || 1``; any other version hashes to nothing, so the rule
    # applies to no one.
    version = rule.get("hashVersion") or 1
    if version not in (1, 2) or isinstance(version, bool):
        raise NeverApplies
    return int(version)
