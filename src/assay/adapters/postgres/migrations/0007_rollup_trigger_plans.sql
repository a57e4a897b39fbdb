-- The rollup triggers of 0004 plan their queries with PostgreSQL's defaults again.
--
-- They run inside the ingestion transaction, which turns nested loops and sequential scans
-- off for its own batch statements (adapters/postgres/_events.py explains why). Those
-- settings reached the triggers' queries too, and there they are exactly wrong: joining a
-- statement's few rows to the big event tables by index probes needs a nested loop, so the
-- plans hashed or merged the whole of assay_exposures (or assay_report_unexposed) instead.
-- Once an experiment had a rollup (after its first report), 1,000 conversions took 26 s to
-- ingest at 200,000 exposures, against 13 ms with the defaults, and grew with the table.
-- A function's own SET applies while it runs and is restored when it returns.
--
-- Second, the joins of a statement's rows to the event tables are written as LATERAL
-- subqueries behind an OFFSET 0 fence. Joined plainly, the planner may probe
-- assay_exposures (or assay_conversions) with the experiment alone, taken from the rollup
-- row it joins through, and filter the subject afterwards: every row of the experiment
-- read for every row of the batch. It did so whenever the table's statistics were older
-- than its contents (any busy experiment): 225 ms per batch of conversions at 10,000
-- exposures, growing with them; 5 ms with the fence. The functions are otherwise as in
-- 0004.

CREATE OR REPLACE FUNCTION assay_report_conversions_added() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM new_rows n JOIN assay_report_rollups r USING (experiment_id, metric_key)
    ) THEN
        RETURN NULL;
    END IF;
    PERFORM pg_advisory_xact_lock_shared(assay_report_lock_class(), hashtext(experiment_id))
    FROM (
        SELECT DISTINCT n.experiment_id
        FROM new_rows n JOIN assay_report_rollups r USING (experiment_id, metric_key)
        ORDER BY 1
    ) locked;
    -- Read the rollups again under the lock: a rebuild may have committed meanwhile.
    INSERT INTO assay_report_unexposed (experiment_id, subject)
    SELECT DISTINCT n.experiment_id, n.subject
    FROM new_rows n JOIN assay_report_rollups r USING (experiment_id, metric_key)
    WHERE NOT EXISTS (
        SELECT 1 FROM assay_exposures e
        WHERE e.experiment_id = n.experiment_id AND e.subject = n.subject
    )
    ORDER BY 1, 2
    ON CONFLICT DO NOTHING;
    -- A crossover of one of these subjects committed by another transaction while this one
    -- runs would miss the rows inserted below (it deletes what it can see). Its trigger
    -- locks the subject's exposure FOR UPDATE, so this lock orders the two, and the next
    -- statement, with a fresh snapshot, sees any crossover committed before it.
    PERFORM 1 FROM assay_exposures e
    JOIN (
        SELECT DISTINCT n.experiment_id, n.subject
        FROM new_rows n JOIN assay_report_rollups r USING (experiment_id, metric_key)
    ) b ON e.experiment_id = b.experiment_id AND e.subject = b.subject
    ORDER BY e.experiment_id, e.subject
    FOR KEY SHARE OF e;
    INSERT INTO assay_report_subjects AS s
    SELECT experiment_id, metric_key, subject, variant, exposed_at,
        count(*) FILTER (WHERE k = 1), coalesce(sum(value) FILTER (WHERE k = 1), 0),
        count(*) FILTER (WHERE k = 2), coalesce(sum(value) FILTER (WHERE k = 2), 0)
    FROM (
        SELECT n.experiment_id, n.metric_key, n.subject, n.value, e.variant, e.exposed_at,
            assay_report_class(n.converted_at, e.exposed_at, r.window_hours, r.pre_hours,
                               r.until) AS k
        FROM new_rows n
        JOIN assay_report_rollups r USING (experiment_id, metric_key)
        CROSS JOIN LATERAL (
            SELECT e.variant, e.exposed_at FROM assay_exposures e
            WHERE e.experiment_id = n.experiment_id AND e.subject = n.subject
            OFFSET 0  -- a fence: planned apart, probing the primary key with both columns
        ) e
        WHERE NOT EXISTS (
            SELECT 1 FROM assay_crossovers x
            WHERE x.experiment_id = n.experiment_id AND x.subject = n.subject
        )
    ) c
    WHERE k > 0
    GROUP BY experiment_id, metric_key, subject, variant, exposed_at
    ORDER BY experiment_id, metric_key, subject
    ON CONFLICT (experiment_id, metric_key, subject) DO UPDATE SET
        post_count = s.post_count + excluded.post_count,
        post_sum = s.post_sum + excluded.post_sum,
        pre_count = s.pre_count + excluded.pre_count,
        pre_sum = s.pre_sum + excluded.pre_sum;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION assay_report_exposures_added() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO assay_report_exposure_hours
    SELECT experiment_id, variant, date_trunc('hour', exposed_at, 'UTC'), count(*), 0
    FROM new_rows
    GROUP BY 1, 2, 3;
    IF NOT EXISTS (
        SELECT 1 FROM new_rows n JOIN assay_report_unexposed u USING (experiment_id, subject)
    ) THEN
        RETURN NULL;
    END IF;
    PERFORM pg_advisory_xact_lock_shared(assay_report_lock_class(), hashtext(experiment_id))
    FROM (
        SELECT DISTINCT n.experiment_id
        FROM new_rows n JOIN assay_report_unexposed u USING (experiment_id, subject)
        ORDER BY 1
    ) locked;
    WITH claimed AS (
        DELETE FROM assay_report_unexposed u USING new_rows n
        WHERE u.experiment_id = n.experiment_id AND u.subject = n.subject
        RETURNING u.experiment_id, u.subject
    )
    INSERT INTO assay_report_subjects AS s
    SELECT experiment_id, metric_key, subject, variant, exposed_at,
        count(*) FILTER (WHERE k = 1), coalesce(sum(value) FILTER (WHERE k = 1), 0),
        count(*) FILTER (WHERE k = 2), coalesce(sum(value) FILTER (WHERE k = 2), 0)
    FROM (
        SELECT c.experiment_id, r.metric_key, c.subject, v.value, n.variant, n.exposed_at,
            assay_report_class(v.converted_at, n.exposed_at, r.window_hours, r.pre_hours,
                               r.until) AS k
        FROM claimed c
        JOIN new_rows n ON n.experiment_id = c.experiment_id AND n.subject = c.subject
        JOIN assay_report_rollups r ON r.experiment_id = c.experiment_id
        CROSS JOIN LATERAL (
            SELECT v.value, v.converted_at FROM assay_conversions v
            WHERE v.experiment_id = c.experiment_id AND v.metric_key = r.metric_key
                AND v.subject = c.subject
            OFFSET 0  -- a fence, as in assay_report_conversions_added
        ) v
    ) w
    WHERE k > 0
    GROUP BY experiment_id, metric_key, subject, variant, exposed_at
    ORDER BY experiment_id, metric_key, subject
    ON CONFLICT (experiment_id, metric_key, subject) DO UPDATE SET
        post_count = s.post_count + excluded.post_count,
        post_sum = s.post_sum + excluded.post_sum,
        pre_count = s.pre_count + excluded.pre_count,
        pre_sum = s.pre_sum + excluded.pre_sum;
    RETURN NULL;
END
$$;

ALTER FUNCTION assay_report_subjects_changed() SET enable_nestloop = on;
ALTER FUNCTION assay_report_subjects_changed() SET enable_seqscan = on;
ALTER FUNCTION assay_report_conversions_added() SET enable_nestloop = on;
ALTER FUNCTION assay_report_conversions_added() SET enable_seqscan = on;
ALTER FUNCTION assay_report_exposures_added() SET enable_nestloop = on;
ALTER FUNCTION assay_report_exposures_added() SET enable_seqscan = on;
ALTER FUNCTION assay_report_crossovers_added() SET enable_nestloop = on;
ALTER FUNCTION assay_report_crossovers_added() SET enable_seqscan = on;
