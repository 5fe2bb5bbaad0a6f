//! Durable job state behind a small interface with two backends: sled, embedded (the
//! default), and PostgreSQL, the shared system of record of several nodes.
//!
//! Invariants every backend keeps:
//! - [`JobStore::commit`] is atomic *and durable when it returns*: a record, the events
//!   appended with it and the object results it makes visible are on disk together or not at
//!   all. The engine shows a change to readers only after `commit` returned, so nothing is
//!   answered, streamed or shown before it is durable.
//! - Object results are *staged* as a step reports them ([`JobStore::stage_objects`]: written,
//!   not yet visible) and become visible only through the commit of the checkpoint after them
//!   ([`ObjectSegment`]). A step resumed after a crash restages from its last committed count,
//!   so no result is lost or counted twice, and host memory does not grow with their number.
//! - Every read that can grow with history pages through an index: lists by creation time
//!   (optionally by status and plugin), events and logs by sequence number, object results by
//!   position. Totals come from counters kept in the same commits, never from a scan.
//! - A record that cannot be read back is quarantined (kept aside, logged), never fatal.

mod pg_store;
mod records;
mod sled_store;

pub(crate) use pg_store::Client as PgClient;
pub(crate) use pg_store::pg_error;
pub use pg_store::{
    FEED_CHANNEL, FeedNotice, PgJobState, PgJobStore, Pool as PgPool, connect as connect_postgres,
    probe as probe_postgres, schema as pg_schema,
};

pub use sled_store::{
    DEFAULT_CACHE_BYTES, GroupFlush, IntegrityReport, SledJobState, SledJobStore, open_database,
    open_database_with_cache,
};

/// How many bytes each job's private state bucket may hold unless configured otherwise.
pub const DEFAULT_JOB_STATE_QUOTA: u64 = 1 << 30;

use crate::engine::job::{FeedEvent, JobRecord, JobSummary};
use crate::engine::state::JobStatus;
use crate::model::ObjectResult;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Why the store failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreErrorKind {
    /// The backend could not do what was asked (I/O, a database that is down): may pass.
    Unavailable,
    /// What is stored is damaged: retrying will not help.
    Corrupt,
    /// The job was deleted while the caller held it.
    Gone,
    /// This node no longer holds the job's lease (another node took the job over): it must
    /// not write for the job again.
    Fenced,
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("job store: {message}")]
pub struct StoreError {
    pub kind: StoreErrorKind,
    pub message: String,
}

impl StoreError {
    pub fn unavailable(message: impl Into<String>) -> Self {
        StoreError {
            kind: StoreErrorKind::Unavailable,
            message: message.into(),
        }
    }
    pub fn corrupt(message: impl Into<String>) -> Self {
        StoreError {
            kind: StoreErrorKind::Corrupt,
            message: message.into(),
        }
    }
    pub fn gone(id: &str) -> Self {
        StoreError {
            kind: StoreErrorKind::Gone,
            message: format!("migration {id} was deleted"),
        }
    }
    pub fn fenced(id: &str) -> Self {
        StoreError {
            kind: StoreErrorKind::Fenced,
            message: format!(
                "this node no longer holds the lease of migration {id}: another node took it over"
            ),
        }
    }
    pub fn is_corruption(&self) -> bool {
        self.kind == StoreErrorKind::Corrupt
    }
}

/// Staged object results of one step that a commit makes visible as positions
/// `first_index .. first_index + count` of the job's result list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectSegment {
    pub first_index: u64,
    /// The step's position in the plan.
    pub step: u32,
    /// The step's own number of its first result in this segment.
    pub first_staged: u64,
    pub count: u64,
}

/// Object results a step reported together at `at`.
#[derive(Debug, Clone, Copy)]
pub struct Reported<'a> {
    pub at: DateTime<Utc>,
    pub objects: &'a [ObjectResult],
}

/// One visible object result: its position (the paging cursor), the step it belongs to and
/// when it was reported.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredObject {
    pub index: u64,
    pub step: u32,
    pub at: DateTime<Utc>,
    pub result: ObjectResult,
}

/// One atomic, durable write.
pub struct Commit<'a> {
    pub record: &'a JobRecord,
    pub append: &'a [FeedEvent],
    /// How many of the job's oldest stored log events fell out of the kept window.
    pub drop_oldest_logs: u64,
    /// Staged object results this commit makes visible.
    pub segments: &'a [ObjectSegment],
    /// The epoch of the job's lease the committing node holds. A store shared by several
    /// nodes refuses a commit without the current one ([`StoreErrorKind::Fenced`]); the
    /// embedded store has one node and ignores it.
    pub fence: Option<u64>,
}

/// Which jobs to list, newest first.
#[derive(Debug, Clone, Default)]
pub struct JobQuery {
    pub status: Option<JobStatus>,
    pub plugin: Option<String>,
    /// Continue after this cursor (from a previous page's `next_cursor`).
    pub cursor: Option<String>,
    /// Skip this many first (after the cursor).
    pub offset: usize,
    pub limit: usize,
}

/// A page of job summaries, newest first.
#[derive(Debug, Clone)]
pub struct JobSummaries {
    pub items: Vec<JobSummary>,
    /// Pass as `cursor` for the next page; `None` after the last one.
    pub next_cursor: Option<String>,
}

/// A record kept aside because it could not be read back.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Quarantined {
    pub id: String,
    pub reason: String,
    pub at: DateTime<Utc>,
}

pub trait JobStore: Send + Sync {
    /// Write `commit` atomically; it is durable when this returns.
    fn commit(&self, commit: Commit<'_>) -> Result<(), StoreError>;
    /// The job's record. An unreadable record is quarantined and reported as absent.
    fn get(&self, id: &str) -> Result<Option<JobRecord>, StoreError>;
    /// A page of jobs, newest first, through the indexes.
    fn list(&self, query: &JobQuery) -> Result<JobSummaries, StoreError>;
    /// How many jobs match, from counters (no scan).
    fn count(&self, status: Option<JobStatus>, plugin: Option<&str>) -> Result<u64, StoreError>;
    /// Ids of every job in one of `statuses`, oldest first (recovery, plugin use).
    fn ids_with_status(
        &self,
        statuses: &[JobStatus],
        plugin: Option<&str>,
    ) -> Result<Vec<String>, StoreError>;
    /// Events with `seq > after`, oldest first, at most `limit`.
    fn events_after(
        &self,
        id: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<FeedEvent>, StoreError>;
    /// Log events with `seq > after`, oldest first, at most `limit`.
    fn logs_after(&self, id: &str, after: u64, limit: usize) -> Result<Vec<FeedEvent>, StoreError>;
    /// Write the object results of step `step` in `reports` (in order, each report's at its
    /// own time) as its results number `first_staged..`; invisible until a commit names them
    /// in an [`ObjectSegment`], and not durable before that commit. Whatever was staged there
    /// before (by an attempt that never committed) is replaced. Fenced like [`Commit::fence`].
    fn stage_reports(
        &self,
        id: &str,
        fence: Option<u64>,
        step: u32,
        first_staged: u64,
        reports: &[Reported<'_>],
    ) -> Result<(), StoreError>;

    /// [`JobStore::stage_reports`] of one report.
    fn stage_objects(
        &self,
        id: &str,
        fence: Option<u64>,
        step: u32,
        first_staged: u64,
        at: DateTime<Utc>,
        objects: &[ObjectResult],
    ) -> Result<(), StoreError> {
        self.stage_reports(id, fence, step, first_staged, &[Reported { at, objects }])
    }
    /// Visible object results with position `>= from`, in order, at most `limit`.
    fn objects_from(
        &self,
        id: &str,
        from: u64,
        limit: usize,
    ) -> Result<Vec<StoredObject>, StoreError>;
    /// Forget the job, all its events, results and its state bucket; durable on return.
    /// Fenced like [`Commit::fence`].
    fn delete(&self, id: &str, fence: Option<u64>) -> Result<(), StoreError>;
    /// Records kept aside because they could not be read back.
    fn quarantined(&self) -> Result<Vec<Quarantined>, StoreError>;
    /// Wait until everything written is on disk.
    fn flush(&self) -> Result<(), StoreError>;
}
