-- SDK connections (GrowthBook's SDK protocol, docs/sdk.md): one row each, the whole
-- msgspec-encoded connection in body, the columns beside it for lookup and optimistic
-- concurrency. The client key is public and unique; the decryption key lives in the body
-- (the server encrypts with it, and SDKs are given it).
CREATE TABLE sdk_connections (
    id          text COLLATE "C" PRIMARY KEY,
    project_id  text NOT NULL,
    client_key  text COLLATE "C" NOT NULL UNIQUE,
    revision    integer NOT NULL,
    body        jsonb NOT NULL,
    revoked_at  timestamptz NULL
);

CREATE INDEX sdk_connections_project ON sdk_connections (project_id, id);

-- Every process serves its active connections from its snapshot: a change is announced on
-- the configuration channel like any other configuration change.
CREATE TRIGGER sdk_connections_notify
    AFTER INSERT OR UPDATE OR DELETE ON sdk_connections
    FOR EACH ROW EXECUTE FUNCTION assay_notify_config();
