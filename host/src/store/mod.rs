//! Durable job state behind a small interface, so another backend can replace sled without
//! touching the engine.
//!
//! Invariant: [`JobStore::commit`] is atomic. A record and the events appended with it are
//! written together or not at all, which is what lets a checkpoint, its progress counters and
//! its object results survive a crash together.

mod sled_store;

pub use sled_store::SledJobStore;

use crate::engine::job::{FeedEvent, JobRecord};

#[derive(Debug, thiserror::Error)]
#[error("job store: {0}")]
pub struct StoreError(pub String);

/// One atomic write: the job's new record, events to append, events to forget.
pub struct Commit<'a> {
    pub record: &'a JobRecord,
    pub append: &'a [FeedEvent],
    /// Sequence numbers of log events that fell out of the kept window.
    pub drop_logs: &'a [u64],
}

pub trait JobStore: Send + Sync {
    fn commit(&self, commit: Commit<'_>) -> Result<(), StoreError>;
    fn get(&self, id: &str) -> Result<Option<JobRecord>, StoreError>;
    /// Every job, oldest first.
    fn all(&self) -> Result<Vec<JobRecord>, StoreError>;
    /// Events with `seq > after`, oldest first, at most `limit`.
    fn events_after(
        &self,
        id: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<FeedEvent>, StoreError>;
    /// Log events with `seq > after`, oldest first, at most `limit`.
    fn logs_after(&self, id: &str, after: u64, limit: usize) -> Result<Vec<FeedEvent>, StoreError>;
    /// Object-result events holding results with index `>= from`, oldest first.
    fn objects_from(
        &self,
        id: &str,
        from: u64,
        limit_events: usize,
    ) -> Result<Vec<FeedEvent>, StoreError>;
    /// Forget the job and all its events.
    fn delete(&self, id: &str) -> Result<(), StoreError>;
    /// Wait until everything committed is on disk.
    fn flush(&self) -> Result<(), StoreError>;
}
