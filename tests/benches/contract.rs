//! What the 0.1 adapter costs: the host implements contract 0.2 and runs 0.1 plugins through
//! `runtime/contract/v0_1`, which converts every lifecycle call's arguments and answer and
//! every host import. Measured on the same guest code built against 0.1.0 (`contract-v0-1-0`)
//! and 0.2.0 (`contract-v0-2-0`), kind `count-imports`: one lifecycle call (a fresh instance
//! and an `execute` that does nothing), and one host-import round trip (`is-cancelled` in a
//! loop, minus the empty call). Samples of the two alternate, so the ratio is same-run.
//!
//! Run: `cargo bench -p plover-tests --bench contract` (add `-- --quick` for a smoke run).

use plover_host::model::{MigrationSpec, PlanStep};
use plover_host::testing::TestHarness;
use plover_tests::artifacts;
use plover_tests::bench::{bare_step, median};
use serde_json::json;
use std::time::{Duration, Instant};

fn time(f: impl FnOnce()) -> Duration {
    let t = Instant::now();
    f();
    t.elapsed()
}

/// The mean time of `n` executes of `spec` (each a fresh instance).
fn executes(h: &TestHarness, spec: &MigrationSpec, step: &PlanStep, n: u32) -> Duration {
    time(|| {
        for _ in 0..n {
            let report = h.execute(spec, step, None).unwrap();
            assert!(report.summary.ends_with(" calls"), "{}", report.summary);
        }
    }) / n
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (reps, calls, per_sample) = if quick {
        (3, 20_000, 20)
    } else {
        (9, 200_000, 200)
    };
    let old = TestHarness::load(artifacts::CONTRACT_V0_1_0).unwrap();
    let new = TestHarness::load(artifacts::CONTRACT_V0_2_0).unwrap();
    assert_eq!(old.plugin.contract_version().to_string(), "0.1.0");
    assert_eq!(new.plugin.contract_version().to_string(), "0.2.0");
    let step = bare_step("count");
    let spec = |h: &TestHarness, n: u64| h.spec("count-imports", json!({ "calls": n }));
    let (old_zero, old_full) = (spec(&old, 0), spec(&old, calls));
    let (new_zero, new_full) = (spec(&new, 0), spec(&new, calls));
    // Warm up both (first instantiations fault pages in).
    executes(&old, &old_zero, &step, 10);
    executes(&new, &new_zero, &step, 10);

    let (mut call_old, mut call_new, mut import_old, mut import_new) =
        (vec![], vec![], vec![], vec![]);
    for _ in 0..reps {
        call_old.push(executes(&old, &old_zero, &step, per_sample));
        call_new.push(executes(&new, &new_zero, &step, per_sample));
        let per_import = |h: &TestHarness, zero: &MigrationSpec, full: &MigrationSpec| {
            let base = executes(h, zero, &step, 1);
            executes(h, full, &step, 1).saturating_sub(base) / calls as u32
        };
        import_old.push(per_import(&old, &old_zero, &old_full));
        import_new.push(per_import(&new, &new_zero, &new_full));
    }
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    let (co, cn) = (median(call_old), median(call_new));
    let (io, inew) = (median(import_old), median(import_new));
    println!("plover contract-adapter benchmark (medians of {reps} samples)");
    println!(
        "lifecycle call (fresh instance, empty execute):  0.1 via adapter {:>8.1} µs   0.2 native {:>8.1} µs   {:.2}×",
        co.as_secs_f64() * 1e6,
        cn.as_secs_f64() * 1e6,
        ratio(co, cn)
    );
    println!(
        "host-import round trip (is-cancelled):           0.1 via adapter {:>8} ns   0.2 native {:>8} ns   {:.2}×",
        io.as_nanos(),
        inew.as_nanos(),
        ratio(io, inew)
    );
}
