-- The planned verdict's looks (engine/_planned_verdict.py): one row per look an
-- experiment's report took, at most once per index (two reports racing for a look keep
-- the first), so every process computes later boundaries from the same history.
CREATE TABLE assay_planned_looks (
    experiment_id  text NOT NULL,
    look           integer NOT NULL,
    taken_at       timestamptz NOT NULL,
    body           jsonb NOT NULL,
    PRIMARY KEY (experiment_id, look)
);
