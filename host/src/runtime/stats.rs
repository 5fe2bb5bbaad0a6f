//! The runtime's figures for `/metrics`: call latency, sandbox kills by cause and connector
//! refusals, kept in the process-wide [`crate::metrics`].

use super::error::PluginFailure;
use super::host_imports::Refusal;
use std::time::Duration;

/// Every cause a kill can have, so each is shown (at 0) before it first happens.
pub const CAUSES: [&str; 13] = [
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
    "limit-exceeded",
    "data-corruption",
    "exit",
];
pub const CONNECTORS: [&str; 3] = ["kv", "sql", "http"];
pub const REFUSALS: [&str; 3] = ["not-granted", "read-only", "denied"];

fn refusal_name(r: Refusal) -> &'static str {
    match r {
        Refusal::NotGranted => "not-granted",
        Refusal::ReadOnly => "read-only",
        Refusal::Denied => "denied",
    }
}

/// Show every label combination at 0 before it first happens.
pub(crate) fn register_labels() {
    let m = crate::metrics::get();
    for cause in CAUSES {
        m.kills.with_label_values(&[cause]);
    }
    for c in CONNECTORS {
        for r in REFUSALS {
            m.refusals.with_label_values(&[c, r]);
        }
    }
}

/// Count one operation a connector refused (see `host_imports`).
pub(crate) fn record_refusal(connector: &str, refusal: Refusal) {
    crate::metrics::get()
        .refusals
        .with_label_values(&[connector, refusal_name(refusal)])
        .inc();
}

/// How many operations on `connector` were refused for `reason` (`not-granted`, `read-only`,
/// `denied`) so far.
pub fn refusals(connector: &str, reason: &str) -> u64 {
    crate::metrics::get()
        .refusals
        .with_label_values(&[connector, reason])
        .get()
}

pub(crate) fn record_call(took: Duration, failure: Option<&PluginFailure>) {
    let m = crate::metrics::get();
    m.call_seconds.observe(took.as_secs_f64());
    if let Some(f) = failure {
        m.kills.with_label_values(&[f.cause_name()]).inc();
    }
}

/// How many calls the sandbox stopped for `cause` so far.
pub fn kills(cause: &str) -> u64 {
    crate::metrics::get()
        .kills
        .with_label_values(&[cause])
        .get()
}
