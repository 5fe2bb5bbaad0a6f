//! Job leases in the database: claim, release, renew, and find the running jobs nobody holds.
//! Expiry is judged by the database's clock (`now()`), the one clock every node shares; each
//! node also keeps a local deadline a little shorter than the lease (see [`local_until`]).

use crate::engine::ownership::Claim;
use crate::store::{PgPool, StoreError};
use std::time::{Duration, Instant};

fn failure(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::unavailable(format!("{what}: {e}"))
}

/// Until when a lease renewed (or claimed) by a request sent at `asked` may be used here: a
/// fifth short of the lease, measured from before the database granted it, so this node
/// stops before any other can claim the job.
pub fn local_until(asked: Instant, lease: Duration) -> Instant {
    asked + lease * 4 / 5
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Claim job `job` for `node`: a lease that is free, expired or already `node`'s is taken,
/// with a new epoch (so whatever wrote with the old one is fenced). A job without a lease row
/// yet (a new one, or one from before leases) gets one.
pub fn claim(pool: &PgPool, node: &str, job: &str, lease: Duration) -> Result<Claim, StoreError> {
    let what = "claiming a job's lease";
    let mut client = pool.get().map_err(|e| failure(what, e))?;
    // A lease released at the same moment may make both statements miss: ask twice.
    for _ in 0..2 {
        let asked = Instant::now();
        let claimed = client
            .query_opt(
                "INSERT INTO job_leases (job_id, owner, epoch, expires_at)
                 VALUES ($1, $2, 1, now() + $3 * interval '1 millisecond')
                 ON CONFLICT (job_id) DO UPDATE SET owner = EXCLUDED.owner,
                     epoch = job_leases.epoch + 1, expires_at = EXCLUDED.expires_at
                 WHERE job_leases.owner IS NULL OR job_leases.owner = EXCLUDED.owner
                    OR job_leases.expires_at < now()
                 RETURNING epoch",
                &[&job, &node, &millis(lease)],
            )
            .map_err(|e| failure(what, e))?;
        if let Some(row) = claimed {
            return Ok(Claim::Mine {
                epoch: row.get::<_, i64>(0) as u64,
                until: local_until(asked, lease),
            });
        }
        let owner = client
            .query_opt(
                "SELECT owner FROM job_leases WHERE job_id = $1 AND owner IS NOT NULL
                   AND expires_at >= now()",
                &[&job],
            )
            .map_err(|e| failure(what, e))?;
        if let Some(row) = owner {
            return Ok(Claim::Elsewhere { owner: row.get(0) });
        }
    }
    Err(StoreError::unavailable(format!(
        "the lease of migration {job} changed hands twice while this node claimed it; try again"
    )))
}

/// Give `job`'s lease back, if `node` still holds it at `epoch`; wakes other nodes' sweeps
/// (a job handed over while it runs is taken up at once).
pub fn release(pool: &PgPool, node: &str, job: &str, epoch: u64) -> Result<(), StoreError> {
    let what = "releasing a job's lease";
    let mut client = pool.get().map_err(|e| failure(what, e))?;
    let mut tx = client.transaction().map_err(|e| failure(what, e))?;
    tx.execute(
        "UPDATE job_leases SET owner = NULL, expires_at = now()
         WHERE job_id = $1 AND owner = $2 AND epoch = $3",
        &[&job, &node, &(epoch as i64)],
    )
    .map_err(|e| failure(what, e))?;
    tx.execute("SELECT pg_notify($1, $2)", &[&super::ORPHANS_CHANNEL, &job])
        .map_err(|e| failure(what, e))?;
    tx.commit().map_err(|e| failure(what, e))
}

/// Renew every lease `node` holds; the ones renewed.
pub fn renew(pool: &PgPool, node: &str, lease: Duration) -> Result<Vec<(String, u64)>, StoreError> {
    let what = "renewing leases";
    let rows = pool
        .get()
        .map_err(|e| failure(what, e))?
        .query(
            "UPDATE job_leases SET expires_at = now() + $2 * interval '1 millisecond'
             WHERE owner = $1 RETURNING job_id, epoch",
            &[&node, &millis(lease)],
        )
        .map_err(|e| failure(what, e))?;
    Ok(rows
        .iter()
        .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1) as u64))
        .collect())
}

/// Jobs a run works on (by their status) whose lease nobody holds: free, expired, or never
/// made. Oldest first, at most `limit`.
pub fn orphans(pool: &PgPool, limit: usize) -> Result<Vec<String>, StoreError> {
    let what = "looking for jobs nobody runs";
    let statuses: Vec<&str> = crate::engine::state::JobStatus::RUNNING
        .iter()
        .map(|s| s.as_str())
        .collect();
    let rows = pool
        .get()
        .map_err(|e| failure(what, e))?
        .query(
            "SELECT j.id FROM jobs j LEFT JOIN job_leases l ON l.job_id = j.id
             WHERE j.status = ANY($1)
               AND (l.job_id IS NULL OR l.owner IS NULL OR l.expires_at < now())
             ORDER BY j.created LIMIT $2",
            &[&statuses, &(limit as i64)],
        )
        .map_err(|e| failure(what, e))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}
