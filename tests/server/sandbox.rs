//! The sandbox through the real server: database roles with too much power refused at start,
//! cancel reaching a dry run and a plugin waiting on a trickling server, dry runs limited in
//! number, hostile uploads answered quickly, and per-job quotas.

use super::common::{ADMIN, Server, plugin_dir};
use plover_tests::artifacts;
use plover_tests::services::{POSTGRES_URL, Schema, trickling_server};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

fn server_with(toml: &str) -> (Server, tempfile::TempDir, tempfile::TempDir) {
    let data = tempfile::tempdir().unwrap();
    let plugins = plugin_dir();
    let s = Server::start_with_config(data.path(), plugins.path(), toml);
    (s, data, plugins)
}

#[test]
fn a_database_role_with_too_much_power_stops_the_start_unless_allowed() {
    let plugins = plugin_dir();
    let data = tempfile::tempdir().unwrap();
    let superuser = format!("[connections.db]\ntype = \"postgres\"\nurl = \"{POSTGRES_URL}\"\n");
    let (status, stderr) =
        Server::start_failing_with_config(data.path(), plugins.path(), &superuser);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("connection 'db': role 'postgres' is a superuser")
            && stderr.contains("allow_privileged_role"),
        "{stderr}"
    );
    let allowed = format!("{superuser}allow_privileged_role = true\n");
    let s = Server::start_with_config(data.path(), plugins.path(), &allowed);
    assert_eq!(s.get("/migrations", ADMIN).0, 200);

    // A least-privilege role starts without question.
    let schema = Schema::new("leastpriv");
    let data = tempfile::tempdir().unwrap();
    let s = Server::start_with_config(
        data.path(),
        plugins.path(),
        &format!(
            "[connections.db]\ntype = \"postgres\"\nurl = \"{}\"\n",
            schema.url()
        ),
    );
    assert_eq!(s.get("/migrations", ADMIN).0, 200);
}

#[test]
fn cancel_reaches_a_dry_run_in_progress() {
    let (s, _d, _p) = server_with("");
    let id = s.create(&json!({
        "handler": "misbehave",
        "parameters": { "mode": "sleep", "calls": ["validate"] },
        "grants": { "data": "data" },
        "options": { "cancel_grace_secs": 1 }
    }));
    assert_eq!(
        s.post(&format!("/migrations/{id}/validate"), ADMIN, &json!({}))
            .0,
        202
    );
    s.wait_for(&id, |j| j["status"] == "validating");
    let started = Instant::now();
    let (status, body) = s.post(&format!("/migrations/{id}/cancel"), ADMIN, &json!({}));
    assert_eq!(status, 202, "{body}");
    let done = s.wait_for(&id, |j| j["status"] != "validating");
    assert_eq!(done["status"], "cancelled");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn cancel_stops_a_plugin_waiting_on_a_trickling_server() {
    let base = trickling_server();
    let (s, _d, _p) = server_with(&format!(
        "[connections.slow]\ntype = \"http\"\nallow = [\"{base}\"]\nallow_private = true\ntimeout_ms = 600000\n"
    ));
    let id = s.create(&json!({
        "handler": "connector-probe",
        "parameters": { "phase": "execute", "ops": [
            { "op": "http", "binding": "api", "method": "GET", "url": format!("{base}/forever") }
        ] },
        "grants": { "api": "slow" },
        "options": { "cancel_grace_secs": 1, "auto_rollback": false }
    }));
    s.post(&format!("/migrations/{id}/execute"), ADMIN, &json!({}));
    s.wait_for(&id, |j| j["steps"][0]["status"] == "running");
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    assert_eq!(
        s.post(&format!("/migrations/{id}/cancel"), ADMIN, &json!({}))
            .0,
        202
    );
    let done = s.wait_for(&id, |j| j["status"] != "executing");
    assert_eq!(done["status"], "cancelled", "{done}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_ne!(
        done["steps"][0]["status"], "completed",
        "an interrupted exchange is no success"
    );
}

#[test]
fn dry_runs_wait_for_a_free_slot_so_looping_plugins_cannot_take_every_core() {
    let (s, _d, _p) = server_with("max_concurrent_dry_calls = 1\n[limits]\ncall_timeout = 3000\n");
    let looping = s.create(&json!({
        "handler": "misbehave",
        "parameters": { "mode": "loop", "calls": ["validate"] },
        "grants": { "data": "data" }
    }));
    s.post(
        &format!("/migrations/{looping}/validate"),
        ADMIN,
        &json!({}),
    );
    s.wait_for(&looping, |j| j["status"] == "validating");
    std::thread::sleep(Duration::from_millis(300));
    // The only slot is taken: this plan waits until the loop hits its 3 s deadline.
    let started = Instant::now();
    let (status, body) = s.post(
        "/migrations",
        ADMIN,
        &json!({ "handler": "stepper", "parameters": { "steps": [{ "id": "a" }] }, "grants": { "data": "data" } }),
    );
    assert_eq!(status, 201, "{body}");
    assert!(
        started.elapsed() > Duration::from_millis(1500),
        "it waited for the slot: {:?}",
        started.elapsed()
    );
    let done = s.wait_for(&looping, |j| j["status"] != "validating");
    assert_eq!(done["errors"][0]["kind"], "deadline");
}

#[test]
fn an_upload_whose_describe_loops_is_answered_within_the_describe_deadline() {
    let (s, _d, _p) = server_with("");
    let started = Instant::now();
    let r = s
        .http
        .post(s.api("/plugins"))
        .bearer_auth(ADMIN)
        .body(std::fs::read(artifacts::DESCRIBE_LOOPS).unwrap())
        .send()
        .unwrap();
    assert_eq!(r.status(), 422);
    let body: Value = r.json().unwrap();
    assert_eq!(body["code"], "describe-failed");
    assert!(
        body["message"].as_str().unwrap().contains("deadline"),
        "{body}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn job_state_and_object_results_are_bounded_per_job() {
    let (s, _d, _p) =
        server_with("job_state_quota_bytes = 1048576\nmax_object_results_per_step = 50\n");
    let filler = s.create(&json!({
        "handler": "misbehave",
        "parameters": { "mode": "fill-state", "calls": ["execute"] },
        "grants": { "data": "data" }
    }));
    s.post(&format!("/migrations/{filler}/execute"), ADMIN, &json!({}));
    let done = s.wait_for(&filler, |j| j["status"] != "executing");
    let summary = done["steps"][0]["summary"].as_str().unwrap_or_default();
    assert!(
        summary.contains("allows 1048576 per job") && summary.starts_with("after 15 writes"),
        "{done}"
    );

    let recorder = s.create(&json!({
        "handler": "stepper",
        "parameters": { "steps": [{ "id": "a", "batches": 10, "batch_ms": 1, "per_batch": 10 }] },
        "grants": { "data": "data" },
        "options": { "auto_rollback": false }
    }));
    s.post(
        &format!("/migrations/{recorder}/execute"),
        ADMIN,
        &json!({}),
    );
    let done = s.wait_for(&recorder, |j| j["status"] != "executing");
    assert_eq!(done["status"], "failed", "{done}");
    assert_eq!(done["errors"][0]["kind"], "limit-exceeded");
    assert!(
        done["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("allows 50 per step"),
        "{done}"
    );
    assert!(done["completed_objects"].as_u64().unwrap() <= 50);
}
