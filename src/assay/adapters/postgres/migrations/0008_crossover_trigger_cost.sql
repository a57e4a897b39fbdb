-- The crossover rollup trigger of 0004 costs nothing when a statement adds no crossover.
--
-- A statement-level AFTER INSERT trigger fires even when the statement inserted no row,
-- and every ingestion transaction runs one INSERT into assay_crossovers, which almost
-- always inserts nothing. The function then still created its temporary table (a catalog
-- look-up) and TRUNCATEd it: truncating gives the table a new file, created now and the
-- old one unlinked at commit. That came to about 1 ms of PostgreSQL CPU per ingestion
-- transaction, some 5% of the work of a 2,000-event one. It now returns at once when the
-- statement inserted nothing, and empties the table with DELETE (a few rows; the table is
-- emptied at commit anyway).
--
-- Its DELETE of the crossed subjects' assay_report_subjects rows also probes that table
-- with the whole key, through a LATERAL subquery behind an OFFSET 0 fence, as 0007 did
-- for the other triggers: joined plainly, the planner may probe with the experiment
-- alone (taken from the rollup row) and filter the subjects afterwards. The function is
-- otherwise as in 0004; 0007's planner settings stay attached to it.

CREATE OR REPLACE FUNCTION assay_report_crossovers_added() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM new_rows) THEN
        RETURN NULL;
    END IF;
    CREATE TEMP TABLE IF NOT EXISTS assay_report_crossed (
        experiment_id text COLLATE "C", subject text COLLATE "C"
    ) ON COMMIT DELETE ROWS;
    DELETE FROM assay_report_crossed;
    -- Newly crossed: every crossover row of the subject is in this statement.
    INSERT INTO assay_report_crossed
    SELECT b.experiment_id, b.subject
    FROM (SELECT experiment_id, subject, count(*) AS k FROM new_rows GROUP BY 1, 2) b
    WHERE (
        SELECT count(*) FROM assay_crossovers x
        WHERE x.experiment_id = b.experiment_id AND x.subject = b.subject
    ) = b.k;
    INSERT INTO assay_report_exposure_hours
    SELECT e.experiment_id, e.variant, date_trunc('hour', e.exposed_at, 'UTC'), 0, count(*)
    FROM assay_report_crossed c
    JOIN assay_exposures e ON e.experiment_id = c.experiment_id AND e.subject = c.subject
    GROUP BY 1, 2, 3;
    IF EXISTS (
        SELECT 1 FROM assay_report_crossed c JOIN assay_report_rollups r USING (experiment_id)
    ) THEN
        PERFORM pg_advisory_xact_lock_shared(assay_report_lock_class(), hashtext(experiment_id))
        FROM (SELECT DISTINCT experiment_id FROM assay_report_crossed ORDER BY 1) locked;
        -- Waits for conversion triggers of these subjects still running elsewhere (they
        -- hold FOR KEY SHARE), so the delete below sees the rows they inserted.
        PERFORM 1 FROM assay_exposures e
        JOIN assay_report_crossed c USING (experiment_id, subject)
        ORDER BY e.experiment_id, e.subject
        FOR UPDATE OF e;
        DELETE FROM assay_report_subjects s
        WHERE s.ctid = ANY (ARRAY(
            SELECT l.ctid
            FROM assay_report_crossed c
            JOIN assay_report_rollups r USING (experiment_id)
            CROSS JOIN LATERAL (
                SELECT t.ctid FROM assay_report_subjects t
                WHERE t.experiment_id = c.experiment_id AND t.metric_key = r.metric_key
                    AND t.subject = c.subject
                OFFSET 0  -- a fence: planned apart, probing the primary key with all three
            ) l
        ));
    END IF;
    RETURN NULL;
END
$$;
