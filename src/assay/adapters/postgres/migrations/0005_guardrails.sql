-- Guardrail triggers and the notification outbox.

-- A breach, recorded once per (experiment, check, experiment revision): a breach that
-- persists is not re-triggered on every check, and the unique key makes concurrent checks
-- in several processes record it once.
CREATE TABLE assay_guardrail_triggers (
    id                   text COLLATE "C" PRIMARY KEY,
    project_id           text NOT NULL,
    experiment_id        text COLLATE "C" NOT NULL,
    experiment_key       text NOT NULL,
    experiment_revision  integer NOT NULL,
    check_key            text COLLATE "C" NOT NULL,
    kind                 text NOT NULL,
    metric_key           text NULL,
    variant              text NULL,
    observed             double precision NULL,
    ci_low               double precision NULL,
    ci_high              double precision NULL,
    threshold            double precision NOT NULL,
    threshold_type       text NULL,
    harmful_direction    text NULL,
    statistic            double precision NULL,
    units                jsonb NOT NULL,
    message              text NOT NULL,
    action               text NOT NULL,
    -- pending, acting (claimed by a process until lease_until), done, skipped, failed
    action_status        text NOT NULL,
    action_result        text NULL,
    lease_until          timestamptz NULL,
    triggered_at         timestamptz NOT NULL,
    acted_at             timestamptz NULL,
    UNIQUE (experiment_id, check_key, experiment_revision)
);
CREATE INDEX assay_guardrail_triggers_experiment
    ON assay_guardrail_triggers (experiment_id, id DESC);
-- The leader sweeps actions left unfinished (a crash between recording and acting).
CREATE INDEX assay_guardrail_triggers_unsettled
    ON assay_guardrail_triggers (id) WHERE action_status IN ('pending', 'acting');

-- The outbox: one row per notification to one channel, inserted in the trigger's own
-- transaction, so a trigger is never recorded without its notifications (nor the reverse).
-- Delivered at least once: a row stays due until a delivery succeeds; ``id`` is in the
-- payload for receivers to de-duplicate on.
CREATE TABLE assay_guardrail_outbox (
    id               text COLLATE "C" PRIMARY KEY,
    trigger_id       text COLLATE "C" NOT NULL REFERENCES assay_guardrail_triggers (id),
    project_id       text NOT NULL,
    experiment_id    text COLLATE "C" NOT NULL,
    channel          jsonb NOT NULL,
    payload          jsonb NOT NULL,
    created_at       timestamptz NOT NULL,
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL,
    delivered_at     timestamptz NULL,
    last_error       text NULL
);
CREATE INDEX assay_guardrail_outbox_experiment ON assay_guardrail_outbox (experiment_id, id DESC);
CREATE INDEX assay_guardrail_outbox_due
    ON assay_guardrail_outbox (next_attempt_at) WHERE delivered_at IS NULL;
