"""``scipy.stats``, imported on first use.

Importing it costs about a third of a second and tens of megabytes (over a thousand
modules), and most processes that import assay never compute a statistic: a service that
only decides, the CLI, an HTTP worker between reports. A smaller process is also a faster
one on the hot paths (fewer cache and TLB misses), so the statistics modules reach scipy
through this proxy, which imports it when an attribute is first read.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["special", "sps"]

if TYPE_CHECKING:
    from scipy import special
    from scipy import stats as sps
else:

    class _LazyStats:
        __slots__ = ()

        def __getattr__(self, name: str) -> Any:
            from scipy import stats

            return getattr(stats, name)

    class _LazySpecial:
        __slots__ = ()

        def __getattr__(self, name: str) -> Any:
            from scipy import special

            return getattr(special, name)

    sps = _LazyStats()
    special = _LazySpecial()
