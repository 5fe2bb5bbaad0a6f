//! Python handlers against Rust ones, on the same host and the same work: load (compiling and
//! from the precompiled cache), one lifecycle call (a fresh instance and an empty `execute`),
//! a host-import round trip, and reshaping JSON documents between in-memory buckets
//! (json-reshape, Python, against kv-copy dropping and setting the same fields, Rust).
//!
//! Run: `cargo bench -p plover-tests --bench python` (add `-- --quick` for a smoke run).
//! Every figure is a median over repeated samples taken in this one run.

use plover_host::model::{MigrationSpec, PlanStep};
use plover_host::runtime::{Runtime, RuntimeConfig, SandboxLimits};
use plover_host::testing::TestHarness;
use plover_tests::artifacts;
use plover_tests::bench::{bare_step, median};
use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn time(f: impl FnOnce()) -> Duration {
    let t = Instant::now();
    f();
    t.elapsed()
}

fn runtime(cache: &Path) -> Arc<Runtime> {
    Arc::new(
        Runtime::new(RuntimeConfig {
            cache_dir: Some(cache.to_path_buf()),
            ..RuntimeConfig::default()
        })
        .unwrap(),
    )
}

fn harness(rt: &Arc<Runtime>, path: &str) -> TestHarness {
    TestHarness::load_in(rt.clone(), path, SandboxLimits::default()).unwrap()
}

fn first_step(h: &TestHarness, kind: &str, params: Value) -> (MigrationSpec, PlanStep) {
    let mut spec = h.spec(kind, params);
    spec.options.batch_size = 500;
    let plan = h.plan(&spec).unwrap();
    (spec, plan.steps[0].clone())
}

/// Median time of one `execute` of `step` (each call a fresh instance, as the engine runs it).
fn call(h: &TestHarness, spec: &MigrationSpec, step: &PlanStep, reps: usize) -> Duration {
    median(
        (0..reps)
            .map(|_| time(|| drop(h.execute(spec, step, None).unwrap())))
            .collect(),
    )
}

fn per_import(rust: &TestHarness, python: &TestHarness, calls: u64, reps: usize) -> [Duration; 2] {
    let rust_step = bare_step("import-loop");
    let each = |h: &TestHarness, kind: &str, step: &PlanStep, params: &dyn Fn(u64) -> Value| {
        let (zero, full) = (h.spec(kind, params(0)), h.spec(kind, params(calls)));
        let per = (0..reps)
            .map(|_| {
                let base = time(|| drop(h.execute(&zero, step, None).unwrap()));
                let all = time(|| drop(h.execute(&full, step, None).unwrap()));
                all.saturating_sub(base) / calls as u32
            })
            .collect();
        median(per)
    };
    let python_step = first_step(python, "python-probe", json!({ "mode": "ok" })).1;
    [
        each(rust, "probe", &rust_step, &|n| json!({ "calls": n })),
        each(
            python,
            "python-probe",
            &python_step,
            &|n| json!({ "mode": "ok", "calls": n }),
        ),
    ]
}

fn documents(n: usize) -> Vec<(String, String)> {
    (0..n)
        .map(|i| {
            let doc = json!({ "uid": i, "legacy": true, "name": format!("user {i}"), "tags": ["a", "b"] });
            (format!("doc/{i:06}"), doc.to_string())
        })
        .collect()
}

/// One reshape of `docs` by the plugin at `path`, into an empty target: its time.
fn reshape(
    rt: &Arc<Runtime>,
    path: &str,
    kind: &str,
    params: &Value,
    docs: &[(String, String)],
) -> Duration {
    let mut h = harness(rt, path);
    let source = h.bucket("source");
    for (k, v) in docs {
        source.insert(k.clone(), v.clone());
    }
    h.bucket("target");
    let (spec, step) = first_step(&h, kind, params.clone());
    let took = time(|| drop(h.execute(&spec, &step, None).unwrap()));
    assert_eq!(h.bucket_snapshot("target").len(), docs.len());
    took
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (reps, objects) = if quick { (3, 2_000) } else { (9, 20_000) };
    let cache = tempfile::tempdir().unwrap();
    let python_bytes = std::fs::metadata(artifacts::JSON_RESHAPE).unwrap().len();
    let rust_bytes = std::fs::metadata(artifacts::KV_COPY).unwrap().len();
    println!(
        "component size: json-reshape (Python) {:.1} MB, kv-copy (Rust) {:.0} KB",
        python_bytes as f64 / 1e6,
        rust_bytes as f64 / 1e3
    );

    // Compiling: a fresh cache each time (a few samples: the Python one takes seconds).
    let compile = |path: &str, n: usize| {
        median(
            (0..n)
                .map(|_| {
                    let fresh = tempfile::tempdir().unwrap();
                    let rt = runtime(fresh.path());
                    time(|| drop(rt.load_file(Path::new(path)).unwrap()))
                })
                .collect(),
        )
    };
    let compile_python = compile(artifacts::JSON_RESHAPE, if quick { 1 } else { 3 });
    let compile_rust = compile(artifacts::KV_COPY, reps);
    println!(
        "load, compiling:        Python {:>10}   Rust {:>10}",
        ms(compile_python),
        ms(compile_rust)
    );

    // From the cache: a new runtime each time, as a restarted node.
    let rt = runtime(cache.path());
    rt.load_file(Path::new(artifacts::JSON_RESHAPE)).unwrap();
    rt.load_file(Path::new(artifacts::KV_COPY)).unwrap();
    let cached = |path: &str| {
        median(
            (0..reps)
                .map(|_| {
                    let rt = runtime(cache.path());
                    time(|| drop(rt.load_file(Path::new(path)).unwrap()))
                })
                .collect(),
        )
    };
    let (cached_python, cached_rust) =
        (cached(artifacts::JSON_RESHAPE), cached(artifacts::KV_COPY));
    println!(
        "load, from the cache:   Python {:>10}   Rust {:>10}",
        ms(cached_python),
        ms(cached_rust)
    );

    // One lifecycle call: a fresh instance and an `execute` that does nothing.
    let python_probe = harness(&rt, artifacts::PYTHON_PROBE);
    let rust_probe = harness(&rt, artifacts::PROBE);
    let (py_spec, py_step) = first_step(&python_probe, "python-probe", json!({ "mode": "ok" }));
    let rust_spec = rust_probe.spec("probe", json!({}));
    let rust_step = bare_step("noop");
    let calls = reps * 5;
    let (py_call, rust_call) = (
        call(&python_probe, &py_spec, &py_step, calls),
        call(&rust_probe, &rust_spec, &rust_step, calls),
    );
    println!(
        "one empty call (fresh instance): Python {:>10}   Rust {:>10}   ratio {:.1}",
        format!("{:.1} µs", py_call.as_secs_f64() * 1e6),
        format!("{:.1} µs", rust_call.as_secs_f64() * 1e6),
        py_call.as_secs_f64() / rust_call.as_secs_f64()
    );

    let imports = if quick { 10_000 } else { 200_000 };
    let [rust_import, py_import] = per_import(&rust_probe, &python_probe, imports, reps);
    println!(
        "host import round trip (is-cancelled): Python {:>8} ns   Rust {:>8} ns   ratio {:.1}",
        py_import.as_nanos(),
        rust_import.as_nanos(),
        py_import.as_secs_f64() / rust_import.as_secs_f64().max(1e-9)
    );

    // The same work: drop `legacy`, add `v`, journal old target values, write, record, checkpoint.
    let docs = documents(objects);
    let python_params = json!({ "prefix": "doc/", "drop": ["legacy"], "defaults": { "v": 2 } });
    let rust_params =
        json!({ "prefix": "doc/", "remove_fields": ["legacy"], "set_fields": { "v": 2 } });
    let (mut python_runs, mut rust_runs) = (vec![], vec![]);
    for i in 0..reps {
        // Alternate which runs first, so neither always gets the warmer machine.
        let py = || {
            reshape(
                &rt,
                artifacts::JSON_RESHAPE,
                "json-reshape",
                &python_params,
                &docs,
            )
        };
        let rs = || reshape(&rt, artifacts::KV_COPY, "kv-copy", &rust_params, &docs);
        if i % 2 == 0 {
            python_runs.push(py());
            rust_runs.push(rs());
        } else {
            rust_runs.push(rs());
            python_runs.push(py());
        }
    }
    let (python_run, rust_run) = (median(python_runs), median(rust_runs));
    let rate = |d: Duration| objects as f64 / d.as_secs_f64();
    println!(
        "reshape {objects} documents: Python {} ({:.0}/s)   Rust {} ({:.0}/s)   Python/Rust throughput {:.2}",
        ms(python_run),
        rate(python_run),
        ms(rust_run),
        rate(rust_run),
        rate(python_run) / rate(rust_run)
    );
}
