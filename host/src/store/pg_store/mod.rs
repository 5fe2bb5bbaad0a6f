//! [`JobStore`] on PostgreSQL: the system of record when several nodes share one database.
//! Every commit is one transaction (record, events, counters and visible results together),
//! durable when PostgreSQL acknowledges it. Lists, logs and results page through indexes in
//! the database; nothing is loaded whole into memory. The schema is in `migrations/`, applied
//! at start-up by [`schema::migrate`].

mod cluster_writes;
mod job_state;
pub mod schema;

pub use cluster_writes::{FEED_CHANNEL, FeedNotice};
pub use job_state::PgJobState;

use super::records::{
    ObjectSource, StagedChunk, chunk_results, decode_chunk, join_record, json_error, read_objects,
    split_record,
};
use super::{
    Commit, JobQuery, JobStore, JobSummaries, ObjectSegment, Quarantined, Reported, StoreError,
    StoredObject,
};
use crate::engine::job::{EventBody, FeedEvent, JobRecord, JobSummary};
use crate::engine::state::JobStatus;
use postgres::NoTls;
use r2d2_postgres::PostgresConnectionManager;
use sha2::{Digest, Sha256};
use std::str::FromStr;
use std::time::Duration;

pub type Pool = r2d2::Pool<PostgresConnectionManager<NoTls>>;
pub(crate) type Client = r2d2::PooledConnection<PostgresConnectionManager<NoTls>>;

/// A PostgreSQL failure: a server that cannot be reached may come back. The server's own
/// message and SQLSTATE are named (the client error alone says only "db error").
pub(crate) fn pg_error(what: &str, e: postgres::Error) -> StoreError {
    match e.as_db_error() {
        Some(db) => StoreError::unavailable(format!(
            "{what}: {} (SQLSTATE {})",
            db.message(),
            db.code().code()
        )),
        None => StoreError::unavailable(format!("{what}: {e}")),
    }
}

/// A pool of connections to `url`, at most `size` of them. Connects lazily: a database that
/// does not answer yet is reported by the first use, not here.
pub fn connect(url: &str, size: u32) -> Result<Pool, StoreError> {
    let config = postgres::Config::from_str(url)
        .map_err(|e| StoreError::unavailable(format!("the store URL is not valid: {e}")))?;
    Ok(r2d2::Pool::builder()
        .max_size(size.max(1))
        .min_idle(Some(0))
        .connection_timeout(Duration::from_secs(5))
        .build_unchecked(PostgresConnectionManager::new(config, NoTls)))
}

/// Connect once to `url`, directly, so a database that does not answer says why at once
/// (the pool would wait its whole connection timeout first).
pub fn probe(url: &str) -> Result<(), StoreError> {
    let mut config = postgres::Config::from_str(url)
        .map_err(|e| StoreError::unavailable(format!("the store URL is not valid: {e}")))?;
    config.connect_timeout(Duration::from_secs(3));
    config
        .connect(NoTls)
        .map(drop)
        .map_err(|e| pg_error("connecting to the store database", e))
}

pub struct PgJobStore {
    pool: Pool,
    job_state: PgJobState,
    /// This node's id when several nodes share the store: every write is then fenced by the
    /// job's lease and announced to the others (`cluster_writes`).
    node: Option<String>,
}

/// Positions and counts are `u64` in the engine and `BIGINT` here.
fn big(n: u64) -> i64 {
    n.min(i64::MAX as u64) as i64
}

/// A list cursor: the creation time and id of the last job of the previous page.
fn encode_cursor(created: i64, id: &str) -> String {
    hex::encode([&created.to_be_bytes()[..], id.as_bytes()].concat())
}

fn decode_cursor(cursor: &str) -> Option<(i64, String)> {
    let bytes = hex::decode(cursor).ok()?;
    if bytes.len() < 8 {
        return None;
    }
    let created = i64::from_be_bytes(bytes[..8].try_into().ok()?);
    Some((created, String::from_utf8(bytes[8..].to_vec()).ok()?))
}

impl PgJobStore {
    /// The job store on `pool`, whose schema [`schema::migrate`] has brought up to date.
    pub fn new(pool: Pool) -> Self {
        PgJobStore {
            job_state: PgJobState::new(pool.clone()),
            pool,
            node: None,
        }
    }

    /// The store as node `node` of several sharing it: writes are fenced and announced.
    pub fn for_node(mut self, node: &str) -> Self {
        self.node = Some(node.to_string());
        self.job_state = self.job_state.for_node(node);
        self
    }

    /// The jobs' private state buckets, in the same database.
    pub fn job_state(&self) -> PgJobState {
        self.job_state.clone()
    }

    /// Set how many bytes each job's state bucket may hold.
    pub fn with_job_state_quota(mut self, bytes: u64) -> Self {
        self.job_state = self.job_state.with_quota(bytes);
        self
    }

    fn client(&self) -> Result<Client, StoreError> {
        self.pool
            .get()
            .map_err(|e| StoreError::unavailable(format!("the store database: {e}")))
    }

    /// Keep an unreadable record aside: out of every list and count, its bytes saved.
    fn quarantine(&self, id: &str, reason: &str) -> Result<(), StoreError> {
        tracing::error!(
            job = id,
            reason,
            "quarantining a job record that cannot be read back"
        );
        let what = "quarantining a record";
        let mut client = self.client()?;
        let mut tx = client.transaction().map_err(|e| pg_error(what, e))?;
        let removed = tx
            .query_opt(
                "DELETE FROM jobs WHERE id = $1 RETURNING plugin, status, state",
                &[&id],
            )
            .map_err(|e| pg_error(what, e))?;
        let state: Option<Vec<u8>> = match removed {
            Some(row) => {
                let (plugin, status): (String, String) = (row.get(0), row.get(1));
                change_count(&mut tx, &plugin, &status, -1)?;
                Some(row.get(2))
            }
            None => None,
        };
        let reason: String = reason.chars().take(1000).collect();
        tx.execute(
            "INSERT INTO quarantined_jobs (id, reason, at, state) VALUES ($1, $2, now(), $3)
             ON CONFLICT (id) DO UPDATE SET reason = EXCLUDED.reason, at = EXCLUDED.at",
            &[&id, &reason, &state],
        )
        .map_err(|e| pg_error(what, e))?;
        tx.commit().map_err(|e| pg_error(what, e))
    }
}

/// Add `delta` to the count of `plugin`'s jobs in `status`.
fn change_count(
    tx: &mut postgres::Transaction<'_>,
    plugin: &str,
    status: &str,
    delta: i64,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO job_counts (plugin, status, jobs) VALUES ($1, $2, GREATEST($3::bigint, 0))
         ON CONFLICT (plugin, status) DO UPDATE SET jobs = GREATEST(job_counts.jobs + $3::bigint, 0)",
        &[&plugin, &status, &delta],
    )
    .map_err(|e| pg_error("counting jobs", e))?;
    Ok(())
}

fn decode_event(bytes: &[u8]) -> Result<FeedEvent, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| json_error("an event", e))
}

impl JobStore for PgJobStore {
    fn commit(&self, c: Commit<'_>) -> Result<(), StoreError> {
        let what = "committing a job";
        let r = c.record;
        let (state, definition) = split_record(r)?;
        let definition_sha = Sha256::digest(&definition).to_vec();
        let summary = serde_json::to_vec(&crate::engine::job::summary(r))
            .map_err(|e| json_error("a summary", e))?;
        let (status, plugin) = (r.status.as_str(), r.plugin.name.as_str());
        let mut client = self.client()?;
        let mut tx = client.transaction().map_err(|e| pg_error(what, e))?;
        if let Some(node) = &self.node {
            cluster_writes::check_fence(&mut tx, node, &r.id, c.fence)?;
        }
        let old = tx
            .query_opt(
                "SELECT plugin, status, definition_sha FROM jobs WHERE id = $1 FOR UPDATE",
                &[&r.id],
            )
            .map_err(|e| pg_error(what, e))?;
        match &old {
            None => {
                tx.execute(
                    "INSERT INTO jobs (id, created, status, plugin, state, definition,
                                       definition_sha, summary)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                    &[
                        &r.id,
                        &r.created_at.timestamp_micros(),
                        &status,
                        &plugin,
                        &state,
                        &definition,
                        &definition_sha,
                        &summary,
                    ],
                )
                .map_err(|e| pg_error(what, e))?;
                change_count(&mut tx, plugin, status, 1)?;
            }
            Some(row) => {
                let (old_plugin, old_status, old_sha): (String, String, Vec<u8>) =
                    (row.get(0), row.get(1), row.get(2));
                // The definition is written only when it changed: a running job's commits
                // would otherwise rewrite its plan each time.
                if old_sha != definition_sha {
                    tx.execute(
                        "UPDATE jobs SET definition = $2, definition_sha = $3 WHERE id = $1",
                        &[&r.id, &definition, &definition_sha],
                    )
                    .map_err(|e| pg_error(what, e))?;
                }
                tx.execute(
                    "UPDATE jobs SET status = $2, plugin = $3, state = $4, summary = $5
                     WHERE id = $1",
                    &[&r.id, &status, &plugin, &state, &summary],
                )
                .map_err(|e| pg_error(what, e))?;
                if (old_plugin.as_str(), old_status.as_str()) != (plugin, status) {
                    // In key order, so two commits moving counts both ways cannot deadlock.
                    let mut moves = [
                        (old_plugin.as_str(), old_status.as_str(), -1),
                        (plugin, status, 1),
                    ];
                    moves.sort();
                    for (p, s, d) in moves {
                        change_count(&mut tx, p, s, d)?;
                    }
                }
            }
        }
        if !c.append.is_empty() {
            let mut seqs = Vec::with_capacity(c.append.len());
            let mut logs = Vec::with_capacity(c.append.len());
            let mut bodies = Vec::with_capacity(c.append.len());
            for e in c.append {
                seqs.push(big(e.seq));
                logs.push(matches!(e.body, EventBody::Log { .. }));
                bodies.push(serde_json::to_vec(e).map_err(|e| json_error("an event", e))?);
            }
            tx.execute(
                "INSERT INTO job_events (job_id, seq, is_log, body)
                 SELECT $1, * FROM unnest($2::bigint[], $3::boolean[], $4::bytea[])",
                &[&r.id, &seqs, &logs, &bodies],
            )
            .map_err(|e| pg_error(what, e))?;
        }
        if c.drop_oldest_logs > 0 {
            tx.execute(
                "DELETE FROM job_events WHERE job_id = $1 AND seq IN (
                     SELECT seq FROM job_events WHERE job_id = $1 AND is_log
                     ORDER BY seq LIMIT $2)",
                &[&r.id, &big(c.drop_oldest_logs)],
            )
            .map_err(|e| pg_error(what, e))?;
        }
        for seg in c.segments {
            tx.execute(
                "INSERT INTO object_segments (job_id, first_index, step, first_staged, count)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (job_id, first_index) DO UPDATE SET step = EXCLUDED.step,
                     first_staged = EXCLUDED.first_staged, count = EXCLUDED.count",
                &[
                    &r.id,
                    &big(seg.first_index),
                    &(seg.step as i32),
                    &big(seg.first_staged),
                    &big(seg.count),
                ],
            )
            .map_err(|e| pg_error(what, e))?;
        }
        if let Some(node) = &self.node
            && !c.append.is_empty()
        {
            cluster_writes::announce(&mut tx, node, &r.id, r.next_seq.saturating_sub(1), c.append)?;
        }
        tx.commit().map_err(|e| pg_error(what, e))
    }

    fn get(&self, id: &str) -> Result<Option<JobRecord>, StoreError> {
        let row = self
            .client()?
            .query_opt("SELECT state, definition FROM jobs WHERE id = $1", &[&id])
            .map_err(|e| pg_error("reading a job", e))?;
        let Some(row) = row else {
            return Ok(None);
        };
        let (state, definition): (Vec<u8>, Vec<u8>) = (row.get(0), row.get(1));
        match join_record(&state, Some(&definition)) {
            Ok(record) => Ok(Some(record)),
            Err(e) => {
                self.quarantine(id, &format!("unreadable record: {e}"))?;
                Ok(None)
            }
        }
    }

    fn list(&self, q: &JobQuery) -> Result<JobSummaries, StoreError> {
        // A cursor that does not decode is a position past every job: an empty page.
        let after = match &q.cursor {
            Some(c) => match decode_cursor(c) {
                Some(pos) => Some(pos),
                None => {
                    return Ok(JobSummaries {
                        items: vec![],
                        next_cursor: None,
                    });
                }
            },
            None => None,
        };
        let (after_created, after_id) = match &after {
            Some((c, id)) => (Some(*c), Some(id.as_str())),
            None => (None, None),
        };
        let status = q.status.map(|s| s.as_str());
        let limit = q.limit as i64;
        let rows = self
            .client()?
            .query(
                "SELECT created, id, summary FROM jobs
                 WHERE ($1::text IS NULL OR status = $1)
                   AND ($2::text IS NULL OR plugin = $2)
                   AND ($3::bigint IS NULL OR (created, id) < ($3, $4::text))
                 ORDER BY created DESC, id DESC
                 LIMIT $5 OFFSET $6",
                &[
                    &status,
                    &q.plugin,
                    &after_created,
                    &after_id,
                    &(limit + 1),
                    &(q.offset as i64),
                ],
            )
            .map_err(|e| pg_error("listing jobs", e))?;
        let more = rows.len() as i64 > limit;
        let mut items = Vec::with_capacity(rows.len());
        let mut last = None;
        for row in rows.iter().take(q.limit) {
            let summary: Vec<u8> = row.get(2);
            let summary: JobSummary =
                serde_json::from_slice(&summary).map_err(|e| json_error("a job summary", e))?;
            items.push(summary);
            last = Some((row.get::<_, i64>(0), row.get::<_, String>(1)));
        }
        Ok(JobSummaries {
            items,
            next_cursor: match (more, last) {
                (true, Some((created, id))) => Some(encode_cursor(created, &id)),
                _ => None,
            },
        })
    }

    fn count(&self, status: Option<JobStatus>, plugin: Option<&str>) -> Result<u64, StoreError> {
        let status = status.map(|s| s.as_str());
        let row = self
            .client()?
            .query_one(
                "SELECT COALESCE(SUM(jobs), 0)::bigint FROM job_counts
                 WHERE ($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR plugin = $2)",
                &[&status, &plugin],
            )
            .map_err(|e| pg_error("counting jobs", e))?;
        Ok(row.get::<_, i64>(0).max(0) as u64)
    }

    fn ids_with_status(
        &self,
        statuses: &[JobStatus],
        plugin: Option<&str>,
    ) -> Result<Vec<String>, StoreError> {
        let statuses: Vec<&str> = statuses.iter().map(|s| s.as_str()).collect();
        let rows = self
            .client()?
            .query(
                "SELECT id FROM jobs WHERE status = ANY($1) AND ($2::text IS NULL OR plugin = $2)
                 ORDER BY created, id",
                &[&statuses, &plugin],
            )
            .map_err(|e| pg_error("finding jobs", e))?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    fn events_after(
        &self,
        id: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<FeedEvent>, StoreError> {
        if after >= i64::MAX as u64 {
            return Ok(vec![]);
        }
        self.client()?
            .query(
                "SELECT body FROM job_events WHERE job_id = $1 AND seq > $2
                 ORDER BY seq LIMIT $3",
                &[&id, &big(after), &(limit as i64)],
            )
            .map_err(|e| pg_error("reading events", e))?
            .iter()
            .map(|row| decode_event(row.get(0)))
            .collect()
    }

    fn logs_after(&self, id: &str, after: u64, limit: usize) -> Result<Vec<FeedEvent>, StoreError> {
        if after >= i64::MAX as u64 {
            return Ok(vec![]);
        }
        self.client()?
            .query(
                "SELECT body FROM job_events WHERE job_id = $1 AND is_log AND seq > $2
                 ORDER BY seq LIMIT $3",
                &[&id, &big(after), &(limit as i64)],
            )
            .map_err(|e| pg_error("reading logs", e))?
            .iter()
            .map(|row| decode_event(row.get(0)))
            .collect()
    }

    fn stage_reports(
        &self,
        id: &str,
        fence: Option<u64>,
        step: u32,
        first_staged: u64,
        reports: &[Reported<'_>],
    ) -> Result<(), StoreError> {
        let count: usize = reports.iter().map(|r| r.objects.len()).sum();
        if count == 0 {
            return Ok(());
        }
        let what = "staging object results";
        let chunks = chunk_results(first_staged, reports)?;
        let (firsts, bytes): (Vec<i64>, Vec<Vec<u8>>) =
            chunks.into_iter().map(|(n, b)| (big(n), b)).unzip();
        let mut client = self.client()?;
        let mut tx = client.transaction().map_err(|e| pg_error(what, e))?;
        if let Some(node) = &self.node {
            cluster_writes::check_fence(&mut tx, node, id, fence)?;
        }
        // Chunks an earlier, uncommitted attempt staged inside this range would shadow it.
        tx.execute(
            "DELETE FROM staged_objects WHERE job_id = $1 AND step = $2
               AND first_staged >= $3 AND first_staged < $4",
            &[
                &id,
                &(step as i32),
                &big(first_staged),
                &big(first_staged + count as u64),
            ],
        )
        .map_err(|e| pg_error(what, e))?;
        tx.execute(
            "INSERT INTO staged_objects (job_id, step, first_staged, chunk)
             SELECT $1, $2, * FROM unnest($3::bigint[], $4::bytea[])",
            &[&id, &(step as i32), &firsts, &bytes],
        )
        .map_err(|e| pg_error(what, e))?;
        tx.commit().map_err(|e| pg_error(what, e))
    }

    fn objects_from(
        &self,
        id: &str,
        from: u64,
        limit: usize,
    ) -> Result<Vec<StoredObject>, StoreError> {
        if from >= i64::MAX as u64 {
            return Ok(vec![]);
        }
        read_objects(self, id, from, limit)
    }

    fn delete(&self, id: &str, fence: Option<u64>) -> Result<(), StoreError> {
        let what = "deleting a job";
        let mut client = self.client()?;
        let mut tx = client.transaction().map_err(|e| pg_error(what, e))?;
        if let Some(node) = &self.node {
            cluster_writes::check_fence(&mut tx, node, id, fence)?;
        }
        if let Some(row) = tx
            .query_opt(
                "DELETE FROM jobs WHERE id = $1 RETURNING plugin, status",
                &[&id],
            )
            .map_err(|e| pg_error(what, e))?
        {
            change_count(&mut tx, row.get(0), row.get(1), -1)?;
        }
        for table in [
            "job_events",
            "staged_objects",
            "object_segments",
            "job_state",
            "job_state_usage",
            "job_leases",
        ] {
            tx.execute(&format!("DELETE FROM {table} WHERE job_id = $1"), &[&id])
                .map_err(|e| pg_error(what, e))?;
        }
        tx.commit().map_err(|e| pg_error(what, e))
    }

    fn quarantined(&self) -> Result<Vec<Quarantined>, StoreError> {
        Ok(self
            .client()?
            .query(
                "SELECT id, reason, at FROM quarantined_jobs ORDER BY at, id",
                &[],
            )
            .map_err(|e| pg_error("reading quarantined records", e))?
            .iter()
            .map(|row| Quarantined {
                id: row.get(0),
                reason: row.get(1),
                at: row.get(2),
            })
            .collect())
    }

    /// Every commit is durable when PostgreSQL acknowledges it: nothing is left to flush.
    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

impl ObjectSource for PgJobStore {
    fn segment_at_or_before(
        &self,
        id: &str,
        index: u64,
    ) -> Result<Option<(u64, ObjectSegment)>, StoreError> {
        let row = self
            .client()?
            .query_opt(
                "SELECT first_index, step, first_staged, count FROM object_segments
                 WHERE job_id = $1 AND first_index <= $2 ORDER BY first_index DESC LIMIT 1",
                &[&id, &big(index)],
            )
            .map_err(|e| pg_error("reading object results", e))?;
        Ok(row.map(|row| {
            let first = row.get::<_, i64>(0) as u64;
            (
                first,
                ObjectSegment {
                    first_index: first,
                    step: row.get::<_, i32>(1) as u32,
                    first_staged: row.get::<_, i64>(2) as u64,
                    count: row.get::<_, i64>(3) as u64,
                },
            )
        }))
    }

    fn chunk_at_or_before(
        &self,
        id: &str,
        step: u32,
        staged: u64,
    ) -> Result<Option<(u64, StagedChunk)>, StoreError> {
        let row = self
            .client()?
            .query_opt(
                "SELECT first_staged, chunk FROM staged_objects
                 WHERE job_id = $1 AND step = $2 AND first_staged <= $3
                 ORDER BY first_staged DESC LIMIT 1",
                &[&id, &(step as i32), &big(staged)],
            )
            .map_err(|e| pg_error("reading object results", e))?;
        match row {
            Some(row) => Ok(Some((
                row.get::<_, i64>(0) as u64,
                decode_chunk(row.get(1))?,
            ))),
            None => Ok(None),
        }
    }
}
