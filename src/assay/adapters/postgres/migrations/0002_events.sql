-- Exposures and conversions. Every de-duplication rule is a unique key here, so it holds
-- across processes and machines, not only within one engine. Keys sort bytewise (C).

-- Every event_id seen, per project: a second event with a known id is a duplicate,
-- whatever its kind, and whether the first is now an exposure, a conversion or pending.
CREATE TABLE assay_event_ids (
    project_id  text COLLATE "C" NOT NULL,
    event_id    text COLLATE "C" NOT NULL,
    PRIMARY KEY (project_id, event_id)
);

-- First exposure wins: one row per (experiment, subject), holding the first variant.
CREATE TABLE assay_exposures (
    experiment_id  text COLLATE "C" NOT NULL,
    subject        text COLLATE "C" NOT NULL,
    variant        text COLLATE "C" NOT NULL,
    exposed_at     timestamptz NOT NULL,
    PRIMARY KEY (experiment_id, subject)
);
-- Per-variant counts (reports, SRM) read this index only.
CREATE INDEX assay_exposures_variant ON assay_exposures (experiment_id, variant);

-- A subject exposed to a variant other than its first: kept, counted, and excluded from
-- analysis. One row per extra variant.
CREATE TABLE assay_crossovers (
    experiment_id  text COLLATE "C" NOT NULL,
    subject        text COLLATE "C" NOT NULL,
    variant        text COLLATE "C" NOT NULL,
    seen_at        timestamptz NOT NULL,
    PRIMARY KEY (experiment_id, subject, variant)
);

-- Conversions that count (or would, within their metric's attribution window, which is
-- applied when reading: the window may change after the fact).
CREATE TABLE assay_conversions (
    experiment_id    text COLLATE "C" NOT NULL,
    metric_key       text COLLATE "C" NOT NULL,
    subject          text COLLATE "C" NOT NULL,
    value            double precision NOT NULL DEFAULT 1,
    converted_at     timestamptz NOT NULL,
    idempotency_key  text COLLATE "C" NULL
);
-- Reports join conversions to exposures per metric and subject.
CREATE INDEX assay_conversions_metric_subject
    ON assay_conversions (experiment_id, metric_key, subject);

-- Idempotency keys, unique per experiment, in their own table: a key must stay taken
-- whether its conversion is pending or attributed (moving between the two tables).
CREATE TABLE assay_conversion_keys (
    experiment_id    text COLLATE "C" NOT NULL,
    idempotency_key  text COLLATE "C" NOT NULL,
    PRIMARY KEY (experiment_id, idempotency_key)
);

-- Conversions waiting for their subject's exposure. Promoted into assay_conversions in
-- the transaction that records the exposure; deleted once expired.
CREATE TABLE assay_pending_conversions (
    experiment_id    text COLLATE "C" NOT NULL,
    metric_key       text COLLATE "C" NOT NULL,
    subject          text COLLATE "C" NOT NULL,
    value            double precision NOT NULL DEFAULT 1,
    converted_at     timestamptz NOT NULL,
    idempotency_key  text COLLATE "C" NULL,
    expires_at       timestamptz NOT NULL
);
CREATE INDEX assay_pending_conversions_subject
    ON assay_pending_conversions (experiment_id, subject);
CREATE INDEX assay_pending_conversions_expiry ON assay_pending_conversions (expires_at);
