"""Report aggregation for the memory store: the same numbers the PostgreSQL rollups give,
computed from the event tables on each call (memory is for embedding and tests, where data
is small; nothing is maintained incrementally)."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import numpy as np
import trio

from assay.engine._metric_kinds import (
    ReportAggregates,
    ReportRequest,
    RollupSpec,
    Row,
    SubjectValues,
    VariantUnits,
    totals_of,
)
from assay.engine._planned_verdict import PlannedLook

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from assay.adapters.memory._events import _EventTables


def classify(
    at: datetime,
    exposed_at: datetime,
    spec: RollupSpec,
    until: datetime | None,
) -> int:
    """1: inside the attribution window; 2: inside the CUPED pre-exposure window; 0: neither.
    The same rule as the SQL function ``assay_report_class`` (migration 0004)."""
    if at >= exposed_at:
        if until is not None and at > until:
            return 0
        if spec.window_hours is None or at <= exposed_at + timedelta(hours=spec.window_hours):
            return 1
        return 0
    if spec.pre_hours is not None and at >= exposed_at - timedelta(hours=spec.pre_hours):
        return 2
    return 0


class _Source:
    def __init__(
        self,
        units: dict[str, int],
        values: dict[str, dict[str, SubjectValues]],
    ) -> None:
        self._units = units
        self._values = values

    def units(self) -> Mapping[str, int]:
        return self._units

    def subjects(self, metric_key: str) -> Mapping[str, SubjectValues]:
        return self._values.get(metric_key, {})

    def totals(self, metric_key: str) -> Mapping[str, Row]:
        return totals_of(self._units, self.subjects(metric_key))


class MemoryReportStore:
    """Mixed into ``MemoryStore``: the report half of the Store port."""

    __looks: dict[str, list[PlannedLook]] | None = None

    @property
    def _event_tables(self) -> _EventTables:
        raise NotImplementedError  # provided by MemoryEventStore, earlier in the MRO

    @property
    def _looks(self) -> dict[str, list[PlannedLook]]:
        # Created on first use, so the store's own constructor needs no change.
        if self.__looks is None:
            self.__looks = {}
        return self.__looks

    async def planned_looks(self, experiment_id: str) -> list[PlannedLook]:
        await trio.lowlevel.checkpoint()
        return list(self._looks.get(experiment_id, ()))

    async def record_planned_look(self, look: PlannedLook) -> bool:
        await trio.lowlevel.checkpoint()
        looks = self._looks.setdefault(look.experiment_id, [])
        if any(stored.index == look.index for stored in looks):
            return False
        looks.append(look)
        looks.sort(key=lambda stored: stored.index)
        return True

    async def report_aggregates(self, request: ReportRequest) -> ReportAggregates:
        await trio.lowlevel.checkpoint()
        return self._aggregate(request, [request.end])[0]

    async def report_series(
        self, request: ReportRequest, ends: Sequence[datetime]
    ) -> list[ReportAggregates]:
        await trio.lowlevel.checkpoint()
        return self._aggregate(request, ends)

    def _aggregate(
        self, request: ReportRequest, ends: Sequence[datetime | None]
    ) -> list[ReportAggregates]:
        """The aggregates over ``[request.start, end)`` for each end. What does not depend
        on the end (crossovers, each subject's classified conversions, pending) is worked
        out once; each end then takes the same steps a report alone would, on the subjects
        first exposed before it, so its numbers are the single report's exactly."""
        t = self._event_tables
        experiment_id = request.experiment_id
        crossed = {s for (x, s, _) in t.crossovers if x == experiment_id}
        first: list[tuple[str, str, datetime]] = []
        for (x, subject), exposure in t.exposures.items():
            if x != experiment_id:
                continue
            at = exposure.exposed_at
            if request.start is not None and at < request.start:
                continue
            first.append((subject, exposure.variant, at))
        analysed_at = {s: at for s, _, at in first if s not in crossed}
        specs = {spec.metric_key: spec for spec in request.rollups}
        # (metric, subject) -> [post_count, post_sum, pre_count, pre_sum]
        sums: dict[tuple[str, str], list[float]] = {}
        for c in t.conversions.get(experiment_id, ()):
            spec = specs.get(c.metric)
            exposed_at = analysed_at.get(c.subject)
            if spec is None or exposed_at is None:
                continue
            where = classify(c.timestamp, exposed_at, spec, request.until)
            if where == 0:
                continue
            cell = sums.setdefault((c.metric, c.subject), [0.0, 0.0, 0.0, 0.0])
            offset = 0 if where == 1 else 2
            cell[offset] += 1
            cell[offset + 1] += c.value
        ordered = sorted(sums.items())
        pending = sum(
            1
            for (x, _), waiting in t.pending.items()
            if x == experiment_id
            for c in waiting
            if c.expires_at is not None and c.expires_at > request.now
        )
        return [self._aggregate_to(request, end, first, crossed, ordered, pending) for end in ends]

    @staticmethod
    def _aggregate_to(
        request: ReportRequest,
        end: datetime | None,
        first: Sequence[tuple[str, str, datetime]],
        crossed: set[str],
        ordered: Sequence[tuple[tuple[str, str], list[float]]],
        pending: int,
    ) -> ReportAggregates:
        exposed: dict[str, int] = defaultdict(int)
        crossovers: dict[str, int] = defaultdict(int)
        analysed: dict[str, str] = {}
        for subject, variant, at in first:
            if end is not None and at >= end:
                continue
            exposed[variant] += 1
            if subject in crossed:
                crossovers[variant] += 1
            else:
                analysed[subject] = variant
        units = {v: exposed[v] - crossovers[v] for v in sorted(exposed)}
        grouped: dict[str, dict[str, list[tuple[str, list[float]]]]] = defaultdict(
            lambda: defaultdict(list)
        )
        for (metric, subject), cell in ordered:
            arm = analysed.get(subject)
            if arm is not None:
                grouped[metric][arm].append((subject, cell))
        values = {
            metric: {
                variant: SubjectValues(
                    [s for s, _ in cells],
                    *(np.array([c[i] for _, c in cells], dtype=np.float64) for i in range(4)),
                )
                for variant, cells in by_variant.items()
            }
            for metric, by_variant in grouped.items()
        }
        source = _Source(units, values)
        rows = {m.metric.key: m.kind.aggregate(m.metric, source) for m in request.metrics}
        return ReportAggregates(
            units={v: VariantUnits(exposed[v], crossovers[v]) for v in units},
            pending=pending,
            rows=rows,
        )
