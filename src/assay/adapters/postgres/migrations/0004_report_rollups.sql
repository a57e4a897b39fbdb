-- Report rollups: what makes a report cost O(hours), not O(events).
--
-- Two levels, both kept up to date by statement-level triggers on the event tables of
-- migration 0002, so every ingestion transaction updates them in its own commit:
--
-- 1. assay_report_subjects: per (experiment, metric, analysed subject) the subject's
--    conversion count and value sum inside the metric's attribution window ("post") and
--    inside the CUPED pre-exposure window ("pre"), with the subject's variant and first
--    exposure. Only subjects with such a conversion have a row. Percentile and ratio
--    metrics read it, and reports read it for the partial hours at a period's edges.
-- 2. assay_report_exposure_hours / assay_report_metric_hours: per first-exposure hour and
--    variant, exposed and crossover subjects, and the sums (and sums of squares and
--    products) of level 1's values. Append-only deltas: writers never update a shared row,
--    so concurrent ingestion does not queue on hot rows; reports compact them.
--
-- Level 1 depends on each metric's attribution (window, CUPED days, experiment end), which
-- can change after the fact. assay_report_rollups records, per (experiment, metric), the
-- attribution a rollup was built with; the triggers maintain only rollups listed there,
-- and a report whose metric's attribution differs rebuilds that rollup first. A rebuild
-- holds an exclusive advisory lock on the experiment and every trigger a shared one, so a
-- rebuild never interleaves with maintenance of the same experiment.

CREATE TABLE assay_report_rollups (
    experiment_id  text COLLATE "C" NOT NULL,
    metric_key     text COLLATE "C" NOT NULL,
    window_hours   integer NULL,
    pre_hours      integer NULL,
    until          timestamptz NULL,
    PRIMARY KEY (experiment_id, metric_key)
);

CREATE TABLE assay_report_subjects (
    experiment_id  text COLLATE "C" NOT NULL,
    metric_key     text COLLATE "C" NOT NULL,
    subject        text COLLATE "C" NOT NULL,
    variant        text COLLATE "C" NOT NULL,
    exposed_at     timestamptz NOT NULL,
    post_count     bigint NOT NULL,
    post_sum       double precision NOT NULL,
    pre_count      bigint NOT NULL,
    pre_sum        double precision NOT NULL,
    PRIMARY KEY (experiment_id, metric_key, subject)
);
-- The partial hours at a period's edges are read by first exposure.
CREATE INDEX assay_report_subjects_exposed
    ON assay_report_subjects (experiment_id, metric_key, exposed_at);

CREATE TABLE assay_report_exposure_hours (
    experiment_id  text COLLATE "C" NOT NULL,
    variant        text COLLATE "C" NOT NULL,
    hour           timestamptz NOT NULL,
    exposed        bigint NOT NULL,
    crossed        bigint NOT NULL
);
CREATE INDEX assay_report_exposure_hours_key ON assay_report_exposure_hours (experiment_id, hour);

CREATE TABLE assay_report_metric_hours (
    experiment_id  text COLLATE "C" NOT NULL,
    metric_key     text COLLATE "C" NOT NULL,
    variant        text COLLATE "C" NOT NULL,
    hour           timestamptz NOT NULL,
    n_post         double precision NOT NULL,
    s_count        double precision NOT NULL,
    ss_count       double precision NOT NULL,
    s_sum          double precision NOT NULL,
    ss_sum         double precision NOT NULL,
    n_pre          double precision NOT NULL,
    s_pre_count    double precision NOT NULL,
    ss_pre_count   double precision NOT NULL,
    s_pre_sum      double precision NOT NULL,
    ss_pre_sum     double precision NOT NULL,
    x_ind          double precision NOT NULL,
    x_count        double precision NOT NULL,
    x_sum          double precision NOT NULL
);
CREATE INDEX assay_report_metric_hours_key
    ON assay_report_metric_hours (experiment_id, metric_key, hour);

-- Subjects with a stored conversion of a rolled-up metric but no exposure yet (metrics
-- that do not require exposure): their conversions are attributed when the exposure lands.
CREATE TABLE assay_report_unexposed (
    experiment_id  text COLLATE "C" NOT NULL,
    subject        text COLLATE "C" NOT NULL,
    PRIMARY KEY (experiment_id, subject)
);

-- Exposures at a period's edges, by first exposure.
CREATE INDEX assay_exposures_exposed_at ON assay_exposures (experiment_id, exposed_at);

-- 1: inside the attribution window; 2: inside the CUPED pre-exposure window; 0: neither.
-- The memory store applies the same rule (adapters/memory/_reports.py: classify).
CREATE FUNCTION assay_report_class(
    at timestamptz, exposed_at timestamptz, window_hours integer, pre_hours integer,
    until timestamptz
) RETURNS integer LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN at >= exposed_at THEN
            CASE WHEN (until IS NULL OR at <= until)
                AND (window_hours IS NULL OR at <= exposed_at + make_interval(hours => window_hours))
            THEN 1 ELSE 0 END
        WHEN pre_hours IS NOT NULL AND at >= exposed_at - make_interval(hours => pre_hours) THEN 2
        ELSE 0
    END
$$;

-- What one level-1 row contributes to the hourly sums (totals in _metric_kinds.py).
CREATE VIEW assay_report_contributions AS
SELECT experiment_id, metric_key, subject, variant, exposed_at,
    (post_count > 0)::int::float8 AS n_post,
    post_count::float8 AS s_count,
    (post_count * post_count)::float8 AS ss_count,
    post_sum AS s_sum,
    post_sum * post_sum AS ss_sum,
    (pre_count > 0)::int::float8 AS n_pre,
    pre_count::float8 AS s_pre_count,
    (pre_count * pre_count)::float8 AS ss_pre_count,
    pre_sum AS s_pre_sum,
    pre_sum * pre_sum AS ss_pre_sum,
    ((post_count > 0) AND (pre_count > 0))::int::float8 AS x_ind,
    (post_count * pre_count)::float8 AS x_count,
    post_sum * pre_sum AS x_sum
FROM assay_report_subjects;

-- Lock class of the per-experiment advisory locks (the second key is hashtext(experiment)).
CREATE FUNCTION assay_report_lock_class() RETURNS integer LANGUAGE sql IMMUTABLE AS
$$ SELECT 1634956146 $$;  -- "assr"

-- Level 1 -> level 2: every change to assay_report_subjects appends its hourly delta.
-- One function for the three triggers; the rows come from the transition tables the
-- trigger has (EXECUTE sees them too), so the contribution is written once, above.
CREATE FUNCTION assay_report_subjects_changed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    source text;
    contribution text := $c$
        sign * (post_count > 0)::int::float8 AS n_post,
        sign * post_count::float8 AS s_count,
        sign * (post_count * post_count)::float8 AS ss_count,
        sign * post_sum AS s_sum,
        sign * post_sum * post_sum AS ss_sum,
        sign * (pre_count > 0)::int::float8 AS n_pre,
        sign * pre_count::float8 AS s_pre_count,
        sign * (pre_count * pre_count)::float8 AS ss_pre_count,
        sign * pre_sum AS s_pre_sum,
        sign * pre_sum * pre_sum AS ss_pre_sum,
        sign * ((post_count > 0) AND (pre_count > 0))::int::float8 AS x_ind,
        sign * (post_count * pre_count)::float8 AS x_count,
        sign * post_sum * pre_sum AS x_sum
    $c$;
BEGIN
    -- A rebuild deletes a rollup's hours itself; deltas for its deletions would be wrong.
    IF TG_OP = 'DELETE' AND current_setting('assay.report_rebuild', true) = 'on' THEN
        RETURN NULL;
    END IF;
    source := CASE TG_OP
        WHEN 'INSERT' THEN 'SELECT 1.0::float8 AS sign, * FROM new_rows'
        WHEN 'UPDATE' THEN 'SELECT 1.0::float8 AS sign, * FROM new_rows '
                        || 'UNION ALL SELECT -1.0::float8, * FROM old_rows'
        ELSE 'SELECT -1.0::float8 AS sign, * FROM old_rows'
    END;
    EXECUTE format($q$
        INSERT INTO assay_report_metric_hours
        SELECT experiment_id, metric_key, variant, date_trunc('hour', exposed_at, 'UTC'),
            sum(n_post), sum(s_count), sum(ss_count), sum(s_sum), sum(ss_sum), sum(n_pre),
            sum(s_pre_count), sum(ss_pre_count), sum(s_pre_sum), sum(ss_pre_sum),
            sum(x_ind), sum(x_count), sum(x_sum)
        FROM (SELECT experiment_id, metric_key, variant, exposed_at, %s FROM (%s) s) d
        GROUP BY 1, 2, 3, 4
    $q$, contribution, source);
    RETURN NULL;
END
$$;

CREATE TRIGGER assay_report_subjects_inserted
    AFTER INSERT ON assay_report_subjects REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION assay_report_subjects_changed();
CREATE TRIGGER assay_report_subjects_updated
    AFTER UPDATE ON assay_report_subjects REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION assay_report_subjects_changed();
CREATE TRIGGER assay_report_subjects_deleted
    AFTER DELETE ON assay_report_subjects REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION assay_report_subjects_changed();

-- New conversions of rolled-up metrics -> level 1.
CREATE FUNCTION assay_report_conversions_added() RETURNS trigger LANGUAGE plpgsql AS $$
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
        JOIN assay_exposures e ON e.experiment_id = n.experiment_id AND e.subject = n.subject
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

CREATE TRIGGER assay_report_conversions_inserted
    AFTER INSERT ON assay_conversions REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION assay_report_conversions_added();

-- New first exposures -> exposure hours, and the conversions that waited for them.
CREATE FUNCTION assay_report_exposures_added() RETURNS trigger LANGUAGE plpgsql AS $$
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
        JOIN assay_conversions v ON v.experiment_id = c.experiment_id
            AND v.metric_key = r.metric_key AND v.subject = c.subject
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

CREATE TRIGGER assay_report_exposures_inserted
    AFTER INSERT ON assay_exposures REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION assay_report_exposures_added();

-- New crossover subjects leave the analysis: counted as crossed in their first exposure's
-- hour, and their level-1 rows (so their sums) removed.
CREATE FUNCTION assay_report_crossovers_added() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    CREATE TEMP TABLE IF NOT EXISTS assay_report_crossed (
        experiment_id text COLLATE "C", subject text COLLATE "C"
    ) ON COMMIT DELETE ROWS;
    TRUNCATE assay_report_crossed;
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
        USING assay_report_crossed c JOIN assay_report_rollups r USING (experiment_id)
        WHERE s.experiment_id = c.experiment_id AND s.metric_key = r.metric_key
            AND s.subject = c.subject;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER assay_report_crossovers_inserted
    AFTER INSERT ON assay_crossovers REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION assay_report_crossovers_added();

-- Exposures recorded before this migration.
INSERT INTO assay_report_exposure_hours
SELECT e.experiment_id, e.variant, date_trunc('hour', e.exposed_at, 'UTC'),
    count(*), count(*) FILTER (WHERE EXISTS (
        SELECT 1 FROM assay_crossovers x
        WHERE x.experiment_id = e.experiment_id AND x.subject = e.subject
    ))
FROM assay_exposures e
GROUP BY 1, 2, 3;
