//! Bounded cost and correct answers under hostile or careless clients: the audit trail cannot
//! be filled anonymously, slow clients are disconnected, many jobs share one Redis pool,
//! paging and plugin identities hold at their edges, and every error keeps the one shape.

use super::common::{ADMIN, Server, plugin_dir};
use plover_tests::artifacts;
use plover_tests::services::{REDIS_URL, RedisPrefix, redis};
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::time::{Duration, Instant};

fn server_with(toml: &str) -> (Server, tempfile::TempDir, tempfile::TempDir) {
    let data = tempfile::tempdir().unwrap();
    let plugins = plugin_dir();
    let s = Server::start_with_config(data.path(), plugins.path(), toml);
    (s, data, plugins)
}

/// The value of one sample line of `/metrics`.
fn metric(s: &Server, line_prefix: &str) -> f64 {
    s.metrics()
        .lines()
        .find(|l| l.starts_with(line_prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no metric {line_prefix}"))
}

#[test]
fn the_audit_trail_is_bounded_and_cannot_be_filled_without_a_token() {
    let (s, _d, _p) = server_with("audit_retention = 5\n");
    let anonymous_before = metric(&s, "plover_unauthenticated_requests_total");
    let long_path = format!("/api/v1/migrations/{}/cancel", "x".repeat(60_000));
    for _ in 0..3 {
        let r = s.http.post(format!("{}{long_path}", s.url)).send().unwrap();
        assert_eq!(r.status(), 401);
    }
    assert_eq!(
        metric(&s, "plover_unauthenticated_requests_total") - anonymous_before,
        3.0,
        "anonymous requests are counted"
    );
    let (_, audit) = s.get("/audit", ADMIN);
    assert!(
        audit["items"].as_array().unwrap().is_empty(),
        "and not stored: {audit}"
    );

    // With a token, an entry is kept, cut to a bounded size.
    let r = s
        .http
        .post(format!("{}{long_path}", s.url))
        .bearer_auth(ADMIN)
        .send()
        .unwrap();
    assert_eq!(r.status(), 404);
    let (_, audit) = s.get("/audit", ADMIN);
    let entry = &audit["items"][0];
    let path = entry["path"].as_str().unwrap();
    assert!(path.chars().count() <= 257, "{} characters", path.len());
    assert!(path.ends_with('…'), "marked as cut");

    // Past the retention, the oldest entries go.
    for i in 0..8 {
        s.post(
            "/tokens",
            ADMIN,
            &json!({ "name": format!("t{i}"), "role": "viewer" }),
        );
    }
    let (_, audit) = s.get("/audit?limit=100", ADMIN);
    let items = audit["items"].as_array().unwrap();
    assert_eq!(items.len(), 5, "{audit}");
    assert_eq!(items.last().unwrap()["path"], "/api/v1/tokens");
    assert_eq!(items[0]["seq"], 5, "entries 1 to 4 were dropped");
}

#[test]
fn twenty_concurrent_jobs_share_one_redis_connection_pool() {
    let source = RedisPrefix::new("pool-source");
    let target = RedisPrefix::new("pool-target");
    let mut conn = redis();
    for job in 0..20 {
        let mut cmd = redis::cmd("MSET");
        for i in 0..300 {
            cmd.arg(format!("{}j{job}/{i:04}", source.prefix))
                .arg(format!("value {i}"));
        }
        cmd.query::<()>(&mut conn).unwrap();
    }
    let toml = format!(
        "[defaults]\nparallel_workers = 1\n[connections.old]\ntype = \"redis\"\nurl = \"{REDIS_URL}\"\nkey_prefix = \"{}\"\n[connections.new]\ntype = \"redis\"\nurl = \"{REDIS_URL}\"\nkey_prefix = \"{}\"\n",
        source.prefix, target.prefix
    );
    let (s, _d, _p) = server_with(&toml);
    let ids: Vec<String> = (0..20)
        .map(|job| {
            s.create(&json!({
                "handler": "kv-copy@^1",
                "parameters": { "prefix": format!("j{job}/") },
                "grants": { "source": "old", "target": "new" },
                "options": { "batch_size": 7 }
            }))
        })
        .collect();
    for id in &ids {
        let (status, body) = s.post(&format!("/migrations/{id}/execute"), ADMIN, &json!({}));
        assert_eq!(status, 202, "{body}");
    }
    for id in &ids {
        let done = s.wait_for(id, |j| j["status"] != "executing");
        assert_eq!(done["status"], "completed", "{}", done["errors"]);
        assert_eq!(done["completed_objects"], 300);
    }
    assert_eq!(target.keys().len(), 20 * 300);
}

#[test]
fn a_client_that_never_finishes_its_headers_is_disconnected() {
    let (s, _d, _p) = server_with("header_read_timeout_secs = 1\n");
    let addr = s.url.trim_start_matches("http://");
    let mut slow = std::net::TcpStream::connect(addr).unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    // The server answers 408 or just closes; either way the read ends, well before 20 s.
    let _ = slow.read(&mut buf);
    let mut rest = vec![];
    let _ = slow.read_to_end(&mut rest);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the connection was held for {:?}",
        started.elapsed()
    );
    // Meanwhile and after, other clients are served.
    assert_eq!(
        s.http
            .get(format!("{}/healthz", s.url))
            .send()
            .unwrap()
            .status(),
        200
    );
}

#[test]
fn plugins_are_found_and_removed_by_their_exact_version_only() {
    let (s, data, _p) = server_with("");
    let bytes = std::fs::read(artifacts::PROBE_NEXT).unwrap();
    let r = s
        .http
        .post(s.api("/plugins"))
        .bearer_auth(ADMIN)
        .header("content-type", "application/wasm")
        .body(bytes)
        .send()
        .unwrap();
    assert_eq!(r.status(), 201);
    let sha = r.json::<Value>().unwrap()["sha256"]
        .as_str()
        .unwrap()
        .to_string();
    let stored = data.path().join("plugins").join(format!("{sha}.wasm"));
    assert!(stored.exists());

    for other in ["0.2.0+build.7", "0.2.0-rc.1", "0.2", "x"] {
        let (status, body) = s.delete(&format!("/plugins/probe/{other}"), ADMIN);
        assert_eq!(status, 404, "{other}: {body}");
        assert_eq!(body["code"], "not-found");
        assert_eq!(s.get(&format!("/plugins/probe/{other}"), ADMIN).0, 404);
    }
    assert!(stored.exists(), "nothing was removed");
    assert_eq!(s.get("/plugins/probe/0.2.0", ADMIN).0, 200);
    assert_eq!(s.delete("/plugins/probe/0.2.0", ADMIN).0, 204);
    assert!(!stored.exists());
    assert_eq!(s.get("/plugins/probe/0.2.0", ADMIN).0, 404);
}

#[test]
fn an_upload_cannot_take_over_a_name_another_publisher_owns_unless_claimed() {
    let (s, data, plugins) = server_with("");
    // `probe` 0.1.0 is bundled (the test plugin directory); probe-next is `probe` 0.2.0.
    std::fs::copy(artifacts::PROBE, plugins.path().join("probe.wasm")).unwrap();
    let (data_dir, plugin_dir) = s.kill();
    let s = Server::start(&data_dir, &plugin_dir);
    let upload = |query: &str| {
        s.http
            .post(s.api(&format!("/plugins{query}")))
            .bearer_auth(ADMIN)
            .body(std::fs::read(artifacts::PROBE_NEXT).unwrap())
            .send()
            .unwrap()
    };
    let r = upload("");
    assert_eq!(r.status(), 409);
    let body: Value = r.json().unwrap();
    assert_eq!(body["code"], "name-owned", "{body}");
    assert!(body["message"].as_str().unwrap().contains("bundled"));
    let (_, list) = s.get("/plugins", ADMIN);
    let probes: Vec<&Value> = list
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["name"] == "probe")
        .collect();
    assert_eq!(probes.len(), 1, "the bundled one only");

    let r = upload("?claim=true");
    assert_eq!(r.status(), 201);
    assert_eq!(r.json::<Value>().unwrap()["publisher"], "uploaded");
    // The claim is kept across restarts.
    let (data_dir, plugin_dir) = s.kill();
    let s = Server::start(&data_dir, &plugin_dir);
    let (status, shown) = s.get("/plugins/probe/0.2.0", ADMIN);
    assert_eq!(status, 200, "{shown}");
    assert_eq!(shown["publisher"], "uploaded");
    drop(data);
}

#[test]
fn paging_past_the_end_and_malformed_requests_answer_in_the_error_shape() {
    let (s, _d, _p) = server_with("");
    let id = s.create(&json!({
        "handler": "stepper",
        "parameters": { "steps": [{ "id": "a", "batches": 2, "batch_ms": 1 }] },
        "grants": { "data": "data" }
    }));
    s.post(&format!("/migrations/{id}/execute"), ADMIN, &json!({}));
    s.wait_for(&id, |j| j["status"] == "completed");
    let max = u64::MAX;
    let (status, page) = s.get(&format!("/migrations/{id}/objects?after={max}"), ADMIN);
    assert_eq!(status, 200);
    assert_eq!(page["items"], json!([]), "no wrap to the first page");
    let (status, page) = s.get(&format!("/audit?after={max}"), ADMIN);
    assert_eq!(status, 200);
    assert_eq!(page["items"], json!([]));
    let (_, page) = s.get(&format!("/migrations/{id}/objects"), ADMIN);
    assert_eq!(page["items"].as_array().unwrap().len(), 2);

    // 405 with a body in the error shape.
    let r = s
        .http
        .put(s.api("/migrations"))
        .bearer_auth(ADMIN)
        .send()
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.json::<Value>().unwrap()["code"], "method-not-allowed");
    // A query the event stream cannot read: 400 in the error shape, not plain text.
    let r = s
        .http
        .get(s.api(&format!("/migrations/{id}/events?after=minus-one")))
        .bearer_auth(ADMIN)
        .send()
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().unwrap()["code"], "bad-request");
    // A path that is not UTF-8.
    let r = s
        .http
        .get(format!("{}/api/v1/migrations/%FF%FE", s.url))
        .bearer_auth(ADMIN)
        .send()
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().unwrap()["code"], "bad-request");
    // An invalid token name is a 422, not a conflict.
    let (status, body) = s.post(
        "/tokens",
        ADMIN,
        &json!({ "name": "no spaces", "role": "viewer" }),
    );
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["code"], "invalid-token-name");
    // The auth scheme is case-insensitive.
    let r = s
        .http
        .get(s.api("/migrations"))
        .header("authorization", format!("bearer {ADMIN}"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    // A cursor that is not one the API made.
    let (status, body) = s.get("/migrations?cursor=zz", ADMIN);
    assert_eq!(status, 400, "{body}");
}

#[test]
fn counters_never_go_down_when_jobs_are_deleted() {
    let (s, _d, _p) = server_with("");
    let id = s.create(&json!({
        "handler": "stepper",
        "parameters": { "steps": [{ "id": "a", "batches": 4, "batch_ms": 1, "per_batch": 5 }] },
        "grants": { "data": "data" }
    }));
    s.post(&format!("/migrations/{id}/execute"), ADMIN, &json!({}));
    s.wait_for(&id, |j| j["status"] == "completed");
    let objects = metric(&s, "plover_objects_migrated_total{status=\"success\"}");
    let steps = metric(&s, "plover_step_duration_seconds_count");
    assert!(objects >= 20.0 && steps >= 1.0);
    assert_eq!(metric(&s, "plover_jobs{state=\"completed\"}"), 1.0);
    assert_eq!(s.delete(&format!("/migrations/{id}"), ADMIN).0, 204);
    assert_eq!(
        metric(&s, "plover_objects_migrated_total{status=\"success\"}"),
        objects,
        "a counter does not go down"
    );
    assert_eq!(metric(&s, "plover_step_duration_seconds_count"), steps);
    assert_eq!(
        metric(&s, "plover_jobs{state=\"completed\"}"),
        0.0,
        "a gauge does"
    );
}
