//! External workers over HTTP: a step on a worker queue run by `plover worker` driving a
//! Python program, killed midway and resumed by a second worker from the checkpoint; the
//! worker protocol by hand (fencing, pause and cancel reaching the worker); `plover worker`
//! killing its program on pause and running the resumed task; worker tokens.

use super::common::{ADMIN, Server, object_names_once, plugin_dir};
use super::contract_0_2::{import, upload_tolerant_copy};
use serde_json::{Value, json};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const FILE_COPY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/workers/file_copy.py");

/// A server whose worker leases last 1.5 s, with the 0.2 fixture uploaded.
fn server(data: &Path, plugins: &Path) -> Server {
    let s = Server::start_with_config(data, plugins, "worker_lease_ms = 1500\n");
    upload_tolerant_copy(&s);
    s
}

/// A `worker` token for `queues`.
fn worker_token(s: &Server, name: &str, queues: &[&str]) -> String {
    let (status, body) = s.post(
        "/tokens",
        ADMIN,
        &json!({ "name": name, "role": "worker", "queues": queues }),
    );
    assert_eq!(status, 201, "{body}");
    body["token"].as_str().unwrap().to_string()
}

/// `entries` keys `k0000…` in the source bucket (what the plan counts) and in a JSON Lines
/// file the worker reads; the migration's id.
fn file_copy_job(s: &Server, dir: &Path, queue: &str, entries: usize, params: Value) -> String {
    file_copy_job_with(s, dir, queue, entries, params, json!({}))
}

/// [`file_copy_job`] with more job `options`.
fn file_copy_job_with(
    s: &Server,
    dir: &Path,
    queue: &str,
    entries: usize,
    params: Value,
    options: Value,
) -> String {
    let bucket = format!("{queue}-src");
    let pairs: Vec<(String, String)> = (0..entries)
        .map(|i| (format!("k{i:04}"), format!("value {i}")))
        .collect();
    let borrowed: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (&k[..], &v[..])).collect();
    import(s, &bucket, &borrowed);
    let source = dir.join("source.jsonl");
    let lines: String = pairs
        .iter()
        .map(|(k, v)| format!("{}\n", json!({ "key": k, "value": v })))
        .collect();
    std::fs::write(&source, lines).unwrap();
    let target = dir.join("target");
    std::fs::create_dir_all(&target).unwrap();
    let mut parameters = json!({
        "queue": queue, "source": source, "target_dir": target, "every": 50,
    });
    parameters
        .as_object_mut()
        .unwrap()
        .extend(params.as_object().unwrap().clone());
    let mut all_options = json!({ "retry": { "attempts": 5 }, "cancel_grace_secs": 1 });
    all_options
        .as_object_mut()
        .unwrap()
        .extend(options.as_object().unwrap().clone());
    s.create(&json!({
        "handler": "contract-v0-2-0",
        "parameters": parameters,
        "grants": { "source": bucket, "target": format!("{queue}-dst") },
        "options": all_options,
    }))
}

fn spawn_worker(s: &Server, token: &str, name: &str, queue: &str, extra: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_plover"))
        .args(["worker", "--queue", queue, "--name", name])
        .args(extra)
        .args(["--", "python3", FILE_COPY])
        .env("PLOVER_SERVER", &s.url)
        .env("PLOVER_TOKEN", token)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn log_lines(s: &Server, id: &str) -> Vec<String> {
    let (_, page) = s.get(&format!("/migrations/{id}/logs?limit=1000"), ADMIN);
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["message"].as_str().unwrap_or("").to_string())
        .collect()
}

#[test]
fn a_killed_worker_is_resumed_from_its_checkpoint_by_another_and_rollback_is_a_task() {
    let (data, plugins, work) = (
        tempfile::tempdir().unwrap(),
        plugin_dir(),
        tempfile::tempdir().unwrap(),
    );
    let s = server(data.path(), plugins.path());
    let token = worker_token(&s, "copier", &["files"]);
    let n = 600;
    let id = file_copy_job(&s, work.path(), "files", n, json!({ "delay_ms": 4 }));
    let planned = s.job(&id);
    assert_eq!(planned["plan"]["steps"][0]["queue"], "files", "{planned}");
    let (status, _) = s.post(&format!("/migrations/{id}/execute"), ADMIN, &json!({}));
    assert_eq!(status, 202);

    // The first worker is killed once some of its work is committed.
    let mut first = spawn_worker(&s, &token, "w1", "files", &[]);
    let midway = s.wait_for(&id, |j| j["completed_objects"].as_u64() >= Some(150));
    first.kill().unwrap();
    first.wait().unwrap();
    assert_eq!(midway["status"], "executing", "{midway}");
    let done_by_first = s.job(&id)["completed_objects"].as_u64().unwrap();
    assert!(done_by_first < n as u64, "killed midway: {done_by_first}");

    // Its lease runs out; the second worker resumes from the last checkpoint.
    let mut second = spawn_worker(&s, &token, "w2", "files", &["--max-tasks", "1"]);
    let done = s.wait_for(&id, |j| j["status"] != "executing");
    assert!(second.wait().unwrap().success());
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["completed_objects"], n as u64, "{done}");
    assert_eq!(object_names_once(&s, &id).len(), n, "every result once");
    let target = work.path().join("target");
    let mut files: Vec<String> = std::fs::read_dir(&target)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    assert_eq!(
        files.len(),
        n,
        "no stray files: {:?}",
        &files[..3.min(files.len())]
    );
    for i in [0, 299, n - 1] {
        let value = std::fs::read_to_string(target.join(format!("k{i:04}"))).unwrap();
        assert_eq!(value, format!("value {i}"));
    }
    let logs = log_lines(&s, &id);
    let has = |needle: &str| logs.iter().any(|l| l.contains(needle));
    assert!(has("worker 'w1' claimed task"), "{logs:?}");
    assert!(has("worker 'w1' did not renew its lease"), "{logs:?}");
    assert!(has("worker 'w2' claimed task"), "{logs:?}");
    let resumed_at = logs
        .iter()
        .find(|l| l.starts_with("attempt 2 starts at line "))
        .unwrap_or_else(|| panic!("{logs:?}"));
    let line: u64 = resumed_at
        .trim_start_matches("attempt 2 starts at line ")
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        line > 0 && line.is_multiple_of(50),
        "resumed at a checkpoint: {resumed_at}"
    );

    // Metrics and the audit trail show the workers' work.
    let metrics = s.metrics();
    let counted = |event: &str| {
        metrics.lines().any(|l| {
            l.starts_with("plover_worker_tasks_total")
                && l.contains(&format!("event=\"{event}\""))
                && l.contains("queue=\"files\"")
                && l.ends_with(" 1")
        })
    };
    assert!(counted("lease-lost") && counted("completed"), "{metrics}");
    let (_, audit) = s.get("/audit?limit=1000", ADMIN);
    let by_copier: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["actor"] == "copier")
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert!(
        by_copier.iter().any(|p| p.ends_with("/complete")),
        "{by_copier:?}"
    );
    assert!(
        by_copier.contains(&"/api/v1/workers/claim"),
        "{by_copier:?}"
    );
    assert!(
        !by_copier.iter().any(|p| p.ends_with("/report")),
        "reports are not audited"
    );

    // Rolling back is a task on the same queue: the worker removes what it wrote.
    let (status, _) = s.post(&format!("/migrations/{id}/rollback"), ADMIN, &json!({}));
    assert_eq!(status, 202);
    let mut undo = spawn_worker(&s, &token, "w3", "files", &["--max-tasks", "1"]);
    let rolled = s.wait_for(&id, |j| j["status"] != "rolling-back");
    assert!(undo.wait().unwrap().success());
    assert_eq!(rolled["status"], "rolled-back", "{rolled}");
    assert_eq!(std::fs::read_dir(&target).unwrap().count(), 0);
}

/// Claim by hand (as a tool speaking the protocol would), waiting for the task to be offered.
fn claim(s: &Server, token: &str, queue: &str) -> Value {
    let (status, task) = s.post(
        "/workers/claim",
        token,
        &json!({ "queues": [queue], "worker": "hand", "wait_ms": 10_000 }),
    );
    assert_eq!(status, 200, "{task}");
    task
}

fn beat_until_stop(s: &Server, task: &Value) -> String {
    let path = format!(
        "/workers/tasks/{}/heartbeat",
        task["task"].as_str().unwrap()
    );
    let started = Instant::now();
    loop {
        let (status, beat) = s.post(&path, ADMIN, &json!({ "lease": task["lease"] }));
        assert_eq!(status, 200, "{beat}");
        if let Some(stop) = beat["stop"].as_str() {
            return stop.to_string();
        }
        assert!(started.elapsed() < Duration::from_secs(30), "no stop came");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_protocol_fences_lost_leases_and_tells_workers_of_pause_and_cancel() {
    let (data, plugins, work) = (
        tempfile::tempdir().unwrap(),
        plugin_dir(),
        tempfile::tempdir().unwrap(),
    );
    let s = server(data.path(), plugins.path());
    let id = file_copy_job(&s, work.path(), "by-hand", 10, json!({}));
    s.post(&format!("/migrations/{id}/execute"), ADMIN, &json!({}));

    let task = claim(&s, ADMIN, "by-hand");
    let name = task["task"].as_str().unwrap().to_string();
    assert_eq!(task["kind"], "execute");
    assert_eq!(task["step"]["id"], "copy");
    assert!(task["checkpoint"].is_null());
    let report = |lease: &Value, objects: &[&str], checkpoint: Option<&str>| {
        let objects: Vec<Value> = objects
            .iter()
            .map(|n| json!({ "name": n, "status": "success" }))
            .collect();
        s.post(
            &format!("/workers/tasks/{name}/report"),
            ADMIN,
            &json!({ "lease": lease, "objects": objects, "checkpoint": checkpoint,
                     "logs": [{ "message": "by hand" }] }),
        )
    };
    let (status, body) = report(&task["lease"], &["k0000", "k0001"], Some("2"));
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        s.job(&id)["completed_objects"],
        2,
        "durable and visible when answered"
    );
    let (status, body) = report(&json!("someone-else"), &["k0002"], None);
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("lease-lost")),
        "{body}"
    );

    // Pause reaches the worker through its heartbeat; it stops and says so.
    s.post(&format!("/migrations/{id}/pause"), ADMIN, &json!({}));
    assert_eq!(beat_until_stop(&s, &task), "pause");
    let (status, body) = s.post(
        &format!("/workers/tasks/{name}/fail"),
        ADMIN,
        &json!({ "lease": task["lease"], "kind": "cancelled", "message": "pausing" }),
    );
    assert_eq!(status, 204, "{body}");
    assert_eq!(s.job(&id)["status"], "paused");
    let (status, _) = report(&task["lease"], &["k0002"], Some("3"));
    assert_eq!(status, 409, "a late report of a stopped task is fenced");

    // Resume offers a new attempt from the checkpoint.
    s.post(&format!("/migrations/{id}/resume"), ADMIN, &json!({}));
    let again = claim(&s, ADMIN, "by-hand");
    assert_eq!(again["checkpoint"], "2", "{again}");
    assert_ne!(again["lease"], task["lease"]);
    assert!(again["attempt"].as_u64() > task["attempt"].as_u64());

    // Cancel: the worker is told; one that does not stop is fenced after the grace period.
    s.post(&format!("/migrations/{id}/cancel"), ADMIN, &json!({}));
    assert_eq!(beat_until_stop(&s, &again), "cancel");
    let cancelled = s.wait_for(&id, |j| j["status"] != "executing");
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
    let path = format!(
        "/workers/tasks/{}/heartbeat",
        again["task"].as_str().unwrap()
    );
    let (status, _) = s.post(&path, ADMIN, &json!({ "lease": again["lease"] }));
    assert_eq!(status, 409);
    assert_eq!(
        s.job(&id)["completed_objects"],
        2,
        "nothing of the fenced worker kept"
    );
}

#[test]
fn worker_tokens_reach_only_their_queues_and_nothing_else() {
    let (data, plugins) = (tempfile::tempdir().unwrap(), plugin_dir());
    let s = Server::start(data.path(), plugins.path());
    let token = worker_token(&s, "reindexer", &["reindex"]);
    let (status, _) = s.get("/migrations", &token);
    assert_eq!(status, 403, "a worker token reads nothing");
    let (status, body) = s.post(
        "/workers/claim",
        &token,
        &json!({ "queues": ["reindex", "other"] }),
    );
    assert_eq!(status, 403, "{body}");
    let (status, _) = s.post("/workers/claim", &token, &json!({ "queues": ["reindex"] }));
    assert_eq!(status, 204, "nothing offered, no wait");
    for bad in [
        json!({ "name": "w2", "role": "worker" }),
        json!({ "name": "w3", "role": "worker", "queues": ["no spaces"] }),
        json!({ "name": "w4", "role": "operator", "queues": ["reindex"] }),
    ] {
        let (status, body) = s.post("/tokens", ADMIN, &bad);
        assert_eq!(status, 422, "{bad}: {body}");
        assert_eq!(body["code"], "invalid-token-queues");
    }
    let (_, listed) = s.get("/tokens", ADMIN);
    let mine = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "reindexer")
        .cloned()
        .unwrap();
    assert_eq!(mine["queues"], json!(["reindex"]));
    let (status, body) = s.post(
        "/workers/tasks/none.copy.execute.1/heartbeat",
        &token,
        &json!({ "lease": "x" }),
    );
    assert_eq!((status, body["code"].as_str()), (409, Some("lease-lost")));
}

/// Records its pid, checkpoints, then waits until killed; an attempt given a checkpoint
/// completes at once, saying where it resumed.
const WAITS_FOR_A_STOP: &str = r#"
if [ -n "$PLOVER_CHECKPOINT" ]; then
  echo "resumed from $PLOVER_CHECKPOINT"
  echo '{"complete": {"summary": "finished after the pause"}}'
  exit 0
fi
echo $$ > "$PID_FILE"
echo '{"checkpoint": "half"}'
exec sleep 600
"#;

#[test]
fn plover_worker_kills_its_program_on_pause_and_runs_the_resumed_task_from_the_checkpoint() {
    let (data, plugins, work) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    std::fs::copy(
        plover_tests::artifacts::WORKER_PLAN,
        plugins.path().join("worker_plan.wasm"),
    )
    .unwrap();
    let s = Server::start_with_config(data.path(), plugins.path(), "worker_lease_ms = 1500\n");
    let id = s.create(&json!({
        "handler": "worker-plan",
        "parameters": { "steps": [{ "id": "long", "queue": "long" }] },
    }));
    let pid_file = work.path().join("pid");
    let mut worker = Command::new(env!("CARGO_BIN_EXE_plover"))
        .args([
            "worker",
            "--queue",
            "long",
            "--",
            "sh",
            "-c",
            WAITS_FOR_A_STOP,
        ])
        .env("PLOVER_SERVER", &s.url)
        .env("PLOVER_TOKEN", ADMIN)
        .env("PID_FILE", &pid_file)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    s.post(&format!("/migrations/{id}/execute"), ADMIN, &json!({}));
    let started = Instant::now();
    let pid = loop {
        if let Some(pid) = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok())
        {
            break pid;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "never started");
        std::thread::sleep(Duration::from_millis(20));
    };
    let (status, body) = s.post(&format!("/migrations/{id}/pause"), ADMIN, &json!({}));
    assert!(status < 300, "{status} {body}");
    let paused = s.wait_for(&id, |j| j["status"] == "paused");
    assert_eq!(paused["steps"][0]["status"], "interrupted", "{paused}");
    let gone = Instant::now();
    // The program is killed, not left running behind a paused job (a zombie until reaped
    // counts as gone: its state is Z).
    while std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| !stat.contains(") Z "))
    {
        assert!(gone.elapsed() < Duration::from_secs(10), "{pid} still runs");
        std::thread::sleep(Duration::from_millis(20));
    }

    let (status, body) = s.post(&format!("/migrations/{id}/resume"), ADMIN, &json!({}));
    assert!(status < 300, "{status} {body}");
    let done = s.wait_for(&id, |j| j["status"] == "completed");
    worker.kill().unwrap();
    worker.wait().unwrap();
    assert_eq!(
        done["steps"][0]["summary"], "finished after the pause",
        "{done}"
    );
    let logs = log_lines(&s, &id);
    assert!(logs.iter().any(|l| l == "resumed from half"), "{logs:?}");
}

#[test]
fn a_task_past_the_step_timeout_is_told_so_and_the_step_fails_as_a_timeout() {
    let (data, plugins, work) = (
        tempfile::tempdir().unwrap(),
        plugin_dir(),
        tempfile::tempdir().unwrap(),
    );
    let s = server(data.path(), plugins.path());
    let id = file_copy_job_with(
        &s,
        work.path(),
        "slow",
        10,
        json!({}),
        json!({ "step_timeout_secs": 1, "auto_rollback": false }),
    );
    let (status, body) = s.post(&format!("/migrations/{id}/execute"), ADMIN, &json!({}));
    assert!(status < 300, "{status} {body}");
    let task = claim(&s, ADMIN, "slow");
    assert_eq!(beat_until_stop(&s, &task), "timeout");
    let (status, body) = s.post(
        &format!("/workers/tasks/{}/fail", task["task"].as_str().unwrap()),
        ADMIN,
        &json!({ "lease": task["lease"], "kind": "cancelled", "message": "stopped" }),
    );
    assert_eq!(status, 204, "{body}");
    let failed = s.wait_for(&id, |j| j["status"] == "failed");
    let error = &failed["errors"][0];
    assert_eq!(error["kind"], "timeout", "{failed}");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("ran past the step's limit of 1 s"),
        "{failed}"
    );
    assert_eq!(
        failed["steps"][0]["attempts"], 1,
        "a timeout is not retried"
    );
}

#[test]
fn malformed_claims_and_oversized_reports_are_refused_and_record_nothing() {
    let (data, plugins, work) = (
        tempfile::tempdir().unwrap(),
        plugin_dir(),
        tempfile::tempdir().unwrap(),
    );
    let s = server(data.path(), plugins.path());
    let many: Vec<String> = (0..65).map(|i| format!("q{i}")).collect();
    for queues in [json!([]), json!(many)] {
        let (status, body) = s.post("/workers/claim", ADMIN, &json!({ "queues": queues }));
        assert_eq!(status, 422, "{body}");
        assert_eq!(body["code"], "invalid-body");
    }

    let id = file_copy_job(&s, work.path(), "strict", 10, json!({}));
    s.post(&format!("/migrations/{id}/execute"), ADMIN, &json!({}));
    let task = claim(&s, ADMIN, "strict");
    let path = format!("/workers/tasks/{}/report", task["task"].as_str().unwrap());
    let too_many: Vec<Value> = (0..10_001)
        .map(|i| json!({ "name": format!("k{i}"), "status": "success" }))
        .collect();
    for (report, says) in [
        (
            json!({ "lease": task["lease"], "checkpoint": "x".repeat((1 << 20) + 1) }),
            "checkpoint",
        ),
        (
            json!({ "lease": task["lease"], "objects": too_many }),
            "object results",
        ),
    ] {
        let (status, body) = s.post(&path, ADMIN, &report);
        assert_eq!(status, 422, "{body}");
        assert_eq!(body["code"], "invalid-report");
        assert!(body["message"].as_str().unwrap().contains(says), "{body}");
    }
    let job = s.job(&id);
    assert_eq!(
        job["completed_objects"], 0,
        "nothing of a refused report: {job}"
    );
    // The lease still holds: a refused report does not fence the worker.
    let (status, body) = s.post(
        &path,
        ADMIN,
        &json!({ "lease": task["lease"], "objects": [{ "name": "k0000", "status": "success" }],
                 "checkpoint": "1" }),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(s.job(&id)["completed_objects"], 1);
}
