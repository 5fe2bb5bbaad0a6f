//! Acknowledged means durable: what the API answered survives a SIGKILL right after the
//! answer; a rollback journal is on disk before the outside write it protects; a damaged or
//! unreadable data directory is reported as such.

use super::common::{ADMIN, Server, plugin_dir};
use plover_host::connectors::KvBucket;
use plover_host::store::SledJobStore;
use plover_tests::services::{REDIS_URL, RedisPrefix, redis};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

fn redis_config(space: &RedisPrefix) -> String {
    format!(
        "[connections.cache]\ntype = \"redis\"\nurl = \"{REDIS_URL}\"\nkey_prefix = \"{}\"\n",
        space.prefix
    )
}

fn quick_stepper(s: &Server) -> String {
    s.create(&json!({
        "handler": "stepper",
        "parameters": { "steps": [{ "id": "a", "batches": 3, "batch_ms": 1 }] },
        "grants": { "data": "data" }
    }))
}

#[test]
fn what_was_acknowledged_survives_a_kill_right_after_the_answer() {
    let data = tempfile::tempdir().unwrap();
    let plugins = plugin_dir();
    let mut server = Server::start(data.path(), plugins.path());

    // A migration answered 201 exists after the process dies at once.
    for _ in 0..3 {
        let id = quick_stepper(&server);
        let (data_dir, plugin_dir) = server.kill();
        server = Server::start(&data_dir, &plugin_dir);
        let (status, job) = server.get(&format!("/migrations/{id}"), ADMIN);
        assert_eq!(status, 200, "the acknowledged job {id} was lost: {job}");
        assert_eq!(job["status"], "planned");
    }

    // A job shown completed is not redone after a restart: same end, same events.
    let id = quick_stepper(&server);
    server.post(&format!("/migrations/{id}/execute"), ADMIN, &json!({}));
    let done = server.wait_for(&id, |j| j["status"] == "completed");
    let (data_dir, plugin_dir) = server.kill();
    server = Server::start(&data_dir, &plugin_dir);
    let after = server.job(&id);
    assert_eq!(after["status"], "completed");
    assert_eq!(after["end_time"], done["end_time"], "not run again");
    assert_eq!(
        after["last_event_seq"], done["last_event_seq"],
        "no event was lost or added"
    );

    // A revoked token stays revoked.
    let (status, created) = server.post(
        "/tokens",
        ADMIN,
        &json!({ "name": "short-lived", "role": "viewer" }),
    );
    assert_eq!(status, 201);
    let token = created["token"].as_str().unwrap().to_string();
    assert_eq!(server.get("/migrations", &token).0, 200);
    assert_eq!(server.delete("/tokens/short-lived", ADMIN).0, 204);
    let (data_dir, plugin_dir) = server.kill();
    let server = Server::start(&data_dir, &plugin_dir);
    assert_eq!(
        server.get("/migrations", &token).0,
        401,
        "a revoked token works again after a crash"
    );
}

#[test]
fn a_job_state_write_is_on_disk_before_the_plugin_writes_elsewhere() {
    let data = tempfile::tempdir().unwrap();
    let plugins = plugin_dir();
    let space = RedisPrefix::new("journal");
    let server = Server::start_with_config(data.path(), plugins.path(), &redis_config(&space));
    // The stepper keeps the old value of its key in the job-state bucket, then writes the key
    // in the bucket bound as `data`: here Redis, outside the host's database.
    let id = server.create(&json!({
        "handler": "stepper",
        "parameters": { "steps": [{ "id": "a", "batches": 100000, "batch_ms": 20 }] },
        "grants": { "data": "cache" }
    }));
    server.post(&format!("/migrations/{id}/execute"), ADMIN, &json!({}));
    let mut conn = redis();
    let started = Instant::now();
    loop {
        let exists: bool = redis::cmd("EXISTS")
            .arg(format!("{}a", space.prefix))
            .query(&mut conn)
            .unwrap();
        if exists {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the step never wrote"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    // Killed the moment the outside write is seen.
    let (data_dir, _) = server.kill();
    let store =
        SledJobStore::open_db(&plover_host::store::open_database(&data_dir.join("db")).unwrap())
            .unwrap();
    let journal = store.job_state().bucket(&id, true);
    let kept = journal.get_many(&["backup/a".into()]).unwrap();
    assert_eq!(
        kept[0].as_deref(),
        Some(&[0u8][..]),
        "the journal entry (\"a did not exist\") must be durable before the write it describes"
    );
}

/// Every key under `prefix`, read straight from Redis.
fn redis_keys(space: &RedisPrefix) -> Vec<String> {
    space.keys()
}

#[test]
fn kv_copy_into_redis_killed_resumed_and_rolled_back_leaves_the_target_as_it_was() {
    const KEYS: usize = 12_000;
    let data = tempfile::tempdir().unwrap();
    let plugins = plugin_dir();
    let space = RedisPrefix::new("copy-target");
    {
        let db = plover_host::store::open_database(&data.path().join("db")).unwrap();
        let source = plover_host::connectors::SledBuckets::new(db.clone())
            .open("sessions")
            .unwrap();
        let entries: Vec<(String, Vec<u8>)> = (0..KEYS)
            .map(|i| (format!("s/{i:06}"), format!("value {i}").into_bytes()))
            .collect();
        for chunk in entries.chunks(5000) {
            source.set_many(chunk).unwrap();
        }
        db.flush().unwrap();
    }
    // One key the copy overwrites: rollback must give its old value back.
    redis::cmd("SET")
        .arg(format!("{}s/000042", space.prefix))
        .arg("before")
        .query::<()>(&mut redis())
        .unwrap();
    let config = redis_config(&space);
    let mut server = Server::start_with_config(data.path(), plugins.path(), &config);
    let id = server.create(&json!({
        "handler": "kv-copy@^1",
        "parameters": { "prefix": "s/" },
        "grants": { "source": "sessions", "target": "cache" },
        "options": { "batch_size": 100 }
    }));
    server.post(&format!("/migrations/{id}/execute"), ADMIN, &json!({}));
    for threshold in [500, 3000, 7000] {
        let snap = server.wait_for(&id, |j| {
            j["completed_objects"].as_u64().unwrap() >= threshold || j["status"] != "executing"
        });
        if snap["status"] != "executing" {
            break;
        }
        let (data_dir, plugin_dir) = server.kill();
        server = Server::start_with_config(&data_dir, &plugin_dir, &config);
    }
    let done = server.wait_for(&id, |j| j["status"] != "executing");
    assert_eq!(done["status"], "completed", "{}", done["errors"]);
    assert_eq!(done["completed_objects"], KEYS as u64);
    assert_eq!(redis_keys(&space).len(), KEYS);

    server.post(&format!("/migrations/{id}/rollback"), ADMIN, &json!({}));
    let rolled = server.wait_for(&id, |j| {
        j["status"] == "rolled-back" || j["status"] == "rollback-failed"
    });
    assert_eq!(rolled["status"], "rolled-back", "{}", rolled["errors"]);
    assert_eq!(
        redis_keys(&space),
        ["s/000042"],
        "every key the copy wrote is gone, the one it overwrote is back"
    );
    let old: String = redis::cmd("GET")
        .arg(format!("{}s/000042", space.prefix))
        .query(&mut redis())
        .unwrap();
    assert_eq!(old, "before");
}

#[test]
fn input_too_deep_to_read_back_is_refused_and_start_up_survives_an_unreadable_record() {
    let data = tempfile::tempdir().unwrap();
    let plugins = plugin_dir();
    let server = Server::start(data.path(), plugins.path());
    let mut deep = json!(1);
    for _ in 0..124 {
        deep = json!({ "a": deep });
    }
    let (status, body) = server.post(
        "/migrations",
        ADMIN,
        &json!({ "handler": "stepper", "parameters": { "steps": [], "deep": deep }, "grants": { "data": "data" } }),
    );
    assert_eq!(status, 422, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("levels deep"),
        "{body}"
    );
    let kept = quick_stepper(&server);
    let broken = quick_stepper(&server);
    let (data_dir, plugin_dir) = server.kill();

    // Damage one record the way a bad write or a bug could.
    {
        let db = plover_host::store::open_database(&data_dir.join("db")).unwrap();
        db.open_tree("plover/jobs")
            .unwrap()
            .insert(format!("j/{broken}"), &b"{\"id\": \"truncated"[..])
            .unwrap();
        db.flush().unwrap();
    }
    let server = Server::start(&data_dir, &plugin_dir);
    assert_eq!(server.job(&kept)["status"], "planned", "the rest is served");
    assert_eq!(server.get(&format!("/migrations/{broken}"), ADMIN).0, 404);
    let (_, list) = server.get("/migrations", ADMIN);
    assert_eq!(list["total"], 1, "the quarantined job is out of the counts");
    let (data_dir, _) = server.kill();
    let store =
        SledJobStore::open_db(&plover_host::store::open_database(&data_dir.join("db")).unwrap())
            .unwrap();
    use plover_host::store::JobStore;
    let quarantined = store.quarantined().unwrap();
    assert_eq!(quarantined.len(), 1);
    assert_eq!(quarantined[0].id, broken);
    assert!(
        quarantined[0].reason.contains("unreadable"),
        "{:?}",
        quarantined[0]
    );
}

#[test]
fn a_damaged_database_stops_the_start_with_a_message_that_says_so() {
    let data = tempfile::tempdir().unwrap();
    let plugins = plugin_dir();
    let server = Server::start(data.path(), plugins.path());
    for _ in 0..20 {
        quick_stepper(&server);
    }
    assert!(server.terminate().success());
    let path = data.path().join("db").join("db");
    let mut bytes = std::fs::read(&path).unwrap();
    let (from, to) = (bytes.len() / 3, 2 * bytes.len() / 3);
    for b in &mut bytes[from..to] {
        *b ^= 0xa5;
    }
    std::fs::write(&path, &bytes).unwrap();
    let (status, stderr) = Server::start_failing(data.path(), plugins.path());
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("damaged"), "{stderr}");
    assert!(
        !stderr.contains("panicked"),
        "a clear message, not a crash: {stderr}"
    );
}

#[test]
fn deleting_a_partly_applied_migration_needs_force_and_is_audited() {
    let data = tempfile::tempdir().unwrap();
    let plugins = plugin_dir();
    let server = Server::start(data.path(), plugins.path());
    let id = server.create(&json!({
        "handler": "stepper",
        "parameters": { "steps": [{ "id": "a", "batches": 100000, "batch_ms": 5 }] },
        "grants": { "data": "data" }
    }));
    server.post(&format!("/migrations/{id}/execute"), ADMIN, &json!({}));
    server.wait_for(&id, |j| j["completed_objects"].as_u64().unwrap() > 0);
    server.post(&format!("/migrations/{id}/pause"), ADMIN, &json!({}));
    server.wait_for(&id, |j| j["status"] == "paused");

    let (status, body) = server.delete(&format!("/migrations/{id}"), ADMIN);
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["code"], "rollback-would-be-lost");
    assert_eq!(server.job(&id)["status"], "paused", "nothing was deleted");

    let (status, _) = server.delete(&format!("/migrations/{id}?force=true"), ADMIN);
    assert_eq!(status, 204);
    assert_eq!(server.get(&format!("/migrations/{id}"), ADMIN).0, 404);
    let (_, audit) = server.get("/audit?limit=1000", ADMIN);
    let forced: Vec<&Value> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["method"] == "DELETE" && e["path"].as_str().unwrap().contains("force=true"))
        .collect();
    assert_eq!(forced.len(), 1, "{audit}");
    assert_eq!(forced[0]["status"], 204);
    assert_eq!(forced[0]["actor"], "admin");
}
