"""Latency tracking cheap enough for the decide hot path.

A fixed ring of the most recent observations; quantiles are computed only when someone
asks (a metrics scrape), so observing costs one array store and two additions.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence

import numpy as np

DEFAULT_QUANTILES = (0.5, 0.95, 0.99)


class LatencyRecorder:
    """The last ``window`` latencies in seconds, plus a running count and sum."""

    __slots__ = ("_mask", "_ring", "count", "total")

    def __init__(self, window: int = 8192) -> None:
        if window <= 0 or window & (window - 1):
            raise ValueError("window must be a power of two")
        self._ring = array("d", bytes(8 * window))
        self._mask = window - 1
        self.count = 0
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self._ring[self.count & self._mask] = seconds
        self.count += 1
        self.total += seconds

    def quantiles(self, qs: Sequence[float] = DEFAULT_QUANTILES) -> dict[float, float]:
        """Quantiles over the recent window (NaN before the first observation)."""
        n = min(self.count, self._mask + 1)
        if n == 0:
            return dict.fromkeys(qs, float("nan"))
        values = np.frombuffer(self._ring, dtype=np.float64, count=n)
        return dict(zip(qs, np.quantile(values, list(qs)).tolist(), strict=True))
