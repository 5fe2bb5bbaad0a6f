-- API tokens: only their SHA-256 hashes are kept. Every node reads them here, so a token
-- revoked through one node is refused by all.
CREATE TABLE api_tokens (
    name        TEXT PRIMARY KEY,
    sha256      TEXT NOT NULL UNIQUE,
    role        TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL
);
