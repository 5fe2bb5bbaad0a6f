//! What durable tracking costs: kv-copy of 100,000 objects between sled buckets with the
//! engine's full tracking (object results, checkpoints, progress and logs committed to sled)
//! against the same step with tracking disabled. Same plugin, same buckets, same sink type.
//!
//! Run: `cargo bench -p plover-tests --bench tracking` (add `-- --quick` for a smoke run).

use plover_host::connectors::{ConnectionProvider, Grants, HostConnections, KvBucket, SledBuckets};
use plover_host::engine::handle::RunControl;
use plover_host::engine::options::JobOptions;
use plover_host::engine::tracking::StepEvents;
use plover_host::engine::{Engine, NewMigration};
use plover_host::runtime::{JobContext, PluginRegistry, Runtime, RuntimeConfig};
use plover_host::store::SledJobStore;
use plover_tests::artifacts;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use plover_tests::bench::median;

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let objects: usize = if quick { 10_000 } else { 100_000 };
    let reps = if quick { 3 } else { 9 };
    println!(
        "plover tracking benchmark ({} mode; medians of {reps})",
        if quick { "quick" } else { "full" }
    );

    let dir = tempfile::tempdir().unwrap();
    // As the server opens its database (compressed pages), with a smaller cache.
    let db = sled::Config::new()
        .path(dir.path())
        .use_compression(std::env::var_os("ZSTD").is_some())
        .compression_factor(1)
        .cache_capacity(256 << 20)
        .open()
        .unwrap();
    let buckets = SledBuckets::new(db.clone());
    let source = buckets.open("source").unwrap();
    let entries: Vec<(String, Vec<u8>)> = (0..objects)
        .map(|i| {
            (
                format!("session/{i:07}"),
                format!("{{\"user\":{i},\"data\":\"{}\"}}", "x".repeat(100)).into_bytes(),
            )
        })
        .collect();
    for chunk in entries.chunks(10_000) {
        source.set_many(chunk).unwrap();
    }

    let runtime = Runtime::new(RuntimeConfig::default()).unwrap();
    let registry = Arc::new(PluginRegistry::new());
    registry
        .insert(runtime.load_file(artifacts::KV_COPY.as_ref()).unwrap())
        .unwrap();
    let store = SledJobStore::open_db(&db).unwrap();
    let connections = Arc::new(HostConnections::new(
        buckets.clone(),
        Arc::new(store.job_state()),
        BTreeMap::new(),
        true,
    ));
    let store = Arc::new(store);
    let engine = Engine::open(
        registry.clone(),
        store,
        connections.clone(),
        JobOptions::default(),
    )
    .unwrap();
    let plugin = registry.resolve("kv-copy").unwrap();

    let mut run = 0;
    let mut copy = |tracked: bool| -> Duration {
        run += 1;
        let target = format!("target-{run}");
        let job = engine
            .create(
                NewMigration {
                    handler: "kv-copy".into(),
                    parameters: json!({ "prefix": "session/" }),
                    grants: [
                        ("source".into(), "source".into()),
                        ("target".into(), target.clone()),
                    ]
                    .into(),
                    options: json!({ "batch_size": 1000 }),
                    ..Default::default()
                },
                "bench",
            )
            .unwrap();
        let handle = engine.job_handle(&job.id).unwrap();
        let control = Arc::new(RunControl::default());
        let events: Arc<StepEvents> = Arc::new(if tracked {
            StepEvents::new(handle.clone(), control.clone(), "copy")
        } else {
            StepEvents::untracked(handle.clone(), control.clone(), "copy")
        });
        let sink: Arc<dyn plover_host::runtime::JobEvents> = events.clone();
        let grants = Grants::new(connections.job_state(&job.id, false))
            .with_kv("source", source.clone())
            .with("target", connections.connect(&target).unwrap());
        let ctx = JobContext {
            grants,
            events: sink,
            checkpoint: None,
            force_stop: control.force.clone(),
            call_timeout: None,
        };
        let t = Instant::now();
        plugin
            .execute(&ctx, &job.spec, &job.plan.steps[0])
            .unwrap()
            .unwrap();
        // The step's completion commits what the last checkpoints left, as the engine does.
        handle
            .update_with_objects(|rec| {
                let (events, segments) = events.drain_for_completion(rec);
                (events, segments, ())
            })
            .unwrap();
        let took = t.elapsed();
        assert_eq!(
            buckets.open(&target).unwrap().count("session/").unwrap(),
            objects as u64
        );
        if tracked {
            let committed = engine.snapshot(&job.id).unwrap().completed_objects;
            assert_eq!(committed, objects as u64);
        }
        took
    };

    let (mut with, mut without) = (vec![], vec![]);
    for _ in 0..reps {
        without.push(copy(false));
        with.push(copy(true));
    }
    let (with, without) = (median(with), median(without));
    let rate = |d: Duration| objects as f64 / d.as_secs_f64();
    println!(
        "kv-copy {objects} objects, tracking off: {:>8.1} ms ({:.0} objects/s)",
        without.as_secs_f64() * 1e3,
        rate(without)
    );
    println!(
        "kv-copy {objects} objects, tracking on:  {:>8.1} ms ({:.0} objects/s)",
        with.as_secs_f64() * 1e3,
        rate(with)
    );
    println!(
        "throughput cost of tracking:        {:>8.1} %",
        100.0 * (1.0 - rate(with) / rate(without))
    );
}
