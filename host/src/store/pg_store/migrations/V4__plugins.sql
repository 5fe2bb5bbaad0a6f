-- Uploaded plugins, content-addressed: every node loads them from here at start-up (each keeps
-- its own precompiled cache).
CREATE TABLE uploaded_plugins (
    sha256       TEXT PRIMARY KEY,
    bytes        BYTEA NOT NULL,
    publisher    TEXT NOT NULL,
    claimed      BOOLEAN NOT NULL,
    uploaded_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
