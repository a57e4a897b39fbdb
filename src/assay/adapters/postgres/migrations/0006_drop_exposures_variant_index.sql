-- assay_exposures_variant (0002) is dropped: no query reads it. Per-variant counts join the
-- crossovers by subject and read exposed_at, which that index does not hold, so they read
-- the table's rows through the primary key (experiment_id, subject) anyway, and reports
-- read the hourly rollups of 0004. Maintaining it cost every recorded exposure an index
-- insertion, about a tenth of PostgreSQL's work per ingested event.
DROP INDEX IF EXISTS assay_exposures_variant;
