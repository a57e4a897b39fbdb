"""Exposures and conversions kept in process memory: the memory Store's event methods.

Each call runs without awaiting between its first change and its last, so it is atomic in
Trio's single thread: another task never sees half a batch. Nothing can fail half way
either: every event was checked before it got here.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, NamedTuple

import trio

from assay.engine._events import (
    IngestionCounts,
    Kind,
    MetricCounts,
    MetricVariantCounts,
    Outcome,
    StagedEvent,
    VariantCounts,
)

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence


def _datetime(epoch_seconds: float) -> datetime:
    # Staged events carry epoch seconds; fromtimestamp rounds to the nearest microsecond,
    # which recovers the event's datetime exactly.
    return datetime.fromtimestamp(epoch_seconds, UTC)


class _Exposure(NamedTuple):
    variant: str
    exposed_at: datetime


class _Conversion(NamedTuple):
    metric: str
    subject: str
    value: float
    timestamp: datetime
    expires_at: datetime | None = None


@dataclass
class _EventTables:
    event_ids: set[tuple[str, str, int]] = field(default_factory=set)
    """(project id, event id, UTC day of the event's timestamp) of every event seen, as
    PostgreSQL keys them (migration 0016); expired by day (``MemoryRetentionStore``)."""
    conversion_keys: set[tuple[str, str]] = field(default_factory=set)
    """(experiment id, idempotency key) of every conversion seen."""
    exposures: dict[tuple[str, str], _Exposure] = field(default_factory=dict)
    """First exposure by (experiment id, subject)."""
    crossovers: set[tuple[str, str, str]] = field(default_factory=set)
    """(experiment id, subject, variant): later exposures to another variant."""
    conversions: defaultdict[str, list[_Conversion]] = field(
        default_factory=lambda: defaultdict(list)
    )
    """Attributed-or-not conversions by experiment id."""
    pending: defaultdict[tuple[str, str], list[_Conversion]] = field(
        default_factory=lambda: defaultdict(list)
    )
    """Conversions waiting for an exposure, by (experiment id, subject)."""


class MemoryEventStore:
    """Mixed into ``MemoryStore``: the event half of the Store port."""

    __tables: _EventTables | None = None

    @property
    def _event_tables(self) -> _EventTables:
        # Created on first use, so the store's own constructor needs no change.
        if self.__tables is None:
            self.__tables = _EventTables()
        return self.__tables

    async def record_events(self, events: Sequence[StagedEvent], *, now: datetime) -> list[int]:
        await trio.lowlevel.checkpoint()
        t = self._event_tables
        outcomes = [Outcome.RECORDED.value] * len(events)
        live: list[int] = []
        # Every event claims its id first, in order, as the unique index does in SQL.
        for i, e in enumerate(events):
            if e.event_id is not None:
                id_claim = (e.project_id, e.event_id, int(e.timestamp // 86400))
                if id_claim in t.event_ids:
                    outcomes[i] = Outcome.DUPLICATE
                    continue
                t.event_ids.add(id_claim)
            live.append(i)
        conversions: list[int] = []
        for i in live:
            e = events[i]
            if e.kind != Kind.EXPOSURE:
                conversions.append(i)
                continue
            assert e.variant is not None
            subject = (e.experiment_id, e.subject)
            first = t.exposures.get(subject)
            if first is None:
                t.exposures[subject] = _Exposure(e.variant, _datetime(e.timestamp))
                self._promote(subject, now)
            elif (
                first.variant == e.variant
                or (e.experiment_id, e.subject, e.variant) in t.crossovers
            ):
                outcomes[i] = Outcome.DUPLICATE
            else:
                t.crossovers.add((e.experiment_id, e.subject, e.variant))
                outcomes[i] = Outcome.CROSSOVER
        for i in conversions:
            e = events[i]
            assert e.metric is not None
            if e.idempotency_key is not None:
                claim = (e.experiment_id, e.idempotency_key)
                if claim in t.conversion_keys:
                    outcomes[i] = Outcome.DUPLICATE
                    continue
                t.conversion_keys.add(claim)
            conversion = _Conversion(e.metric, e.subject, e.value, _datetime(e.timestamp))
            subject = (e.experiment_id, e.subject)
            if e.expires_at is not None and subject not in t.exposures:
                t.pending[subject].append(conversion._replace(expires_at=_datetime(e.expires_at)))
                outcomes[i] = Outcome.PENDING
            else:
                t.conversions[e.experiment_id].append(conversion)
        return outcomes

    def _promote(self, subject: tuple[str, str], now: datetime) -> None:
        """Attribute the subject's pending conversions that have not expired; expired
        ones stay until purged, as in SQL."""
        t = self._event_tables
        waiting = t.pending.get(subject)
        if not waiting:
            return
        live = [c for c in waiting if c.expires_at is not None and c.expires_at > now]
        t.conversions[subject[0]].extend(c._replace(expires_at=None) for c in live)
        expired = [c for c in waiting if c.expires_at is None or c.expires_at <= now]
        if expired:
            t.pending[subject] = expired
        else:
            del t.pending[subject]

    async def purge_pending(self, now: datetime) -> int:
        await trio.lowlevel.checkpoint()
        t = self._event_tables
        purged = 0
        for subject in list(t.pending):
            if subject in t.exposures:
                self._promote(subject, now)
            waiting = t.pending.get(subject, [])
            kept = [c for c in waiting if c.expires_at is not None and c.expires_at > now]
            purged += len(waiting) - len(kept)
            if kept:
                t.pending[subject] = kept
            else:
                t.pending.pop(subject, None)
        return purged

    async def ingestion_counts(
        self,
        experiment_id: str,
        *,
        windows: Mapping[str, int | None],
        until: datetime | None,
        now: datetime,
    ) -> IngestionCounts:
        await trio.lowlevel.checkpoint()
        t = self._event_tables
        crossed = {s for (x, s, _) in t.crossovers if x == experiment_id}
        exposures: dict[str, int] = defaultdict(int)
        crossovers: dict[str, int] = defaultdict(int)
        for (x, subject), exposure in t.exposures.items():
            if x != experiment_id:
                continue
            if subject in crossed:
                crossovers[exposure.variant] += 1
            else:
                exposures[exposure.variant] += 1
        variants = [
            VariantCounts(variant=v, exposures=exposures[v], crossovers=crossovers[v])
            for v in sorted({*exposures, *crossovers})
        ]
        per_metric: dict[str, _MetricTally] = {}
        for c in t.conversions.get(experiment_id, ()):
            tally = per_metric.setdefault(c.metric, _MetricTally())
            first = t.exposures.get((experiment_id, c.subject))
            if first is None:
                tally.unexposed += 1
            elif c.subject in crossed:
                tally.crossover += 1
            elif not _attributed(c.timestamp, first.exposed_at, windows.get(c.metric), until):
                tally.outside_window += 1
            else:
                cell = tally.variants.setdefault(first.variant, _Cell())
                cell.conversions += 1
                cell.subjects.add(c.subject)
                cell.value_sum += c.value
        pending = sum(
            1
            for (x, _), waiting in t.pending.items()
            if x == experiment_id
            for c in waiting
            if c.expires_at is not None and c.expires_at > now
        )
        return IngestionCounts(
            crossovers=len(crossed),
            pending=pending,
            variants=variants,
            metrics=[tally.counts(metric) for metric, tally in sorted(per_metric.items())],
        )


def _attributed(
    at: datetime, exposed_at: datetime, hours: int | None, until: datetime | None
) -> bool:
    if at < exposed_at or (until is not None and at > until):
        return False
    return hours is None or at <= exposed_at + timedelta(hours=hours)


@dataclass
class _Cell:
    conversions: int = 0
    subjects: set[str] = field(default_factory=set)
    value_sum: float = 0.0


@dataclass
class _MetricTally:
    variants: dict[str, _Cell] = field(default_factory=dict)
    outside_window: int = 0
    crossover: int = 0
    unexposed: int = 0

    def counts(self, metric: str) -> MetricCounts:
        cells = [
            MetricVariantCounts(
                variant=variant,
                conversions=cell.conversions,
                subjects=len(cell.subjects),
                value_sum=cell.value_sum,
            )
            for variant, cell in sorted(self.variants.items())
        ]
        return MetricCounts(
            metric=metric,
            conversions=sum(c.conversions for c in cells),
            value_sum=sum(c.value_sum for c in cells),
            variants=cells,
            outside_window=self.outside_window,
            crossover=self.crossover,
            unexposed=self.unexposed,
        )
