"""The data lifecycle on PostgreSQL: the partitions of decision records (a day each) and
event ids (a week each) of migration 0016, created ahead and dropped past retention; audit
entries deleted past theirs; ended experiments' raw events compacted (``_compaction.py``);
and the statistics ``assay db stats`` and ``/metrics`` show.

Rules (engine/_retention.py has the policy; docs/retention.md tells users):

- One run at a time per database: a run holds a session advisory lock
  (``RETENTION_LOCK_ID``, taken with ``pg_try_advisory_lock``, so a second process finds
  it held and does nothing). Only the leader runs anyway; the lock makes "never two at
  once" hold whatever calls ``expire``.
- Each step is a short transaction of its own: creating or detaching a partition locks
  the parent table, and ingestion waits on that lock, so no step holds it longer than
  its own DDL. An expired partition is detached, then dropped: removing its files takes
  time in proportion to their size, and nothing waits for that once it is detached.
  ``lock_timeout`` bounds the wait for a lock (a step that times out is tried again next
  run) so a long query cannot stall ingestion behind a queued DETACH. A table a run
  detached but did not drop (its process died) is dropped by the next run.
- A dropped day of decision records first leaves, per decision-id prefix, its greatest
  id in ``assay_decisions_expired`` (a loose index scan: two probes per prefix, not a
  read of the partition), so a look-up of an expired id can say so.
- Row counts are exact for small partitions, PostgreSQL's estimates for big ones: cheap
  at any size.

Functions named ``aio_*`` are asyncio-flavoured and run on the trio-asyncio loop.
"""

from __future__ import annotations

import logging
import re
import time
from datetime import date, datetime
from typing import TYPE_CHECKING, Any, Final

from assay.adapters.postgres._compaction import aio_compact
from assay.adapters.postgres._events import aio_count_on
from assay.adapters.postgres._reports import aio_prepare
from assay.engine._retention import (
    EVENT_ID_PARTITION_DAYS,
    Compaction,
    Expired,
    KindStats,
    PartitionStats,
    RetentionPolicy,
    RetentionStats,
    day_number,
    day_start,
    whole_days_before,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from assay.adapters.postgres._aio import AioLoop

log = logging.getLogger("assay.adapters.postgres")

RETENTION_LOCK_ID: Final = 0x6173_7361_7903
"""Session advisory lock held by an expiry run ("assay" in ASCII, then 03)."""

DECISIONS: Final = "assay_decisions"
EVENT_IDS: Final = "assay_event_ids"
_LEGACY_MARK = "event_ids_legacy_since"
_DAY_NAME = re.compile(r"_p(\d{8})$")
_EPOCH = date(1970, 1, 1)

WIDTH: Final = {DECISIONS: 1, EVENT_IDS: EVENT_ID_PARTITION_DAYS}
"""Days per partition of each day-partitioned table."""

# Rows: counted exactly in a small partition (its heap under ``_EXACT_BYTES``), else
# PostgreSQL's estimate (the larger of the planner's and the live-tuple statistics, which
# lag by up to a second or so); counting a big partition would read all of it.
_EXACT_BYTES = 8 * 1024 * 1024
_ROWS_OF = f"""CASE WHEN pg_relation_size(c.oid) < {_EXACT_BYTES}
        THEN assay_count_rows(c.oid::regclass)
        ELSE greatest(c.reltuples::bigint, pg_stat_get_live_tuples(c.oid))
    END"""
_OF_PARENTS = """FROM pg_inherits i
JOIN pg_class c ON c.oid = i.inhrelid
JOIN pg_class p ON p.oid = i.inhparent
WHERE i.inhparent IN ('assay_decisions'::regclass, 'assay_event_ids'::regclass)
ORDER BY p.relname, c.relname"""
_PARTITIONS = f"""
SELECT p.relname AS parent, c.relname AS name, pg_total_relation_size(c.oid) AS bytes,
    {_ROWS_OF} AS rows
{_OF_PARENTS}
"""
_ROWS = f"""SELECT c.relname, {_ROWS_OF} FROM pg_class c
WHERE c.oid = ANY (SELECT to_regclass(n) FROM unnest($1::text[]) n)"""

# The successor of every string starting with ``p``: its last code point is the greatest
# (ids are compared bytewise, COLLATE "C").
_AFTER = "p || chr(1114111)"
_REMEMBER_EXPIRED_IDS = f"""
INSERT INTO assay_decisions_expired (prefix, last_id)
WITH RECURSIVE prefixes(p) AS (
    SELECT left(min(decision_id), 16) FROM {{part}}
    UNION ALL
    SELECT (SELECT left(min(decision_id), 16) FROM {{part}} WHERE decision_id >= {_AFTER})
    FROM prefixes WHERE p IS NOT NULL
)
SELECT p, (SELECT max(decision_id) FROM {{part}}
           WHERE decision_id >= p AND decision_id < {_AFTER})
FROM prefixes WHERE p IS NOT NULL
ON CONFLICT (prefix) DO UPDATE
SET last_id = greatest(assay_decisions_expired.last_id, excluded.last_id)
"""
_DECISION_EXPIRED = """
SELECT EXISTS (
    SELECT 1 FROM assay_decisions_expired
    WHERE prefix = left($1::text, 16) AND length($1::text) = length(last_id)
      AND $1::text COLLATE "C" <= last_id
)
"""

# Set for the run's session (and reset before the connection goes back to the pool).
_SESSION_LOCK_TIMEOUT = "SET lock_timeout = '5s'"
_BEGIN = rf"""
SELECT pg_try_advisory_lock($1) AS locked,
    (SELECT coalesce(array_agg(n), '{{}}') FROM unnest($2::text[]) n
     WHERE to_regclass(n) IS NULL) AS missing,
    (SELECT coalesce(array_agg(parent || '/' || name), '{{}}') FROM (
        SELECT p.relname AS parent, c.relname AS name {_OF_PARENTS}) ps) AS partitions,
    (SELECT at FROM assay_retention_marks WHERE name = $3) AS legacy_since,
    (SELECT coalesce(array_agg(c.relname), '{{}}') FROM pg_class c
     WHERE c.relkind = 'r' AND NOT c.relispartition
       AND c.relnamespace = (
           SELECT relnamespace FROM pg_class WHERE oid = 'assay_decisions'::regclass)
       AND (c.relname LIKE 'assay\_decisions\_p%' OR c.relname LIKE 'assay\_event\_ids\_p%')
    ) AS detached
"""
_EXPIRE_DEFAULTS = """
WITH gone AS (
    DELETE FROM assay_decisions_default WHERE decided_at < $1 RETURNING decision_id
), remembered AS (
    INSERT INTO assay_decisions_expired (prefix, last_id)
    SELECT left(decision_id, 16), max(decision_id) FROM gone GROUP BY 1
    ON CONFLICT (prefix) DO UPDATE
    SET last_id = greatest(assay_decisions_expired.last_id, excluded.last_id)
), ids AS (
    DELETE FROM assay_event_ids_default WHERE day < $2 RETURNING 1
)
SELECT (SELECT count(*) FROM gone), (SELECT count(*) FROM ids)
"""
_FINISH = """
INSERT INTO assay_retention_marks (name, at) VALUES ('last_expiry', '{now}'::timestamptz)
ON CONFLICT (name) DO UPDATE SET at = excluded.at;
RESET lock_timeout;
SELECT pg_advisory_unlock({lock})
"""


def partition_day(name: str) -> date | None:
    match = _DAY_NAME.search(name)
    if match is None:
        return None
    raw = match.group(1)
    return date(int(raw[:4]), int(raw[4:6]), int(raw[6:]))


def _date(day: int) -> date:
    return day_start(day).date()


def _number(day: date) -> int:
    return (day - _EPOCH).days


class _Run:
    """One expiry run on one connection. Round trips are few (each waits for the Trio
    thread and, on a busy machine, for a core): one to take the lock and see the state,
    one to count what goes, one per partition dropped, one for the default partitions,
    one to finish; creating partitions, emptying the legacy ids and the audit log add
    theirs only when there is something to do."""

    def __init__(self, conn: Any, now: datetime, policy: RetentionPolicy) -> None:
        self.conn = conn
        self.now = now
        self.policy = policy
        self.created: list[str] = []
        self.dropped: list[str] = []
        self.decision_records = 0
        self.event_ids = 0
        self.audit_entries = 0
        self.cutoffs = {
            DECISIONS: whole_days_before(policy.decisions_before(now)),
            EVENT_IDS: whole_days_before(policy.event_ids_before(now)),
        }
        self.wanted = [(DECISIONS, d) for d in policy.decision_days_ahead(now)] + [
            (EVENT_IDS, d) for d in policy.event_partitions(now)
        ]
        self.wanted_names = [f"{parent}_p{_date(day):%Y%m%d}" for parent, day in self.wanted]
        self.missing: set[str] = set()
        self.partitions: list[tuple[str, str]] = []
        self.legacy_since: datetime | None = None
        self.detached: list[str] = []
        """Partitions a run detached and did not get to drop (its process died)."""
        self.detach_seconds = 0.0
        self.drop_seconds = 0.0

    async def begin(self) -> bool:
        """Take the lock (or find it taken), and read what is missing and what exists."""
        row = await self.conn.fetchrow(_BEGIN, RETENTION_LOCK_ID, self.wanted_names, _LEGACY_MARK)
        if not row["locked"]:
            return False
        self.missing = set(row["missing"])
        self.partitions = [(p.split("/", 1)[0], p.split("/", 1)[1]) for p in row["partitions"]]
        self.legacy_since = row["legacy_since"]
        self.detached = list(row["detached"])
        await self.conn.execute(_SESSION_LOCK_TIMEOUT)
        return True

    async def drop_detached(self) -> None:
        """What an earlier run detached and did not drop goes first (if it was a
        partition ahead, ``create_ahead`` makes it again)."""
        for name in self.detached:
            await self.conn.execute(f'DROP TABLE IF EXISTS "{name}"')
        self.missing |= set(self.detached) & set(self.wanted_names)

    async def create_ahead(self) -> None:
        for (parent, day), name in zip(self.wanted, self.wanted_names, strict=True):
            if name not in self.missing:
                continue
            made = await self.conn.fetchval(
                "SELECT assay_create_day_partition($1, $2::date, $3)",
                parent,
                _date(day),
                WIDTH[parent],
            )
            if made:
                self.created.append(name)

    async def drop_expired(self) -> None:
        expiring = [
            (parent, name)
            for parent, name in self.partitions
            if (day := partition_day(name)) is not None
            and _number(day) + WIDTH[parent] <= self.cutoffs[parent]
        ]
        rows: dict[str, int] = {}
        if expiring:
            rows = dict(await self.conn.fetch(_ROWS, [name for _, name in expiring]))
        for parent, name in expiring:
            # Detached first (the expired ids remembered in the same transaction), then
            # dropped. Dropping removes the files at commit, which can take time in
            # proportion to their size (on a file system mounted with online discard,
            # 0.05-0.08 s a million decision records on the test machine; see
            # docs/retention.md), and a partition's lock on its parent table would be held
            # all along, stalling every writer of that table. Detached, it is a table nobody
            # else uses.
            remember = _REMEMBER_EXPIRED_IDS.format(part=name) if parent == DECISIONS else ""
            started = time.perf_counter()
            await self.conn.execute(
                f'BEGIN; {remember}; ALTER TABLE {parent} DETACH PARTITION "{name}"; COMMIT'
            )
            detached = time.perf_counter()
            self.detach_seconds += detached - started
            await self.conn.execute(f'DROP TABLE "{name}"')
            self.drop_seconds += time.perf_counter() - detached
            self.dropped.append(name)
            if parent == DECISIONS:
                self.decision_records += max(rows.get(name, 0), 0)
            else:
                self.event_ids += max(rows.get(name, 0), 0)
        # Rows that landed in a default partition (no partition for their day yet) go
        # one by one: there are few, or none.
        decisions, event_ids = await self.conn.fetchrow(
            _EXPIRE_DEFAULTS, day_start(self.cutoffs[DECISIONS]), self.cutoffs[EVENT_IDS]
        )
        self.decision_records += decisions
        self.event_ids += event_ids

    async def empty_legacy_ids(self) -> None:
        """Ids recorded before partitioning have no day: they go, all at once, once the
        event-id retention has passed since the migration."""
        since = self.legacy_since
        if since is None or since > self.policy.event_ids_before(self.now):
            return
        async with self.conn.transaction():
            rows = await self.conn.fetchval("SELECT count(*) FROM assay_event_ids_legacy")
            await self.conn.execute("TRUNCATE assay_event_ids_legacy")
            await self.conn.execute(
                "DELETE FROM assay_retention_marks WHERE name = $1", _LEGACY_MARK
            )
        self.event_ids += rows

    async def delete_old_audit(self) -> None:
        before = self.policy.audit_before(self.now)
        if before is None:
            return
        self.audit_entries = _count(
            await self.conn.execute("DELETE FROM audit_log WHERE at < $1", before)
        )

    def result(self) -> Expired:
        return Expired(
            partitions_created=self.created,
            partitions_dropped=self.dropped,
            decision_records=self.decision_records,
            event_ids=self.event_ids,
            audit_entries=self.audit_entries,
            detach_seconds=self.detach_seconds,
            drop_seconds=self.drop_seconds,
        )


def _count(status: str) -> int:
    """Rows from a command tag such as ``DELETE 12``."""
    return int(status.rsplit(" ", 1)[-1])


async def aio_expire(pool: Any, now: datetime, policy: RetentionPolicy) -> Expired:
    async with pool.acquire() as conn:
        run = _Run(conn, now, policy)
        if not await run.begin():
            return Expired(ran=False)
        try:
            await run.drop_detached()
            await run.create_ahead()
            await run.drop_expired()
            await run.empty_legacy_ids()
            await run.delete_old_audit()
            # Literals: this script goes by the simple protocol (no parameters).
            await conn.execute(_FINISH.format(now=now.isoformat(), lock=RETENTION_LOCK_ID))
            return run.result()
        except BaseException:
            if not conn.is_closed():
                # A step that failed (a lock it waited too long for) may have left its
                # transaction open in the failed state; the run is tried next interval.
                if conn.is_in_transaction():
                    await conn.execute("ROLLBACK")
                await conn.execute(
                    f"RESET lock_timeout; SELECT pg_advisory_unlock({RETENTION_LOCK_ID})"
                )
            raise


async def aio_compact_experiment(pool: Any, compaction: Compaction) -> int | None:
    async with pool.acquire() as conn:
        return await aio_compact(conn, compaction, aio_prepare, aio_count_on)


async def aio_decision_expired(pool: Any, decision_id: str) -> bool:
    return bool(await pool.fetchval(_DECISION_EXPIRED, decision_id))


_RAW_SIZES = f"""
SELECT sum({_ROWS_OF})::bigint AS rows, sum(pg_total_relation_size(c.oid))::bigint AS bytes
FROM pg_class c
WHERE c.oid IN ('assay_exposures'::regclass, 'assay_conversions'::regclass,
                'assay_crossovers'::regclass)
"""
# The hour of the oldest first exposure not compacted (the hourly rollup is small and
# indexed; the raw tables are read by experiment only).
_RAW_OLDEST = """
SELECT min(hour) FROM assay_report_exposure_hours h
WHERE NOT EXISTS (SELECT 1 FROM assay_compactions c WHERE c.experiment_id = h.experiment_id)
"""
_RAW_DUE = """
SELECT (SELECT count(*) FROM assay_exposures WHERE experiment_id = ANY($1::text[]))
     + (SELECT count(*) FROM assay_conversions WHERE experiment_id = ANY($1::text[]))
     + (SELECT count(*) FROM assay_crossovers WHERE experiment_id = ANY($1::text[]))
"""


async def aio_retention_stats(
    pool: Any, now: datetime, policy: RetentionPolicy, compactable: Sequence[str] = ()
) -> RetentionStats:
    cutoffs = {
        DECISIONS: whole_days_before(policy.decisions_before(now)),
        EVENT_IDS: whole_days_before(policy.event_ids_before(now)),
    }
    async with pool.acquire() as conn:
        rows = await conn.fetch(_PARTITIONS)
        default_oldest = await conn.fetchval("SELECT min(decided_at) FROM assay_decisions_default")
        default_oldest_day = await conn.fetchval("SELECT min(day) FROM assay_event_ids_default")
        legacy_since = await conn.fetchval(
            "SELECT at FROM assay_retention_marks WHERE name = $1", _LEGACY_MARK
        )
        audit = await conn.fetchrow(
            "SELECT (SELECT at FROM audit_log ORDER BY id LIMIT 1) AS oldest,"
            " pg_total_relation_size('audit_log') AS bytes,"
            " pg_stat_get_live_tuples('audit_log'::regclass) AS rows"
        )
        raw = await conn.fetchrow(_RAW_SIZES)
        raw_oldest = await conn.fetchval(_RAW_OLDEST)
        raw_due = await conn.fetchval(_RAW_DUE, list(compactable)) if compactable else 0
        audit_before = policy.audit_before(now)
        audit_expiring = 0
        if audit_before is not None:
            audit_expiring = await conn.fetchval(
                "SELECT count(*) FROM audit_log WHERE at < $1", audit_before
            )
    partitions: list[PartitionStats] = []
    for row in rows:
        day = partition_day(row["name"])
        expires = day is not None and _number(day) + WIDTH[row["parent"]] <= cutoffs[row["parent"]]
        if row["name"] == "assay_event_ids_legacy":
            expires = legacy_since is not None and legacy_since <= policy.event_ids_before(now)
        partitions.append(
            PartitionStats(
                table=row["parent"],
                partition=row["name"],
                day=None if day is None else day.isoformat(),
                rows=max(row["rows"], 0),
                bytes=row["bytes"],
                expires=expires,
            )
        )

    def kind(name: str, table: str, days: int, default_oldest: datetime | None) -> KindStats:
        mine = [p for p in partitions if p.table == table]
        held = [day_start(_number(date.fromisoformat(p.day))) for p in mine if p.day and p.rows]
        if default_oldest is not None:
            held.append(default_oldest)
        return KindStats(
            kind=name,
            table=table,
            rows=sum(p.rows for p in mine),
            bytes=sum(p.bytes for p in mine),
            oldest=min(held, default=None),
            retention_days=days,
            next_expiry_rows=sum(p.rows for p in mine if p.expires),
        )

    event_default = None if default_oldest_day is None else day_start(default_oldest_day)
    kinds = [
        kind("decision_records", DECISIONS, policy.decision_days, default_oldest),
        kind("event_ids", EVENT_IDS, policy.event_id_days, event_default),
        KindStats(
            kind="audit_entries",
            table="audit_log",
            rows=max(audit["rows"], 0),
            bytes=audit["bytes"],
            oldest=audit["oldest"],
            retention_days=policy.audit_days,
            next_expiry_rows=audit_expiring,
        ),
        KindStats(
            kind="raw_events",
            table="assay_exposures, assay_conversions, assay_crossovers",
            rows=max(raw["rows"], 0),
            bytes=raw["bytes"],
            oldest=raw_oldest,
            retention_days=policy.raw_event_days,
            next_expiry_rows=raw_due,
        ),
    ]
    return RetentionStats(at=now, kinds=kinds, partitions=partitions)


class PostgresRetentionStore:
    """Mixed into ``PostgresStore``: the lifecycle part of the Store port."""

    _pool: Any
    _loop: AioLoop

    _legacy_ids: bool | None

    async def expire(self, now: datetime, policy: RetentionPolicy) -> Expired:
        expired = await self._loop.run(aio_expire, self._pool, now, policy)
        # The ids recorded before partitioning may be gone now: ingestion asks again.
        self._legacy_ids = None
        return expired

    async def decision_expired(self, decision_id: str) -> bool:
        return await self._loop.run(aio_decision_expired, self._pool, decision_id)

    async def retention_stats(
        self, now: datetime, policy: RetentionPolicy, *, compactable: Sequence[str] = ()
    ) -> RetentionStats:
        return await self._loop.run(aio_retention_stats, self._pool, now, policy, compactable)

    async def compact_experiment(self, compaction: Compaction) -> int | None:
        return await self._loop.run(aio_compact_experiment, self._pool, compaction)


__all__ = ["RETENTION_LOCK_ID", "PostgresRetentionStore", "day_number", "partition_day"]
