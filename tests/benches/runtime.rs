//! Runtime benchmark: plugin load (compile and cached), instantiation, a bare export call, a
//! host-import round trip, and kv-copy of 100,000 objects through the plugin against the same
//! copy written natively over the same sled buckets.
//!
//! Run: `cargo bench -p plover-tests --bench runtime` (add `-- --quick` for a smoke run).
//! Every figure is a median over repeated samples taken in this one run.

use plover_host::connectors::{KvBucket, SledBuckets};
use plover_host::model::{LogLevel, MigrationOptions, MigrationSpec, ObjectResult, ObjectStatus};
use plover_host::runtime::{ForceStop, JobContext, JobEvents, Runtime, RuntimeConfig};
use plover_tests::artifacts;
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Counts what a plugin reports without keeping it: the cheapest honest sink.
#[derive(Default)]
struct CountingEvents {
    objects: AtomicU64,
    checkpoints: AtomicU64,
}

impl JobEvents for CountingEvents {
    fn log(&self, _: LogLevel, _: String) {}
    fn progress(&self, _: u64, _: Option<u64>, _: Option<String>) {}
    fn objects(&self, results: Vec<ObjectResult>) -> Result<(), String> {
        self.objects
            .fetch_add(results.len() as u64, Ordering::Relaxed);
        Ok(())
    }
    fn checkpoint(&self, _: Vec<u8>) {
        self.checkpoints.fetch_add(1, Ordering::Relaxed);
    }
    fn is_cancelled(&self) -> bool {
        false
    }
}

use plover_tests::bench::{bare_step, median};

fn sample(n: usize, mut f: impl FnMut() -> Duration) -> Duration {
    median((0..n).map(|_| f()).collect())
}

fn time(f: impl FnOnce()) -> Duration {
    let t = Instant::now();
    f();
    t.elapsed()
}

fn fmt(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns < 10_000 {
        format!("{ns} ns")
    } else if ns < 10_000_000 {
        format!("{:.1} µs", ns as f64 / 1e3)
    } else {
        format!("{:.1} ms", ns as f64 / 1e6)
    }
}

fn spec(kind: &str, parameters: serde_json::Value, bindings: &[&str]) -> MigrationSpec {
    MigrationSpec {
        id: "bench".into(),
        kind: kind.into(),
        parameters,
        source: json!({}),
        target: json!({}),
        bindings: bindings.iter().map(|s| s.to_string()).collect(),
        options: MigrationOptions {
            batch_size: 1000,
            ..MigrationOptions::default()
        },
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let reps = if quick { 3 } else { 15 };
    let objects: usize = if quick { 10_000 } else { 100_000 };
    println!(
        "plover runtime benchmark ({} mode; medians)",
        if quick { "quick" } else { "full" }
    );

    let kv_copy = std::fs::read(artifacts::KV_COPY).unwrap();
    let probe = std::fs::read(artifacts::PROBE).unwrap();

    // Load: compile from scratch, then from the precompiled cache.
    let plain = Runtime::new(RuntimeConfig::default()).unwrap();
    let compile = sample(reps.min(5), || {
        time(|| drop(plain.load_bytes(&kv_copy).unwrap()))
    });
    let cache_dir = tempfile::tempdir().unwrap();
    let cached_cfg = RuntimeConfig {
        cache_dir: Some(cache_dir.path().into()),
        ..RuntimeConfig::default()
    };
    Runtime::new(cached_cfg.clone())
        .unwrap()
        .load_bytes(&kv_copy)
        .unwrap();
    let cached_rt = Runtime::new(cached_cfg).unwrap();
    let cached = sample(reps * 2, || {
        time(|| drop(cached_rt.load_bytes(&kv_copy).unwrap()))
    });
    println!("load kv-copy, compile (no cache):   {:>10}", fmt(compile));
    println!("load kv-copy, precompiled cache:    {:>10}", fmt(cached));

    // Instantiation and calls, with the on-demand and the pooling allocator.
    let mut instantiate_by_strategy = vec![];
    for pooling in [false, true] {
        let rt = Runtime::new(RuntimeConfig {
            pooling,
            ..RuntimeConfig::default()
        })
        .unwrap();
        let p = rt.load_bytes(&probe).unwrap();
        let per_instantiate = sample(reps, || {
            let n = 2000;
            time(|| (0..n).for_each(|_| p.bench_instantiate().unwrap())) / n
        });
        instantiate_by_strategy.push((pooling, per_instantiate));
        println!(
            "instantiate from InstancePre ({}): {:>10}",
            if pooling { "pooling  " } else { "on-demand" },
            fmt(per_instantiate)
        );
    }

    let rt = Runtime::new(RuntimeConfig::default()).unwrap();
    let p = rt.load_bytes(&probe).unwrap();
    let job = JobContext {
        grants: plover_host::connectors::Grants::new(Arc::new(
            plover_host::connectors::MemoryBucket::new(),
        )),
        events: Arc::new(CountingEvents::default()),
        checkpoint: None,
        force_stop: ForceStop::new(),
        call_timeout: None,
    };
    let noop_spec = spec("probe", json!({}), &[]);
    let (one, many) = (1u32, 10_001u32);
    let per_call = sample(reps, || {
        let a = time(|| {
            p.bench_execute_repeatedly(&job, &noop_spec, &bare_step("noop"), one)
                .unwrap()
        });
        let b = time(|| {
            p.bench_execute_repeatedly(&job, &noop_spec, &bare_step("noop"), many)
                .unwrap()
        });
        b.saturating_sub(a) / (many - one)
    });
    println!("empty export call (execute noop):   {:>10}", fmt(per_call));

    let calls = 1_000_000u64;
    let loop_spec = spec("probe", json!({ "calls": calls }), &[]);
    let zero_spec = spec("probe", json!({ "calls": 0 }), &[]);
    let per_import = sample(reps, || {
        let base = time(|| {
            p.bench_execute_repeatedly(&job, &zero_spec, &bare_step("import-loop"), 1)
                .unwrap()
        });
        let full = time(|| {
            p.bench_execute_repeatedly(&job, &loop_spec, &bare_step("import-loop"), 1)
                .unwrap()
        });
        full.saturating_sub(base) / calls as u32
    });
    println!(
        "host import round trip:             {:>10}",
        fmt(per_import)
    );

    // kv-copy of `objects` keys between sled buckets: plugin vs native.
    let dir = tempfile::tempdir().unwrap();
    let buckets = SledBuckets::new(
        sled::Config::new()
            .path(dir.path())
            .cache_capacity(256 << 20)
            .open()
            .unwrap(),
    );
    let source = buckets.open("source").unwrap();
    let batch: Vec<(String, Vec<u8>)> = (0..objects)
        .map(|i| {
            (
                format!("session/{i:07}"),
                format!("{{\"user\":{i},\"data\":\"{}\"}}", "x".repeat(100)).into_bytes(),
            )
        })
        .collect();
    for chunk in batch.chunks(10_000) {
        source.set_many(chunk).unwrap();
    }
    let kv = rt.load_bytes(&kv_copy).unwrap();
    let copy_spec = spec(
        "kv-copy",
        json!({ "prefix": "session/" }),
        &["source", "target"],
    );
    let copy_reps = if quick { 3 } else { 5 };
    let mut run = 0;
    let mut fresh = |label: &str| {
        run += 1;
        let target = buckets.open(&format!("{label}-target-{run}")).unwrap();
        let journal = buckets.open(&format!("{label}-journal-{run}")).unwrap();
        (target, journal)
    };

    let plugin_time = sample(copy_reps, || {
        let (target, journal) = fresh("plugin");
        let events = Arc::new(CountingEvents::default());
        let job = JobContext {
            grants: plover_host::connectors::Grants::new(journal)
                .with_kv("source", source.clone())
                .with_kv("target", target.clone()),
            events: events.clone(),
            checkpoint: None,
            force_stop: ForceStop::new(),
            call_timeout: None,
        };
        let t = time(|| {
            kv.execute(&job, &copy_spec, &bare_step("copy"), None)
                .unwrap()
                .unwrap();
        });
        assert_eq!(events.objects.load(Ordering::Relaxed), objects as u64);
        assert_eq!(target.count("session/").unwrap(), objects as u64);
        t
    });

    let native_time = sample(copy_reps, || {
        let (target, journal) = fresh("native");
        let events = CountingEvents::default();
        let t = time(|| {
            native_copy(
                source.as_ref(),
                target.as_ref(),
                journal.as_ref(),
                &events,
                1000,
            )
        });
        assert_eq!(events.objects.load(Ordering::Relaxed), objects as u64);
        assert_eq!(target.count("session/").unwrap(), objects as u64);
        t
    });
    let rate = |d: Duration| objects as f64 / d.as_secs_f64();
    println!(
        "kv-copy {objects} objects, plugin:      {:>10}  ({:.0} objects/s)",
        fmt(plugin_time),
        rate(plugin_time)
    );
    println!(
        "kv-copy {objects} objects, native:      {:>10}  ({:.0} objects/s)",
        fmt(native_time),
        rate(native_time)
    );
    println!(
        "plugin/native throughput ratio:     {:>10.2}",
        rate(plugin_time) / rate(native_time)
    );
}

/// The same work kv-copy's `copy` step does, in native Rust over the same bucket trait: scan a
/// batch, journal the old target values once, write the batch, report objects and checkpoint.
fn native_copy(
    source: &dyn KvBucket,
    target: &dyn KvBucket,
    journal: &dyn KvBucket,
    events: &CountingEvents,
    batch: usize,
) {
    let mut cursor: Option<String> = None;
    loop {
        let started = Instant::now();
        let page = source.scan("session/", cursor.as_deref(), batch).unwrap();
        if page.entries.is_empty() {
            break;
        }
        let journal_keys: Vec<String> =
            page.entries.iter().map(|(k, _)| format!("w/{k}")).collect();
        let already = journal.get_many(&journal_keys).unwrap();
        let fresh: Vec<usize> = (0..page.entries.len())
            .filter(|&i| already[i].is_none())
            .collect();
        let keys: Vec<String> = fresh.iter().map(|&i| page.entries[i].0.clone()).collect();
        let old = target.get_many(&keys).unwrap();
        let entries: Vec<(String, Vec<u8>)> = fresh
            .iter()
            .zip(old)
            .map(|(&i, old)| {
                let entry = match old {
                    None => vec![0],
                    Some(b) => [&[1u8][..], &b].concat(),
                };
                (journal_keys[i].clone(), entry)
            })
            .collect();
        journal.set_many(&entries).unwrap();
        target.set_many(&page.entries).unwrap();
        let per = started.elapsed().as_micros() as u64 / page.entries.len() as u64;
        events
            .objects(
                page.entries
                    .iter()
                    .map(|(k, _)| ObjectResult {
                        name: k.clone(),
                        object_type: "key".into(),
                        status: ObjectStatus::Success,
                        error: None,
                        duration_micros: per,
                    })
                    .collect(),
            )
            .unwrap();
        cursor = page.next_cursor;
        events.checkpoint(serde_json::to_vec(&json!({ "cursor": cursor, "copied": 0 })).unwrap());
        if cursor.is_none() {
            break;
        }
    }
}
