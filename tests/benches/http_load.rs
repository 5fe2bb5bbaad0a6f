//! HTTP load against the real `plover` binary on loopback: snapshot GET throughput and latency
//! while a migration runs, then 1,000 concurrent SSE watchers on one job (delivery latency and
//! server memory per watcher).
//!
//! Run: `cargo bench -p plover-host --bench http_load` (add `-- --quick` for a smoke run).
//! A bench of `plover-host` (not `plover-tests`) because only the binary's own package gets
//! its path from Cargo.

use chrono::{DateTime, Utc};
use plover_tests::artifacts;
use plover_tests::bench::{ServerProcess, serve_command};
use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

const TOKEN: &str = "bench-admin-token";

fn start(data: &Path, plugins: &Path) -> ServerProcess {
    let command = serve_command(env!("CARGO_BIN_EXE_plover"), data, plugins, TOKEN);
    ServerProcess::spawn(command)
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .unwrap()
        .trim()
        .trim_end_matches(" kB")
        .trim()
        .parse()
        .unwrap()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn create(client: &reqwest::blocking::Client, url: &str, batches: u32, batch_ms: u32) -> String {
    let body = json!({
        "handler": "stepper",
        "parameters": { "steps": [{ "id": "long", "batches": batches, "batch_ms": batch_ms, "per_batch": 5 }] },
        "grants": { "data": "data" }
    });
    let job: Value = client
        .post(format!("{url}/api/v1/migrations"))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .unwrap()
        .json()
        .unwrap();
    job["id"].as_str().unwrap().to_string()
}

fn execute(client: &reqwest::blocking::Client, url: &str, id: &str) {
    let r = client
        .post(format!("{url}/api/v1/migrations/{id}/execute"))
        .bearer_auth(TOKEN)
        .send()
        .unwrap();
    assert_eq!(r.status(), 202);
}

/// One SSE watcher on a raw connection: returns the delivery latency of every event.
async fn watch(addr: String, id: String, ready: tokio::sync::mpsc::Sender<()>) -> Vec<Duration> {
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let request = format!(
        "GET /api/v1/migrations/{id}/events HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {TOKEN}\r\naccept: text/event-stream\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut lines = tokio::io::BufReader::new(stream).lines();
    let mut latencies = vec![];
    let mut signalled = false;
    while let Ok(Some(line)) = lines.next_line().await {
        if !signalled && line.starts_with(": following") {
            signalled = true;
            let _ = ready.send(()).await;
        }
        if line.starts_with("event: final") {
            break;
        }
        let at = line
            .strip_prefix("data: ")
            .and_then(|data| serde_json::from_str::<Value>(data).ok())
            .and_then(|v| {
                v["at"]
                    .as_str()
                    .and_then(|t| t.parse::<DateTime<Utc>>().ok())
            });
        if let Some(at) = at {
            latencies.push((Utc::now() - at).to_std().unwrap_or_default());
        }
    }
    latencies
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let watchers: usize = if quick { 100 } else { 1000 };
    let get_secs = if quick { 2 } else { 8 };
    println!(
        "plover HTTP load benchmark ({} mode)",
        if quick { "quick" } else { "full" }
    );

    let data = tempfile::tempdir().unwrap();
    let plugins = tempfile::tempdir().unwrap();
    std::fs::copy(artifacts::STEPPER, plugins.path().join("stepper.wasm")).unwrap();
    let server = start(data.path(), plugins.path());
    let client = reqwest::blocking::Client::new();

    // 1. Snapshot GETs from 4 client threads while a migration runs.
    let running = create(&client, &server.url, 100_000, 5);
    execute(&client, &server.url, &running);
    let started = Instant::now();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (url, id) = (server.url.clone(), running.clone());
            std::thread::spawn(move || {
                let client = reqwest::blocking::Client::new();
                let mut lat = vec![];
                let until = Instant::now() + Duration::from_secs(get_secs);
                while Instant::now() < until {
                    let t = Instant::now();
                    let r = client
                        .get(format!("{url}/api/v1/migrations/{id}"))
                        .bearer_auth(TOKEN)
                        .send()
                        .unwrap();
                    assert_eq!(r.status(), 200);
                    r.bytes().unwrap();
                    lat.push(t.elapsed());
                }
                lat
            })
        })
        .collect();
    let mut lat: Vec<Duration> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    let elapsed = started.elapsed();
    lat.sort();
    let progressed: Value = client
        .get(format!("{}/api/v1/migrations/{running}", server.url))
        .bearer_auth(TOKEN)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(
        progressed["status"], "executing",
        "the migration ran during the whole measurement"
    );
    println!(
        "snapshot GET during a migration: {:.0} req/s (4 clients), p50 {}, p99 {}",
        lat.len() as f64 / elapsed.as_secs_f64(),
        ms(percentile(&lat, 0.5)),
        ms(percentile(&lat, 0.99))
    );
    client
        .post(format!("{}/api/v1/migrations/{running}/cancel", server.url))
        .bearer_auth(TOKEN)
        .send()
        .unwrap();

    // 2. Many SSE watchers on one job.
    let job = create(&client, &server.url, 300, 10);
    let pid = server.child.id();
    std::thread::sleep(Duration::from_millis(500));
    let before = rss_kib(pid);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let addr = server.url.trim_start_matches("http://").to_string();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel(watchers);
    let tasks: Vec<_> = (0..watchers)
        .map(|_| rt.spawn(watch(addr.clone(), job.clone(), ready_tx.clone())))
        .collect();
    rt.block_on(async {
        for _ in 0..watchers {
            ready_rx.recv().await.unwrap();
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    let connected = rss_kib(pid);
    execute(&client, &server.url, &job);
    let mut lat: Vec<Duration> = rt.block_on(async {
        let mut all = vec![];
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        all
    });
    lat.sort();
    let per_watcher = (connected.saturating_sub(before)) as f64 / watchers as f64;
    println!(
        "{watchers} SSE watchers on one job: {} events delivered, latency p50 {}, p99 {}",
        lat.len(),
        ms(percentile(&lat, 0.5)),
        ms(percentile(&lat, 0.99))
    );
    println!(
        "server memory: {before} KiB idle, {connected} KiB with {watchers} watchers connected: {per_watcher:.1} KiB per watcher"
    );
}
