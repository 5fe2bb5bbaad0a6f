//! The nodes sharing a store: each process registers at start, beats while it runs, and says
//! when it stops. `GET /api/v1/nodes` reads this, with the jobs each node holds a lease on.

use crate::store::{PgPool, StoreError};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::time::Duration;

fn failure(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::unavailable(format!("{what}: {e}"))
}

/// One node as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct NodeView {
    /// Unique per process: a restarted node has a new id.
    pub id: String,
    /// What the operator calls it (`node_name`, or the host name).
    pub name: String,
    /// The Plover version it runs.
    pub version: String,
    /// Where its API is reached, if configured (`advertise_url`).
    pub api_url: Option<String>,
    pub started_at: DateTime<Utc>,
    pub last_heartbeat: DateTime<Utc>,
    /// When it stopped (cleanly), if it did.
    pub stopped_at: Option<DateTime<Utc>>,
    /// Beating now: it heartbeat within three intervals and has not stopped.
    pub alive: bool,
    /// The jobs it holds an unexpired lease on.
    pub jobs: Vec<String>,
}

/// This node, as it registers.
pub struct Registration<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub api_url: Option<&'a str>,
}

/// Nodes silent for longer than this are forgotten at the next registration.
const FORGET_AFTER: Duration = Duration::from_secs(24 * 3600);
/// Nodes stopped or silent for longer than this are not listed.
const LIST_FOR: Duration = Duration::from_secs(3600);

pub fn register(pool: &PgPool, me: &Registration<'_>) -> Result<(), StoreError> {
    let what = "registering this node";
    let mut client = pool.get().map_err(|e| failure(what, e))?;
    client
        .execute(
            "DELETE FROM nodes WHERE heartbeat_at < now() - $1 * interval '1 second'",
            &[&FORGET_AFTER.as_secs_f64()],
        )
        .map_err(|e| failure(what, e))?;
    client
        .execute(
            "INSERT INTO nodes (id, name, version, api_url, started_at, heartbeat_at)
             VALUES ($1, $2, $3, $4, now(), now())",
            &[&me.id, &me.name, &env!("CARGO_PKG_VERSION"), &me.api_url],
        )
        .map_err(|e| failure(what, e))?;
    Ok(())
}

pub fn beat(pool: &PgPool, id: &str) -> Result<(), StoreError> {
    pool.get()
        .map_err(|e| failure("heartbeat", e))?
        .execute(
            "UPDATE nodes SET heartbeat_at = now() WHERE id = $1",
            &[&id],
        )
        .map_err(|e| failure("heartbeat", e))?;
    Ok(())
}

pub fn stopped(pool: &PgPool, id: &str) -> Result<(), StoreError> {
    pool.get()
        .map_err(|e| failure("recording this node's stop", e))?
        .execute(
            "UPDATE nodes SET stopped_at = now(), heartbeat_at = now() WHERE id = $1",
            &[&id],
        )
        .map_err(|e| failure("recording this node's stop", e))?;
    Ok(())
}

/// The nodes alive, or stopped within the last hour, oldest first.
pub fn list(pool: &PgPool, beat_every: Duration) -> Result<Vec<NodeView>, StoreError> {
    let what = "listing nodes";
    let rows = pool
        .get()
        .map_err(|e| failure(what, e))?
        .query(
            "SELECT n.id, n.name, n.version, n.api_url, n.started_at, n.heartbeat_at,
                    n.stopped_at,
                    n.stopped_at IS NULL
                      AND n.heartbeat_at > now() - $1 * interval '1 millisecond',
                    coalesce(array_agg(l.job_id ORDER BY l.job_id)
                             FILTER (WHERE l.job_id IS NOT NULL), '{}')
             FROM nodes n
             LEFT JOIN job_leases l ON l.owner = n.id AND l.expires_at > now()
             WHERE n.heartbeat_at > now() - $2 * interval '1 second'
             GROUP BY n.id ORDER BY n.started_at, n.id",
            &[
                &(beat_every.as_secs_f64() * 3000.0),
                &LIST_FOR.as_secs_f64(),
            ],
        )
        .map_err(|e| failure(what, e))?;
    Ok(rows
        .iter()
        .map(|r| NodeView {
            id: r.get(0),
            name: r.get(1),
            version: r.get(2),
            api_url: r.get(3),
            started_at: r.get(4),
            last_heartbeat: r.get(5),
            stopped_at: r.get(6),
            alive: r.get(7),
            jobs: r.get(8),
        })
        .collect())
}
