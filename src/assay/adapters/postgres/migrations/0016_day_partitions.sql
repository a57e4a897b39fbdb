-- Decision records and event ids become tables partitioned by UTC day (PostgreSQL
-- declarative partitioning), so that expiring a day is dropping one partition, whatever
-- its size, instead of deleting rows one by one (docs/retention.md).
--
-- assay manages the partitions itself (adapters/postgres/_retention.py): the leading
-- engine creates each day's partition ahead of time and drops the ones past retention.
-- A DEFAULT partition catches any row whose day has no partition yet (should the leader
-- have been away longer than it creates ahead), so a write never fails for want of one;
-- ``assay_create_day_partition`` moves such rows into the day's partition when it
-- creates it.
--
-- Every existing row is carried over in this migration's transaction.

-- Creates the partition of ``parent`` for ``days`` days from ``day`` unless it exists; true
-- when created. Bounds: [day, day + days) in the parent's key, timestamptz at UTC midnight
-- for decision records, day numbers since 1970-01-01 for event ids.
CREATE FUNCTION assay_create_day_partition(parent text, day date, days integer DEFAULT 1)
RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    name text := parent || '_p' || to_char(day, 'YYYYMMDD');
    key text;
    low text;
    high text;
    moved bigint;
BEGIN
    IF to_regclass(name) IS NOT NULL THEN
        RETURN false;
    END IF;
    IF parent = 'assay_event_ids' THEN
        key := 'day';
        low := (day - date '1970-01-01')::text;
        high := (day + days - date '1970-01-01')::text;
    ELSE
        key := 'decided_at';
        low := quote_literal(day::text || ' 00:00:00+00') || '::timestamptz';
        high := quote_literal((day + days)::text || ' 00:00:00+00') || '::timestamptz';
    END IF;
    -- Rows of that day in the default partition would make CREATE fail: move them.
    EXECUTE format('CREATE TEMP TABLE assay_moved (LIKE %I) ON COMMIT DROP', parent);
    EXECUTE format(
        'WITH moved AS (DELETE FROM %I WHERE %I >= %s AND %I < %s RETURNING *) '
        'INSERT INTO assay_moved SELECT * FROM moved',
        parent || '_default', key, low, key, high);
    GET DIAGNOSTICS moved = ROW_COUNT;
    EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%s) TO (%s)',
        name, parent, low, high);
    IF moved > 0 THEN
        EXECUTE format('INSERT INTO %I SELECT * FROM assay_moved', parent);
    END IF;
    DROP TABLE assay_moved;
    RETURN true;
END;
$$;

-- Rows of a table, counted (``assay db stats`` counts small partitions exactly).
CREATE FUNCTION assay_count_rows(tab regclass) RETURNS bigint
LANGUAGE plpgsql STABLE AS $$
DECLARE
    n bigint;
BEGIN
    EXECUTE format('SELECT count(*) FROM %s', tab) INTO n;
    RETURN n;
END;
$$;

-- Decision ids of expired decision records, by the random per-process prefix of the id
-- (its first 16 characters): the greatest expired id of that prefix. Ids of one prefix
-- are issued in order, so an id at or below it was decided before a decision already
-- past retention: ``GET /decisions/{id}`` then says ``decision_expired``, not unknown.
CREATE TABLE assay_decisions_expired (
    prefix   text COLLATE "C" PRIMARY KEY,
    last_id  text COLLATE "C" NOT NULL
);

-- When each kind was last expired, and other marks the lifecycle keeps.
CREATE TABLE assay_retention_marks (
    name  text PRIMARY KEY,
    at    timestamptz NOT NULL
);

-- --- decision records -------------------------------------------------------------------

ALTER TABLE assay_decisions RENAME TO assay_decisions_unpartitioned;
ALTER INDEX assay_decisions_pkey RENAME TO assay_decisions_unpartitioned_pkey;
ALTER INDEX assay_decisions_experiment RENAME TO assay_decisions_unpartitioned_experiment;

-- The key must hold the partition key: (decision_id, decided_at) serves look-ups by id
-- (a probe per partition). Ids are unique by construction, so nothing is lost.
CREATE TABLE assay_decisions (
    decision_id       text COLLATE "C" NOT NULL,
    project_id        text NOT NULL,
    flag              text NOT NULL,
    subject           text NOT NULL,
    value             jsonb,
    variant           text,
    rule              text,
    reason            text NOT NULL,
    experiment        text,
    experiment_reason text,
    in_experiment     boolean NOT NULL,
    hash_value        text,
    flag_revision     integer NOT NULL,
    snapshot_version  integer NOT NULL,
    decided_at        timestamptz NOT NULL,
    PRIMARY KEY (decision_id, decided_at)
) PARTITION BY RANGE (decided_at);
CREATE TABLE assay_decisions_default PARTITION OF assay_decisions DEFAULT;
CREATE INDEX assay_decisions_experiment ON assay_decisions (project_id, experiment, subject)
    WHERE in_experiment;

SELECT assay_create_day_partition('assay_decisions', day)
FROM (
    SELECT DISTINCT (decided_at AT TIME ZONE 'UTC')::date AS day
    FROM assay_decisions_unpartitioned
    UNION
    SELECT (now() AT TIME ZONE 'UTC')::date
) days
ORDER BY day;

INSERT INTO assay_decisions SELECT * FROM assay_decisions_unpartitioned;
DROP TABLE assay_decisions_unpartitioned;

-- --- event ids ----------------------------------------------------------------------------

-- An event's id is kept with its event's timestamp's UTC day (``day``, days since
-- 1970-01-01), and the key is (event_key, day): a re-delivered event carries its
-- timestamp, so it meets its first delivery's key in the same partition, whichever day it
-- arrives on. Partitions hold a week of days each; one can go once no event of its days
-- can be accepted any more (older than ``event_max_age_days``).
--
-- Ids recorded before this migration have no day: they are kept under day 0, in a
-- partition of their own that ingestion probes beside the event's day, and that is
-- emptied (not dropped, so the probe stays one of an empty index) once every event that
-- could repeat them is too old to be accepted.
ALTER TABLE assay_event_ids RENAME TO assay_event_ids_unpartitioned;
ALTER INDEX assay_event_ids_pkey RENAME TO assay_event_ids_unpartitioned_pkey;

CREATE TABLE assay_event_ids (
    event_key  text COLLATE "C" NOT NULL,
    day        integer NOT NULL,
    PRIMARY KEY (event_key, day)
) PARTITION BY RANGE (day);
CREATE TABLE assay_event_ids_default PARTITION OF assay_event_ids DEFAULT;
CREATE TABLE assay_event_ids_legacy PARTITION OF assay_event_ids FOR VALUES FROM (MINVALUE) TO (1);

INSERT INTO assay_event_ids_legacy (event_key, day)
SELECT event_key, 0 FROM assay_event_ids_unpartitioned ORDER BY event_key;
DROP TABLE assay_event_ids_unpartitioned;
INSERT INTO assay_retention_marks (name, at) VALUES ('event_ids_legacy_since', now());

-- Event ids are partitioned by weeks (blocks of seven days from 1970-01-01; see
-- EVENT_ID_PARTITION_DAYS in engine/_retention.py): this week's partition.
SELECT assay_create_day_partition('assay_event_ids', date '1970-01-01' + (d - d % 7), 7)
FROM (SELECT (now() AT TIME ZONE 'UTC')::date - date '1970-01-01' AS d) today;
