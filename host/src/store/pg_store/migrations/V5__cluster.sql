-- Several active nodes on one store. Each running process registers here; `id` is unique per
-- process (a restarted node is a new one), `name` what the operator calls it.
CREATE TABLE nodes (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    version       TEXT NOT NULL,
    api_url       TEXT,
    started_at    TIMESTAMPTZ NOT NULL,
    heartbeat_at  TIMESTAMPTZ NOT NULL,
    stopped_at    TIMESTAMPTZ
);

-- Which node may write for a job. A node commits for a job only while it holds its lease, and
-- every commit checks owner and epoch in its own transaction (fencing): a claim by another node
-- bumps the epoch, so a node that lost the lease can never write for the job again. `owner` is
-- NULL while nobody works on the job; an expired lease may be claimed by any node.
CREATE TABLE job_leases (
    job_id      TEXT PRIMARY KEY,
    owner       TEXT,
    epoch       BIGINT NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL
);
CREATE INDEX job_leases_by_owner ON job_leases (owner) WHERE owner IS NOT NULL;

-- Actions sent to a node that does not own the job, for its owner to carry out and answer.
CREATE TABLE job_requests (
    id            BIGSERIAL PRIMARY KEY,
    job_id        TEXT NOT NULL,
    target        TEXT NOT NULL,
    action        TEXT NOT NULL,
    actor         TEXT NOT NULL,
    requested_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    answered_at   TIMESTAMPTZ,
    answer        BYTEA
);
CREATE INDEX job_requests_open ON job_requests (target, id) WHERE answered_at IS NULL;
