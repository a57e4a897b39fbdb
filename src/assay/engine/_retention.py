"""Data lifecycle: how long each kind of row is kept, and the leader's expiry runs.

Rows that grow with traffic (decision records, event ids) are kept per UTC day: on
PostgreSQL each day is a partition, so expiring a day is dropping a table, not deleting
rows. The rules this module keeps (docs/retention.md says them to users):

- A day is expired only once *all* of it is past retention: a row is kept at least its
  retention, at most a day (plus one ``retention_interval_seconds``) longer.
- Decision records are kept ``decision_record_retention_days`` after their decision.
- An event id is kept ``event_id_retention`` days after its event's timestamp, never less
  than ``event_max_age_days`` plus the future skew (the configuration refuses less): an
  event whose id could have expired is too old to be accepted, so de-duplication holds
  for every event ingestion accepts. Event ids go a week at a time
  (``EVENT_ID_PARTITION_DAYS``), so up to a week later than that.
- Audit entries are kept forever unless ``audit_retention_days`` is set.
- The raw events (exposures, conversions, crossovers) of an experiment that ended
  (completed or archived) ``raw_event_retention_days`` ago are compacted away, its report
  then read from its rollups alone (engine/_compaction.py).
- Only the leader expires (the guardrail actor's leadership: one per database), and the
  store also serialises runs, so two processes never both expire.
- Partitions are created ahead (``DAYS_AHEAD``); a row whose day has no partition yet
  still lands (in a default partition) and moves when its day's partition is created.

Pure values and the runner; the work is the store's (``Store.expire``).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, NamedTuple, Protocol

import msgspec

if TYPE_CHECKING:
    from collections.abc import Callable

    from assay.engine._config import EngineConfig
    from assay.engine._metric_kinds import ReportRequest
    from assay.engine._ports import Store

log = logging.getLogger("assay.engine.retention")

DAY = 86400.0
DAYS_AHEAD = 7
"""Days of partitions created ahead of today: the leader may be away this long before
rows start landing in a default partition."""
EVENT_ID_PARTITION_DAYS = 7
"""Event ids are partitioned by weeks of their event's day (days since 1970-01-01 in
blocks of seven). Ingestion probes the partitioned table for every event, and PostgreSQL
plans a statement over every partition before pruning at run time: about five weekly
partitions over the 30 days events are accepted plan in a fraction of the time forty
daily ones take. An id is then kept up to a week past its retention."""


class RetentionPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """The retention settings in force, in whole days (None: kept forever)."""

    decision_days: int
    event_id_days: int
    audit_days: int | None = None
    raw_event_days: int = 90
    event_max_age_days: float = 30.0
    event_future_skew_seconds: float = 300.0

    @classmethod
    def from_config(cls, config: EngineConfig) -> RetentionPolicy:
        return cls(
            decision_days=config.decision_record_retention_days,
            event_id_days=config.event_id_retention,
            audit_days=config.audit_retention_days,
            raw_event_days=config.raw_event_retention,
            event_max_age_days=config.event_max_age_days,
            event_future_skew_seconds=config.event_future_skew_seconds,
        )

    def decisions_before(self, now: datetime) -> datetime:
        """Decision records decided before this are past retention."""
        return now - timedelta(days=self.decision_days)

    def event_ids_before(self, now: datetime) -> datetime:
        """Ids of events timestamped before this are past retention."""
        return now - timedelta(days=self.event_id_days)

    def raw_events_before(self, now: datetime) -> datetime:
        """Experiments that ended before this have their raw events compacted."""
        return now - timedelta(days=self.raw_event_days)

    def audit_before(self, now: datetime) -> datetime | None:
        return None if self.audit_days is None else now - timedelta(days=self.audit_days)

    def event_partitions(self, now: datetime) -> range:
        """First days (days since 1970-01-01) of the event-id partitions to have: every
        day an accepted event's timestamp may fall on, and the days ahead, that are not
        past retention."""
        oldest = now - timedelta(days=self.event_max_age_days)
        newest = now + timedelta(seconds=self.event_future_skew_seconds)
        first = max(day_number(oldest), whole_days_before(self.event_ids_before(now)))
        return range(
            event_partition_start(first),
            day_number(newest) + DAYS_AHEAD + 1,
            EVENT_ID_PARTITION_DAYS,
        )

    def decision_days_ahead(self, now: datetime) -> range:
        today = day_number(now)
        return range(today, today + DAYS_AHEAD + 1)


def day_number(at: datetime) -> int:
    """The UTC day of ``at``, as days since 1970-01-01 (what event-id partitions key on)."""
    return int(at.timestamp() // DAY)


def event_partition_start(day: int) -> int:
    """The first day of the event-id partition holding ``day``."""
    return day - day % EVENT_ID_PARTITION_DAYS


def day_start(day: int) -> datetime:
    return datetime.fromtimestamp(day * DAY, UTC)


def whole_days_before(before: datetime) -> int:
    """The first day number *not* wholly before ``before``: days below it may go."""
    return int(before.timestamp() // DAY)


class PartitionStats(msgspec.Struct, frozen=True, kw_only=True):
    table: str
    partition: str
    day: str | None
    """The UTC day the partition holds (ISO date), None for a default or legacy one."""
    rows: int
    """Live rows, from PostgreSQL's statistics (an estimate, cheap on any size)."""
    bytes: int
    expires: bool
    """Whether the next expiry run removes it."""


class KindStats(msgspec.Struct, frozen=True, kw_only=True):
    kind: str
    """``decision_records``, ``event_ids``, ``audit_entries``, ``raw_events``."""
    table: str
    rows: int
    bytes: int
    oldest: datetime | None
    """The oldest row's time (for day-partitioned kinds: the start of its day)."""
    retention_days: int | None
    next_expiry_rows: int
    """Rows the next expiry run will remove (estimated as the partitions' rows; for raw
    events, the rows of the experiments due for compaction)."""


class RetentionStats(msgspec.Struct, frozen=True, kw_only=True):
    at: datetime
    kinds: list[KindStats]
    partitions: list[PartitionStats]


class Expired(msgspec.Struct, frozen=True, kw_only=True):
    """What one expiry run did."""

    ran: bool = True
    """False when another process held the run's lock (nothing done)."""
    partitions_created: list[str] = []
    partitions_dropped: list[str] = []
    decision_records: int = 0
    """Rows removed, from partition statistics for dropped partitions (estimates) plus
    exact counts of rows deleted one by one."""
    event_ids: int = 0
    audit_entries: int = 0
    detach_seconds: float = 0.0
    """Time the partitioned tables were locked to take expired partitions out (PostgreSQL:
    detaching them; writers of the table wait meanwhile). Dropping the detached tables
    afterwards blocks nobody."""
    drop_seconds: float = 0.0
    """Time spent dropping the detached tables: the file system giving their space back
    (in proportion to their size); nobody waits for it."""
    experiments_marked: list[str] = []
    """Keys of experiments marked compacted by this run (their events refused from now)."""
    experiments_compacted: list[str] = []
    """Keys of experiments whose raw events this run removed."""
    raw_events: int = 0
    """Raw exposures, conversions and crossovers removed."""


class Compaction(NamedTuple):
    """What the store is asked to compact: one experiment's raw events, keeping what its
    report (``request``: every metric it reads, with their attribution) and its ingestion
    summary (counted with ``windows``) need, and the exposures before each of ``cuts``
    within the cut's hour (its start and end: the periods the console and the
    timeseries ask for)."""

    experiment_id: str
    request: ReportRequest
    windows: dict[str, int | None]
    cuts: list[datetime]
    now: datetime


class Compactor(Protocol):
    """The compaction of ended experiments' raw events (engine/_compaction.py)."""

    def due(self, now: datetime) -> list[str]:
        """Ids of the experiments whose raw events the next run removes or marks."""
        ...

    async def compact(self, now: datetime) -> Expired:
        """Mark and compact what is due at ``now``; only the compaction fields are set."""
        ...


FIRST_RUN_AFTER_SECONDS = 60.0


class Retention:
    """Runs expiry for the leader: on each tick, when the interval has passed."""

    def __init__(
        self,
        store: Store,
        policy: RetentionPolicy,
        interval_seconds: float,
        *,
        clock: Callable[[], datetime] | None = None,
        compactor: Compactor | None = None,
    ) -> None:
        self._store = store
        self.compactor = compactor
        self.policy = policy
        self._interval = interval_seconds
        self._clock = clock or (lambda: datetime.now(UTC))
        self._next: float | None = None
        self.runs = 0
        self.last: Expired | None = None
        self.last_stats: RetentionStats | None = None
        self._stats_at = float("-inf")

    async def stats(self, monotonic_now: float, *, max_age: float = 60.0) -> RetentionStats:
        """The store's retention statistics, read again when older than ``max_age``
        seconds: ``/metrics`` is scraped often, and counting rows is not free."""
        if self.last_stats is None or monotonic_now - self._stats_at >= max_age:
            now = self._clock()
            due = [] if self.compactor is None else self.compactor.due(now)
            self.last_stats = await self._store.retention_stats(now, self.policy, compactable=due)
            self._stats_at = monotonic_now
        return self.last_stats

    async def run(self) -> Expired:
        """Expire now (the caller is the leader)."""
        now = self._clock()
        expired = await self._store.expire(now, self.policy)
        if self.compactor is not None and expired.ran:
            compacted = await self.compactor.compact(now)
            expired = msgspec.structs.replace(
                expired,
                experiments_marked=compacted.experiments_marked,
                experiments_compacted=compacted.experiments_compacted,
                raw_events=compacted.raw_events,
            )
        self.runs += 1
        self.last = expired
        if expired.partitions_dropped or expired.audit_entries:
            log.info(
                "expired %s; created %d partitions",
                ", ".join(expired.partitions_dropped) or "no partition",
                len(expired.partitions_created),
            )
        if expired.experiments_marked or expired.experiments_compacted:
            log.info(
                "raw events: marked %s compacted, removed %d rows of %s",
                ", ".join(expired.experiments_marked) or "no experiment",
                expired.raw_events,
                ", ".join(expired.experiments_compacted) or "no experiment",
            )
        return expired

    async def tick(self, monotonic_now: float) -> Expired | None:
        """Run if due (once per interval); failures are logged, retried next tick. The
        first run comes ``FIRST_RUN_AFTER_SECONDS`` (or one interval, if shorter) after the
        first tick: a short-lived engine (the CLI's) does not expire on every command, a
        server still makes its partitions ahead soon after it starts leading."""
        if self._next is None:
            self._next = monotonic_now + min(self._interval, FIRST_RUN_AFTER_SECONDS)
        if monotonic_now < self._next:
            return None
        self._next = monotonic_now + self._interval
        try:
            return await self.run()
        except Exception:
            log.exception("data lifecycle run failed; trying again in %.0fs", self._interval)
            return None
