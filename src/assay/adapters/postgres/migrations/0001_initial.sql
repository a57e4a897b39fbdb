-- Configuration objects (projects, flags, experiments, layers, metrics), one row each.
-- The body is the whole msgspec-encoded object; the columns beside it exist for lookup,
-- ordering and optimistic concurrency. Keys sort bytewise (COLLATE "C"), as in Python.
CREATE TABLE config_objects (
    id          text PRIMARY KEY,
    kind        text NOT NULL,
    project_id  text NULL,
    key         text COLLATE "C" NOT NULL,
    revision    integer NOT NULL,
    body        jsonb NOT NULL,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL
);

-- One key per kind and project; projects themselves have no project (NULL -> '').
CREATE UNIQUE INDEX config_objects_natural_key
    ON config_objects (kind, coalesce(project_id, ''), key);

-- Every process that caches configuration LISTENs on assay_config. Notifications are sent
-- at commit only (never for a rolled-back transaction), and identical ones within one
-- transaction are collapsed into one.
CREATE FUNCTION assay_notify_config() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('assay_config', '');
    RETURN NULL;
END
$$;

CREATE TRIGGER config_objects_notify
    AFTER INSERT OR UPDATE OR DELETE ON config_objects
    FOR EACH ROW EXECUTE FUNCTION assay_notify_config();

-- Who changed what, when, with the object before and after.
CREATE TABLE audit_log (
    id             bigserial PRIMARY KEY,
    project_id     text NULL,
    actor          text NOT NULL,
    at             timestamptz NOT NULL,
    action         text NOT NULL,
    resource_kind  text NOT NULL,
    resource_id    text NOT NULL,
    resource_key   text NOT NULL,
    before         jsonb NULL,
    after          jsonb NULL
);

CREATE INDEX audit_log_resource
    ON audit_log (project_id, resource_kind, resource_key, id DESC);
CREATE INDEX audit_log_project ON audit_log (project_id, id DESC);

-- API keys: only the SHA-256 digest of the secret is kept.
CREATE TABLE api_keys (
    id           text COLLATE "C" PRIMARY KEY,
    name         text NOT NULL,
    role         text NOT NULL,
    project_id   text NULL,
    prefix       text NOT NULL,
    secret_hash  text NOT NULL UNIQUE,
    created_at   timestamptz NOT NULL,
    created_by   text NULL,
    revoked_at   timestamptz NULL
);

CREATE INDEX api_keys_project ON api_keys (project_id, id);
