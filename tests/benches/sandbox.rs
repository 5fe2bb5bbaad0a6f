//! What a plugin can make the host hold, and how fast deadlines end waits the guest cannot be
//! interrupted in:
//! - a step recording ten million object results (1,000 batches of 10,000) through the engine
//!   over sled: the host's resident memory (sampled every 100 ms) and the store's growth;
//! - from a call's deadline to the call's end, for a SQL statement sleeping in PostgreSQL
//!   (after the plugin lifted `statement_timeout`) and an HTTP body trickled a byte at a time.
//!
//! Run: `cargo bench -p plover-tests --bench sandbox` (add `-- --quick` for one million
//! results and fewer samples).

use plover_host::connectors::{Connector, HostConnections, HttpConnection, HttpRules, SledBuckets};
use plover_host::engine::options::JobOptions;
use plover_host::engine::state::JobStatus;
use plover_host::engine::{Engine, NewMigration};
use plover_host::runtime::{PluginRegistry, Runtime, RuntimeConfig, SandboxLimits};
use plover_host::store::SledJobStore;
use plover_host::testing::TestHarness;
use plover_tests::artifacts;
use plover_tests::bench::{disk_bytes, median, resident_bytes};
use plover_tests::services::{Schema, trickling_server};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

fn mib(b: u64) -> f64 {
    b as f64 / (1 << 20) as f64
}

fn ten_million_results(batches: u32) {
    let dir = tempfile::tempdir().unwrap();
    let db = plover_host::store::open_database(&dir.path().join("db")).unwrap();
    let store = SledJobStore::open_db(&db).unwrap();
    let connections = Arc::new(HostConnections::new(
        SledBuckets::new(db.clone()),
        Arc::new(store.job_state()),
        BTreeMap::new(),
        true,
    ));
    let runtime = Runtime::new(RuntimeConfig::default()).unwrap();
    let registry = Arc::new(PluginRegistry::new());
    registry
        .insert(runtime.load_file(artifacts::STEPPER.as_ref()).unwrap())
        .unwrap();
    let engine = Engine::open(
        registry,
        Arc::new(store),
        connections,
        JobOptions::default(),
    )
    .unwrap();
    let results = batches as u64 * 10_000;
    let job = engine
        .create(
            NewMigration {
                handler: "stepper".into(),
                parameters: json!({ "steps": [{ "id": "a", "batches": batches, "batch_ms": 0, "per_batch": 10_000 }] }),
                grants: [("data".to_string(), "data".to_string())].into(),
                options: json!({ "max_log_lines": 100 }),
                ..Default::default()
            },
            "bench",
        )
        .unwrap();
    let (rss_before, disk_before) = (resident_bytes(), disk_bytes(dir.path()));
    let peak = Arc::new(AtomicU64::new(rss_before));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, done) = (peak.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(resident_bytes(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let started = Instant::now();
    engine.execute(&job.id, "bench").unwrap();
    let snap = engine
        .wait_idle(&job.id, Duration::from_secs(3600))
        .unwrap();
    let took = started.elapsed();
    done.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    assert_eq!(snap.status, JobStatus::Completed, "{:?}", snap.errors);
    assert_eq!(snap.completed_objects, results);
    engine.flush().unwrap();
    let (rss_after, disk_after) = (resident_bytes(), disk_bytes(dir.path()));
    println!(
        "{results} object results in {:.1} s ({:.0}/s)",
        took.as_secs_f64(),
        results as f64 / took.as_secs_f64()
    );
    println!(
        "resident memory: before {:.1} MiB, peak {:.1} MiB, after {:.1} MiB",
        mib(rss_before),
        mib(peak.load(Ordering::Relaxed)),
        mib(rss_after)
    );
    println!(
        "store growth: {:.1} MiB ({:.1} bytes per result)",
        mib(disk_after - disk_before),
        (disk_after - disk_before) as f64 / results as f64
    );
}

/// Median time from the call's deadline (1 s) to the call's end, for `ops` run in `execute`.
fn past_deadline(h: &TestHarness, ops: serde_json::Value, samples: usize) -> Duration {
    let spec = h.spec("connector-probe", json!({ "phase": "execute", "ops": ops }));
    let plan = h.plan(&spec).unwrap();
    median(
        (0..samples)
            .map(|_| {
                let started = Instant::now();
                let outcome = h.execute(&spec, &plan.steps[0], None);
                assert!(outcome.is_err(), "the call must not finish: {outcome:?}");
                started.elapsed().saturating_sub(Duration::from_secs(1))
            })
            .collect(),
    )
}

fn deadlines(samples: usize) {
    let runtime = Arc::new(Runtime::new(RuntimeConfig::default()).unwrap());
    let limits = SandboxLimits {
        call_timeout: Duration::from_secs(1),
        ..Default::default()
    };
    let schema = Schema::new("benchdeadline");
    let base = trickling_server();
    let mut h = TestHarness::load_in(runtime, artifacts::CONNECTOR_PROBE, limits).unwrap();
    h.grant_connector("db", schema.connector());
    h.grant_connector(
        "api",
        Connector::Http(Arc::new(
            HttpConnection::new(HttpRules {
                allow: vec![base.clone()],
                allow_private: true,
                timeout_ms: 600_000,
                max_response_bytes: 1 << 20,
                max_redirects: 0,
                ca_cert: None,
            })
            .unwrap(),
        )),
    );
    let sql = past_deadline(
        &h,
        json!([
            { "op": "sql-execute", "binding": "db", "statement": "SELECT set_config('statement_timeout', '0', false)" },
            { "op": "sql-execute", "binding": "db", "statement": "SELECT pg_sleep(60)" }
        ]),
        samples,
    );
    let http = past_deadline(
        &h,
        json!([{ "op": "http", "binding": "api", "method": "GET", "url": format!("{base}/slow") }]),
        samples,
    );
    println!(
        "deadline to the call's end, SQL sleeping with statement_timeout lifted: median {:.0} ms",
        sql.as_secs_f64() * 1e3
    );
    println!(
        "deadline to the call's end, HTTP body trickled a byte per 200 ms:      median {:.0} ms",
        http.as_secs_f64() * 1e3
    );
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    println!(
        "plover sandbox benchmark ({} mode)",
        if quick { "quick" } else { "full" }
    );
    ten_million_results(if quick { 100 } else { 1000 });
    deadlines(if quick { 3 } else { 9 });
}
