//! What a write does when several nodes share the store: it is *fenced* (refused unless the
//! writing node holds the job's lease at the epoch it names, checked in the write's own
//! transaction) and it *announces* itself (a notification every node listens to, delivered
//! by PostgreSQL only once the transaction has committed, so nobody hears of a change before
//! it is durable).

use super::pg_error;
use crate::engine::handle::StateChange;
use crate::engine::job::{EventBody, FeedEvent};
use crate::store::StoreError;
use serde::{Deserialize, Serialize};

/// The channel every node listens on for committed changes of jobs.
pub const FEED_CHANNEL: &str = "plover_feed";

/// What a commit tells the other nodes: the job, its newest sequence number, the node that
/// wrote, and the state changes it made (so `/events` streams every job's from any node).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FeedNotice {
    pub job: String,
    pub seq: u64,
    pub node: String,
    #[serde(default)]
    pub changes: Vec<StateChange>,
}

/// A notification's payload must stay under PostgreSQL's 8000 bytes: a commit makes a state
/// change or two, and their reasons are cut to this many characters.
const MAX_REASON: usize = 300;
const MAX_NOTICE_BYTES: usize = 7000;

/// Refuse, inside `tx`, a write for `job` unless `node` holds its lease at epoch `fence`. The
/// lease row is share-locked until `tx` ends, so a claim by another node waits for this write
/// and every write that passed the check is committed before the claim takes effect.
pub(super) fn check_fence(
    tx: &mut postgres::Transaction<'_>,
    node: &str,
    job: &str,
    fence: Option<u64>,
) -> Result<(), StoreError> {
    let Some(epoch) = fence else {
        return Err(StoreError::fenced(job));
    };
    let held = tx
        .query_opt(
            "SELECT owner = $2 AND epoch = $3 FROM job_leases WHERE job_id = $1 FOR SHARE",
            &[&job, &node, &(epoch as i64)],
        )
        .map_err(|e| pg_error("checking the job's lease", e))?
        .is_some_and(|row| row.get::<_, Option<bool>>(0) == Some(true));
    if held {
        Ok(())
    } else {
        Err(StoreError::fenced(job))
    }
}

/// Announce, inside `tx`, that `job` now ends at sequence number `seq` after `events`.
pub(super) fn announce(
    tx: &mut postgres::Transaction<'_>,
    node: &str,
    job: &str,
    seq: u64,
    events: &[FeedEvent],
) -> Result<(), StoreError> {
    let mut notice = FeedNotice {
        job: job.to_string(),
        seq,
        node: node.to_string(),
        changes: events
            .iter()
            .filter_map(|e| match &e.body {
                EventBody::State { from, to, reason } => Some(StateChange {
                    job: job.to_string(),
                    seq: e.seq,
                    from: *from,
                    to: *to,
                    reason: crate::engine::truncated(reason, MAX_REASON),
                }),
                _ => None,
            })
            .collect(),
    };
    let mut payload = serde_json::to_string(&notice).expect("serialises");
    while payload.len() > MAX_NOTICE_BYTES && !notice.changes.is_empty() {
        notice.changes.remove(0);
        payload = serde_json::to_string(&notice).expect("serialises");
    }
    tx.execute("SELECT pg_notify($1, $2)", &[&FEED_CHANNEL, &payload])
        .map_err(|e| pg_error("announcing a commit", e))?;
    Ok(())
}
