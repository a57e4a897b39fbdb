"""The engine's event methods: ``expose``, ``track``, ``record_events`` and the ingestion
summary. Mixed into ``Engine``; kept here so the runtime module stays about running.

Every write goes through the ingestion actor and returns once its batch is committed.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from assay.engine._access import Action, Resource, authorize
from assay.engine._errors import Conflict, ValidationFailed
from assay.engine._events import (
    MAX_BATCH_EVENTS,
    Conversion,
    Event,
    EventsRecorded,
    Exposure,
    IngestionSummary,
    summarize,
)
from assay.engine._messages import PendingPurged, PurgePending, RecordEvents
from assay.engine._model import ApiKey, Experiment, Project
from assay.engine._service import SYSTEM_KEY

if TYPE_CHECKING:
    from assay.engine._config import EngineConfig
    from assay.engine._core import Snapshot
    from assay.engine._messages import IngestionMessage
    from assay.engine._ports import Store
    from assay.engine._runtime import Mailbox
    from assay.engine._service import ConfigService


class IngestionAPI:
    """Exposures and conversions, in process. ``project`` is a project key; it may be
    omitted when ``principal`` is scoped to a project. Embedded callers act as the
    system key unless they pass another ``principal`` (the HTTP API passes the caller's)."""

    # Provided by Engine.
    config: EngineConfig
    store: Store
    service: ConfigService
    ingestion: Mailbox[IngestionMessage]

    @property
    def snapshot(self) -> Snapshot:
        raise NotImplementedError

    async def record_events(
        self,
        project: str | None,
        events: Sequence[Event],
        *,
        principal: ApiKey = SYSTEM_KEY,
    ) -> EventsRecorded:
        """Record a batch of up to ``MAX_BATCH_EVENTS`` exposures and conversions.

        Returns once the batch is committed. Events that fail their checks are listed in
        ``rejected`` (by index) and the others are recorded. Raises ``ValidationFailed``
        (``batch_too_large``) for a larger batch, ``Conflict`` (``project_archived``) for
        an archived project, ``NotFound`` for a project the principal cannot see.
        """
        if len(events) > MAX_BATCH_EVENTS:
            raise ValidationFailed(
                f"a batch holds at most {MAX_BATCH_EVENTS} events, not {len(events)}",
                code="batch_too_large",
                details={"max_events": MAX_BATCH_EVENTS, "received": len(events)},
            )
        found = await self._event_project(principal, project, Action.WRITE)
        if found.archived:
            raise Conflict(f"project {found.key!r} is archived", code="project_archived")
        if not events:
            return EventsRecorded(received=0, recorded=0, deduplicated=0, pending=0)
        result = await self.ingestion.request(
            RecordEvents(
                project_id=found.id,
                principal_id=principal.id,
                events=events if isinstance(events, list) else list(events),
                received_at=datetime.now(UTC),
            )
        )
        assert isinstance(result, EventsRecorded)
        return result

    async def expose(
        self,
        project: str | None,
        experiment: str,
        subject: str,
        variant: str,
        *,
        event_id: str | None = None,
        timestamp: datetime | None = None,
        principal: ApiKey = SYSTEM_KEY,
    ) -> EventsRecorded:
        """Record that ``subject`` saw ``variant`` of ``experiment``."""
        event = Exposure(
            experiment=experiment,
            subject=subject,
            variant=variant,
            timestamp=timestamp,
            event_id=event_id,
        )
        return await self.record_events(project, [event], principal=principal)

    async def track(
        self,
        project: str | None,
        experiment: str,
        metric: str,
        subject: str,
        *,
        value: float = 1.0,
        timestamp: datetime | None = None,
        idempotency_key: str | None = None,
        event_id: str | None = None,
        principal: ApiKey = SYSTEM_KEY,
    ) -> EventsRecorded:
        """Record a conversion of ``subject`` on ``metric`` in ``experiment``."""
        event = Conversion(
            experiment=experiment,
            metric=metric,
            subject=subject,
            value=value,
            timestamp=timestamp,
            idempotency_key=idempotency_key,
            event_id=event_id,
        )
        return await self.record_events(project, [event], principal=principal)

    async def ingestion_summary(
        self, project: str | None, experiment: str, *, principal: ApiKey = SYSTEM_KEY
    ) -> IngestionSummary:
        """Per-variant exposures, per-metric conversions (within attribution windows,
        crossovers excluded), pending and crossover counts of one experiment."""
        found = await self._event_project(principal, project, Action.READ)
        target = await self.service.get_object(principal, Experiment, found.key, experiment)
        metrics = {
            key: metric.attribution_window_hours
            for (project_id, key), metric in self.snapshot.metrics.items()
            if project_id == found.id
        }
        counts = await self.store.ingestion_counts(
            target.id, windows=metrics, until=target.ended_at, now=datetime.now(UTC)
        )
        declared = [
            *target.primary_metrics,
            *target.secondary_metrics,
            *target.guardrail_metrics,
        ]
        return summarize(target, counts, declared)

    async def purge_pending(self) -> int:
        """Purge expired pending conversions now; how many were purged."""
        result = await self.ingestion.request(PurgePending())
        assert isinstance(result, PendingPurged)
        return result.purged

    async def _event_project(
        self, principal: ApiKey, project: str | None, action: Action
    ) -> Project:
        found = await self.addressed_project(principal, project)
        authorize(principal, Resource.EVENT, action, project_id=found.id)
        return found

    async def addressed_project(self, principal: ApiKey, project: str | None) -> Project:
        """The project a hot-path request addresses (decide, events): from the snapshot
        when it is there (no round trip per request), else from the store (a project
        created a moment ago, or the errors every other route gives)."""
        snapshot = self.snapshot
        found: Project | None = None
        if principal.project_id is not None:
            own = snapshot.projects.get(principal.project_id)
            if own is not None and project in (None, own.key):
                found = own
        elif project is not None:
            project_id = snapshot.project_ids.get(project)
            found = None if project_id is None else snapshot.projects.get(project_id)
        if found is None:
            found = await self.service.resolve_project(principal, project)
        return found
