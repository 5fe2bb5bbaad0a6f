//! The connectors through the real server: connections configured in the host's config file
//! (never shown to plugins or API clients), session-move over the API, refusals logged in the
//! job and counted in `/metrics`, and a sql-schema run killed mid-migration whose lock does
//! not block the run that follows.

use super::common::{ADMIN, Server, plugin_dir};
use plover_tests::services::{REDIS_URL, RedisPrefix, Schema, redis};
use serde_json::json;
use std::time::{Duration, Instant};

fn config(schema: &Schema, space: &RedisPrefix) -> String {
    format!(
        r#"
any_sled_bucket = false

[connections.sessions-old]
type = "redis"
url = "{REDIS_URL}"
key_prefix = "{prefix}"

[connections.app-db]
type = "postgres"
url = "{url}"
search_path = "{schema}"

[connections.partner]
type = "http"
allow = ["http://api.partner.example"]
"#,
        prefix = space.prefix,
        schema = schema.name,
        url = schema.url(),
    )
}

#[test]
fn session_move_over_the_api_with_host_configured_connections() {
    let schema = Schema::new("apimove");
    let space = RedisPrefix::new("apimove");
    let mut conn = redis();
    for i in 0..2000 {
        ::redis::cmd("SET")
            .arg(format!("{}sess:{i:05}", space.prefix))
            .arg(format!("{{\"user\":{i}}}"))
            .query::<()>(&mut conn)
            .unwrap();
    }
    let data = tempfile::tempdir().unwrap();
    let plugins = plugin_dir();
    let s = Server::start_with_config(data.path(), plugins.path(), &config(&schema, &space));

    let (status, job) = s.post(
        "/migrations",
        ADMIN,
        &json!({
            "handler": "session-move@^1",
            "parameters": { "prefix": "sess:", "table": "sessions" },
            "grants": { "source": "sessions-old", "target": "app-db" },
            "options": { "batch_size": 300, "dry_run_required": true }
        }),
    );
    assert_eq!(status, 201, "{job}");
    let id = job["id"].as_str().unwrap().to_string();
    assert_eq!(job["plan"]["steps"][1]["expected_objects"], 2000);
    assert_eq!(
        job["total_objects"], 2000,
        "the sessions to move, counted once"
    );
    s.post(&format!("/migrations/{id}/validate"), ADMIN, &json!({}));
    s.wait_for(&id, |j| j["dry_run"]["passed"] == true);
    s.post(&format!("/migrations/{id}/execute"), ADMIN, &json!({}));
    let done = s.wait_for(&id, |j| {
        j["status"] == "completed" || j["status"] == "failed"
    });
    assert_eq!(done["status"], "completed", "{}", done["errors"]);
    assert_eq!(done["completed_objects"], 2000);
    assert_eq!(done["percentage"], 100.0);
    let rows: i64 = schema
        .client()
        .query_one(
            "SELECT count(*) FROM sessions WHERE moved_by_job = $1",
            &[&id],
        )
        .unwrap()
        .get(0);
    assert_eq!(rows, 2000);

    // Connection details stay in the host's config. (Look for whole settings: a bare port
    // number turns up by chance in nanosecond timestamps and hashes.)
    let shown = done.to_string();
    for secret in [
        REDIS_URL,
        "redis://",
        "port=5432",
        "127.0.0.1",
        &schema.url(),
        &space.prefix,
    ] {
        assert!(!shown.contains(secret), "{secret} shown in {shown}");
    }

    s.post(&format!("/migrations/{id}/rollback"), ADMIN, &json!({}));
    s.wait_for(&id, |j| j["status"] == "rolled-back");
    let exists: bool = schema
        .client()
        .query_one("SELECT to_regclass('sessions') IS NOT NULL", &[])
        .unwrap()
        .get(0);
    assert!(!exists, "the table the job created is gone");

    // With any_sled_bucket off, a grant must name a configured connection.
    let (status, body) = s.post(
        "/migrations",
        ADMIN,
        &json!({ "handler": "session-move", "grants": { "source": "sessions-elsewhere", "target": "app-db" } }),
    );
    assert_eq!(
        (status, body["code"].as_str()),
        (422, Some("invalid-request")),
        "{body}"
    );
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("no connection named 'sessions-elsewhere'"),
        "{body}"
    );
}

#[test]
fn refusals_are_logged_in_the_job_and_counted_in_metrics() {
    let schema = Schema::new("apirefuse");
    let space = RedisPrefix::new("apirefuse");
    let data = tempfile::tempdir().unwrap();
    let plugins = plugin_dir();
    let s = Server::start_with_config(data.path(), plugins.path(), &config(&schema, &space));
    let (status, job) = s.post(
        "/migrations",
        ADMIN,
        &json!({
            "handler": "connector-probe",
            "parameters": { "phase": "plan", "ops": [
                { "op": "http", "binding": "api", "method": "GET", "url": "http://elsewhere.example/x" },
                { "op": "http", "binding": "api", "method": "GET", "url": "http://127.0.0.1:9/" },
                { "op": "sql-execute", "binding": "warehouse", "statement": "SELECT 1" },
            ] },
            "grants": { "api": "partner", "db": "app-db" }
        }),
    );
    assert_eq!(status, 201, "{job}");
    let id = job["id"].as_str().unwrap();
    let answers = job["plan"]["risk_notes"][0].as_str().unwrap();
    assert_eq!(answers.matches("Denied").count(), 2, "{answers}");
    assert!(answers.contains("NotGranted"), "{answers}");

    let (_, logs) = s.get(&format!("/migrations/{id}/logs?limit=100"), ADMIN);
    let lines: Vec<&str> = logs["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["level"] == "warning")
        .map(|l| l["message"].as_str().unwrap())
        .collect();
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.starts_with("host refused (http)"))
            .count(),
        2,
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("host refused (sql)") && l.contains("warehouse")),
        "{lines:?}"
    );

    let metrics = s.metrics();
    assert!(
        metrics.contains("plover_connector_refusals_total{connector=\"http\",reason=\"denied\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "plover_connector_refusals_total{connector=\"sql\",reason=\"not-granted\"} 1"
        ),
        "{metrics}"
    );
}

/// The server's backends that are running `pg_sleep` in `schema`'s search path.
fn sleeping_backends(schema: &Schema) -> i64 {
    schema
        .client()
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'plover' AND state = 'active' AND query LIKE '%slow_marker%'",
            &[],
        )
        .unwrap()
        .get(0)
}

#[test]
fn a_sql_schema_run_killed_mid_migration_leaves_no_lock_behind() {
    let schema = Schema::new("apikill");
    let space = RedisPrefix::new("apikill");
    // Migration 1 sleeps for ten minutes while the marker row exists, holding the lock.
    schema
        .client()
        .batch_execute("CREATE TABLE slow_marker (x int); INSERT INTO slow_marker VALUES (1)")
        .unwrap();
    let migrations = json!([
        { "version": 1, "name": "slow", "up": "DO $$ BEGIN IF EXISTS (SELECT 1 FROM slow_marker) THEN PERFORM pg_sleep(600); END IF; END $$; CREATE TABLE t1 (id int);" },
        { "version": 2, "name": "next", "up": "CREATE TABLE t2 (id int);" },
    ]);
    let data = tempfile::tempdir().unwrap();
    let plugins = plugin_dir();
    let toml = config(&schema, &space);
    let s = Server::start_with_config(data.path(), plugins.path(), &toml);
    let (status, job) = s.post(
        "/migrations",
        ADMIN,
        &json!({ "handler": "sql-schema", "parameters": { "migrations": migrations }, "grants": { "db": "app-db" } }),
    );
    assert_eq!(status, 201, "{job}");
    assert_eq!(job["total_objects"], 2, "one object per migration");
    let id = job["id"].as_str().unwrap().to_string();
    s.post(&format!("/migrations/{id}/execute"), ADMIN, &json!({}));
    let started = Instant::now();
    while sleeping_backends(&schema) == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "migration 1 never started"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (data_dir, plugin_dir) = s.kill();
    schema
        .client()
        .batch_execute("DELETE FROM slow_marker")
        .unwrap();

    // The restarted host resumes the job; migration 1 runs again and must get the lock the
    // killed host's transaction held, which ends when the server notices its client is gone.
    let s = Server::start_with_config(&data_dir, &plugin_dir, &toml);
    let done = s.wait_for(&id, |j| {
        j["status"] == "completed" || j["status"] == "failed"
    });
    assert_eq!(done["status"], "completed", "{}", done["errors"]);
    assert_eq!(done["percentage"], 100.0);
    let versions: Vec<i64> = schema
        .client()
        .query(
            "SELECT version FROM plover_schema_history ORDER BY version",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(versions, [1, 2], "each migration applied once");
    assert_eq!(
        sleeping_backends(&schema),
        0,
        "the killed host's statement is gone"
    );
}
