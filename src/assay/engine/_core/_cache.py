"""The decision cache: a bounded LRU with a time to live in front of ``decide``.

Entries are keyed by the compiled flag's ``cache_key`` (project, flag key, and the ids and
revisions of the flag and of everything its outcome depends on: the experiments its rules
reach, their holdouts and participation-limit predecessors, the flags its prerequisites and
parent conditions reach), the subject
and a digest of the attributes. The snapshot version is deliberately not part of the key:
a new snapshot that leaves a flag's dependencies alone keeps its cached outcomes, while any
relevant change gives the flag a new ``cache_key`` and so misses.

A hit returns the cached outcome as a new decision: a fresh ``decision_id`` and
``decided_at``, and the current snapshot's version. Unknown flags are never cached (there
is nothing to key them by, and deciding them costs a dictionary lookup).

Not thread-safe: like the rest of the engine it lives on one (Trio) thread.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Final

import msgspec

from assay.engine._core._decide import Decision, decide, new_decision_id

if TYPE_CHECKING:
    from collections.abc import Callable, Hashable, Mapping

    from assay.engine._core._snapshot import Snapshot

__all__ = ["DecisionCache", "attribute_digest"]

# Sorted keys make equal mappings encode equally whatever their insertion order; JSON keeps
# true, 1 and "1" apart (Python's ==, and so a tuple of items, would merge True and 1,
# which targeting conditions tell apart). One C call, nested values included.
_encode: Final = msgspec.json.Encoder(order="sorted").encode
_replace: Final = msgspec.structs.replace


def attribute_digest(attributes: Mapping[str, Any] | None) -> Hashable | None:
    """A cheap, hashable digest of ``attributes``: equal for equal attribute mappings.

    Returns None when the attributes are not JSON-encodable (then the decision is not
    cached). Keys are expected to be strings, as decide reads them.
    """
    if not attributes:
        return b""
    try:
        return _encode(attributes)
    except (TypeError, ValueError, OverflowError):
        return None


class DecisionCache:
    """Bounded LRU with TTL over decisions. ``max_entries`` 0 disables caching."""

    def __init__(
        self,
        max_entries: int,
        ttl_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_entries < 0:
            raise ValueError("max_entries must be >= 0")
        if ttl_seconds < 0:
            raise ValueError("ttl_seconds must be >= 0")
        self._max = max_entries
        self._ttl = ttl_seconds
        self._clock = clock
        self._enabled = max_entries > 0 and ttl_seconds > 0
        self._entries: OrderedDict[tuple[str, str, Hashable], tuple[float, Decision]] = (
            OrderedDict()
        )
        self.hits = 0
        """Lookups answered from the cache."""
        self.misses = 0
        """Lookups that had to decide (including expired and uncacheable ones)."""
        self.evictions = 0
        """Entries dropped because the cache was full."""
        self.expirations = 0
        """Entries found past their time to live (counted as misses too)."""

    @property
    def enabled(self) -> bool:
        return self._enabled

    @property
    def max_entries(self) -> int:
        return self._max

    @property
    def ttl_seconds(self) -> float:
        return self._ttl

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        """Drop every entry (counters are kept)."""
        self._entries.clear()

    def get_or_decide(
        self,
        snapshot: Snapshot,
        project_id: str,
        flag_key: str,
        subject: str,
        attributes: Mapping[str, Any] | None = None,
        *,
        new_id: Callable[[], str] | None = None,
    ) -> Decision:
        """``decide(...)``, answered from the cache when an equal question was decided
        within the TTL against the same flag and experiment revisions."""
        if not self._enabled:
            return decide(snapshot, project_id, flag_key, subject, attributes, new_id=new_id)
        flags = snapshot.project_flags.get(project_id)
        cf = None if flags is None else flags.get(flag_key)
        if cf is None:
            return decide(snapshot, project_id, flag_key, subject, attributes, new_id=new_id)
        digest = attribute_digest(attributes)
        if digest is None:
            self.misses += 1
            return decide(snapshot, project_id, flag_key, subject, attributes, new_id=new_id)
        key = (cf.cache_key, subject, digest)
        hit = self._lookup(key, snapshot, new_id)
        if hit is not None:
            return hit
        decision = decide(snapshot, project_id, flag_key, subject, attributes, new_id=new_id)
        self._store(key, decision)
        return decision

    def get_or_decide_all(
        self,
        snapshot: Snapshot,
        project_id: str,
        subject: str,
        attributes: Mapping[str, Any] | None = None,
        *,
        new_id: Callable[[], str] | None = None,
    ) -> list[Decision]:
        """``decide_all(...)`` through the cache, one entry per flag."""
        flags = snapshot.project_flags.get(project_id)
        if not flags:
            return []
        digest = attribute_digest(attributes) if self._enabled else None
        decisions: list[Decision] = []
        for cf in flags.values():
            if digest is None:
                if self._enabled:
                    self.misses += 1
                decisions.append(
                    decide(snapshot, project_id, cf.key, subject, attributes, new_id=new_id)
                )
                continue
            key = (cf.cache_key, subject, digest)
            hit = self._lookup(key, snapshot, new_id)
            if hit is None:
                hit = decide(snapshot, project_id, cf.key, subject, attributes, new_id=new_id)
                self._store(key, hit)
            decisions.append(hit)
        return decisions

    def _lookup(
        self, key: tuple[str, str, Hashable], snapshot: Snapshot, new_id: Callable[[], str] | None
    ) -> Decision | None:
        entry = self._entries.get(key)
        if entry is not None:
            if entry[0] > self._clock():
                self._entries.move_to_end(key)
                self.hits += 1
                return _replace(
                    entry[1],
                    decision_id=new_decision_id() if new_id is None else new_id(),
                    decided_at=time.time(),
                    snapshot_version=snapshot.version,
                )
            del self._entries[key]
            self.expirations += 1
        self.misses += 1
        return None

    def _store(self, key: tuple[str, str, Hashable], decision: Decision) -> None:
        entries = self._entries
        entries[key] = (self._clock() + self._ttl, decision)
        if len(entries) > self._max:
            entries.popitem(last=False)
            self.evictions += 1
