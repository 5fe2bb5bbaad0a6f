//! One active node per store database, until leases and fencing let several share it: a node
//! holds a session-level advisory lock on a connection of its own for as long as it runs.
//! Another node started on the same database waits as a standby and takes over when the lock
//! is released (the holder stopped, was killed, or lost its connection). A node that loses its
//! lock connection stops at once (fail-stop): without fencing, carrying on could let two nodes
//! run the same jobs.

use super::pg_error;
use crate::store::StoreError;
use postgres::NoTls;
use std::str::FromStr;
use std::time::Duration;

/// The first half of the active node's advisory lock key (the migration lock has another);
/// the second half is the store's schema, so stores in other schemas of one database are
/// apart.
const ACTIVE_NODE_LOCK: i32 = 0x706c_7601;

/// The active node's hold on the store; dropping it releases the lock.
pub struct NodeLock {
    client: postgres::Client,
}

/// Try to become the active node of the store at `url`: `Ok(None)` when another node is.
pub fn try_lock_store(url: &str) -> Result<Option<NodeLock>, StoreError> {
    let mut config = postgres::Config::from_str(url)
        .map_err(|e| StoreError::unavailable(format!("the store URL is not valid: {e}")))?;
    config
        .connect_timeout(Duration::from_secs(3))
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(5));
    let mut client = config
        .connect(NoTls)
        .map_err(|e| pg_error("connecting to the store database", e))?;
    let locked: bool = client
        .query_one(
            "SELECT pg_try_advisory_lock($1, hashtext(current_schema()))",
            &[&ACTIVE_NODE_LOCK],
        )
        .map_err(|e| pg_error("taking the store's node lock", e))?
        .get(0);
    if locked {
        // Named after its store, so an operator can find (and end) the active node's session.
        client
            .batch_execute(
                "SELECT set_config('application_name', left('plover active node ' || current_schema(), 63), false)",
            )
            .map_err(|e| pg_error("naming the node-lock session", e))?;
    }
    Ok(locked.then_some(NodeLock { client }))
}

impl NodeLock {
    /// Check every `every` that the lock's connection is alive, on a thread of its own, and
    /// call `lost` (which should end the process) the moment it is not.
    pub fn watch(mut self, every: Duration, lost: impl FnOnce(String) + Send + 'static) {
        std::thread::Builder::new()
            .name("plover-node-lock".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(every);
                    if let Err(e) = self.client.simple_query("SELECT 1") {
                        lost(e.to_string());
                        return;
                    }
                }
            })
            .expect("spawning the node-lock watcher");
    }
}
