"""GrowthBook-compatible hashing and bucketing, pure and I/O free.

Everything here must agree bit for bit with GrowthBook's reference (JavaScript) SDK, so a
user migrating from GrowthBook keeps every subject in the same variant. The functions are
on the decide hot path, so they avoid allocation where they can.
"""

from __future__ import annotations

import sys
from functools import lru_cache
from typing import TYPE_CHECKING

from fnv_hash_fast import fnv1a_32 as _fnv1a_32_bytes

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "choose_variation",
    "fnv1a32",
    "gb_hash",
    "get_bucket_ranges",
    "get_equal_weights",
    "in_namespace",
    "in_range",
]

_FNV_OFFSET = 0x811C9DC5
_FNV_PRIME = 0x01000193
_MASK32 = 0xFFFFFFFF

# memoryview.cast("H") reads native-endian 16-bit units, so encode in the machine's order.
_UTF16_NATIVE = "utf-16-le" if sys.byteorder == "little" else "utf-16-be"


def _fnv_continue(state: int, text: str) -> int:
    """Feed ``text`` into an FNV-1a state, one UTF-16 code unit at a time.

    The JavaScript SDK hashes ``charCodeAt`` values, i.e. UTF-16 code units, so a character
    outside the BMP contributes its two surrogates. For ASCII (the overwhelmingly common
    case: ids and seeds) bytes equal code units and iterating ``bytes`` is the cheapest loop
    CPython offers; anything else goes through a UTF-16 encoding so astral characters are
    split exactly as JavaScript splits them.
    """
    units: Sequence[int]
    if text.isascii():
        units = text.encode("ascii")
    else:
        # surrogatepass: a lone surrogate (legal in JSON and in JS strings) is one unit.
        units = memoryview(text.encode(_UTF16_NATIVE, "surrogatepass")).cast("H")
    h = state
    for unit in units:
        # Multiplying by the FNV prime modulo 2**32 is what the JS shift-and-add form computes.
        h = ((h ^ unit) * _FNV_PRIME) & _MASK32
    return h


def fnv1a32(text: str) -> int:
    """FNV-1a 32-bit hash of ``text`` over its UTF-16 code units (GrowthBook's ``hashFnv32a``)."""
    if text.isascii():
        # ASCII: its UTF-8 bytes are its UTF-16 code units, so the C implementation over
        # bytes agrees exactly, at a tenth of the cost of the Python loop.
        return _fnv1a_32_bytes(text.encode())
    return _fnv_continue(_FNV_OFFSET, text)


@lru_cache(maxsize=4096)
def _seed_state(seed: str) -> int:
    # Hash v2 hashes ``seed + value``; FNV is a left fold, so the state after the seed can be
    # computed once per experiment and resumed for each subject.
    return _fnv_continue(_FNV_OFFSET, seed)


def gb_hash(seed: str, value: str, version: int) -> float | None:
    """GrowthBook's ``hash(seed, value, version)``: a number in [0, 1), or None.

    v1 hashes ``value + seed`` modulo 1000 (kept for compatibility; it correlates across
    experiments that share a value). v2 rehashes the decimal string of the first hash, which
    decorrelates experiments, modulo 10000. Unknown versions give None, as in the SDK.
    """
    if version == 1:
        return (fnv1a32(value + seed) % 1000) / 1000
    if version == 2:
        combined = seed + value
        if combined.isascii():
            inner = _fnv1a_32_bytes(combined.encode())
        else:
            inner = _fnv_continue(_seed_state(seed), value)
        return (_fnv1a_32_bytes(str(inner).encode()) % 10000) / 10000
    return None


def get_equal_weights(n: int) -> list[float]:
    """``n`` equal weights summing to one (empty for ``n <= 0``)."""
    if n <= 0:
        return []
    return [1 / n] * n


def get_bucket_ranges(
    num_variations: int, coverage: float, weights: Sequence[float] | None
) -> list[tuple[float, float]]:
    """Bucket ranges for each variation: ``[start, start + coverage * weight)``.

    Each variation's range starts at the cumulative weight of those before it and only its
    length scales with coverage, so raising coverage extends ranges without moving anyone
    already assigned. Coverage is clamped to [0, 1]; weights of the wrong length or not
    summing to ~1 (0.99..1.01) are replaced by equal weights, exactly like the SDK.
    """
    if coverage < 0:
        coverage = 0.0
    elif coverage > 1:
        coverage = 1.0
    equal = get_equal_weights(num_variations)
    chosen: Sequence[float] = (
        equal if weights is None or len(weights) != num_variations else weights
    )
    # A plain left-to-right sum, as JS ``reduce`` does; math.fsum (or sum() on newer Pythons)
    # rounds differently and could flip a borderline 0.99/1.01 decision.
    total = 0.0
    for w in chosen:
        total += w
    if total < 0.99 or total > 1.01:
        chosen = equal
    ranges: list[tuple[float, float]] = []
    cumulative = 0.0
    for w in chosen:
        start = cumulative
        cumulative += w
        ranges.append((start, start + coverage * w))
    return ranges


def in_range(n: float, range_: tuple[float, float]) -> bool:
    """Whether ``n`` lies in the half-open range ``[start, end)``."""
    return range_[0] <= n < range_[1]


def choose_variation(n: float, ranges: Sequence[tuple[float, float]]) -> int:
    """Index of the first range containing ``n``, or -1 when ``n`` falls outside all of them."""
    for i, (start, end) in enumerate(ranges):
        if start <= n < end:
            return i
    return -1


def in_namespace(user_id: str, namespace: tuple[str, float, float]) -> bool:
    """Whether ``user_id`` falls in the ``[start, end)`` slice of namespace ``namespace[0]``.

    Uses hash v1 with seed ``"__" + namespace_id``, as the SDK does, so layer membership
    matches GrowthBook namespaces.
    """
    namespace_id, start, end = namespace
    n = gb_hash("__" + namespace_id, user_id, 1)
    if n is None:  # pragma: no cover - v1 always hashes; kept to mirror the SDK contract
        return False
    return start <= n < end
