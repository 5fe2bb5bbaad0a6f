//! Failing plugins do not leak host memory. Its own test binary, so no other test's
//! allocations disturb the measurement.

use plover_host::runtime::{PluginFailure, SandboxLimits};
use plover_host::testing::TestHarness;
use plover_tests::artifacts;
use serde_json::json;
use std::time::Duration;

/// Resident memory of this process, in bytes.
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    statm
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        * 4096
}

#[test]
fn repeated_failures_do_not_leak_host_memory() {
    let limits = SandboxLimits {
        memory_bytes: 32 << 20,
        call_timeout: Duration::from_secs(30),
        ..SandboxLimits::default()
    };
    let rt = std::sync::Arc::new(plover_host::runtime::Runtime::new(Default::default()).unwrap());
    let h = TestHarness::load_in(rt, artifacts::MISBEHAVE, limits).unwrap();
    let bomb = h.spec("misbehave", json!({ "mode": "memory-bomb" }));
    let panic = h.spec("misbehave", json!({ "mode": "panic" }));
    // Warm up: the first calls size the allocator's pools.
    for _ in 0..3 {
        h.plugin.plan(&h.context(None), &bomb).unwrap_err();
    }
    let before = rss();
    for _ in 0..30 {
        let err = h.plugin.plan(&h.context(None), &bomb).unwrap_err();
        assert!(
            matches!(err.cause, PluginFailure::OutOfMemory { .. }),
            "{err}"
        );
        let err = h.plugin.plan(&h.context(None), &panic).unwrap_err();
        assert!(matches!(err.cause, PluginFailure::Panic { .. }), "{err}");
    }
    let grown = rss().saturating_sub(before);
    // 30 calls each filled a 32 MiB memory: a leak would keep about 1 GiB.
    assert!(
        grown < 64 << 20,
        "resident memory grew by {} MiB",
        grown >> 20
    );
}
