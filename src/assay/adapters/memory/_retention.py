"""The data lifecycle in memory: the same retention as PostgreSQL where it means
something in a store that lives as long as its process.

Decision records expire by UTC day and event ids by week exactly as the partitions do
(engine/_retention.py); an expired decision id is remembered by its prefix, as
``assay_decisions_expired`` does. Audit entries are not expired here: they vanish with
the process anyway. Nothing here is partitioned, so an expiry run walks every row.
Raw events of compacted experiments are kept: memory reports are computed from them (a
memory store's data goes with its process); the engine refuses their events all the same.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

import msgspec
import trio

from assay.engine._core import Decision
from assay.engine._retention import (
    EVENT_ID_PARTITION_DAYS,
    Compaction,
    Expired,
    KindStats,
    RetentionPolicy,
    RetentionStats,
    day_start,
    event_partition_start,
    whole_days_before,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from assay.adapters.memory._events import _EventTables

_PREFIX = 16


def _week_end(day: int) -> int:
    """The first day after the event-id partition ``day`` falls in (as PostgreSQL's)."""
    return event_partition_start(day) + EVENT_ID_PARTITION_DAYS


class MemoryRetentionStore:
    """Mixed into ``MemoryStore``: the lifecycle part of the Store port."""

    _decisions: dict[str, bytes]

    @property
    def _event_tables(self) -> _EventTables:
        raise NotImplementedError  # MemoryEventStore's

    __expired: dict[str, str] | None = None

    @property
    def _expired_ids(self) -> dict[str, str]:
        if self.__expired is None:
            self.__expired = {}
        return self.__expired

    def _decided_at(self) -> dict[str, float]:
        decode = msgspec.json.Decoder(Decision).decode
        return {i: decode(raw).decided_at for i, raw in self._decisions.items()}

    async def expire(self, now: datetime, policy: RetentionPolicy) -> Expired:
        await trio.lowlevel.checkpoint()
        cutoff = day_start(whole_days_before(policy.decisions_before(now))).timestamp()
        gone = [i for i, at in self._decided_at().items() if at < cutoff]
        expired = self._expired_ids
        for decision_id in gone:
            del self._decisions[decision_id]
            prefix = decision_id[:_PREFIX]
            last = expired.get(prefix)
            if last is None or (len(decision_id), decision_id) > (len(last), last):
                expired[prefix] = decision_id
        first_kept = whole_days_before(policy.event_ids_before(now))
        ids = self._event_tables.event_ids
        old = {claim for claim in ids if _week_end(claim[2]) <= first_kept}
        ids -= old
        return Expired(decision_records=len(gone), event_ids=len(old))

    async def decision_expired(self, decision_id: str) -> bool:
        await trio.lowlevel.checkpoint()
        last = self._expired_ids.get(decision_id[:_PREFIX])
        return last is not None and len(last) == len(decision_id) and decision_id <= last

    __compacted: set[str] | None = None

    async def compact_experiment(self, compaction: Compaction) -> int | None:
        await trio.lowlevel.checkpoint()
        if self.__compacted is None:
            self.__compacted = set()
        if compaction.experiment_id in self.__compacted:
            return None
        self.__compacted.add(compaction.experiment_id)
        return 0

    async def retention_stats(
        self, now: datetime, policy: RetentionPolicy, *, compactable: Sequence[str] = ()
    ) -> RetentionStats:
        await trio.lowlevel.checkpoint()
        t = self._event_tables
        raw = len(t.exposures) + len(t.crossovers) + sum(len(c) for c in t.conversions.values())
        oldest_exposure = min((e.exposed_at for e in t.exposures.values()), default=None)
        decided = self._decided_at()
        cutoff = day_start(whole_days_before(policy.decisions_before(now))).timestamp()
        ids = self._event_tables.event_ids
        first_kept = whole_days_before(policy.event_ids_before(now))
        oldest_day = min((claim[2] for claim in ids), default=None)
        return RetentionStats(
            at=now,
            kinds=[
                KindStats(
                    kind="decision_records",
                    table="memory",
                    rows=len(decided),
                    bytes=sum(len(raw) for raw in self._decisions.values()),
                    oldest=None
                    if not decided
                    else datetime.fromtimestamp(min(decided.values()), UTC),
                    retention_days=policy.decision_days,
                    next_expiry_rows=sum(1 for at in decided.values() if at < cutoff),
                ),
                KindStats(
                    kind="event_ids",
                    table="memory",
                    rows=len(ids),
                    bytes=0,
                    oldest=None if oldest_day is None else day_start(oldest_day),
                    retention_days=policy.event_id_days,
                    next_expiry_rows=sum(1 for claim in ids if _week_end(claim[2]) <= first_kept),
                ),
                KindStats(
                    kind="raw_events",
                    table="memory",
                    rows=raw,
                    bytes=0,
                    oldest=oldest_exposure,
                    retention_days=policy.raw_event_days,
                    next_expiry_rows=0,  # kept in memory (see above)
                ),
            ],
            partitions=[],
        )
