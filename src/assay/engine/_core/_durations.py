"""Durations in words for messages people read: "30 days", "5 minutes", "90 seconds".

A duration is said in the largest unit it reaches: as a whole number when it is one ("30
days", never "2.592e+06 seconds"), else in the next smaller unit when that is whole ("90
minutes"), else to one decimal ("2.1 hours").
"""

from __future__ import annotations

_UNITS = (("day", 86_400.0), ("hour", 3_600.0), ("minute", 60.0), ("second", 1.0))


def describe_duration(seconds: float) -> str:
    """``seconds`` in words (``describe_duration(2_592_000) == "30 days"``)."""
    for i, (name, size) in enumerate(_UNITS):
        count = seconds / size
        if count < 1 and size > 1:
            continue
        if count == round(count):
            return _plural(int(count), name)
        if i + 1 < len(_UNITS):
            smaller, smaller_size = _UNITS[i + 1]
            if (seconds / smaller_size) == round(seconds / smaller_size):
                return _plural(int(seconds / smaller_size), smaller)
        return _plural(round(count, 1 if size > 1 else 3), name)
    raise AssertionError("unreachable: the last unit always answers")


def _plural(count: float, unit: str) -> str:
    return f"{count:g} {unit}" + ("" if count == 1 else "s")
