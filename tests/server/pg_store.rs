//! `plover serve` with `store` naming PostgreSQL: jobs, tokens, the audit trail and uploaded
//! plugins live in the database, not in the data directory, so a node killed and replaced by another with an empty data directory serves
//! and finishes the same jobs; a database that does not answer is waited for, never replaced
//! by the embedded store; a schema newer than the binary is refused.

use super::common::{ADMIN, Server, plugin_dir};
use plover_tests::artifacts;
use plover_tests::services::Schema;
use serde_json::json;
use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn store_config(schema: &Schema) -> String {
    format!(
        "store = \"{}\"\nstore_pool_size = 4\nlease_ms = 2000\n",
        schema.store_url()
    )
}

#[test]
fn jobs_live_in_postgresql_and_a_new_node_with_an_empty_data_dir_finishes_them() {
    let schema = Schema::new("pgserve");
    let plugins = plugin_dir();
    let first_dir = tempfile::tempdir().unwrap();
    let first = Server::start_with_config(first_dir.path(), plugins.path(), &store_config(&schema));
    let id = first.create(&json!({
        "handler": "stepper",
        "parameters": { "steps": [
            { "id": "a", "batches": 40, "batch_ms": 25, "per_batch": 5 },
            { "id": "b", "batches": 2, "per_batch": 3, "after": ["a"] }
        ] },
        "grants": { "data": "data" }
    }));
    let done_first = first.create(&json!({
        "handler": "stepper",
        "parameters": { "steps": [{ "id": "a", "batches": 2, "per_batch": 4 }] },
        "grants": { "data": "data" }
    }));
    first.post(
        &format!("/migrations/{done_first}/execute"),
        ADMIN,
        &json!({}),
    );
    let finished = first.wait_for(&done_first, |j| j["status"] == "completed");
    let (status, made) = first.post(
        "/tokens",
        ADMIN,
        &json!({ "name": "watcher", "role": "viewer" }),
    );
    assert_eq!(status, 201, "{made}");
    let watcher = made["token"].as_str().unwrap().to_string();
    let uploaded = first
        .http
        .post(first.api("/plugins"))
        .bearer_auth(ADMIN)
        .body(std::fs::read(artifacts::PROBE_NEXT).unwrap())
        .send()
        .unwrap();
    assert_eq!(uploaded.status(), 201);
    first.post(&format!("/migrations/{id}/execute"), ADMIN, &json!({}));
    first.wait_for(&id, |j| j["completed_objects"].as_u64().unwrap_or(0) >= 20);
    first.kill();

    // Nothing of the jobs was in the first node's data directory.
    let second_dir = tempfile::tempdir().unwrap();
    let second =
        Server::start_with_config(second_dir.path(), plugins.path(), &store_config(&schema));
    let (status, list) = second.get("/migrations", &watcher);
    assert_eq!(
        status, 200,
        "a token made through the first node works here: {list}"
    );
    assert_eq!(list["total"], 2, "{list}");
    let (status, plugin) = second.get("/plugins/probe/0.2.0", ADMIN);
    assert_eq!(
        status, 200,
        "a plugin uploaded through the first node loads here: {plugin}"
    );
    assert_eq!(plugin["publisher"], "uploaded");
    let (status, _) = second.delete("/tokens/watcher", ADMIN);
    assert_eq!(status, 204);
    let (status, _) = second.get("/migrations", &watcher);
    assert_eq!(status, 401, "revoked");
    // One audit trail for both nodes, in order.
    let (status, audit) = second.get("/audit?limit=1000", ADMIN);
    assert_eq!(status, 200, "{audit}");
    let entries: Vec<(u64, String, String)> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["seq"].as_u64().unwrap(),
                e["method"].as_str().unwrap().to_string(),
                e["path"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let made = entries
        .iter()
        .position(|(_, m, p)| m == "POST" && p == "/api/v1/tokens");
    let revoked = entries
        .iter()
        .position(|(_, m, p)| m == "DELETE" && p == "/api/v1/tokens/watcher");
    assert!(
        made.is_some() && revoked.is_some() && made < revoked,
        "{entries:?}"
    );
    assert!(entries.windows(2).all(|w| w[0].0 < w[1].0), "{entries:?}");
    let again = second.job(&done_first);
    assert_eq!(again["status"], "completed");
    assert_eq!(again["end_time"], finished["end_time"], "not run again");
    assert_eq!(again["last_event_seq"], finished["last_event_seq"]);

    // The interrupted one resumes from its last checkpoint on the new node and completes
    // with every object counted once.
    let resumed = second.wait_for(&id, |j| j["status"] == "completed");
    assert_eq!(resumed["completed_objects"], 206, "{resumed}");
    let (status, objects) = second.get(&format!("/migrations/{id}/objects?limit=1000"), ADMIN);
    assert_eq!(status, 200, "{objects}");
    assert_eq!(objects["items"].as_array().unwrap().len(), 206, "{objects}");
    let rows: i64 = schema
        .client()
        .query_one("SELECT count(*) FROM jobs", &[])
        .unwrap()
        .get(0);
    assert_eq!(rows, 2, "the jobs are rows of the configured schema");
    let tokens: Vec<String> = schema
        .client()
        .query("SELECT name FROM api_tokens ORDER BY name", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        tokens,
        ["admin"],
        "only hashes of the remaining token are kept there"
    );
}

#[test]
fn a_database_that_does_not_answer_is_waited_for_not_replaced() {
    let data = tempfile::tempdir().unwrap();
    let plugins = plugin_dir();
    // A loopback port nothing listens on: the refusal comes from this machine.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let config = data.path().join("test-config.toml");
    std::fs::write(
        &config,
        format!("store = \"host=127.0.0.1 port={port} user=plover dbname=test\"\n"),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_plover"))
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .args(["--bind", "127.0.0.1:0", "--data-dir"])
        .arg(data.path())
        .arg("--plugins-dir")
        .arg(plugins.path())
        .env("PLOVER_BOOTSTRAP_TOKEN", ADMIN)
        .env("PLOVER_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The port is bound at once: alive, not ready, and saying why.
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let first = rx.recv_timeout(Duration::from_secs(30)).unwrap();
    let url = first
        .strip_prefix("plover starting on ")
        .unwrap_or_else(|| panic!("{first}"))
        .to_string();
    let http = reqwest::blocking::Client::new();
    let get = |path: &str| {
        let r = http.get(format!("{url}{path}")).send().unwrap();
        (r.status().as_u16(), r.text().unwrap())
    };
    assert_eq!(get("/healthz").0, 200);
    let started = Instant::now();
    let (status, why) = loop {
        let (status, why) = get("/readyz");
        if why.contains("waiting for the store database")
            || started.elapsed() > Duration::from_secs(10)
        {
            break (status, why);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status, 503, "{why}");
    assert!(why.contains("waiting for the store database"), "{why}");
    let (status, body) = get("/api/v1/migrations");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("\"starting\""), "{body}");
    while started.elapsed() < Duration::from_secs(3) {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the node gave up instead of waiting"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let out: Vec<String> = rx.try_iter().collect();
    assert!(
        !out.iter().any(|l| l.contains("listening")),
        "it served without its store: {out:?}"
    );
    assert!(
        err.contains("waiting for the store database"),
        "it says why it waits: {err}"
    );
}

#[test]
fn a_store_schema_newer_than_the_binary_stops_the_node_naming_both_versions() {
    let schema = Schema::new("pgnewer");
    let pool = plover_host::store::connect_postgres(&schema.store_url(), 1).unwrap();
    plover_host::store::pg_schema::migrate(&pool).unwrap();
    let ours = plover_host::store::pg_schema::latest_version();
    schema
        .client()
        .execute(
            "INSERT INTO plover_schema_history (version, name, applied_on, checksum)
             VALUES ($1, 'later', '2030-01-01', '0')",
            &[&(ours as i32 + 1)],
        )
        .unwrap();
    let data = tempfile::tempdir().unwrap();
    let plugins = plugin_dir();
    let (status, stderr) =
        Server::start_failing_with_config(data.path(), plugins.path(), &store_config(&schema));
    assert!(!status.success());
    assert!(
        stderr.contains(&format!("version {}", ours + 1))
            && stderr.contains(&format!("version {ours}")),
        "{stderr}"
    );
}

#[test]
fn while_the_store_database_refuses_the_node_answers_503_and_loses_nothing() {
    let schema = Schema::new("pgdown");
    let plugins = plugin_dir();
    let data = tempfile::tempdir().unwrap();
    let node = Server::start_with_config(data.path(), plugins.path(), &store_config(&schema));
    let id = node.create(&json!({
        "handler": "stepper",
        "parameters": { "steps": [{ "id": "a", "batches": 1 }] },
        "grants": { "data": "data" }
    }));
    // The store's role may not log in and every session of it ends.
    let mut admin = plover_tests::services::postgres();
    let refuse = |admin: &mut postgres::Client| {
        admin
            .batch_execute(&format!("ALTER ROLE {} NOLOGIN", schema.role))
            .unwrap();
        admin
            .execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1",
                &[&schema.role],
            )
            .unwrap();
    };
    refuse(&mut admin);
    for path in [
        format!("/migrations/{id}"),
        "/migrations".into(),
        "/tokens".into(),
    ] {
        let (status, body) = node.get(&path, ADMIN);
        assert_eq!(status, 503, "{path}: {body}");
        assert_eq!(body["code"], "store-unavailable", "{path}: {body}");
    }
    let (status, body) = node.post(
        "/migrations",
        ADMIN,
        &json!({ "handler": "stepper", "parameters": { "steps": [] }, "grants": {} }),
    );
    assert_eq!(status, 503, "{body}");

    admin
        .batch_execute(&format!("ALTER ROLE {} LOGIN", schema.role))
        .unwrap();
    let started = Instant::now();
    loop {
        let (status, job) = node.get(&format!("/migrations/{id}"), ADMIN);
        if status == 200 {
            assert_eq!(job["status"], "planned", "nothing acknowledged was lost");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{status}: {job}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (_, list) = node.get("/migrations", ADMIN);
    assert_eq!(
        list["total"], 1,
        "the refused creation left nothing: {list}"
    );
}
