//! One connection per node that LISTENs to what the other nodes announce: committed changes of
//! jobs, requests for this node, answers to its requests, plugin uploads, leases given back.
//! A lost connection is made again; whatever may have been missed meanwhile is read again.

use super::{ANSWERS_CHANNEL, Cluster, ORPHANS_CHANNEL, PLUGINS_CHANNEL, REQUESTS_CHANNEL};
use crate::store::{FEED_CHANNEL, FeedNotice};
use postgres::fallible_iterator::FallibleIterator;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

/// Listen until the cluster stops, reconnecting with backoff.
pub(super) fn run(cluster: Arc<Cluster>) {
    let mut wait = Duration::from_millis(200);
    let mut first = true;
    while !cluster.is_stopping() {
        match listen(&cluster, &mut first) {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "lost the connection that hears other nodes; reconnecting");
                std::thread::sleep(wait);
                wait = (wait * 2).min(Duration::from_secs(5));
            }
        }
    }
}

fn listen(cluster: &Arc<Cluster>, first: &mut bool) -> Result<(), postgres::Error> {
    let mut config = postgres::Config::from_str(&cluster.url)?;
    config
        .connect_timeout(Duration::from_secs(3))
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(5));
    let mut client = config.connect(postgres::NoTls)?;
    client.batch_execute(&format!(
        "LISTEN {FEED_CHANNEL}; LISTEN {REQUESTS_CHANNEL}; LISTEN {ANSWERS_CHANNEL};
         LISTEN {PLUGINS_CHANNEL}; LISTEN {ORPHANS_CHANNEL};"
    ))?;
    if !std::mem::take(first) {
        // Notices sent while this node was not listening are gone: read again.
        if let Some(engine) = cluster.engine() {
            engine.resync_remote();
        }
        cluster.plugins_changed();
        cluster.wake_requests.wake();
    }
    while !cluster.is_stopping() {
        let mut notifications = client.notifications();
        let mut arrived = notifications.timeout_iter(Duration::from_millis(500));
        while let Some(n) = arrived.next()? {
            dispatch(cluster, n.channel(), n.payload());
        }
        drop(arrived);
        drop(notifications);
        if client.is_closed() {
            // Fails on a closed connection, and the caller connects again.
            client.simple_query("SELECT 1")?;
        }
    }
    Ok(())
}

fn dispatch(cluster: &Cluster, channel: &str, payload: &str) {
    match channel {
        FEED_CHANNEL => match serde_json::from_str::<FeedNotice>(payload) {
            Ok(notice) if notice.node != cluster.node => {
                if let Some(engine) = cluster.engine() {
                    engine.observe_remote(&notice);
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "an unreadable notice from another node"),
        },
        REQUESTS_CHANNEL if payload == cluster.node => cluster.wake_requests.wake(),
        ANSWERS_CHANNEL => cluster.answers.arrived(),
        PLUGINS_CHANNEL => cluster.plugins_changed(),
        ORPHANS_CHANNEL => cluster.wake_sweep.wake(),
        _ => {}
    }
}
