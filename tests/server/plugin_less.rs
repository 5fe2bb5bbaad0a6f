//! A migration a tool registers through the API with a plan of its own (the bundled
//! `worker-plan` handler takes the steps from the request): every step runs on a worker queue,
//! one by `plover worker` driving a shell program, the next by hand over the protocol, in the
//! order the plan gives; then rolled back, both rollbacks as tasks.

use super::common::{ADMIN, Server, events, read_sse};
use plover_tests::artifacts;
use serde_json::{Value, json};
use std::process::{Command, Stdio};

/// Prints what the worker protocol turns into results, progress, a log and a checkpoint; a
/// rollback task prints only a log line.
const EXTRACT: &str = r#"
if [ "$PLOVER_TASK_KIND" = rollback ]; then echo "undoing $PLOVER_STEP"; exit 0; fi
for i in 1 2 3; do
  echo "{\"object\": {\"name\": \"row-$i\", \"status\": \"success\"}}"
  echo "{\"progress\": {\"done\": $i, \"total\": 3}}"
done
echo "{\"checkpoint\": \"3\"}"
echo "extracted 3 rows for job $PLOVER_JOB"
echo '{"complete": {"summary": "extracted 3 rows"}}'
"#;

fn tool_plan() -> Value {
    json!({
        "handler": "worker-plan",
        "parameters": {
            "risk": "medium",
            "estimated_duration_ms": 2000,
            "steps": [
                { "id": "extract", "queue": "extract", "expected_objects": 3,
                  "description": "read the rows", "estimated_duration_ms": 500 },
                { "id": "load", "queue": "load", "depends_on": ["extract"], "kind": "migration",
                  "description": "write them", "expected_objects": 3 },
            ],
        },
    })
}

fn claim(s: &Server, queue: &str) -> Value {
    let (status, task) = s.post(
        "/workers/claim",
        ADMIN,
        &json!({ "queues": [queue], "worker": "loader", "wait_ms": 20_000 }),
    );
    assert_eq!(status, 200, "{task}");
    task
}

fn finish(s: &Server, task: &Value, body: Value) {
    let mut body = body;
    body["lease"] = task["lease"].clone();
    let (status, answer) = s.post(
        &format!("/workers/tasks/{}/complete", task["task"].as_str().unwrap()),
        ADMIN,
        &body,
    );
    assert_eq!(status, 204, "{answer}");
}

#[test]
fn a_tool_registers_a_plan_of_its_own_and_workers_run_every_step() {
    let (data, plugins) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    std::fs::copy(
        artifacts::WORKER_PLAN,
        plugins.path().join("worker_plan.wasm"),
    )
    .unwrap();
    let s = Server::start(data.path(), plugins.path());

    // A step that names no queue could only run in a plugin, and there is none: refused.
    let (status, body) = s.post(
        "/migrations",
        ADMIN,
        &json!({ "handler": "worker-plan",
                 "parameters": { "steps": [{ "id": "extract" }] } }),
    );
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["code"], "handler-refused", "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("queue"),
        "{body}"
    );
    assert_eq!(body["details"]["recovery"][0]["action"], "fix-parameters");
    let (_, listed) = s.get("/migrations", ADMIN);
    assert_eq!(listed["items"].as_array().unwrap().len(), 0, "no job made");

    let id = s.create(&tool_plan());
    let planned = s.job(&id);
    assert_eq!(planned["plan"]["risk"], "medium", "{planned}");
    assert_eq!(planned["estimated_duration_ms"], 2000);
    assert_eq!(planned["plan"]["steps"][1]["queue"], "load");
    assert_eq!(planned["total_objects"], 6);
    // The dry run says who runs what.
    let (status, body) = s.post(&format!("/migrations/{id}/validate"), ADMIN, &json!({}));
    assert!(status < 300, "{status} {body}");
    let validated = s.wait_for(&id, |j| !j["dry_run"].is_null());
    assert_eq!(validated["dry_run"]["passed"], true);
    let findings = validated["dry_run"]["report"]["findings"].to_string();
    assert!(
        findings.contains("runs on worker queue 'load'"),
        "{validated}"
    );

    let (status, body) = s.post(&format!("/migrations/{id}/execute"), ADMIN, &json!({}));
    assert!(status < 300, "{status} {body}");
    // Nothing is offered on "load" before "extract" is done: a claim that finds nothing is 204.
    let (status, _) = s.post(
        "/workers/claim",
        ADMIN,
        &json!({ "queues": ["load"], "worker": "early", "wait_ms": 300 }),
    );
    assert_eq!(status, 204, "load waits for extract");

    let extract = Command::new(env!("CARGO_BIN_EXE_plover"))
        .args(["worker", "--queue", "extract", "--max-tasks", "1", "--"])
        .args(["sh", "-c", EXTRACT])
        .env("PLOVER_SERVER", &s.url)
        .env("PLOVER_TOKEN", ADMIN)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(
        extract.status.success(),
        "{}",
        String::from_utf8_lossy(&extract.stderr)
    );

    let task = claim(&s, "load");
    assert_eq!(task["kind"], "execute");
    assert_eq!(task["step"]["id"], "load");
    let running = s.job(&id);
    assert_eq!(running["steps"][0]["status"], "completed", "{running}");
    assert_eq!(running["completed_objects"], 3);
    let (status, body) = s.post(
        &format!("/workers/tasks/{}/report", task["task"].as_str().unwrap()),
        ADMIN,
        &json!({ "lease": task["lease"],
                 "objects": [ { "name": "row-1", "status": "success" },
                              { "name": "row-2", "status": "success" },
                              { "name": "row-3", "status": "error", "error": "duplicate key" } ] }),
    );
    assert_eq!(status, 200, "{body}");
    finish(
        &s,
        &task,
        json!({ "summary": "loaded 2 of 3", "outcome": "partial" }),
    );

    let done = s.wait_for(&id, |j| j["status"] == "partial");
    assert_eq!(done["completed_objects"], 5, "{done}");
    assert_eq!(done["failed_objects"], 1);
    assert_eq!(done["percentage"], 100.0);
    assert_eq!(done["steps"][0]["summary"], "extracted 3 rows");
    assert_eq!(done["steps"][1]["outcome"], "partial");
    let (_, failed) = s.get(&format!("/migrations/{id}/objects?status=error"), ADMIN);
    let failed = failed["items"].as_array().unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["name"], "row-3");
    assert_eq!(failed[0]["error"], "duplicate key");
    let (_, all) = s.get(&format!("/migrations/{id}/objects?limit=100"), ADMIN);
    let mut seen: Vec<String> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| format!("{}/{}", o["step"], o["name"]))
        .collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 6, "each row once per step, none doubled: {all}");
    assert_eq!(all["items"].as_array().unwrap().len(), 6, "{all}");
    let (_, logs) = s.get(&format!("/migrations/{id}/logs?limit=100"), ADMIN);
    assert!(
        logs.to_string()
            .contains(&format!("extracted 3 rows for job {id}")),
        "the program's plain line is a log line, and it knew its job: {logs}"
    );
    let line = logs["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["message"] == format!("extracted 3 rows for job {id}"))
        .unwrap();
    assert_eq!(line["source"], "worker", "{line}");

    // The event stream tells a watcher the same: the worker's log line, its progress and
    // results, and the end.
    let (feed, _) = read_sse(events(&s, &id, None), None);
    let kinds: std::collections::BTreeSet<&str> = feed.iter().map(|e| e.event.as_str()).collect();
    for k in ["step", "progress", "log", "objects", "final"] {
        assert!(kinds.contains(k), "no {k} event in {kinds:?}");
    }
    assert!(
        feed.iter().any(|e| e.event == "log"
            && e.data["source"] == "worker"
            && e.data["message"] == format!("extracted 3 rows for job {id}")),
        "{:?}",
        feed.iter().map(|e| &e.data).collect::<Vec<_>>()
    );
    assert_eq!(feed.last().unwrap().data["status"], "partial");

    // Rollback: both steps are reversible, so each is offered as a task, "load" first.
    let (status, body) = s.post(&format!("/migrations/{id}/rollback"), ADMIN, &json!({}));
    assert!(status < 300, "{status} {body}");
    let task = claim(&s, "load");
    assert_eq!(task["kind"], "rollback");
    finish(&s, &task, json!({ "summary": "unloaded" }));
    let undo = Command::new(env!("CARGO_BIN_EXE_plover"))
        .args(["worker", "--queue", "extract", "--max-tasks", "1", "--"])
        .args(["sh", "-c", EXTRACT])
        .env("PLOVER_SERVER", &s.url)
        .env("PLOVER_TOKEN", ADMIN)
        .output()
        .unwrap();
    assert!(undo.status.success());
    let rolled = s.wait_for(&id, |j| j["status"] == "rolled-back");
    let (_, logs) = s.get(&format!("/migrations/{id}/logs?limit=100"), ADMIN);
    assert!(logs.to_string().contains("undoing extract"), "{logs}");
    assert!(rolled["errors"].as_array().unwrap().is_empty(), "{rolled}");
}
