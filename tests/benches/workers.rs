//! The worker API against the real `plover` binary on loopback: claim-to-start latency (a
//! worker already long-polling its queue; from the operator's `execute` request to the task in
//! the worker's hands) and reporting throughput (object results per second through
//! `POST /workers/tasks/{task}/report`, in batches of 1,000 and one result per report). Every
//! job is a plugin-less plan (`worker-plan`) with one step on a queue.
//!
//! Run: `cargo bench -p plover-host --bench workers` (add `-- --quick` for a smoke run).
//! A bench of `plover-host` because only the binary's own package gets its path from Cargo.

use plover_tests::artifacts;
use plover_tests::bench::{ServerProcess, serve_command};
use reqwest::blocking::Client;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const TOKEN: &str = "bench-admin-token";

fn post(client: &Client, url: &str, path: &str, body: &Value) -> (u16, Value) {
    let r = client
        .post(format!("{url}/api/v1{path}"))
        .bearer_auth(TOKEN)
        .json(body)
        .send()
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().unwrap_or(Value::Null))
}

fn create(client: &Client, url: &str, queue: &str, expected: u64) -> String {
    let (status, job) = post(
        client,
        url,
        "/migrations",
        &json!({ "handler": "worker-plan", "parameters": { "steps": [
            { "id": "work", "queue": queue, "expected_objects": expected } ] } }),
    );
    assert_eq!(status, 201, "{job}");
    job["id"].as_str().unwrap().to_string()
}

fn execute(client: &Client, url: &str, id: &str) {
    let (status, body) = post(
        client,
        url,
        &format!("/migrations/{id}/execute"),
        &json!({}),
    );
    assert_eq!(status, 202, "{body}");
}

fn claim(client: &Client, url: &str, queue: &str) -> Value {
    let (status, task) = post(
        client,
        url,
        "/workers/claim",
        &json!({ "queues": [queue], "worker": "bench", "wait_ms": 20_000 }),
    );
    assert_eq!(status, 200, "{task}");
    task
}

fn complete(client: &Client, url: &str, task: &Value) {
    let path = format!("/workers/tasks/{}/complete", task["task"].as_str().unwrap());
    let (status, body) = post(client, url, &path, &json!({ "lease": task["lease"] }));
    assert_eq!(status, 204, "{body}");
}

fn snapshot(client: &Client, url: &str, id: &str) -> Value {
    client
        .get(format!("{url}/api/v1/migrations/{id}"))
        .bearer_auth(TOKEN)
        .send()
        .unwrap()
        .json()
        .unwrap()
}

fn wait_completed(client: &Client, url: &str, id: &str) {
    let started = Instant::now();
    loop {
        let job = snapshot(client, url, id);
        if job["status"] == "completed" {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "{job}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// From the `execute` request to the claim's answer, the worker already waiting.
fn claim_to_start(client: &Client, url: &str, jobs: usize) -> Vec<Duration> {
    let mut samples = vec![];
    for _ in 0..jobs {
        let id = create(client, url, "latency", 1);
        let (worker_client, worker_url) = (client.clone(), url.to_string());
        let claimer = std::thread::spawn(move || {
            let task = claim(&worker_client, &worker_url, "latency");
            (Instant::now(), task)
        });
        // Let the claim reach the server and start waiting.
        std::thread::sleep(Duration::from_millis(50));
        let sent = Instant::now();
        execute(client, url, &id);
        let (claimed, task) = claimer.join().unwrap();
        samples.push(claimed - sent);
        complete(client, url, &task);
        wait_completed(client, url, &id);
    }
    samples
}

/// Object results per second through `report`, `per_report` results in each of `reports`.
fn report_rate(client: &Client, url: &str, reports: usize, per_report: usize) -> f64 {
    let total = (reports * per_report) as u64;
    let id = create(client, url, "throughput", total);
    execute(client, url, &id);
    let task = claim(client, url, "throughput");
    let path = format!("/workers/tasks/{}/report", task["task"].as_str().unwrap());
    let started = Instant::now();
    for r in 0..reports {
        let objects: Vec<Value> = (0..per_report)
            .map(|i| json!({ "name": format!("object-{r:06}-{i:05}"), "status": "success" }))
            .collect();
        let done = ((r + 1) * per_report) as u64;
        let (status, body) = post(
            client,
            url,
            &path,
            &json!({ "lease": task["lease"], "objects": objects,
                     "progress": { "done": done, "total": total } }),
        );
        assert_eq!(status, 200, "{body}");
    }
    let elapsed = started.elapsed();
    complete(client, url, &task);
    wait_completed(client, url, &id);
    let job = snapshot(client, url, &id);
    assert_eq!(job["completed_objects"], total, "every result counted once");
    total as f64 / elapsed.as_secs_f64()
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (jobs, reps, batches, singles) = if quick {
        (5, 1, 5, 50)
    } else {
        (25, 5, 100, 1000)
    };
    let (data, plugins) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    std::fs::copy(
        artifacts::WORKER_PLAN,
        plugins.path().join("worker_plan.wasm"),
    )
    .unwrap();
    let server = ServerProcess::spawn(serve_command(
        env!("CARGO_BIN_EXE_plover"),
        data.path(),
        plugins.path(),
        TOKEN,
    ));
    let url = server.url.clone();
    let client = Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();

    let mut latency = claim_to_start(&client, &url, jobs);
    latency.sort();
    println!(
        "claim-to-start ({jobs} jobs): median {}, p90 {}, max {}",
        ms(latency[latency.len() / 2]),
        ms(latency[(latency.len() - 1) * 9 / 10]),
        ms(*latency.last().unwrap())
    );

    let (mut batched, mut single) = (vec![], vec![]);
    for _ in 0..reps {
        batched.push(report_rate(&client, &url, batches, 1000));
        single.push(report_rate(&client, &url, singles, 1));
    }
    let med = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (batched, single) = (med(batched), med(single));
    println!(
        "report throughput, 1,000 results per report ({} results, median of {reps}): {batched:.0} results/s",
        batches * 1000
    );
    println!(
        "report throughput, 1 result per report ({singles} reports, median of {reps}): {single:.0} results/s ({} per report)",
        ms(Duration::from_secs_f64(1.0 / single))
    );
}
