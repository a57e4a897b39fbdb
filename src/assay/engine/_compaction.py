"""Compaction of ended experiments' raw events: the third lifecycle of docs/retention.md.

Exposures, conversions and crossovers are kept per subject while an experiment may still
take events; once it has ended (completed or archived) for ``raw_event_retention_days``,
they go, and its report is served from the rollups the reports read anyway. The rules:

- **Two steps, an interval apart.** A run first *marks* the experiment compacted (its
  ``compacted_at``, an audit entry by the system): from then on every process refuses its
  events (``experiment_compacted``), because without the raw rows a re-sent exposure could
  not be told from a first one, nor a conversion find its exposure. A later run, once
  every process has had time to learn the mark (``SETTLE``), asks the store to compact.
- **Nothing a report reads is lost.** The store builds every rollup the experiment's
  report reads, for its metrics' attribution at that moment, keeps the ingestion counts
  and the exposures of the partial hours at the experiment's start and end, and only
  then removes the raw rows, in one transaction. A report the kept data cannot answer
  exactly (a period edge inside an hour other than those, a metric whose attribution
  changed since) is refused with ``report_compacted``, never answered differently.
- **The leader alone runs it**, after the expiry, within the same ``Retention`` run; the
  store makes a second compaction of the same experiment a no-op, so a run by hand
  (``assay db expire``) beside the leader's does no harm either.

The raw events' retention cannot be shorter than ``event_max_age_days`` plus the skew (the
configuration refuses it): any late event of the experiment ingestion would accept still
finds its rows.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Protocol

from assay.engine._model import Experiment, ExperimentStatus, Metric
from assay.engine._retention import Compaction, Expired, RetentionPolicy

if TYPE_CHECKING:
    from collections.abc import Iterable

    from assay.engine._metric_kinds import ReportRequest
    from assay.engine._ports import Store
    from assay.engine._reports import MetricRole
    from assay.engine._service import ConfigService

log = logging.getLogger("assay.engine.retention")

SETTLE = timedelta(seconds=60)
"""Between marking an experiment compacted and removing its raw events: every process
learns a configuration change within this (notifications arrive in milliseconds; a
process whose listening connection broke reloads the snapshot when it reconnects)."""

ENDED = (ExperimentStatus.COMPLETED, ExperimentStatus.ARCHIVED)


class CompactionHost(Protocol):
    """What compaction needs of the engine."""

    store: Store
    service: ConfigService

    def experiments(self) -> Iterable[Experiment]:
        """Every experiment of every project, as the configuration snapshot has them."""
        ...

    def metrics_of(self, project_id: str) -> Iterable[Metric]: ...

    async def store_request(
        self,
        target: Experiment,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> tuple[ReportRequest, dict[str, MetricRole], dict[str, Metric]]: ...


class ExperimentCompactor:
    """``Compactor`` of ``Retention``: marks, then compacts, what is due."""

    def __init__(self, host: CompactionHost, policy: RetentionPolicy) -> None:
        self._host = host
        self._policy = policy
        self._done: set[str] = set()
        """Experiments this process saw compacted: not asked about again."""

    def _to_mark(self, now: datetime) -> list[Experiment]:
        before = self._policy.raw_events_before(now)
        return [
            e
            for e in self._host.experiments()
            if e.status in ENDED
            and e.compacted_at is None
            and e.ended_at is not None
            and e.ended_at <= before
        ]

    def _to_compact(self, now: datetime) -> list[Experiment]:
        return [
            e
            for e in self._host.experiments()
            if e.compacted_at is not None
            and e.compacted_at <= now - SETTLE
            and e.id not in self._done
        ]

    def due(self, now: datetime) -> list[str]:
        # Marked ones another process compacted already count nothing (no rows left).
        return [e.id for e in (*self._to_mark(now), *self._to_compact(now))]

    async def compact(self, now: datetime) -> Expired:
        marked: list[str] = []
        compacted: list[str] = []
        removed = 0
        for experiment in self._to_compact(now):
            request, _, _ = await self._host.store_request(experiment)
            windows = {
                m.key: m.attribution_window_hours
                for m in self._host.metrics_of(experiment.project_id)
            }
            cuts = [t for t in (experiment.started_at, experiment.ended_at) if t is not None]
            rows = await self._host.store.compact_experiment(
                Compaction(
                    experiment_id=experiment.id,
                    request=request,
                    windows=windows,
                    cuts=cuts,
                    now=now,
                )
            )
            self._done.add(experiment.id)
            if rows is not None:
                compacted.append(experiment.key)
                removed += rows
        for experiment in self._to_mark(now):
            if await self._host.service.mark_compacted(experiment, now) is not None:
                marked.append(experiment.key)
        return Expired(
            experiments_marked=marked, experiments_compacted=compacted, raw_events=removed
        )


__all__ = ["ENDED", "SETTLE", "CompactionHost", "ExperimentCompactor"]
