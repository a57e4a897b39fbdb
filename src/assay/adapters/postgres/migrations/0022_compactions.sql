-- Compaction of ended experiments' raw events (engine/_compaction.py, docs/retention.md).
--
-- Once an experiment has ended raw_event_retention_days ago, its rows in assay_exposures,
-- assay_crossovers, assay_conversions and assay_conversion_keys go. Its report is then
-- read from the rollups of migration 0004, which stay, and from what is kept here:
--
-- - assay_compactions: one row per compacted experiment: when, the cuts recorded below,
--   the raw rows removed, and its ingestion counts as they were (msgspec JSON of
--   IngestionCounts: GET .../ingestion answers them, with the live pending count).
-- - assay_compacted_cuts: per cut (the experiment's start and end) and variant, the
--   exposures between the cut's hour and the cut: a report whose period edge is a cut
--   reads its partial hour from here, as it read it from assay_exposures before.

CREATE TABLE assay_compactions (
    experiment_id  text COLLATE "C" PRIMARY KEY,
    compacted_at   timestamptz NOT NULL,
    cuts           timestamptz[] NOT NULL,
    raw_rows       bigint NOT NULL,
    ingestion      jsonb NOT NULL
);

CREATE TABLE assay_compacted_cuts (
    experiment_id  text COLLATE "C" NOT NULL,
    cut            timestamptz NOT NULL,
    variant        text COLLATE "C" NOT NULL,
    exposed        bigint NOT NULL,
    crossed        bigint NOT NULL,
    PRIMARY KEY (experiment_id, cut, variant)
);
