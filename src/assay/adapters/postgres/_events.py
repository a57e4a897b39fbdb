"""Exposures and conversions on PostgreSQL: the PostgreSQL Store's event methods.

A batch is one transaction: COPY every event into a temporary staging table, then a few
set-based statements do the de-duplication against the unique keys of migration 0002 and
report which events were duplicates, crossovers or left pending. No statement runs per
event, and the whole batch is one trip from Trio to the asyncio loop. Round trips to the
server are few (open and stage, COPY, every step but the last as one script, the last
step returning every outcome, commit): each waits for the Trio thread, which is busy
checking the next batches.

Two ways to write a batch, with the same result:

- the fast path (tried first): delete from the stage what the unique keys already hold
  (one index probe per event), then plain ``INSERT ... SELECT``. ``ON CONFLICT`` costs
  twice as much per row (a speculative insertion), and within one process nothing else
  writes these keys: the ingestion actor is the only writer.
- the careful path: ``INSERT ... ON CONFLICT DO NOTHING RETURNING``, correct whatever
  commits meanwhile. Used when the fast path meets a unique violation, i.e. another
  process wrote one of the batch's keys between the probe and the insert; the fast
  path's transaction is rolled back first, so nothing is written twice.

Rows go into each table sorted by its unique key: two processes writing overlapping
batches then take their row locks in the same order and wait for each other instead of
deadlocking (a deadlock with the purge is still possible and is retried).

Functions named ``aio_*`` are asyncio-flavoured and run on the trio-asyncio loop.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from operator import itemgetter
from typing import TYPE_CHECKING, Any, NamedTuple

import asyncpg
import msgspec

from assay.adapters.postgres._aio import usable
from assay.adapters.postgres._compaction import aio_compacted_ingestion
from assay.engine._events import (
    IngestionCounts,
    MetricCounts,
    MetricVariantCounts,
    Outcome,
    StagedEvent,
    VariantCounts,
)

if TYPE_CHECKING:
    from assay.adapters.postgres._aio import AioLoop

log = logging.getLogger("assay.adapters.postgres")

_STAGE = "assay_event_stage"
_SEQUENCE = "assay_event_stage_seq"
_OUTCOMES = "assay_event_outcomes"
_STAGE_COLUMNS = (
    "kind",
    "project_id",
    "experiment_id",
    "subject",
    "variant",
    "metric_key",
    "value",
    "ts_epoch",
    "event_id",
    "idempotency_key",
    "expires_epoch",
)
# Temporary (no WAL, private to the session) and emptied by every commit. Created once per
# pooled connection; after that, IF NOT EXISTS is a catalog lookup.
# ``seq`` is the event's position in the batch: the sequence restarts at 0 for each batch
# and COPY takes its default row by row, in order. Numbering here rather than in Python
# lets the checked events go to COPY as they are: a new tuple per event would cost more
# than the rest of the Python side, mostly in garbage collection. The sequence hands out
# numbers from a session-local cache (setval empties it, so each batch still starts at
# 0): uncached, nextval locked and updated the sequence's page once per row.
# Times arrive as epoch seconds (doubles: three times cheaper to encode than timestamptz)
# and the generated columns turn them into timestamps, exactly (to_timestamp rounds to the
# microsecond). ``event_key`` is the key of ``assay_event_ids`` (migration 0009), kept in
# the partition of ``day``, the event's UTC day (migration 0016).
_CREATE_STAGE = f"""
CREATE TEMP SEQUENCE IF NOT EXISTS {_SEQUENCE} MINVALUE 0 CACHE 65536;
CREATE TEMP TABLE IF NOT EXISTS {_STAGE} (
    seq              integer NOT NULL DEFAULT nextval('{_SEQUENCE}'),
    kind             smallint NOT NULL,
    project_id       text COLLATE "C" NOT NULL,
    experiment_id    text COLLATE "C" NOT NULL,
    subject          text COLLATE "C" NOT NULL,
    variant          text COLLATE "C",
    metric_key       text COLLATE "C",
    value            double precision NOT NULL,
    ts_epoch         double precision NOT NULL,
    event_id         text COLLATE "C",
    idempotency_key  text COLLATE "C",
    expires_epoch    double precision,
    ts               timestamptz GENERATED ALWAYS AS (to_timestamp(ts_epoch)) STORED,
    expires_at       timestamptz GENERATED ALWAYS AS (to_timestamp(expires_epoch)) STORED,
    event_key        text COLLATE "C"
        GENERATED ALWAYS AS (length(project_id) || ':' || project_id || event_id) STORED,
    day              integer GENERATED ALWAYS AS (floor(ts_epoch / 86400)::integer) STORED
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS {_OUTCOMES} (
    seq      integer NOT NULL,
    outcome  smallint NOT NULL
) ON COMMIT DELETE ROWS;
SELECT setval('{_SEQUENCE}', 0, false)
"""

# --- planning ---------------------------------------------------------------------------
# Plans must not depend on estimates: the stage has no statistics, CTE results have none,
# and young tables have stale ones. So every statement is written so that one plan shape
# is right at any size:
# - a look-up of staged rows in a big table (is this id, subject, key known?) is a
#   correlated scalar subquery: always one index probe per staged row, never a hash of
#   the whole table (which a plan made on small tables would keep choosing);
# - joins between batch-sized sets (the stage and what CTEs return) run with nested loops
#   off, so they hash: a misestimated nested loop is quadratic in the batch size;
# - sequential scans are off: the stage has no index, so it is scanned all the same, and
#   every other table is reached through an index (or by row id), never read whole.

_BATCH_JOINS = "SET LOCAL enable_nestloop = off; SET LOCAL enable_seqscan = off"

_TS_EPOCH = itemgetter(_STAGE_COLUMNS.index("ts_epoch"))
_DUPLICATE, _PENDING, _CROSSOVER = Outcome.DUPLICATE, Outcome.PENDING, Outcome.CROSSOVER
"""What the steps write to the outcomes table, for the staged events that did not simply
get recorded. A crossover is first written as a duplicate (a later exposure), then as a
crossover: the highest code an event gets is its outcome."""

_EXPOSURE, _CONVERSION, _LATER_EXPOSURE, _IGNORED = 0, 1, 2, 3
"""Staged kinds: the first two are ``Kind``; an exposure that did not become its subject's
first exposure is re-marked as the third; the fourth is for rows every step skips."""

# An id is known with the event's day (migration 0016): one index probe, whatever the
# number of partitions. The batch's first and last days, as literals (``{days}``), let the
# planner keep only the partitions they span, usually one, so the probe is a plain index
# scan rather than an append pruned again for every row (~0.4 us per id). Ids recorded
# before partitioning have no day: while some are left (``legacy_ids``), they are probed
# too, in their own partition.
_KNOWN_ID = """(SELECT true FROM assay_event_ids e
    WHERE e.event_key = s.event_key AND e.day = s.day AND e.day BETWEEN {days})"""
_KNOWN_LEGACY_ID = """(SELECT true FROM assay_event_ids_legacy l
    WHERE l.event_key = s.event_key)"""
LEGACY_IDS_LEFT = """
SELECT coalesce(pg_relation_size(to_regclass('assay_event_ids_legacy')), 0) > 0
"""
"""Whether ids recorded before partitioning are left. Only migration 0016 writes that
partition and expiry only empties it (TRUNCATE, so its file is then empty): once this says
no, it says no for good."""
_KNOWN_KEY = """(SELECT true FROM assay_conversion_keys k
    WHERE k.experiment_id = s.experiment_id AND k.idempotency_key = s.idempotency_key)"""
_EXPOSED_VARIANT = """(SELECT e.variant FROM assay_exposures e
    WHERE e.experiment_id = s.experiment_id AND e.subject = s.subject)"""

# --- the fast path ----------------------------------------------------------------------
# Duplicate event ids within the batch never reach the stage (see ``stage``).

# 1. Event ids: staged events whose id is known are duplicates; the others' ids are added.
_DROP_KNOWN_IDS = f"""
WITH known AS (
    DELETE FROM {_STAGE} s WHERE s.event_key IS NOT NULL AND {_KNOWN_ID} RETURNING s.seq
)
INSERT INTO {_OUTCOMES} SELECT seq, {_DUPLICATE:d} FROM known
"""
_DROP_KNOWN_LEGACY_IDS = f"""
WITH known AS (
    DELETE FROM {_STAGE} s WHERE s.event_key IS NOT NULL AND {_KNOWN_LEGACY_ID} RETURNING s.seq
)
INSERT INTO {_OUTCOMES} SELECT seq, {_DUPLICATE:d} FROM known
"""
_ADD_IDS = f"""
INSERT INTO assay_event_ids (event_key, day)
SELECT event_key, day FROM {_STAGE} WHERE event_key IS NOT NULL
ORDER BY event_key
"""

# 2. Idempotency keys, among the conversions left: known, or taken earlier in the batch.
_DROP_KNOWN_KEYS = f"""
WITH known AS (
    DELETE FROM {_STAGE} s
    WHERE s.kind = {_CONVERSION} AND s.idempotency_key IS NOT NULL AND {_KNOWN_KEY}
    RETURNING s.seq
)
INSERT INTO {_OUTCOMES} SELECT seq, {_DUPLICATE:d} FROM known
"""
_DROP_REPEATED_KEYS = f"""
WITH repeated AS (
    DELETE FROM {_STAGE} s
    WHERE s.kind = {_CONVERSION} AND s.idempotency_key IS NOT NULL AND EXISTS (
        SELECT 1 FROM {_STAGE} t
        WHERE t.kind = {_CONVERSION} AND t.experiment_id = s.experiment_id
          AND t.idempotency_key = s.idempotency_key AND t.seq < s.seq
    )
    RETURNING s.seq
)
INSERT INTO {_OUTCOMES} SELECT seq, {_DUPLICATE:d} FROM repeated
"""
_ADD_KEYS = f"""
INSERT INTO assay_conversion_keys (experiment_id, idempotency_key)
SELECT experiment_id, idempotency_key FROM {_STAGE}
WHERE kind = {_CONVERSION} AND idempotency_key IS NOT NULL
ORDER BY experiment_id, idempotency_key
"""

# 3. Exposures: all but the first staged one per subject (only when the batch names a
# subject twice), then those of subjects already exposed, are later exposures; the rest
# are first exposures.
_MARK_REPEATED_EXPOSURES = f"""
WITH later AS (
    UPDATE {_STAGE} s SET kind = {_LATER_EXPOSURE}
    WHERE s.kind = {_EXPOSURE} AND EXISTS (
        SELECT 1 FROM {_STAGE} t
        WHERE t.kind = {_EXPOSURE} AND t.experiment_id = s.experiment_id
          AND t.subject = s.subject AND t.seq < s.seq
    )
    RETURNING s.seq
)
INSERT INTO {_OUTCOMES} SELECT seq, {_DUPLICATE:d} FROM later
"""
_MARK_EXPOSED = f"""
WITH later AS (
    UPDATE {_STAGE} s SET kind = {_LATER_EXPOSURE}
    WHERE s.kind = {_EXPOSURE} AND {_EXPOSED_VARIANT} IS NOT NULL
    RETURNING s.seq
)
INSERT INTO {_OUTCOMES} SELECT seq, {_DUPLICATE:d} FROM later
"""
_ADD_EXPOSURES = f"""
INSERT INTO assay_exposures (experiment_id, subject, variant, exposed_at)
SELECT experiment_id, subject, variant, ts FROM {_STAGE} WHERE kind = {_EXPOSURE}
ORDER BY experiment_id, subject
"""

# 0. (Both paths, first.) A conversion parks as pending when no exposure of its subject is
# visible; an exposure promotes the pending conversions it can see. Two transactions on
# other nodes (or lanes) doing one each for the same subject at the same moment would see
# neither the other's row, and the conversion would stay pending until the sweep. So they
# are ordered: a transaction takes, before it writes anything, an advisory lock per
# (experiment, 1/16 of its subjects) it touches: exclusive where it may park a conversion
# (none of its subject's exposures is committed or staged), shared where it only records
# exposures. Parkers wait for the exposure writers in flight, and decide to park only
# after they committed (the last step reads afresh); exposure writers that come later
# wait for the parker's commit and promote what it parked. Taken in key order, in one
# statement, before any row is written: no deadlock through them.
_PENDING_LOCKS = 0x70656E64
"""The advisory lock class of these locks ("pend"; two-int keys, apart from the
configuration lock's one-bigint key)."""
_LOCK_SUBJECTS = f"""
SELECT count(CASE WHEN l.parks
        THEN pg_advisory_xact_lock({_PENDING_LOCKS}, l.k)::text
        ELSE pg_advisory_xact_lock_shared({_PENDING_LOCKS}, l.k)::text END)
FROM (
    SELECT k, bool_or(parks) AS parks FROM (
        SELECT (hashtext(s.experiment_id) & -16) | (hashtext(s.subject) & 15) AS k,
            s.kind = {_CONVERSION} AS parks
        FROM {_STAGE} s
        WHERE s.kind = {_EXPOSURE} OR (
            s.kind = {_CONVERSION} AND s.expires_at IS NOT NULL
            AND NOT EXISTS (
                SELECT 1 FROM {_STAGE} t WHERE t.kind = {_EXPOSURE}
                    AND t.experiment_id = s.experiment_id AND t.subject = s.subject)
            AND {_EXPOSED_VARIANT} IS NULL)
    ) keys GROUP BY k ORDER BY k
) l
"""

# --- the careful path -------------------------------------------------------------------

# 1. Event ids. The first staged event per id claims it; every other staged event with an
# id that is not its own claim is a duplicate and leaves the stage.
_CLAIM_EVENT_IDS = f"""
WITH candidates AS (
    SELECT DISTINCT ON (event_key) seq, event_key, day
    FROM {_STAGE} s WHERE s.event_key IS NOT NULL AND {_KNOWN_LEGACY_ID} IS NULL
    ORDER BY event_key, seq
), claimed AS (
    INSERT INTO assay_event_ids (event_key, day)
    SELECT event_key, day FROM candidates
    ON CONFLICT DO NOTHING
    RETURNING event_key
), kept AS (
    SELECT c.seq FROM candidates c JOIN claimed USING (event_key)
), dropped AS (
    DELETE FROM {_STAGE} s
    WHERE s.event_key IS NOT NULL AND NOT EXISTS (SELECT 1 FROM kept k WHERE k.seq = s.seq)
    RETURNING s.seq
)
INSERT INTO {_OUTCOMES} SELECT seq, {_DUPLICATE:d} FROM dropped
"""
_CLAIM_EVENT_IDS_NO_LEGACY = _CLAIM_EVENT_IDS.replace(f" AND {_KNOWN_LEGACY_ID} IS NULL", "")
assert _CLAIM_EVENT_IDS_NO_LEGACY != _CLAIM_EVENT_IDS

# 2. Idempotency keys, the same way, among the conversions still staged.
_CLAIM_CONVERSION_KEYS = f"""
WITH candidates AS (
    SELECT DISTINCT ON (experiment_id, idempotency_key) seq, experiment_id, idempotency_key
    FROM {_STAGE} WHERE kind = {_CONVERSION} AND idempotency_key IS NOT NULL
    ORDER BY experiment_id, idempotency_key, seq
), claimed AS (
    INSERT INTO assay_conversion_keys (experiment_id, idempotency_key)
    SELECT experiment_id, idempotency_key FROM candidates
    ON CONFLICT DO NOTHING
    RETURNING experiment_id, idempotency_key
), kept AS (
    SELECT c.seq FROM candidates c JOIN claimed USING (experiment_id, idempotency_key)
), dropped AS (
    DELETE FROM {_STAGE} s
    WHERE s.kind = {_CONVERSION} AND s.idempotency_key IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM kept k WHERE k.seq = s.seq)
    RETURNING s.seq
)
INSERT INTO {_OUTCOMES} SELECT seq, {_DUPLICATE:d} FROM dropped
"""

# 3. First exposure wins: the first staged exposure per subject is offered; every staged
# exposure that did not get in is re-marked as later.
_INSERT_EXPOSURES = f"""
WITH first AS (
    SELECT DISTINCT ON (experiment_id, subject) seq, experiment_id, subject, variant, ts
    FROM {_STAGE} WHERE kind = {_EXPOSURE}
    ORDER BY experiment_id, subject, seq
), inserted AS (
    INSERT INTO assay_exposures (experiment_id, subject, variant, exposed_at)
    SELECT experiment_id, subject, variant, ts FROM first
    ON CONFLICT (experiment_id, subject) DO NOTHING
    RETURNING experiment_id, subject
), won AS (
    SELECT f.seq FROM first f JOIN inserted USING (experiment_id, subject)
), lost AS (
    UPDATE {_STAGE} s SET kind = {_LATER_EXPOSURE}
    WHERE s.kind = {_EXPOSURE} AND NOT EXISTS (SELECT 1 FROM won w WHERE w.seq = s.seq)
    RETURNING s.seq
)
INSERT INTO {_OUTCOMES} SELECT seq, {_DUPLICATE:d} FROM lost
"""

# --- both paths -------------------------------------------------------------------------

# 4. Later exposures naming another variant than their subject's first are crossovers,
# recorded once per (experiment, subject, variant); the rest are duplicates. A statement
# of its own, so that it sees the exposures step 3 (or another process) committed.
_INSERT_CROSSOVERS = f"""
WITH later AS (
    SELECT DISTINCT ON (experiment_id, subject, variant)
        seq, experiment_id, subject, variant, ts
    FROM {_STAGE} s
    WHERE s.kind = {_LATER_EXPOSURE} AND {_EXPOSED_VARIANT} <> s.variant
    ORDER BY experiment_id, subject, variant, seq
), crossed AS (
    INSERT INTO assay_crossovers (experiment_id, subject, variant, seen_at)
    SELECT experiment_id, subject, variant, ts FROM later
    ON CONFLICT DO NOTHING
    RETURNING experiment_id, subject, variant
)
INSERT INTO {_OUTCOMES}
SELECT l.seq, {_CROSSOVER:d} FROM later l JOIN crossed USING (experiment_id, subject, variant)
"""

_CONVERSION_COLUMNS = "experiment_id, metric_key, subject, value, converted_at, idempotency_key"

# 5. Conversions that waited for the exposures just recorded (and have not expired).
# Found by one probe of the pending index per new exposure (a correlated subquery, so
# the plan cannot turn into a nested loop comparing every pending row with every staged
# one), then deleted by their row ids: a pending row that another transaction deleted
# meanwhile (promoted or purged) is skipped, not promoted twice.
_PROMOTE_PENDING = f"""
WITH promoted AS (
    DELETE FROM assay_pending_conversions p
    WHERE p.ctid = ANY (ARRAY(
        SELECT unnest(ARRAY(
            SELECT q.ctid FROM assay_pending_conversions q
            WHERE q.experiment_id = s.experiment_id AND q.subject = s.subject
              AND q.expires_at > {{now}}
        ))
        FROM {_STAGE} s WHERE s.kind = {_EXPOSURE}
    ))
    RETURNING p.experiment_id, p.metric_key, p.subject, p.value, p.converted_at,
        p.idempotency_key
)
INSERT INTO assay_conversions ({_CONVERSION_COLUMNS})
SELECT {_CONVERSION_COLUMNS} FROM promoted
"""

# 6. Conversions: attributed at once, or (metric requires exposure, none yet) pending.
# The last step: it also returns every outcome, those of the earlier steps (the highest
# code per event) and its pending conversions, as (outcome, seqs) rows.
_INSERT_CONVERSIONS = f"""
WITH staged AS (
    SELECT s.seq, s.experiment_id, s.metric_key, s.subject, s.value, s.ts,
        s.idempotency_key, s.expires_at,
        s.expires_at IS NOT NULL AND {_EXPOSED_VARIANT} IS NULL AS waits
    FROM {_STAGE} s WHERE s.kind = {_CONVERSION}
), attributed AS (
    INSERT INTO assay_conversions ({_CONVERSION_COLUMNS})
    SELECT experiment_id, metric_key, subject, value, ts, idempotency_key
    FROM staged WHERE NOT waits
), parked AS (
    INSERT INTO assay_pending_conversions ({_CONVERSION_COLUMNS}, expires_at)
    SELECT experiment_id, metric_key, subject, value, ts, idempotency_key, expires_at
    FROM staged WHERE waits
)
SELECT outcome, array_agg(seq) FROM (
    SELECT seq, max(outcome) AS outcome FROM {_OUTCOMES} GROUP BY seq
    UNION ALL
    SELECT seq, {_PENDING:d} FROM staged WHERE waits
) o GROUP BY outcome
"""

# --- purge ------------------------------------------------------------------------------

# A conversion parked in one process while another recorded its exposure is promoted here.
_SWEEP_PENDING = f"""
WITH promoted AS (
    DELETE FROM assay_pending_conversions p
    USING assay_exposures e
    WHERE e.experiment_id = p.experiment_id AND e.subject = p.subject AND p.expires_at > $1
    RETURNING p.experiment_id, p.metric_key, p.subject, p.value, p.converted_at,
        p.idempotency_key
)
INSERT INTO assay_conversions ({_CONVERSION_COLUMNS})
SELECT {_CONVERSION_COLUMNS} FROM promoted
"""
_PURGE_PENDING = """
WITH purged AS (DELETE FROM assay_pending_conversions WHERE expires_at <= $1 RETURNING 1)
SELECT count(*) FROM purged
"""

# --- counts -----------------------------------------------------------------------------

_CROSSED = "SELECT DISTINCT subject FROM assay_crossovers WHERE experiment_id = $1"
_COUNT_VARIANTS = f"""
WITH crossed AS ({_CROSSED})
SELECT e.variant,
    count(*) FILTER (WHERE x.subject IS NULL) AS exposures,
    count(x.subject) AS crossovers
FROM assay_exposures e LEFT JOIN crossed x ON x.subject = e.subject
WHERE e.experiment_id = $1
GROUP BY e.variant
ORDER BY e.variant
"""
_COUNT_CROSSOVERS = f"SELECT count(*) FROM ({_CROSSED}) crossed"
_COUNT_PENDING = """
SELECT count(*) FROM assay_pending_conversions WHERE experiment_id = $1 AND expires_at > $2
"""
# Each conversion is put in exactly one class, so the classes add up to what is stored.
_COUNT_CONVERSIONS = f"""
WITH crossed AS ({_CROSSED}),
windows AS (SELECT * FROM unnest($2::text[], $3::integer[]) AS w(metric_key, hours)),
classified AS (
    SELECT c.metric_key, c.subject, c.value, e.variant,
        CASE
            WHEN e.subject IS NULL THEN 'unexposed'
            WHEN x.subject IS NOT NULL THEN 'crossover'
            WHEN c.converted_at < e.exposed_at
                OR c.converted_at > e.exposed_at + make_interval(hours => w.hours)
                OR c.converted_at > $4::timestamptz
                THEN 'outside_window'
            ELSE 'attributed'
        END AS class
    FROM assay_conversions c
    LEFT JOIN assay_exposures e ON e.experiment_id = c.experiment_id AND e.subject = c.subject
    LEFT JOIN crossed x ON x.subject = c.subject
    LEFT JOIN windows w ON w.metric_key = c.metric_key
    WHERE c.experiment_id = $1
)
SELECT metric_key, class, variant, count(*) AS conversions,
    count(DISTINCT subject) AS subjects, sum(value) AS value_sum
FROM classified
GROUP BY metric_key, class, variant
ORDER BY metric_key, variant
"""

_RETRIES = 3
"""Attempts at a batch that hit a deadlock: the whole transaction rolled back, so it is
safe to run again."""


class Staging(NamedTuple):
    """A batch as it goes to the stage, and what is known of it before any SQL runs."""

    records: Sequence[tuple[Any, ...]]
    """COPY rows, one per event, in order (their position is their seq)."""
    repeated_ids: list[int]
    """Seqs of events whose event_id an earlier event of the batch has: duplicates,
    whatever becomes of that earlier one, so they are staged as rows every step skips."""
    has_ids: bool
    has_keys: bool
    repeats_subjects: bool
    """Some (experiment, subject) has two exposures in the batch."""


def stage(events: Sequence[StagedEvent]) -> Staging:
    # Hot: one pass, no allocation per event (nested dicts of sets rather than sets of
    # key tuples), tuple unpacking rather than NamedTuple attributes.
    records: Sequence[tuple[Any, ...]] = events
    repeated_ids: list[int] = []
    ids: dict[str, set[str]] = {}
    subjects: dict[str, set[str]] = {}
    has_keys = repeats_subjects = False
    for seq, event in enumerate(events):
        kind, project_id, experiment_id, subject, _, _, _, _, event_id, key, _ = event
        if event_id is not None:
            seen = ids.get(project_id)
            if seen is None:
                seen = ids[project_id] = set()
            elif event_id in seen:
                repeated_ids.append(seq)
                if records is events:
                    records = list(events)
                assert isinstance(records, list)
                records[seq] = event._replace(kind=_IGNORED, event_id=None, idempotency_key=None)
                continue
            seen.add(event_id)
        if kind == _EXPOSURE:
            exposed = subjects.get(experiment_id)
            if exposed is None:
                exposed = subjects[experiment_id] = set()
            elif subject in exposed:
                repeats_subjects = True
            exposed.add(subject)
        elif key is not None:
            has_keys = True
    return Staging(records, repeated_ids, bool(ids), has_keys, repeats_subjects)


class Written(NamedTuple):
    """Seqs (or None) of the staged events that did not simply get recorded."""

    duplicates: list[int]
    """Known or repeated ids and keys, and exposures that were not their subject's
    first (unless crossovers)."""
    crossed: list[int] | None
    pending: list[int] | None


async def aio_record_events(
    pool: Any, staging: Staging, now: datetime, *, legacy_ids: bool = True
) -> Written:
    """Write one batch, by the fast path unless it collides with another writer.
    ``legacy_ids``: whether ids recorded before partitioning may be left (``LEGACY_IDS_LEFT``)."""
    for attempt in range(1, _RETRIES + 1):
        try:
            try:
                return await _aio_write(pool, staging, now, careful=False, legacy=legacy_ids)
            except asyncpg.exceptions.UniqueViolationError:
                log.debug("event batch collided with another writer; writing it carefully")
                return await _aio_write(pool, staging, now, careful=True, legacy=legacy_ids)
        except asyncpg.exceptions.DeadlockDetectedError:
            if attempt == _RETRIES:
                raise
            log.warning("event batch hit a deadlock; retrying (%d)", attempt)
    raise AssertionError("unreachable")


async def _record_conversions(conn: Any) -> Any:
    """The last step, ``_INSERT_CONVERSIONS``, and the outcomes it returns.

    A prepared statement that asyncpg keeps per connection, so a batch spends one round
    trip on it, not two (prepare, then execute), and PostgreSQL plans it once. That is
    safe for this statement alone: it reads the stage and the outcomes table (scanned
    whole, whatever their size) and reaches ``assay_exposures`` only through a correlated
    probe by (experiment_id, subject), so the plan made on empty tables has the shape of
    the plan for full ones (EXPLAIN shows the same at both sizes). PostgreSQL plans a
    prepared statement again after an ANALYZE of a table it reads, so it is no more tied
    to old statistics than the script is. The other steps run as a script, planned
    afresh (see ``_script``)."""
    return await conn.fetch(_INSERT_CONVERSIONS)


def _script(staging: Staging, now: datetime, *, careful: bool, legacy: bool = True) -> str:
    """Every step of a batch after the COPY, as one script: one round trip, and (the
    simple protocol caches nothing) every statement planned now, on the tables as they
    are. A plan cached on empty tables, where hashing all of ``assay_exposures`` looks
    cheaper than probing its index, would make each batch slower as the tables grow.

    Each step writes the seqs of the events it did not simply record to the outcomes
    table; the last step, ``_INSERT_CONVERSIONS``, runs on its own and returns them."""
    steps: list[str] = [_LOCK_SUBJECTS]
    if careful:
        claim = _CLAIM_EVENT_IDS if legacy else _CLAIM_EVENT_IDS_NO_LEGACY
        steps += (claim, _CLAIM_CONVERSION_KEYS, _INSERT_EXPOSURES)
    else:
        if staging.has_ids:
            if legacy:
                steps.append(_DROP_KNOWN_LEGACY_IDS)
            # Map and min/max run in C: ~20 ns per event each.
            epochs = list(map(_TS_EPOCH, staging.records))
            days = f"{int(min(epochs) // 86400)} AND {int(max(epochs) // 86400)}"
            steps += (_DROP_KNOWN_IDS.replace("{days}", days), _ADD_IDS)
        if staging.has_keys:
            steps += (_DROP_KNOWN_KEYS, _DROP_REPEATED_KEYS, _ADD_KEYS)
        if staging.repeats_subjects:
            steps.append(_MARK_REPEATED_EXPOSURES)
        steps += (_MARK_EXPOSED, _ADD_EXPOSURES)
    # A literal, since the simple protocol takes no parameters: an aware datetime of
    # ours, in ISO format, which PostgreSQL reads exactly.
    assert now.tzinfo is not None
    moment = f"'{now.isoformat()}'::timestamptz"
    steps += (
        _INSERT_CROSSOVERS,
        _PROMOTE_PENDING.replace("{now}", moment),
    )
    return ";\n".join(step.strip() for step in steps)


async def _aio_write(
    pool: Any, staging: Staging, now: datetime, *, careful: bool, legacy: bool = True
) -> Written:
    script = _script(staging, now, careful=careful, legacy=legacy)
    async with pool.acquire() as conn:
        # The transaction is opened in the same round trip as the stage is prepared: each
        # trip waits for the Trio thread, which may be busy checking the next batches.
        try:
            await conn.execute(f"BEGIN; {_CREATE_STAGE}; {_BATCH_JOINS}")
            await conn.copy_records_to_table(
                _STAGE, records=staging.records, columns=_STAGE_COLUMNS
            )
            await conn.execute(script)
            rows = await _record_conversions(conn)
            await conn.execute("COMMIT")
        except BaseException as exc:
            if not usable(conn):
                if isinstance(exc, Exception):
                    # The server closed the connection under the batch: whatever asyncpg
                    # made of it (sometimes an internal state error), it is a lost one.
                    raise asyncpg.ConnectionDoesNotExistError("connection lost") from exc
            elif conn.is_in_transaction():
                with contextlib.suppress(Exception):
                    await conn.execute("ROLLBACK")
            raise
    found: dict[int, list[int]] = dict(rows)
    return Written(
        list(staging.repeated_ids) + found.get(_DUPLICATE, []),
        found.get(_CROSSOVER),
        found.get(_PENDING),
    )


def outcomes_of(count: int, written: Written) -> list[int]:
    outcomes = [Outcome.RECORDED.value] * count
    for seqs, outcome in (
        (written.duplicates, Outcome.DUPLICATE),
        (written.crossed, Outcome.CROSSOVER),
        (written.pending, Outcome.PENDING),
    ):
        for seq in seqs or ():
            outcomes[seq] = outcome.value
    return outcomes


async def aio_purge_pending(pool: Any, now: datetime) -> int:
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(_SWEEP_PENDING, now)
        purged: int = await conn.fetchval(_PURGE_PENDING, now)
    return purged


async def aio_ingestion_counts(
    pool: Any,
    experiment_id: str,
    windows: Mapping[str, int | None],
    until: datetime | None,
    now: datetime,
) -> IngestionCounts:
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        compacted = await aio_compacted_ingestion(conn, experiment_id)
        if compacted is not None:
            # Counted when its raw events went; only the pending ones are still kept.
            pending = await conn.fetchval(_COUNT_PENDING, experiment_id, now)
            return msgspec.structs.replace(compacted, pending=pending)
        return await aio_count_on(conn, experiment_id, windows, until, now)


async def aio_count_on(
    conn: Any,
    experiment_id: str,
    windows: Mapping[str, int | None],
    until: datetime | None,
    now: datetime,
) -> IngestionCounts:
    """The ingestion counts, read on ``conn`` (in the caller's transaction)."""
    variant_rows = await conn.fetch(_COUNT_VARIANTS, experiment_id)
    crossovers = await conn.fetchval(_COUNT_CROSSOVERS, experiment_id)
    pending = await conn.fetchval(_COUNT_PENDING, experiment_id, now)
    conversion_rows = await conn.fetch(
        _COUNT_CONVERSIONS,
        experiment_id,
        list(windows),
        list(windows.values()),
        until,
    )
    return IngestionCounts(
        crossovers=crossovers,
        pending=pending,
        variants=[
            VariantCounts(
                variant=row["variant"], exposures=row["exposures"], crossovers=row["crossovers"]
            )
            for row in variant_rows
        ],
        metrics=_metric_counts(conversion_rows),
    )


def _metric_counts(rows: Sequence[Any]) -> list[MetricCounts]:
    tallies: dict[str, dict[str, Any]] = {}
    for row in rows:
        tally = tallies.setdefault(
            row["metric_key"],
            {"variants": [], "outside_window": 0, "crossover": 0, "unexposed": 0},
        )
        if row["class"] == "attributed":
            tally["variants"].append(
                MetricVariantCounts(
                    variant=row["variant"],
                    conversions=row["conversions"],
                    subjects=row["subjects"],
                    value_sum=row["value_sum"],
                )
            )
        else:
            tally[row["class"]] += row["conversions"]
    return [
        MetricCounts(
            metric=metric,
            conversions=sum(v.conversions for v in tally["variants"]),
            value_sum=sum(v.value_sum for v in tally["variants"]),
            variants=tally["variants"],
            outside_window=tally["outside_window"],
            crossover=tally["crossover"],
            unexposed=tally["unexposed"],
        )
        for metric, tally in sorted(tallies.items())
    ]


class PostgresEventStore:
    """Mixed into ``PostgresStore``: the event half of the Store port."""

    _pool: Any
    _loop: AioLoop
    _legacy_ids: bool | None = None
    """Whether ids recorded before partitioning may be left; None: not asked yet (asked
    once, then again after this store's expiry runs, which may empty them)."""

    async def record_events(self, events: Sequence[StagedEvent], *, now: datetime) -> list[int]:
        if not events:
            return []
        if self._legacy_ids is None:
            self._legacy_ids = bool(await self._loop.run(self._pool.fetchval, LEGACY_IDS_LEFT))
        written = await self._loop.run(
            aio_record_events, self._pool, stage(events), now, legacy_ids=self._legacy_ids
        )
        return outcomes_of(len(events), written)

    async def purge_pending(self, now: datetime) -> int:
        return await self._loop.run(aio_purge_pending, self._pool, now)

    async def ingestion_counts(
        self,
        experiment_id: str,
        *,
        windows: Mapping[str, int | None],
        until: datetime | None,
        now: datetime,
    ) -> IngestionCounts:
        return await self._loop.run(
            aio_ingestion_counts, self._pool, experiment_id, windows, until, now
        )
