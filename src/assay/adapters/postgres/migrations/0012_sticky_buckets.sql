-- Sticky bucketing: one document per (project, hash attribute, attribute value), mapping
-- '<experiment key>__<bucket version>' to the assigned variant's key, as GrowthBook keeps
-- them. Read in batches by key; written by merging, the first assignment of a key winning.
CREATE TABLE assay_sticky_buckets (
    project_id  text NOT NULL,
    attribute   text NOT NULL,
    value       text NOT NULL,
    assignments jsonb NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, attribute, value)
);
