"""Numbers as people read them: thousands separators, percentages with sensible
precision, signed lifts with their interval: "+2.1% (-0.4% to +4.6%)", with true minus
signs (U+2212).

Every function takes what a report holds (floats that may be NaN or infinite) and never
raises: a number that cannot be shown is an em dash.
"""

from __future__ import annotations

import math
from datetime import datetime

MINUS = "\u2212"
DASH = "\u2014"


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def count(value: int | None) -> str:
    """``12345`` -> ``12,345``."""
    return DASH if value is None else f"{value:,}"


def _digits(value: float) -> int:
    # Small values keep two significant digits; larger ones one decimal.
    magnitude = abs(value)
    if magnitude == 0 or magnitude >= 10:
        return 1 if magnitude < 100 else 0
    if magnitude >= 1:
        return 1
    return min(4, max(1, 1 - math.floor(math.log10(magnitude))))


def _signed(text: str, value: float) -> str:
    if text.lstrip("-").strip("0.%") == "":
        return text.lstrip("-")  # no sign on a zero
    return ("+" + text) if value > 0 else text.replace("-", MINUS)


def percent(value: float | None, *, signed: bool = False) -> str:
    """A share or relative lift as a percentage: 0.0213 -> ``2.1%`` (``+2.1%``)."""
    if not _finite(value):
        return DASH
    assert value is not None
    scaled = value * 100
    text = f"{scaled:.{_digits(scaled)}f}%"
    return _signed(text, scaled) if signed else text.replace("-", MINUS)


def number(value: float | None, *, signed: bool = False) -> str:
    """A metric value or absolute lift with thousands separators and sensible digits."""
    if not _finite(value):
        return DASH
    assert value is not None
    text = f"{value:,.{_digits(value) + (1 if abs(value) < 10 else 0)}f}"
    return _signed(text, value) if signed else text.replace("-", MINUS)


def interval(
    estimate: float | None, low: float | None, high: float | None, *, relative: bool
) -> str:
    """``+2.1% (-0.4% to +4.6%)`` (minus signs as U+2212): the estimate and its interval."""
    fmt = percent if relative else number
    if not _finite(estimate):
        return DASH
    if not (_finite(low) and _finite(high)):
        return fmt(estimate, signed=True)
    return f"{fmt(estimate, signed=True)} ({fmt(low, signed=True)} to {fmt(high, signed=True)})"


def chance(value: float | None) -> str:
    """A probability people read at a glance: ``<0.1%``, ``97.3%``, ``>99.9%``."""
    if not _finite(value):
        return DASH
    assert value is not None
    if value < 0.001:
        return "<0.1%"
    if value > 0.999:
        return ">99.9%"
    return f"{value * 100:.1f}%"


def p_value(value: float | None) -> str:
    if not _finite(value):
        return DASH
    assert value is not None
    if value < 0.0001:
        return "<0.0001"
    return f"{value:.4f}" if value < 0.01 else f"{value:.3f}"


def p_is(value: float | None) -> str:
    """``p = 0.012`` or ``p < 0.0001``, for prose."""
    text = p_value(value)
    return f"p {text[0]} {text[1:]}" if text.startswith("<") else f"p = {text}"


def moment(value: datetime | None) -> str:
    return DASH if value is None else value.strftime("%Y-%m-%d %H:%M UTC")


def day(value: datetime | None) -> str:
    return DASH if value is None else value.strftime("%Y-%m-%d")


VERDICTS = {
    "better": "Better",
    "worse": "Worse",
    "no_detectable_difference": "No detectable difference",
    "not_computable": "Not computable",
}


def verdict(value: str) -> str:
    return VERDICTS.get(value, value.replace("_", " "))
