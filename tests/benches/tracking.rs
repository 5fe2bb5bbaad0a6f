//! What durable tracking costs: kv-copy of 100,000 objects between sled buckets with the
//! engine's full tracking (object results, checkpoints, progress and logs committed to the job
//! store) against the same step with tracking disabled. Same plugin, same buckets, same sink
//! type. With `-- --postgres` the same is measured, in the same run and alternated, with the
//! job store on the local PostgreSQL as a node of a cluster (every commit fenced by the job's
//! lease and announced to other nodes), beside the embedded store.
//!
//! Run: `cargo bench -p plover-tests --bench tracking` (add `-- --quick` for a smoke run,
//! `-- --uncompressed` for sled without page compression, `-- --reps N` for N copies of each
//! kind, `--features system-allocator` to measure under the system allocator instead of the
//! binary's).

use plover_host::cluster::{Cluster, ClusterConfig};
use plover_host::connectors::{
    ConnectionProvider, Grants, HostConnections, JobStateSpace, KvBucket, SledBuckets,
};
use plover_host::engine::handle::RunControl;
use plover_host::engine::options::JobOptions;
use plover_host::engine::ownership::Forwarded;
use plover_host::engine::tracking::StepEvents;
use plover_host::engine::{Engine, NewMigration};
use plover_host::runtime::{JobContext, LoadedPlugin, PluginRegistry, Runtime, RuntimeConfig};
use plover_host::store::{JobStore, PgJobStore, SledJobStore};
use plover_tests::artifacts;
use plover_tests::bench::median;
use plover_tests::services::Schema;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One job store under measurement, with the engine over it.
struct Setup {
    name: &'static str,
    engine: Engine,
    connections: Arc<HostConnections>,
    _keep: Option<(Schema, Arc<Cluster>)>,
}

fn setup(
    name: &'static str,
    registry: &Arc<PluginRegistry>,
    buckets: &SledBuckets,
    store: (Arc<dyn JobStore>, Arc<dyn JobStateSpace>),
) -> (Engine, Arc<HostConnections>) {
    let connections = Arc::new(HostConnections::new(
        buckets.clone(),
        store.1,
        BTreeMap::new(),
        true,
    ));
    let engine = Engine::open(
        registry.clone(),
        store.0,
        connections.clone(),
        JobOptions::default(),
    )
    .unwrap_or_else(|e| panic!("{name}: {e}"));
    (engine, connections)
}

fn postgres(registry: &Arc<PluginRegistry>, buckets: &SledBuckets) -> Setup {
    let schema = Schema::new("benchtrack");
    let url = schema.store_url();
    let pool = plover_host::store::connect_postgres(&url, 8).unwrap();
    plover_host::store::pg_schema::migrate(&pool).unwrap();
    let cluster = Cluster::new(
        pool.clone(),
        &url,
        ClusterConfig {
            node_name: "bench".into(),
            lease: Duration::from_secs(10),
            api_url: None,
        },
    );
    let store = PgJobStore::new(pool).for_node(cluster.node_id());
    let job_state = Arc::new(store.job_state());
    let (engine, connections) = setup("postgres", registry, buckets, (Arc::new(store), job_state));
    cluster
        .start(
            engine.clone(),
            Box::new(|_, _, _| Forwarded::NotTaken),
            Box::new(|| {}),
        )
        .unwrap();
    Setup {
        name: "postgres",
        engine,
        connections,
        _keep: Some((schema, cluster)),
    }
}

/// kv-copy's copy step from `source` into a new bucket, tracked or not; how long it took.
fn copy(
    s: &Setup,
    plugin: &Arc<LoadedPlugin>,
    buckets: &SledBuckets,
    source: &Arc<dyn KvBucket>,
    objects: usize,
    tracked: bool,
    run: usize,
) -> Duration {
    let target = format!("target-{}-{run}", s.name);
    let job = s
        .engine
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
    let _lease = s.engine.hold_lease(&job.id).unwrap();
    let handle = s.engine.job_handle(&job.id).unwrap();
    let control = Arc::new(RunControl::default());
    let events: Arc<StepEvents> = Arc::new(if tracked {
        StepEvents::new(handle.clone(), control.clone(), "copy")
    } else {
        StepEvents::untracked(handle.clone(), control.clone(), "copy")
    });
    let sink: Arc<dyn plover_host::runtime::JobEvents> = events.clone();
    let grants = Grants::new(s.connections.job_state(&job.id, false, handle.fence()))
        .with_kv("source", source.clone())
        .with("target", s.connections.connect(&target).unwrap());
    let ctx = JobContext {
        grants,
        events: sink,
        checkpoint: None,
        force_stop: control.force.clone(),
        call_timeout: None,
    };
    let t = Instant::now();
    plugin
        .execute(&ctx, &job.spec, &job.plan.steps[0], None)
        .unwrap()
        .unwrap();
    // The step's completion commits what the last checkpoints left, as the engine does.
    events.write_staged();
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
        let committed = s.engine.snapshot(&job.id).unwrap().completed_objects;
        assert_eq!(committed, objects as u64, "{}", s.name);
    }
    took
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let with_postgres = std::env::args().any(|a| a == "--postgres");
    let uncompressed = std::env::args().any(|a| a == "--uncompressed");
    let objects: usize = if quick { 10_000 } else { 100_000 };
    // One copy's time varies by about ±20 % on these machines: `--reps 30` resolves a few
    // percent where the default only shows the trend.
    let args: Vec<String> = std::env::args().collect();
    let reps = args
        .iter()
        .position(|a| a == "--reps")
        .and_then(|i| args.get(i + 1))
        .map(|n| n.parse().expect("--reps takes a number"))
        .unwrap_or(if quick { 3 } else { 9 });
    println!(
        "plover tracking benchmark ({} mode; medians of {reps}; sled {}; allocator: {})",
        if quick { "quick" } else { "full" },
        if uncompressed {
            "uncompressed"
        } else {
            "as the server opens it"
        },
        plover_tests::bench::allocator_in_use(),
    );

    let dir = tempfile::tempdir().unwrap();
    // As the server opens its database (compressed pages, the default page-cache budget), or
    // with `--uncompressed` uncompressed with a large cache: cheaper pages, so whatever
    // tracking adds weighs more.
    let db = if uncompressed {
        sled::Config::new()
            .path(dir.path())
            .use_compression(false)
            .cache_capacity(256 << 20)
            .open()
            .unwrap()
    } else {
        plover_host::store::open_database(dir.path()).unwrap()
    };
    let buckets = SledBuckets::new(db.clone());
    let source: Arc<dyn KvBucket> = buckets.open("source").unwrap();
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
    let plugin = registry.resolve("kv-copy").unwrap();
    let sled_store = SledJobStore::open_db(&db).unwrap();
    let sled_state = Arc::new(sled_store.job_state());
    let (engine, connections) = setup(
        "sled",
        &registry,
        &buckets,
        (Arc::new(sled_store), sled_state),
    );
    let mut setups = vec![Setup {
        name: "sled",
        engine,
        connections,
        _keep: None,
    }];
    if with_postgres {
        setups.push(postgres(&registry, &buckets));
    }

    let mut samples: Vec<(Vec<Duration>, Vec<Duration>)> = vec![(vec![], vec![]); setups.len()];
    let mut run = 0;
    for rep in 0..reps {
        for (s, (without, with)) in setups.iter().zip(samples.iter_mut()) {
            // Which goes first alternates: a run leaves the database work (flushes, its log
            // to clean) that slows whatever comes next.
            for tracked in [rep % 2 == 0, rep % 2 == 1] {
                run += 1;
                let took = copy(s, &plugin, &buckets, &source, objects, tracked, run);
                if tracked {
                    with.push(took)
                } else {
                    without.push(took)
                }
            }
        }
    }
    let rate = |d: Duration| objects as f64 / d.as_secs_f64();
    for (s, (without, with)) in setups.iter().zip(samples) {
        let ms = |d: &Duration| format!("{:.0}", d.as_secs_f64() * 1e3);
        println!(
            "{:8} samples, ms: off {} / on {}",
            s.name,
            without.iter().map(ms).collect::<Vec<_>>().join(" "),
            with.iter().map(ms).collect::<Vec<_>>().join(" ")
        );
        let (with, without) = (median(with), median(without));
        println!(
            "{:8} kv-copy {objects} objects, tracking off: {:>8.1} ms ({:.0} objects/s)",
            s.name,
            without.as_secs_f64() * 1e3,
            rate(without)
        );
        println!(
            "{:8} kv-copy {objects} objects, tracking on:  {:>8.1} ms ({:.0} objects/s)",
            s.name,
            with.as_secs_f64() * 1e3,
            rate(with)
        );
        println!(
            "{:8} throughput cost of tracking:        {:>8.1} %",
            s.name,
            100.0 * (1.0 - rate(with) / rate(without))
        );
    }
}
