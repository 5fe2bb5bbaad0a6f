//! What history costs: disk and memory as finished jobs accumulate, and the cost of the
//! requests that must not grow with them (a list page, the counts `/metrics` reads, a
//! snapshot), with 10 jobs and with many.
//!
//! Run: `cargo bench -p plover-tests --bench store` (add `-- --quick` for a smoke run,
//! `-- --jobs N` for N jobs instead of 10,000, and `-- --postgres` to measure the PostgreSQL
//! store, in a schema of its own in the local database `test`, instead of sled).
//!
//! Jobs are created and run through the engine with the stepper plugin (a two-step plan,
//! one object per step), over a sled store in a temporary directory or the PostgreSQL one.

use plover_host::connectors::{HostConnections, JobStateSpace};
use plover_host::engine::options::JobOptions;
use plover_host::engine::state::JobStatus;
use plover_host::engine::{Engine, ListFilter, NewMigration};
use plover_host::runtime::{PluginRegistry, Runtime, RuntimeConfig};
use plover_host::store::{JobStore, PgJobStore, SledJobStore};
use plover_tests::artifacts;
use plover_tests::bench::{disk_bytes, median, resident_bytes};
use plover_tests::services::Schema;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The engine over sled in `dir`, or over PostgreSQL in `schema` (sled buckets stay in `dir`).
fn engine(dir: &std::path::Path, schema: Option<&Schema>) -> Engine {
    let db = plover_host::store::open_database(&dir.join("db")).unwrap();
    let (store, job_state): (Arc<dyn JobStore>, Arc<dyn JobStateSpace>) = match schema {
        Some(schema) => {
            let pool = plover_host::store::connect_postgres(&schema.store_url(), 16).unwrap();
            plover_host::store::pg_schema::migrate(&pool).unwrap();
            let store = PgJobStore::new(pool);
            let job_state = Arc::new(store.job_state());
            (Arc::new(store), job_state)
        }
        None => {
            let store = SledJobStore::open_db(&db).unwrap();
            let job_state = Arc::new(store.job_state());
            (Arc::new(store), job_state)
        }
    };
    let connections = Arc::new(HostConnections::new(
        plover_host::connectors::SledBuckets::new(db.clone()),
        job_state,
        BTreeMap::new(),
        true,
    ));
    let runtime = Runtime::new(RuntimeConfig::default()).unwrap();
    let registry = Arc::new(PluginRegistry::new());
    registry
        .insert(runtime.load_file(artifacts::STEPPER.as_ref()).unwrap())
        .unwrap();
    Engine::open(registry, store, connections, JobOptions::default()).unwrap()
}

/// What the jobs take where they are kept: the data directory, or the schema's tables with
/// their indexes and TOAST.
fn stored_bytes(dir: &std::path::Path, schema: Option<&Schema>) -> u64 {
    match schema {
        None => disk_bytes(dir),
        Some(schema) => {
            let total: Option<i64> = plover_tests::services::postgres()
                .query_one(
                    "SELECT sum(pg_total_relation_size(c.oid))::bigint FROM pg_class c
                     JOIN pg_namespace n ON n.oid = c.relnamespace
                     WHERE n.nspname = $1 AND c.relkind = 'r'",
                    &[&schema.name],
                )
                .unwrap()
                .get(0);
            total.unwrap_or(0) as u64
        }
    }
}

fn new_job(engine: &Engine) -> String {
    engine
        .create(
            NewMigration {
                handler: "stepper".into(),
                parameters: json!({ "steps": [
                    { "id": "a", "batches": 1, "batch_ms": 0 },
                    { "id": "b", "after": ["a"], "batches": 1, "batch_ms": 0 }
                ] }),
                grants: [("data".to_string(), "data".to_string())].into(),
                ..Default::default()
            },
            "bench",
        )
        .unwrap()
        .id
}

/// Create and run `n` jobs to completion, `parallel` at a time.
fn run_jobs(engine: &Engine, n: usize, parallel: usize) {
    let mut running: Vec<String> = vec![];
    for _ in 0..n {
        let id = new_job(engine);
        engine.execute(&id, "bench").unwrap();
        running.push(id);
        if running.len() >= parallel {
            for id in running.drain(..) {
                let done = engine.wait_idle(&id, Duration::from_secs(60)).unwrap();
                assert_eq!(done.status, JobStatus::Completed);
            }
        }
    }
    for id in running {
        engine.wait_idle(&id, Duration::from_secs(60)).unwrap();
    }
}

/// Median time of `f` over `reps` runs.
fn time(reps: usize, mut f: impl FnMut()) -> Duration {
    median(
        (0..reps)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed()
            })
            .collect(),
    )
}

fn request_costs(engine: &Engine, newest: &str) -> (Duration, Duration, Duration) {
    let list = time(200, || {
        let page = engine
            .list(&ListFilter {
                limit: Some(50),
                ..Default::default()
            })
            .unwrap();
        assert!(!page.items.is_empty());
    });
    let counts = time(200, || {
        engine.counts_by_status().unwrap();
    });
    let snapshot = time(200, || {
        engine.snapshot(newest).unwrap();
    });
    (list, counts, snapshot)
}

/// Set in a child process of the benchmark: open the sled data there and report memory.
const OPEN_ONLY: &str = "PLOVER_BENCH_OPEN_ONLY";

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// What a node restarted on `engine`'s data in `dir` holds: the resident memory of a new
/// process that opens a copy of it (sled allows one opener) and reads a list page, in MiB.
fn memory_after_restart(engine: &Engine, dir: &std::path::Path) -> f64 {
    engine.flush().unwrap();
    let copy = tempfile::tempdir().unwrap();
    copy_dir(dir, copy.path());
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .env(OPEN_ONLY, copy.path())
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)))
}

fn main() {
    if let Ok(dir) = std::env::var(OPEN_ONLY) {
        let engine = engine(std::path::Path::new(&dir), None);
        engine.list(&Default::default()).unwrap();
        println!("{:.1}", resident_bytes() as f64 / (1 << 20) as f64);
        return;
    }
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let postgres = args.iter().any(|a| a == "--postgres");
    let (small, mut large) = if quick { (100, 1_000) } else { (100, 10_000) };
    if let Some(n) = args
        .iter()
        .position(|a| a == "--jobs")
        .and_then(|i| args.get(i + 1))
    {
        large = n.parse().expect("--jobs takes a number");
    }
    println!(
        "plover store benchmark ({} mode, {}; request costs are medians of 200; allocator: {})",
        if quick { "quick" } else { "full" },
        if postgres { "PostgreSQL" } else { "sled" },
        plover_tests::bench::allocator_in_use(),
    );
    // Planned jobs only (created, never run).
    let planned_dir = tempfile::tempdir().unwrap();
    let planned_schema = postgres.then(|| Schema::new("benchplanned"));
    let planned = engine(planned_dir.path(), planned_schema.as_ref());
    for _ in 0..large {
        new_job(&planned);
    }
    planned.flush().unwrap();
    println!(
        "disk: {large} planned jobs {:.1} MiB",
        stored_bytes(planned_dir.path(), planned_schema.as_ref()) as f64 / (1 << 20) as f64
    );
    drop(planned);

    let dir = tempfile::tempdir().unwrap();
    let schema = postgres.then(|| Schema::new("benchstore"));
    let engine = engine(dir.path(), schema.as_ref());
    let rss_empty = resident_bytes();

    run_jobs(&engine, small, 8);
    let newest = engine.list(&Default::default()).unwrap().items[0]
        .id
        .clone();
    let at_small = request_costs(&engine, &newest);
    let (disk_small, rss_small) = (stored_bytes(dir.path(), schema.as_ref()), resident_bytes());
    let restarted_small = (!postgres).then(|| memory_after_restart(&engine, dir.path()));

    let started = Instant::now();
    let mut resident = vec![];
    for quarter in 1..=4 {
        run_jobs(&engine, (large - small) / 4, 8);
        resident.push((small + quarter * (large - small) / 4, resident_bytes()));
    }
    let took = started.elapsed();
    let newest = engine.list(&Default::default()).unwrap().items[0]
        .id
        .clone();
    let at_large = request_costs(&engine, &newest);
    engine.flush().unwrap();
    let (disk_large, rss_large) = (stored_bytes(dir.path(), schema.as_ref()), resident_bytes());
    let total = engine.list(&Default::default()).unwrap().total;
    assert_eq!(total, large as u64);
    let restarted_large = (!postgres).then(|| memory_after_restart(&engine, dir.path()));

    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "{large} jobs created and run in {:.1} s",
        took.as_secs_f64()
    );
    println!(
        "disk: {small} finished jobs {:.1} MiB, {large} finished jobs {:.1} MiB ({:.1} KiB per job)",
        mib(disk_small),
        mib(disk_large),
        (disk_large - disk_small) as f64 / 1024.0 / (large - small) as f64
    );
    println!(
        "resident memory: empty {:.1} MiB, {small} jobs {:.1} MiB, {large} jobs {:.1} MiB",
        mib(rss_empty),
        mib(rss_small),
        mib(rss_large)
    );
    let steps: Vec<String> = resident
        .iter()
        .map(|(n, b)| format!("{n}: {:.1} MiB", mib(*b)))
        .collect();
    println!("resident memory as jobs finish: {}", steps.join(", "));
    if let (Some(a), Some(b)) = (restarted_small, restarted_large) {
        println!(
            "a node restarted on the data: {small} jobs {a:.1} MiB, {large} jobs {b:.1} MiB ({:.2} KiB per job)",
            (b - a) * 1024.0 / (large - small) as f64
        );
    }
    println!(
        "list page (50 jobs):     {small} jobs {:>7.1} µs, {large} jobs {:>7.1} µs",
        us(at_small.0),
        us(at_large.0)
    );
    println!(
        "counts by state:         {small} jobs {:>7.1} µs, {large} jobs {:>7.1} µs",
        us(at_small.1),
        us(at_large.1)
    );
    println!(
        "snapshot of one job:     {small} jobs {:>7.1} µs, {large} jobs {:>7.1} µs",
        us(at_small.2),
        us(at_large.2)
    );
}
