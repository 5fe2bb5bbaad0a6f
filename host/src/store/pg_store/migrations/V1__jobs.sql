-- Jobs and everything recorded about them. One row per job; its changing part (`state`) and
-- its rarely changing definition (spec, plan, options...) are apart, so a running job's
-- commits do not rewrite its plan.
CREATE TABLE jobs (
    id              TEXT PRIMARY KEY,
    -- Creation time in microseconds: the order lists are read in (newest first).
    created         BIGINT NOT NULL,
    status          TEXT NOT NULL,
    plugin          TEXT NOT NULL,
    state           BYTEA NOT NULL,
    definition      BYTEA NOT NULL,
    definition_sha  BYTEA NOT NULL,
    summary         BYTEA NOT NULL
);
CREATE INDEX jobs_newest ON jobs (created DESC, id DESC);
CREATE INDEX jobs_by_status ON jobs (status, created DESC, id DESC);
CREATE INDEX jobs_by_plugin ON jobs (plugin, created DESC, id DESC);
CREATE INDEX jobs_by_plugin_status ON jobs (plugin, status, created DESC, id DESC);

-- How many jobs of a plugin are in a status, kept in the commits that move them, so counts
-- never scan.
CREATE TABLE job_counts (
    plugin  TEXT NOT NULL,
    status  TEXT NOT NULL,
    jobs    BIGINT NOT NULL,
    PRIMARY KEY (plugin, status)
);

-- The change feed: every event of a job by sequence number; log lines are also indexed apart.
CREATE TABLE job_events (
    job_id  TEXT NOT NULL,
    seq     BIGINT NOT NULL,
    is_log  BOOLEAN NOT NULL,
    body    BYTEA NOT NULL,
    PRIMARY KEY (job_id, seq)
);
CREATE INDEX job_logs ON job_events (job_id, seq) WHERE is_log;

-- Object results as a step reports them, in chunks (`first_staged` is the step's number of
-- the chunk's first result) ...
CREATE TABLE staged_objects (
    job_id        TEXT NOT NULL,
    step          INTEGER NOT NULL,
    first_staged  BIGINT NOT NULL,
    chunk         BYTEA NOT NULL,
    PRIMARY KEY (job_id, step, first_staged)
);
-- ... made visible by the commit of the checkpoint after them, as positions
-- `first_index .. first_index + count` of the job's result list.
CREATE TABLE object_segments (
    job_id        TEXT NOT NULL,
    first_index   BIGINT NOT NULL,
    step          INTEGER NOT NULL,
    first_staged  BIGINT NOT NULL,
    count         BIGINT NOT NULL,
    PRIMARY KEY (job_id, first_index)
);

-- Each job's private state bucket (rollback journals, backups) and the bytes it keeps.
CREATE TABLE job_state (
    job_id  TEXT NOT NULL,
    -- Bytes, not text: a key may hold any character, and byte order is the scan order.
    key     BYTEA NOT NULL,
    value   BYTEA NOT NULL,
    PRIMARY KEY (job_id, key)
);
CREATE TABLE job_state_usage (
    job_id  TEXT PRIMARY KEY,
    bytes   BIGINT NOT NULL
);

-- Records that could not be read back, kept aside with their bytes.
CREATE TABLE quarantined_jobs (
    id      TEXT PRIMARY KEY,
    reason  TEXT NOT NULL,
    at      TIMESTAMPTZ NOT NULL,
    state   BYTEA
);
