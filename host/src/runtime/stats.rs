//! Process-wide counters of plugin calls: latency and sandbox kills by cause, for `/metrics`.

use super::error::PluginFailure;
use super::host_imports::Refusal;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the call-latency buckets, in seconds.
const BUCKETS: [f64; 11] = [
    0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 10.0, 60.0,
];
const CAUSES: [&str; 10] = [
    "deadline",
    "force-stopped",
    "out-of-fuel",
    "out-of-memory",
    "stack-overflow",
    "panic",
    "trap",
    "write-denied",
    "instantiate",
    "connector",
];
const CONNECTORS: [&str; 3] = ["kv", "sql", "http"];
const REFUSALS: [Refusal; 3] = [Refusal::NotGranted, Refusal::ReadOnly, Refusal::Denied];

fn refusal_name(r: Refusal) -> &'static str {
    match r {
        Refusal::NotGranted => "not-granted",
        Refusal::ReadOnly => "read-only",
        Refusal::Denied => "denied",
    }
}

struct CallStats {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
    kills: [AtomicU64; CAUSES.len()],
    refusals: [[AtomicU64; REFUSALS.len()]; CONNECTORS.len()],
}

static STATS: CallStats = CallStats {
    buckets: [const { AtomicU64::new(0) }; BUCKETS.len()],
    count: AtomicU64::new(0),
    sum_micros: AtomicU64::new(0),
    kills: [const { AtomicU64::new(0) }; CAUSES.len()],
    refusals: [const { [const { AtomicU64::new(0) }; REFUSALS.len()] }; CONNECTORS.len()],
};

/// Count one operation a connector refused (see `host_imports`).
pub(crate) fn record_refusal(connector: &str, refusal: Refusal) {
    let c = CONNECTORS.iter().position(|n| *n == connector);
    let r = REFUSALS.iter().position(|x| *x == refusal);
    if let (Some(c), Some(r)) = (c, r) {
        STATS.refusals[c][r].fetch_add(1, Ordering::Relaxed);
    }
}

/// How many operations on `connector` were refused for `reason` (`not-granted`, `read-only`,
/// `denied`) so far.
pub fn refusals(connector: &str, reason: &str) -> u64 {
    let c = CONNECTORS.iter().position(|n| *n == connector);
    let r = REFUSALS.iter().position(|x| refusal_name(*x) == reason);
    match (c, r) {
        (Some(c), Some(r)) => STATS.refusals[c][r].load(Ordering::Relaxed),
        _ => 0,
    }
}

pub(crate) fn record_call(took: Duration, failure: Option<&PluginFailure>) {
    let secs = took.as_secs_f64();
    for (i, le) in BUCKETS.iter().enumerate() {
        if secs <= *le {
            STATS.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
    }
    STATS.count.fetch_add(1, Ordering::Relaxed);
    STATS
        .sum_micros
        .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    if let Some(i) = failure.and_then(|f| CAUSES.iter().position(|c| *c == f.cause_name())) {
        STATS.kills[i].fetch_add(1, Ordering::Relaxed);
    }
}

/// How many calls the sandbox stopped for `cause` so far.
pub fn kills(cause: &str) -> u64 {
    CAUSES
        .iter()
        .position(|c| *c == cause)
        .map_or(0, |i| STATS.kills[i].load(Ordering::Relaxed))
}

/// Append the runtime's metrics in Prometheus text format.
pub fn write_prometheus(out: &mut String) {
    let _ = writeln!(
        out,
        "# HELP plover_plugin_call_seconds Latency of plugin calls (instantiation included).\n# TYPE plover_plugin_call_seconds histogram"
    );
    for (i, le) in BUCKETS.iter().enumerate() {
        let _ = writeln!(
            out,
            "plover_plugin_call_seconds_bucket{{le=\"{le}\"}} {}",
            STATS.buckets[i].load(Ordering::Relaxed)
        );
    }
    let count = STATS.count.load(Ordering::Relaxed);
    let _ = writeln!(
        out,
        "plover_plugin_call_seconds_bucket{{le=\"+Inf\"}} {count}"
    );
    let _ = writeln!(
        out,
        "plover_plugin_call_seconds_sum {}",
        STATS.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
    );
    let _ = writeln!(out, "plover_plugin_call_seconds_count {count}");
    let _ = writeln!(
        out,
        "# HELP plover_sandbox_kills_total Plugin calls the sandbox stopped, by cause.\n# TYPE plover_sandbox_kills_total counter"
    );
    for (i, cause) in CAUSES.iter().enumerate() {
        let _ = writeln!(
            out,
            "plover_sandbox_kills_total{{cause=\"{cause}\"}} {}",
            STATS.kills[i].load(Ordering::Relaxed)
        );
    }
    let _ = writeln!(
        out,
        "# HELP plover_connector_refusals_total Connector operations the host refused, by connector and reason.\n# TYPE plover_connector_refusals_total counter"
    );
    for (c, connector) in CONNECTORS.iter().enumerate() {
        for (r, refusal) in REFUSALS.iter().enumerate() {
            let _ = writeln!(
                out,
                "plover_connector_refusals_total{{connector=\"{connector}\",reason=\"{}\"}} {}",
                refusal_name(*refusal),
                STATS.refusals[c][r].load(Ordering::Relaxed)
            );
        }
    }
}
