//! Several `plover serve` nodes on one PostgreSQL store (the local server, a schema of its
//! own): how long a job takes to run again on another node after its node is killed (median
//! and max over 20 kills, 2 s leases), and how quickly an event committed on one node reaches
//! an SSE watcher on another, against a watcher on the node that runs the job (same run).
//!
//! Run: `cargo bench -p plover-host --bench cluster` (add `-- --quick` for 5 kills).
//! A bench of `plover-host` because only the binary's own package gets its path from Cargo.

use chrono::{DateTime, Utc};
use plover_tests::artifacts;
use plover_tests::bench::{ServerProcess, serve_command};
use plover_tests::services::Schema;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const TOKEN: &str = "bench-admin-token";
const LEASE_MS: u64 = 2000;

struct Node {
    process: ServerProcess,
    url: String,
    id: String,
}

fn start(data: &Path, plugins: &Path, config: &Path) -> Node {
    let mut command = serve_command(env!("CARGO_BIN_EXE_plover"), data, plugins, TOKEN);
    command.arg("--config").arg(config);
    let process = ServerProcess::spawn(command);
    let url = process.url.clone();
    let metrics = reqwest::blocking::get(format!("{url}/metrics"))
        .unwrap()
        .text()
        .unwrap();
    let at = metrics.find("node=\"").unwrap() + 6;
    let id = metrics[at..at + metrics[at..].find('"').unwrap()].to_string();
    Node { process, url, id }
}

fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

fn get(node: &Node, path: &str) -> Value {
    http()
        .get(format!("{}/api/v1{path}", node.url))
        .bearer_auth(TOKEN)
        .send()
        .unwrap()
        .json()
        .unwrap()
}

fn post(node: &Node, path: &str, body: &Value) -> Value {
    http()
        .post(format!("{}/api/v1{path}", node.url))
        .bearer_auth(TOKEN)
        .json(body)
        .send()
        .unwrap()
        .json()
        .unwrap_or(Value::Null)
}

fn stepper(node: &Node, batches: u64, batch_ms: u64) -> String {
    let job = post(
        node,
        "/migrations",
        &json!({
            "handler": "stepper",
            "parameters": { "steps": [{ "id": "a", "batches": batches, "batch_ms": batch_ms, "per_batch": 1 }] },
            "grants": { "data": "data" }
        }),
    );
    job["id"].as_str().unwrap().to_string()
}

/// Which node holds `job`'s lease, as `ask` lists them.
fn owner(ask: &Node, job: &str) -> Option<String> {
    get(ask, "/nodes")
        .as_array()?
        .iter()
        .find(|n| {
            n["jobs"]
                .as_array()
                .is_some_and(|j| j.iter().any(|j| j == job))
        })
        .map(|n| n["id"].as_str().unwrap().to_string())
}

fn completed(ask: &Node, job: &str) -> u64 {
    get(ask, &format!("/migrations/{job}"))["completed_objects"]
        .as_u64()
        .unwrap_or(0)
}

fn wait(what: &str, mut done: impl FnMut() -> bool) -> Instant {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < Duration::from_secs(60), "{what}");
        std::thread::sleep(Duration::from_millis(5));
    }
    Instant::now()
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1e3)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Delivery latency of every event of job `job` on `node`'s stream: now minus its commit time.
fn watch(node: &Node, job: &str) -> std::thread::JoinHandle<Vec<Duration>> {
    let resp = http()
        .get(format!("{}/api/v1/migrations/{job}/events", node.url))
        .bearer_auth(TOKEN)
        .timeout(Duration::from_secs(300))
        .send()
        .unwrap();
    std::thread::spawn(move || {
        let mut out = vec![];
        let mut event = String::new();
        for line in BufReader::new(resp).lines() {
            let line = line.unwrap();
            if let Some(e) = line.strip_prefix("event:") {
                event = e.trim().to_string();
            } else if let Some(data) = line.strip_prefix("data:") {
                if event == "final" {
                    break;
                }
                let v: Value = serde_json::from_str(data.trim()).unwrap();
                let at: DateTime<Utc> = v["at"].as_str().unwrap().parse().unwrap();
                out.push((Utc::now() - at).to_std().unwrap_or_default());
            }
        }
        out
    })
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let kills = if quick { 5 } else { 20 };
    let schema = Schema::new("benchcluster");
    let plugins = tempfile::tempdir().unwrap();
    let stepper_file = Path::new(artifacts::STEPPER).file_name().unwrap();
    std::fs::copy(artifacts::STEPPER, plugins.path().join(stepper_file)).unwrap();
    let config_dir = tempfile::tempdir().unwrap();
    let config = config_dir.path().join("plover.toml");
    std::fs::write(
        &config,
        format!(
            "store = \"{}\"\nlease_ms = {LEASE_MS}\n",
            schema.store_url()
        ),
    )
    .unwrap();
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let paths: Vec<PathBuf> = dirs.iter().map(|d| d.path().to_path_buf()).collect();
    let mut nodes: Vec<Node> = paths
        .iter()
        .map(|d| start(d, plugins.path(), &config))
        .collect();
    println!(
        "plover cluster benchmark (3 nodes, lease {LEASE_MS} ms, renewed every {} ms; {kills} kills)",
        LEASE_MS / 3
    );

    let (mut claimed, mut running) = (vec![], vec![]);
    for round in 0..kills {
        let victim = round % 3;
        let other = (victim + 1) % 3;
        let job = stepper(&nodes[victim], 100_000, 10);
        post(
            &nodes[victim],
            &format!("/migrations/{job}/execute"),
            &json!({}),
        );
        wait("the job starts", || completed(&nodes[other], &job) >= 3);
        let victim_id = nodes[victim].id.clone();
        let before = completed(&nodes[other], &job);
        let died = Instant::now();
        nodes[victim].process.child.kill().unwrap();
        nodes[victim].process.child.wait().unwrap();
        let claim = wait("another node claims the job", || {
            owner(&nodes[other], &job).is_some_and(|o| o != victim_id)
        });
        let run = wait("the job runs again", || {
            completed(&nodes[other], &job) > before
        });
        claimed.push(claim - died);
        running.push(run - died);
        post(
            &nodes[other],
            &format!("/migrations/{job}/cancel"),
            &json!({}),
        );
        nodes[victim] = start(&paths[victim], plugins.path(), &config);
    }
    claimed.sort();
    running.sort();
    println!(
        "node killed -> job claimed by another node: median {}, max {}",
        ms(percentile(&claimed, 0.5)),
        ms(*claimed.last().unwrap())
    );
    println!(
        "node killed -> job making progress again:   median {}, max {}",
        ms(percentile(&running, 0.5)),
        ms(*running.last().unwrap())
    );

    // Event delivery: one job on node 0, a watcher on node 0 and one on node 1.
    let job = stepper(&nodes[0], if quick { 300 } else { 1500 }, 10);
    let local = watch(&nodes[0], &job);
    let remote = watch(&nodes[1], &job);
    post(&nodes[0], &format!("/migrations/{job}/execute"), &json!({}));
    let (mut local, mut remote) = (local.join().unwrap(), remote.join().unwrap());
    assert_eq!(local.len(), remote.len(), "both watchers saw every event");
    local.sort();
    remote.sort();
    println!(
        "SSE delivery, {} events: watcher on the job's node p50 {:.1} ms p99 {:.1} ms; on another node p50 {:.1} ms p99 {:.1} ms",
        local.len(),
        percentile(&local, 0.5).as_secs_f64() * 1e3,
        percentile(&local, 0.99).as_secs_f64() * 1e3,
        percentile(&remote, 0.5).as_secs_f64() * 1e3,
        percentile(&remote, 0.99).as_secs_f64() * 1e3,
    );
}
