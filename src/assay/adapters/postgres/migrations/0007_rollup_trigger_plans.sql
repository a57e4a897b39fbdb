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
ALTER FUNCTION assay_report_subjects_changed() SET enable_nestloop = on;
ALTER FUNCTION assay_report_subjects_changed() SET enable_seqscan = on;
ALTER FUNCTION assay_report_conversions_added() SET enable_nestloop = on;
ALTER FUNCTION assay_report_conversions_added() SET enable_seqscan = on;
ALTER FUNCTION assay_report_exposures_added() SET enable_nestloop = on;
ALTER FUNCTION assay_report_exposures_added() SET enable_seqscan = on;
ALTER FUNCTION assay_report_crossovers_added() SET enable_nestloop = on;
ALTER FUNCTION assay_report_crossovers_added() SET enable_seqscan = on;
