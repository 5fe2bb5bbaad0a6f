//! The kill test: SIGKILL the server at many points of a long kv-copy, restart it on the same
//! data directory each time, and check the job still ends with the exact target contents and
//! exact object counts.

use super::common::{ADMIN, Server, object_names_once, plugin_dir, read_bucket};
use plover_host::connectors::{KvBucket, SledBuckets};
use serde_json::json;
use std::collections::BTreeMap;

const KEYS: usize = 30_000;

fn seed(data_dir: &std::path::Path) -> BTreeMap<String, Vec<u8>> {
    let db = plover_host::store::open_database(&data_dir.join("db")).unwrap();
    let source = SledBuckets::new(db.clone()).open("sessions-old").unwrap();
    let entries: Vec<(String, Vec<u8>)> = (0..KEYS)
        .map(|i| {
            (
                format!("session/{i:06}"),
                format!("{{\"user\":{i},\"pad\":\"{}\"}}", "x".repeat(i % 97)).into_bytes(),
            )
        })
        .collect();
    for chunk in entries.chunks(5000) {
        source.set_many(chunk).unwrap();
    }
    // A key the copy overwrites, to check nothing is journaled twice across restarts.
    SledBuckets::new(db.clone())
        .open("sessions-new")
        .unwrap()
        .set_many(&[("session/000007".into(), b"stale".to_vec())])
        .unwrap();
    db.flush().unwrap();
    entries.into_iter().collect()
}

#[test]
fn sigkill_at_many_points_then_restart_completes_exactly() {
    let data = tempfile::tempdir().unwrap();
    let plugins = plugin_dir();
    let source = seed(data.path());

    let mut server = Server::start(data.path(), plugins.path());
    let (status, job) = server.post(
        "/migrations",
        ADMIN,
        &json!({
            "handler": "kv-copy@^1",
            "parameters": { "prefix": "session/" },
            "grants": { "source": "sessions-old", "target": "sessions-new" },
            "options": { "batch_size": 100 }
        }),
    );
    assert_eq!(status, 201, "{job}");
    let id = job["id"].as_str().unwrap().to_string();
    let (status, _) = server.post(&format!("/migrations/{id}/execute"), ADMIN, &json!({}));
    assert_eq!(status, 202);

    // Kill points: object counts the copy has passed, then once more during verification.
    let mut kills = 0;
    for threshold in [
        1,
        2_000,
        6_000,
        11_000,
        15_000,
        19_000,
        23_000,
        27_000,
        KEYS as u64,
    ] {
        let snap = server.wait_for(&id, |j| {
            j["completed_objects"].as_u64().unwrap() >= threshold || j["status"] != "executing"
        });
        if snap["status"] != "executing" {
            break;
        }
        let (data_dir, plugin_dir) = server.kill();
        kills += 1;
        server = Server::start(&data_dir, &plugin_dir);
        // The job resumed by itself: it is executing again (or already done).
        let after = server.job(&id);
        assert!(
            ["executing", "completed"].contains(&after["status"].as_str().unwrap()),
            "after restart {kills}: {}",
            after["status"]
        );
        assert!(after["completed_objects"].as_u64().unwrap() <= KEYS as u64);
    }
    assert!(
        kills >= 5,
        "the job finished before enough kill points ({kills}); make it longer"
    );

    let done = server.wait_for(&id, |j| j["status"] != "executing");
    assert_eq!(done["status"], "completed", "{}", done["errors"]);
    assert_eq!(
        done["completed_objects"], KEYS as u64,
        "no object lost or counted twice"
    );
    assert_eq!(done["failed_objects"], 0);

    // Every object result exactly once, through the paged API.
    let names = object_names_once(&server, &id);
    assert_eq!(names.len(), KEYS);

    let (data_dir, _) = server.kill();
    let target = read_bucket(&data_dir, "sessions-new");
    assert_eq!(target, source, "the target is exactly the source");

    // The journal survived every restart: rollback restores the one key that existed before.
    let server = Server::start(&data_dir, plugins.path());
    let (status, body) = server.post(&format!("/migrations/{id}/rollback"), ADMIN, &json!({}));
    assert_eq!(status, 202, "{body}");
    let rolled = server.wait_for(&id, |j| {
        j["status"] == "rolled-back" || j["status"] == "rollback-failed"
    });
    assert_eq!(rolled["status"], "rolled-back", "{}", rolled["errors"]);
    let (data_dir, _) = server.kill();
    let target = read_bucket(&data_dir, "sessions-new");
    assert_eq!(target.len(), 1);
    assert_eq!(target["session/000007"], b"stale");
}

#[test]
fn a_step_that_cannot_resume_fails_after_a_crash_and_offers_rollback() {
    let data = tempfile::tempdir().unwrap();
    let plugins = plugin_dir();
    let server = Server::start(data.path(), plugins.path());
    let (status, job) = server.post(
        "/migrations",
        ADMIN,
        &json!({
            "handler": "stepper",
            "parameters": { "steps": [{ "id": "once", "batches": 100000, "batch_ms": 5, "resumable": false }] },
            "grants": { "data": "data" }
        }),
    );
    assert_eq!(status, 201, "{job}");
    let id = job["id"].as_str().unwrap().to_string();
    server.post(&format!("/migrations/{id}/execute"), ADMIN, &json!({}));
    server.wait_for(&id, |j| j["completed_objects"].as_u64().unwrap() > 0);
    let (data_dir, plugin_dir) = server.kill();

    let server = Server::start(&data_dir, &plugin_dir);
    let job = server.job(&id);
    assert_eq!(job["status"], "failed");
    assert_eq!(job["rollback_available"], true);
    assert_eq!(job["errors"][0]["kind"], "not-resumable");
    assert!(
        job["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("cannot resume")
    );
    server.post(&format!("/migrations/{id}/rollback"), ADMIN, &json!({}));
    let rolled = server.wait_for(&id, |j| j["status"] == "rolled-back");
    assert_eq!(rolled["steps"][0]["status"], "rolled-back");
}

#[test]
fn sigterm_shuts_down_gracefully_and_the_job_resumes() {
    let data = tempfile::tempdir().unwrap();
    let plugins = plugin_dir();
    let server = Server::start(data.path(), plugins.path());
    let (_, job) = server.post(
        "/migrations",
        ADMIN,
        &json!({
            "handler": "stepper",
            "parameters": { "steps": [{ "id": "long", "batches": 400, "batch_ms": 5 }] },
            "grants": { "data": "data" }
        }),
    );
    let id = job["id"].as_str().unwrap().to_string();
    server.post(&format!("/migrations/{id}/execute"), ADMIN, &json!({}));
    server.wait_for(&id, |j| j["completed_objects"].as_u64().unwrap() >= 20);
    let (data_dir, plugin_dir) = (server.data_dir.clone(), plugins.path().to_path_buf());
    assert!(server.terminate().success());

    let server = Server::start(&data_dir, &plugin_dir);
    let done = server.wait_for(&id, |j| j["status"] != "executing");
    assert_eq!(done["status"], "completed");
    assert_eq!(done["completed_objects"], 400);
}
