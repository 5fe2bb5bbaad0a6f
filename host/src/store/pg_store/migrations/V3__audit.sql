-- The host audit trail. Sequence numbers come from one counter row, taken in the appending
-- transaction, so they increase in commit order and a reader paging by `seq` misses nothing.
CREATE TABLE audit_entries (
    seq     BIGINT PRIMARY KEY,
    at      TIMESTAMPTZ NOT NULL,
    actor   TEXT NOT NULL,
    method  TEXT NOT NULL,
    path    TEXT NOT NULL,
    status  INTEGER NOT NULL
);
CREATE TABLE audit_counter (
    only_row  BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (only_row),
    last_seq  BIGINT NOT NULL
);
INSERT INTO audit_counter (last_seq) VALUES (0);
