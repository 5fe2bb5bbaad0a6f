-- Browser sessions of the web console: a session is made from an API token and stands for
-- it (`token_sha256`), so revoking the token ends its sessions. Only hashes are kept.
CREATE TABLE console_sessions (
    id_sha256     TEXT PRIMARY KEY,
    token_sha256  TEXT NOT NULL,
    csrf          TEXT NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL,
    expires_at    TIMESTAMPTZ NOT NULL
);
CREATE INDEX console_sessions_expiry ON console_sessions (expires_at);
