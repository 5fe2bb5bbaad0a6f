//! The web console in headless Chromium against a real `plover serve` (sled): how long a job
//! page with 100,000 object results takes to be complete after navigation (header, plan, log
//! and the first page of results), how late live events reach the page while such a job runs
//! (from the event's commit time to the moment the page has handled it), and what the page
//! weighs (every asset, and what one job page fetches).
//!
//! Run: `cargo bench -p plover-host --bench console` (add `-- --quick` for fewer loads).
//! A bench of `plover-host` because only the binary's own package gets its path from Cargo.

use plover_tests::artifacts;
use plover_tests::bench::{ServerProcess, serve_command};
use plover_tests::browser::Browser;
use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};

const TOKEN: &str = "bench-admin-token";

struct Server {
    _process: ServerProcess,
    url: String,
    http: reqwest::blocking::Client,
}

impl Server {
    fn start(data: &Path, plugins: &Path) -> Server {
        let command = serve_command(env!("CARGO_BIN_EXE_plover"), data, plugins, TOKEN);
        let process = ServerProcess::spawn(command);
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        Server {
            url: process.url.clone(),
            _process: process,
            http,
        }
    }

    fn get(&self, path: &str) -> Value {
        self.http
            .get(format!("{}/api/v1{path}", self.url))
            .bearer_auth(TOKEN)
            .send()
            .unwrap()
            .json()
            .unwrap()
    }

    fn post(&self, path: &str, body: &Value) -> Value {
        let r = self
            .http
            .post(format!("{}/api/v1{path}", self.url))
            .bearer_auth(TOKEN)
            .json(body)
            .send()
            .unwrap();
        assert!(r.status().is_success(), "{path}: {}", r.status());
        r.json().unwrap()
    }

    /// A stepper job with these steps, started; its id.
    fn run(&self, steps: Value) -> String {
        let job = self.post(
            "/migrations",
            &json!({ "handler": "stepper", "parameters": { "steps": steps },
                     "grants": { "data": "data" } }),
        );
        let id = job["id"].as_str().unwrap().to_string();
        self.post(&format!("/migrations/{id}/execute"), &json!({}));
        id
    }

    fn wait(&self, id: &str, what: &str, done: impl Fn(&Value) -> bool) {
        let started = Instant::now();
        while !done(&self.get(&format!("/migrations/{id}"))) {
            assert!(
                started.elapsed() < Duration::from_secs(600),
                "waited for {what}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// Load the job page afresh (a new document, not a hash change) and wait until it is whole.
fn load_job_page(b: &Browser, s: &Server, id: &str) -> Value {
    b.goto("about:blank");
    b.goto(&format!("{}/#/jobs/{id}", s.url));
    b.wait_for("the job page", || {
        let r = b.js(
            "const c = window.ploverConsole;
             if (!c || c.renderedMs === undefined) return null;
             const entries = performance.getEntriesByType('resource')
               .concat(performance.getEntriesByType('navigation'));
             return { rendered_ms: c.renderedMs,
                      requests: entries.length,
                      bytes: entries.reduce((n, e) => n + (e.decodedBodySize || 0), 0),
                      heap: performance.memory ? performance.memory.usedJSHeapSize : null,
                      rows: document.querySelectorAll('.objects tbody tr').length };",
            json!([]),
        );
        (!r.is_null()).then_some(r)
    })
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let loads = if quick { 5 } else { 15 };
    let data = tempfile::tempdir().unwrap();
    let plugins = tempfile::tempdir().unwrap();
    let stepper_file = Path::new(artifacts::STEPPER).file_name().unwrap();
    std::fs::copy(artifacts::STEPPER, plugins.path().join(stepper_file)).unwrap();
    let s = Server::start(data.path(), plugins.path());
    println!("plover console benchmark (headless Chromium, sled store, {loads} page loads)");
    println!(
        "page weight: {} bytes of HTML, CSS and JavaScript in all (uncompressed, no framework)",
        plover_host::console::page_weight()
    );

    // A finished job with 100,000 object results.
    let done = s.run(json!([{ "id": "bulk", "batches": 1000, "per_batch": 100 }]));
    s.wait(&done, "the 100,000-result job", |j| {
        j["status"] == "completed"
    });
    assert_eq!(
        s.get(&format!("/migrations/{done}"))["completed_objects"],
        100_000
    );

    let b = Browser::start(1280, 900);
    b.goto(&format!("{}/", s.url));
    b.type_into(&b.find("#token"), TOKEN);
    b.click(&b.find("form button[type=submit]"));
    b.find("#nav a");

    let mut rendered = vec![];
    let mut last = Value::Null;
    for _ in 0..loads {
        last = load_job_page(&b, &s, &done);
        rendered.push(last["rendered_ms"].as_f64().unwrap());
    }
    assert_eq!(last["rows"], 100, "the first page of results");
    println!(
        "finished job, 100,000 results: page complete {:.0} ms after navigation (median of {loads}, min {:.0}, max {:.0}); {} requests, {} bytes fetched; JS heap {}",
        median(&mut rendered),
        rendered.first().unwrap(),
        rendered.last().unwrap(),
        last["requests"],
        last["bytes"],
        last["heap"]
            .as_f64()
            .map_or("n/a".into(), |h| format!("{:.1} MB", h / 1e6)),
    );

    // A running job that already has 100,000 results, its page open while it reports more.
    let tail_batches = if quick { 100 } else { 300 };
    let live = s.run(json!([
        { "id": "bulk", "batches": 1000, "per_batch": 100 },
        { "id": "tail", "after": ["bulk"], "batches": tail_batches, "per_batch": 10, "batch_ms": 50 }
    ]));
    s.wait(&live, "100,000 results before the page opens", |j| {
        j["completed_objects"].as_u64().unwrap_or(0) >= 100_000
    });
    let opened = load_job_page(&b, &s, &live);
    s.wait(&live, "the live job", |j| j["status"] == "completed");
    b.wait_for("the final event on the page", || {
        let seen = b.js("return window.ploverConsole.seen()", json!([]));
        seen.as_array()
            .unwrap()
            .iter()
            .any(|e| e[1] == "final")
            .then_some(())
    });
    let seen = b.js("return window.ploverConsole.seen()", json!([]));
    let mut by_kind: std::collections::BTreeMap<String, Vec<f64>> = Default::default();
    for e in seen.as_array().unwrap() {
        if let (Some(kind), Some(at), Some(handled)) = (e[1].as_str(), e[2].as_f64(), e[3].as_f64())
        {
            by_kind
                .entry(kind.to_string())
                .or_default()
                .push(handled - at);
        }
    }
    println!(
        "running job past 100,000 results (page complete {:.0} ms after navigation): event committed -> handled by the page:",
        opened["rendered_ms"].as_f64().unwrap()
    );
    let mut all: Vec<f64> = by_kind.values().flatten().copied().collect();
    assert!(
        all.len() > 50,
        "live events reached the page: {}",
        all.len()
    );
    for (kind, mut v) in by_kind {
        println!(
            "  {kind:<9} {:>5} events: p50 {:.1} ms p95 {:.1} ms max {:.1} ms",
            v.len(),
            median(&mut v),
            percentile(&mut v, 0.95),
            v.last().unwrap()
        );
    }
    println!(
        "  all       {:>5} events: p50 {:.1} ms p95 {:.1} ms",
        all.len(),
        median(&mut all),
        percentile(&mut all, 0.95)
    );
}
