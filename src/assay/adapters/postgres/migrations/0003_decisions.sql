-- Decision records: one row per decision_id returned, written in batches (COPY).
CREATE TABLE assay_decisions (
    decision_id       text PRIMARY KEY,
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
    decided_at        timestamptz NOT NULL
);

-- Looking up who was assigned what in an experiment (reports, audits of assignment).
CREATE INDEX assay_decisions_experiment ON assay_decisions (project_id, experiment, subject)
    WHERE in_experiment;
