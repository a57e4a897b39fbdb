"""The storage port. The engine speaks only to this protocol; adapters implement it.

Two adapters exist: PostgreSQL (the real one) and memory (for embedding without a
database). One contract test suite runs against both, so they cannot drift apart.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Protocol, TypeVar

import msgspec

from assay.engine._console_sessions import ConsoleSession
from assay.engine._core import Decision, StickyAssignment
from assay.engine._events import IngestionCounts, StagedEvent
from assay.engine._guardrails import (
    ActionStatus,
    GuardrailTrigger,
    Leadership,
    Notification,
    Traffic,
)
from assay.engine._metric_kinds import ReportAggregates, ReportRequest
from assay.engine._model import (
    ApiKey,
    AuditEntry,
    Experiment,
    Flag,
    Layer,
    Metric,
    Project,
    SdkConnection,
    Segment,
)
from assay.engine._planned_verdict import PlannedLook
from assay.engine._retention import Compaction, Expired, RetentionPolicy, RetentionStats

ConfigT = TypeVar("ConfigT", Project, Flag, Experiment, Layer, Metric, Segment)

KIND_NAMES: dict[type[msgspec.Struct], str] = {
    Project: "project",
    Flag: "flag",
    Experiment: "experiment",
    Layer: "layer",
    Metric: "metric",
    Segment: "segment",
}


class ConfigHorizon(msgspec.Struct, frozen=True, kw_only=True):
    """Which configuration changes one ``load_config`` read holds.

    The store numbers every committed configuration change and ``watch_config`` announces
    it with its number (PostgreSQL: the id of the transaction that made it). A read holds
    every change numbered below ``complete``, and those below ``end`` that are not
    ``missing`` (transactions still open when it read, which may commit later). This is
    the shape of a PostgreSQL snapshot (``pg_current_snapshot()``: xmin, xmax, xip); a
    store that numbers its commits in commit order has ``complete == end``."""

    complete: int
    end: int
    missing: frozenset[int] = frozenset()

    def holds(self, change: int) -> bool:
        """Whether the read already had the committed change numbered ``change``."""
        if change < self.complete:
            return True
        return change < self.end and change not in self.missing


class ConfigState(msgspec.Struct, frozen=True, kw_only=True):
    """Everything a snapshot is compiled from, read in one consistent transaction."""

    projects: Sequence[Project]
    flags: Sequence[Flag]
    experiments: Sequence[Experiment]
    layers: Sequence[Layer]
    metrics: Sequence[Metric]
    segments: Sequence[Segment] = ()
    sdk_connections: Sequence[SdkConnection] = ()
    """Active SDK connections only."""
    horizon: ConfigHorizon | None = None
    """Which announced changes this read holds; None: unknown (any change may be new).
    Two reads of the same configuration may differ here (PostgreSQL: any transaction in
    between moves it), so compare ``content()`` when asking whether configuration changed."""

    def content(self) -> ConfigState:
        """The configuration alone, without the read's horizon."""
        return msgspec.structs.replace(self, horizon=None)


class StoreTransaction(Protocol):
    """Reads and writes inside one atomic unit. Nothing is visible to others before commit.

    ``insert`` raises ``Conflict`` (code ``already_exists``) on a duplicate key and
    ``update``/``delete`` raise ``Conflict`` (code ``revision_mismatch``) when the stored
    revision is not ``expected_revision``.
    """

    @property
    def change(self) -> int | None:
        """Once committed: the number ``watch_config`` announces this transaction's
        configuration change with (``ConfigHorizon``), so its writer can wait for a load
        that holds it; None when the store cannot name it (then only a load started
        after the commit is sure to hold it)."""
        ...

    async def get(
        self, kind: type[ConfigT], project_id: str | None, key: str
    ) -> ConfigT | None: ...

    async def get_by_id(self, kind: type[ConfigT], object_id: str) -> ConfigT | None: ...

    async def list(
        self, kind: type[ConfigT], project_id: str | None, *, after: str | None, limit: int
    ) -> builtins.list[ConfigT]:
        """Objects ordered by key, strictly after ``after`` (a key), at most ``limit``."""
        ...

    async def insert(self, obj: Project | Flag | Experiment | Layer | Metric | Segment) -> None: ...

    async def update(
        self, obj: Project | Flag | Experiment | Layer | Metric | Segment, *, expected_revision: int
    ) -> None: ...

    async def delete(
        self, obj: Project | Flag | Experiment | Layer | Metric | Segment, *, expected_revision: int
    ) -> None: ...

    async def append_audit(self, entry: AuditEntry) -> None: ...

    async def list_audit(
        self,
        *,
        project_id: str | None,
        resource_kind: str | None,
        resource_key: str | None,
        before_id: int | None,
        limit: int,
    ) -> builtins.list[AuditEntry]:
        """Newest first, ids strictly below ``before_id``; ``project_id`` None means all."""
        ...

    async def insert_key(self, key: ApiKey) -> None: ...

    async def update_key(self, key: ApiKey) -> None: ...

    async def get_key(self, key_id: str) -> ApiKey | None: ...

    async def list_keys(
        self, project_id: str | None, *, after: str | None, limit: int
    ) -> builtins.list[ApiKey]:
        """Keys ordered by id; ``project_id`` None lists every key."""
        ...

    async def count_keys(self) -> int: ...

    # SDK connections: a change to one is a configuration change (its snapshot carries the
    # active ones), so it is announced to every process like one.

    async def insert_connection(self, connection: SdkConnection) -> None:
        """Raises ``Conflict`` (``already_exists``) on a taken id or client key."""
        ...

    async def update_connection(
        self, connection: SdkConnection, *, expected_revision: int
    ) -> None: ...

    async def get_connection(self, connection_id: str) -> SdkConnection | None: ...

    async def list_connections(
        self, project_id: str, *, after: str | None, limit: int
    ) -> builtins.list[SdkConnection]:
        """A project's connections (revoked ones too) ordered by id, ids after ``after``."""
        ...


class Store(Protocol):
    """A storage backend, opened by its adapter and handed to the engine."""

    def transaction(self) -> AbstractAsyncContextManager[StoreTransaction]:
        """An atomic unit of work. Writes are serialised (one writer at a time), so
        invariants that span rows, such as one running experiment per flag, hold."""
        ...

    def read(self) -> AbstractAsyncContextManager[StoreTransaction]:
        """A consistent read-only view, taken without the write lock so reads never queue
        behind writers. Writing through it is an error (PostgreSQL) or discarded (memory)."""
        ...

    async def load_config(self) -> ConfigState: ...

    async def record_decisions(self, decisions: Sequence[Decision], *, again: bool = False) -> None:
        """Write decision records durably (one batch, one round trip). ``again``: the batch
        may have been written already (an earlier attempt failed without telling whether
        it committed); a record already there is left as it is, never doubled."""
        ...

    async def get_decision(self, decision_id: str) -> Decision | None: ...

    # --- sticky buckets -----------------------------------------------------------------
    # Outside ``transaction()``: no configuration lock. One document per (project,
    # attribute, value) maps ``"<experiment key>__<bucket version>"`` to a variant key.

    async def load_sticky_buckets(
        self, project_id: str, keys: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], dict[str, str]]:
        """The documents of ``keys`` ((attribute, value) pairs) in one read; a key with no
        document is left out."""
        ...

    async def save_sticky_buckets(
        self, project_id: str, assignments: Sequence[StickyAssignment]
    ) -> dict[tuple[str, str], dict[str, str]]:
        """Merge ``assignments`` into their documents atomically and durably. An assignment
        already stored under the same key is kept (the first write wins, across processes
        too). Returns the written documents as now stored."""
        ...

    async def get_key_by_hash(self, secret_hash: str) -> ApiKey | None:
        """The authentication hot path: one indexed lookup, no transaction."""
        ...

    async def watch_config(self, on_change: Callable[[int | None], None]) -> None:
        """Run until cancelled, calling ``on_change`` whenever any process commits a
        configuration change (PostgreSQL: LISTEN/NOTIFY), with the change's number (see
        ``ConfigHorizon``), so a reader holding a load whose horizon holds it need not
        load again. ``on_change(None)`` says something may have changed that cannot be
        named (on every (re)connection: changes committed while not listening were not
        announced): only a load started after it is sure to hold it."""
        ...

    # --- events (exposures and conversions) --------------------------------------------
    # Not part of ``transaction()``: event writes take no configuration lock, and their
    # de-duplication holds across processes through unique keys, not through a lock.

    async def record_events(
        self, events: Sequence[StagedEvent], *, now: datetime
    ) -> builtins.list[int]:
        """Write ``events`` atomically and return an ``Outcome`` per event, in order.

        The result is as if the events were applied one at a time, in order, except that
        every exposure of the call is applied before any conversion of it (a conversion
        sent with its exposure is recorded, not pending). An ``event_id`` already seen in
        the project, or an idempotency key already seen in the experiment, is a
        duplicate; the first exposure per (experiment, subject) wins, the same variant
        again is a duplicate, another variant is recorded once as a crossover. A
        conversion whose ``expires_at`` is set waits as pending until its subject's
        exposure lands (pending ones whose ``expires_at`` is after ``now`` are then
        promoted). Nothing is written unless everything is."""
        ...

    async def ingestion_counts(
        self,
        experiment_id: str,
        *,
        windows: Mapping[str, int | None],
        until: datetime | None,
        now: datetime,
    ) -> IngestionCounts:
        """Counts for one experiment. A conversion is attributed when it falls within
        ``windows[metric]`` hours (None or missing: no limit) after its subject's first
        exposure, and not after ``until`` (the experiment's end) when given."""
        ...

    async def purge_pending(self, now: datetime) -> int:
        """Delete pending conversions that expired at or before ``now`` and return how
        many. Also promotes pending conversions whose exposure exists (one can land in
        another process while the conversion is parked)."""
        ...

    # --- reports ----------------------------------------------------------------------

    async def report_aggregates(self, request: ReportRequest) -> ReportAggregates:
        """Per-variant exposures and, for each requested metric, its kind's rows, all from
        one consistent view. Subjects are chosen by first exposure in the period, crossovers
        are excluded, conversions count within each input metric's windows (``rollups``)
        and not after ``until``. Raw rows never leave the database (PostgreSQL)."""
        ...

    async def report_series(
        self, request: ReportRequest, ends: Sequence[datetime]
    ) -> builtins.list[ReportAggregates]:
        """``report_aggregates`` at each of ``ends`` (the request's ``end`` ignored), all
        from one consistent view and equal to what each would answer alone, to the last
        digit. Meant for a report's points over time: ends on whole hours are read in one
        pass over the hourly rollups (cumulative sums, CUPED covariate sums included) for
        the exposures and every ``TotalsKind`` metric; other kinds, and ends inside an hour,
        are aggregated once per end."""
        ...

    async def planned_looks(self, experiment_id: str) -> list[PlannedLook]:
        """The planned verdict's looks of one experiment, in order (``_planned_verdict``)."""
        ...

    async def record_planned_look(self, look: PlannedLook) -> bool:
        """Store ``look`` unless a look with its index is already stored (then False, and
        nothing changes): committed before it returns."""
        ...

    # --- guardrails ---------------------------------------------------------------------
    # Triggers and their outbox are not part of ``transaction()`` either: they take no
    # configuration lock. Each trigger is unique per (experiment, check, revision), so
    # concurrent checks in several processes record it once.

    async def guardrail_traffic(self, experiment_id: str) -> Traffic:
        """Exposed subjects per variant (crossovers excluded), crossover subjects, and
        when the newest subject was first exposed."""
        ...

    async def record_trigger(
        self, trigger: GuardrailTrigger, notifications: Sequence[Notification]
    ) -> tuple[GuardrailTrigger, bool]:
        """Insert ``trigger`` and its outbox ``notifications`` atomically, unless a
        trigger for the same (experiment, check, experiment revision) exists: then
        nothing is written. Returns the stored trigger and whether it is new."""
        ...

    async def list_triggers(
        self,
        *,
        experiment_id: str | None,
        action_status: str | None = None,
        before: str | None = None,
        limit: int,
    ) -> builtins.list[GuardrailTrigger]:
        """Newest first (by id, which is time-ordered), ids strictly below ``before``."""
        ...

    async def claim_trigger(self, trigger_id: str, *, now: datetime, lease_until: datetime) -> bool:
        """Mark a pending trigger (or one whose claim lapsed before ``now``) as ``acting``
        until ``lease_until``; False when another process holds it or it is settled. The
        claimer alone carries out the action."""
        ...

    async def settle_trigger(
        self, trigger_id: str, *, status: ActionStatus, result: str | None, at: datetime
    ) -> GuardrailTrigger | None:
        """Record the action's outcome (``done``, ``skipped``, ``failed``, or back to
        ``pending`` to retry) and return the trigger as now stored."""
        ...

    async def list_notifications(
        self, *, experiment_id: str, before: str | None = None, limit: int
    ) -> builtins.list[Notification]:
        """An experiment's outbox, newest first, ids strictly below ``before``."""
        ...

    async def due_notifications(self, now: datetime, *, limit: int) -> builtins.list[Notification]:
        """Undelivered notifications whose next attempt is due, oldest first."""
        ...

    async def record_delivery(
        self,
        notification_id: str,
        *,
        attempts: int,
        delivered_at: datetime | None,
        next_attempt_at: datetime,
        error: str | None,
    ) -> None:
        """The outcome of a delivery attempt: delivered, or when to try again and why not."""
        ...

    async def purge_delivered_notifications(self, before: datetime) -> int:
        """Delete the notifications delivered before ``before`` (never an undelivered one);
        how many were deleted."""
        ...

    def guardrail_leadership(self) -> AbstractAsyncContextManager[Leadership]:
        """The leader election of guardrail actors: one leader per database (PostgreSQL:
        a session advisory lock on a dedicated connection; memory: always the leader).
        Leaving the block gives the lead up."""
        ...

    # --- lifecycle (engine/_retention.py, docs/retention.md) ------------------------------

    async def expire(self, now: datetime, policy: RetentionPolicy) -> Expired:
        """Create the partitions ahead and remove what is past retention at ``now``. Runs
        are serialised across processes (a run that finds another in progress does nothing
        and says so); called by the leader only."""
        ...

    async def decision_expired(self, decision_id: str) -> bool:
        """Whether an unknown ``decision_id`` was issued before a decision record that
        has expired (so it is past retention too)."""
        ...

    async def retention_stats(
        self, now: datetime, policy: RetentionPolicy, *, compactable: Sequence[str] = ()
    ) -> RetentionStats:
        """Rows and bytes per kind and partition, the oldest row per kind, and what the
        next expiry run would remove (for raw events: the rows of the experiments
        ``compactable``, by id)."""
        ...

    async def compact_experiment(self, compaction: Compaction) -> int | None:
        """Remove the raw events (exposures, conversions, crossovers) of an ended
        experiment whose events are refused already, keeping what its report and its
        ingestion summary read: the rollups (built first for ``compaction.request``'s
        attribution, as a report would), the ingestion counts, and per cut in
        ``compaction.cuts`` the exposures between the cut's hour and the cut. How many raw
        rows went, or None when the experiment was compacted before (nothing done).
        Reports of a compacted experiment are served from what was kept, and refused
        (``report_compacted``) when that cannot answer them exactly."""
        ...

    # --- console sessions ---------------------------------------------------------------
    # Kept in the store so every process on one database knows who is signed in. Rows are
    # named by the digest of the cookie's id, never the id itself.

    async def create_console_session(self, session: ConsoleSession, *, now: datetime) -> None:
        """Store ``session``, and delete every session that expired at or before ``now``."""
        ...

    async def get_console_session(
        self, token_hash: str, *, now: datetime
    ) -> tuple[ConsoleSession, ApiKey | None] | None:
        """The session with this digest if it expires after ``now``, with its API key as
        now stored (revoked or not; None if deleted), in one lookup."""
        ...

    async def delete_console_session(self, token_hash: str) -> None:
        """End a session (nothing happens when there is none)."""
        ...
