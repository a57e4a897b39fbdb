-- Console sessions, kept in the database so every process serving it knows who is signed
-- in (before, each process kept its own, and another worker asked people to sign in again).
--
-- A row is named by the SHA-256 digest of the random id the browser's cookie holds, never
-- by the id itself; it names its API key by id (the key's secret is never kept). Deleting
-- a key deletes its sessions.

CREATE TABLE assay_console_sessions (
    token_hash  text COLLATE "C" PRIMARY KEY,
    key_id      text COLLATE "C" NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
    csrf        text NOT NULL,
    created_at  timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL
);

-- The purge of expired sessions at each sign-in.
CREATE INDEX assay_console_sessions_expiry ON assay_console_sessions (expires_at);
