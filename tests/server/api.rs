//! The HTTP API of a real server: lifecycles, live progress over SSE, authorization, bad input.

use super::common::{ADMIN, Server, SseEvent, events, plugin_dir, read_sse};
use plover_tests::artifacts;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::time::Duration;

fn server() -> (Server, tempfile::TempDir, tempfile::TempDir) {
    let data = tempfile::tempdir().unwrap();
    let plugins = plugin_dir();
    (Server::start(data.path(), plugins.path()), data, plugins)
}

fn create(s: &Server, body: Value) -> String {
    let (status, job) = s.post("/migrations", ADMIN, &body);
    assert_eq!(status, 201, "{job}");
    job["id"].as_str().unwrap().to_string()
}

fn stepper(s: &Server, steps: Value) -> String {
    create(
        s,
        json!({ "handler": "stepper", "parameters": { "steps": steps }, "grants": { "data": "data" } }),
    )
}

#[test]
fn kv_copy_and_config_upgrade_lifecycles_over_http() {
    let (s, _d, _p) = server();
    // Seed through a job: config-upgrade reads a bucket the stepper cannot fill, so use
    // kv-copy's empty-source run to check the plain lifecycle, then config-upgrade on an empty
    // bucket for the plan/dry-run/execute/rollback path.
    let id = create(
        &s,
        json!({ "handler": "kv-copy@^1", "kind": "session-store-move", "grants": { "source": "a", "target": "b" } }),
    );
    let (status, job) = s.post(&format!("/migrations/{id}/validate"), ADMIN, &json!({}));
    assert_eq!(status, 202, "{job}");
    let checked = s.wait_for(&id, |j| j["status"] == "planned" && !j["dry_run"].is_null());
    assert_eq!(checked["dry_run"]["passed"], true);
    let (status, _) = s.post(&format!("/migrations/{id}/execute"), ADMIN, &json!({}));
    assert_eq!(status, 202);
    let done = s.wait_for(&id, |j| j["status"] == "completed");
    assert_eq!(done["percentage"], 100.0);
    assert_eq!(done["steps"].as_array().unwrap().len(), 2);

    let id = create(
        &s,
        json!({ "handler": "config-upgrade", "parameters": { "target_version": "3.0.0" }, "grants": { "configs": "cfg" }, "options": { "approval_required": true } }),
    );
    let (_, job) = s.post(&format!("/migrations/{id}/execute"), ADMIN, &json!({}));
    assert_eq!(job["status"], "awaiting-approval");
    s.post(&format!("/migrations/{id}/approve"), ADMIN, &json!({}));
    let done = s.wait_for(&id, |j| j["status"] == "completed");
    assert_eq!(done["approval"]["by"], "admin");
    s.post(&format!("/migrations/{id}/rollback"), ADMIN, &json!({}));
    s.wait_for(&id, |j| j["status"] == "rolled-back");
    let (_, logs) = s.get(&format!("/migrations/{id}/logs?limit=100"), ADMIN);
    assert!(logs["items"].as_array().unwrap().iter().any(|l| {
        l["message"]
            .as_str()
            .unwrap()
            .starts_with("verified 0 documents")
    }));
    let (_, page) = s.get("/migrations?status=rolled-back", ADMIN);
    assert_eq!(page["total"], 1);
    assert!(
        page["items"][0].get("plan").is_none(),
        "list items are summaries"
    );
}

#[test]
fn sse_reconnect_with_last_event_id_gets_exactly_the_missed_events() {
    let (s, _d, _p) = server();
    let id = stepper(
        &s,
        json!([{ "id": "a", "batches": 120, "batch_ms": 10 }, { "id": "b", "after": ["a"], "batches": 40, "batch_ms": 5 }]),
    );
    let first = events(&s, &id, None);
    s.post(&format!("/migrations/{id}/execute"), ADMIN, &json!({}));
    let (part1, saw_retry) = read_sse(first, Some(10));
    assert!(saw_retry, "a retry: hint comes first");
    assert_eq!(part1.len(), 10);
    let last = part1.last().unwrap().id.unwrap();
    // Disconnected; the job goes on.
    std::thread::sleep(Duration::from_millis(300));
    let (part2, _) = read_sse(events(&s, &id, Some(last)), None);
    assert_eq!(part2.last().unwrap().event, "final");
    assert_eq!(part2.last().unwrap().data["status"], "completed");

    let ids: Vec<u64> = part1.iter().chain(&part2).filter_map(|e| e.id).collect();
    let expected: Vec<u64> = (1..=*ids.last().unwrap()).collect();
    assert_eq!(ids, expected, "every event once, none missed, in order");

    // A client connecting after the end gets the whole history and the final event.
    let (all, _) = read_sse(events(&s, &id, None), None);
    assert_eq!(
        all.iter().filter_map(|e| e.id).collect::<Vec<_>>(),
        expected
    );
    let kinds: std::collections::BTreeSet<&str> = all.iter().map(|e| e.event.as_str()).collect();
    for k in [
        "state", "step", "progress", "log", "objects", "audit", "final",
    ] {
        assert!(kinds.contains(k), "no {k} event in {kinds:?}");
    }
}

#[test]
fn concurrent_watchers_see_the_same_sequence() {
    let (s, _d, _p) = server();
    let id = stepper(&s, json!([{ "id": "a", "batches": 80, "batch_ms": 5 }]));
    let watchers: Vec<_> = (0..2)
        .map(|_| {
            let resp = events(&s, &id, None);
            std::thread::spawn(move || read_sse(resp, None).0)
        })
        .collect();
    s.post(&format!("/migrations/{id}/execute"), ADMIN, &json!({}));
    let seen: Vec<Vec<SseEvent>> = watchers.into_iter().map(|w| w.join().unwrap()).collect();
    assert_eq!(seen[0].len(), seen[1].len());
    let strip = |v: &Vec<SseEvent>| {
        v.iter()
            .filter(|e| e.event != "final")
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(strip(&seen[0]), strip(&seen[1]));
    assert!(seen[0].len() > 80);
}

#[test]
fn authorization_table_every_endpoint_by_role() {
    let (s, _d, _p) = server();
    let mut tokens = std::collections::BTreeMap::new();
    for role in ["viewer", "operator", "admin2"] {
        let r = if role == "admin2" { "admin" } else { role };
        let (status, body) = s.post("/tokens", ADMIN, &json!({ "name": role, "role": r }));
        assert_eq!(status, 201, "{body}");
        tokens.insert(role, body["token"].as_str().unwrap().to_string());
    }
    let id = stepper(&s, json!([{ "id": "a" }]));
    let before = s.job(&id)["last_event_seq"].clone();

    // (method, path, body, least role). Paths point at things that do not exist where the
    // request would otherwise change something, so allowed requests fail after auth instead.
    let table: Vec<(&str, String, Option<Value>, u8)> = vec![
        ("GET", "/plugins".into(), None, 1),
        ("POST", "/plugins".into(), Some(json!(null)), 3),
        ("GET", "/plugins/kv-copy/1.3.0".into(), None, 1),
        ("DELETE", "/plugins/nope/1.0.0".into(), None, 3),
        ("GET", "/migrations".into(), None, 1),
        (
            "POST",
            "/migrations".into(),
            Some(json!({ "handler": "nope" })),
            2,
        ),
        ("GET", format!("/migrations/{id}"), None, 1),
        ("DELETE", "/migrations/nope".into(), None, 2),
        ("GET", format!("/migrations/{id}/logs"), None, 1),
        ("GET", format!("/migrations/{id}/objects"), None, 1),
        (
            "POST",
            "/migrations/nope/execute".into(),
            Some(json!({})),
            2,
        ),
        (
            "POST",
            "/migrations/nope/rollback".into(),
            Some(json!({})),
            2,
        ),
        (
            "POST",
            "/migrations/nope/approve".into(),
            Some(json!({})),
            2,
        ),
        ("POST", "/migrations/nope/cancel".into(), Some(json!({})), 2),
        ("GET", "/tokens".into(), None, 3),
        ("POST", "/tokens".into(), Some(json!({ "name": "x" })), 3),
        ("DELETE", "/tokens/nope".into(), None, 3),
        ("GET", "/audit".into(), None, 3),
        ("GET", format!("/migrations/{id}/events"), None, 1),
        ("GET", "/events".into(), None, 1),
        (
            "GET",
            format!("/migrations/{id}/export/objects.csv"),
            None,
            1,
        ),
        ("GET", "/connections".into(), None, 1),
        ("GET", "/buckets/auth-table/entries".into(), None, 1),
        // A line without a key: refused after auth, nothing written.
        (
            "POST",
            "/buckets/auth-table/import".into(),
            Some(json!({})),
            2,
        ),
        // Allowed, it seeds the sample and plans a job (counted below).
        ("POST", "/demo".into(), None, 2),
    ];
    let callers: [(&str, Option<String>, u8); 5] = [
        ("no token", None, 0),
        ("bad token", Some("plv_not-a-token".into()), 0),
        ("viewer", Some(tokens["viewer"].clone()), 1),
        ("operator", Some(tokens["operator"].clone()), 2),
        ("admin", Some(tokens["admin2"].clone()), 3),
    ];
    for (method, path, body, least) in &table {
        for (who, token, level) in &callers {
            let mut req = s.http.request(method.parse().unwrap(), s.api(path));
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            if let Some(b) = body {
                req = req.json(b);
            }
            let status = req.send().unwrap().status().as_u16();
            let expected_denial = if *level == 0 { 401 } else { 403 };
            if level >= least {
                assert!(
                    status != 401 && status != 403,
                    "{who} {method} {path}: got {status}, expected access"
                );
            } else {
                assert_eq!(status, expected_denial, "{who} {method} {path}");
            }
        }
    }
    assert_eq!(
        s.job(&id)["last_event_seq"],
        before,
        "no denied request changed the job"
    );
    let (_, page) = s.get("/migrations", ADMIN);
    assert_eq!(
        page["total"], 3,
        "the job, and a demo copy each for operator and admin"
    );
    for open in ["/healthz", "/readyz", "/readyz/plugins", "/metrics"] {
        assert_eq!(
            s.http
                .get(format!("{}{open}", s.url))
                .send()
                .unwrap()
                .status(),
            200,
            "{open}"
        );
    }
}

#[test]
fn bad_input_gets_its_4xx_and_changes_nothing() {
    let (s, _d, _p) = server();
    let id = stepper(&s, json!([{ "id": "a" }]));
    let seq = s.job(&id)["last_event_seq"].clone();
    let raw = |method: &str, path: &str, ctype: &str, body: Vec<u8>| {
        let r = s
            .http
            .request(method.parse().unwrap(), s.api(path))
            .bearer_auth(ADMIN)
            .header("content-type", ctype)
            .body(body)
            .send()
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json::<Value>().unwrap_or(Value::Null))
    };
    let cases: Vec<(u16, &str, (u16, Value))> = vec![
        (400, "bad-request", raw("POST", "/migrations", "application/json", b"{not json".to_vec())),
        (422, "invalid-body", raw("POST", "/migrations", "application/json", br#"{"handler": 5}"#.to_vec())),
        (422, "invalid-body", raw("POST", "/migrations", "application/json", br#"{"handler": "stepper", "surprise": 1}"#.to_vec())),
        (400, "bad-request", raw("POST", "/migrations", "text/plain", br#"{"handler": "stepper"}"#.to_vec())),
        (413, "too-large", raw("POST", "/migrations", "application/json", vec![b' '; 65 << 20])),
        (422, "not-wasm", raw("POST", "/plugins", "application/wasm", b"random bytes, not a component".to_vec())),
        (422, "core-module", raw("POST", "/plugins", "application/wasm", wat::parse_str("(module)").unwrap())),
        (422, "wrong-world", raw("POST", "/plugins", "application/wasm", std::fs::read(artifacts::NOT_A_HANDLER).unwrap())),
        (422, "contract-version", raw("POST", "/plugins", "application/wasm", std::fs::read(artifacts::FUTURE_CONTRACT).unwrap())),
        (404, "not-found", raw("GET", "/migrations/no-such-id", "application/json", vec![])),
        (404, "not-found", raw("POST", "/migrations/no-such-id/execute", "application/json", vec![])),
        (404, "not-found", raw("POST", &format!("/migrations/{id}/explode"), "application/json", vec![])),
        (409, "illegal-transition", raw("POST", &format!("/migrations/{id}/rollback"), "application/json", vec![])),
        (422, "invalid-request", raw("POST", "/migrations", "application/json", serde_json::to_vec(&json!({ "handler": "stepper", "options": { "batch_size": 0 } })).unwrap())),
        (422, "unknown-plugin", raw("POST", "/migrations", "application/json", serde_json::to_vec(&json!({ "handler": "nope@^1" })).unwrap())),
        (422, "handler-refused", raw("POST", "/migrations", "application/json", serde_json::to_vec(&json!({ "handler": "stepper", "parameters": { "steps": "x" }, "grants": { "data": "data" } })).unwrap())),
        (422, "invalid-plan", raw("POST", "/migrations", "application/json", serde_json::to_vec(&json!({ "handler": "stepper", "parameters": { "steps": [{ "id": "a", "after": ["a"] }] }, "grants": { "data": "data" } })).unwrap())),
        (400, "bad-request", raw("GET", "/migrations?status=sideways", "application/json", vec![])),
        (404, "not-found", raw("GET", "/nowhere", "application/json", vec![])),
    ];
    for (want, code, (got, body)) in cases {
        assert_eq!(got, want, "{body}");
        assert_eq!(body["code"], code, "{body}");
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{body}"
        );
    }
    assert_eq!(s.job(&id)["last_event_seq"], seq, "nothing stored changed");
    let (_, page) = s.get("/migrations", ADMIN);
    assert_eq!(page["total"], 1);
    let (_, plugins) = s.get("/plugins", ADMIN);
    assert_eq!(
        plugins.as_array().unwrap().len(),
        super::common::BUNDLED.len(),
        "no bad upload was stored"
    );
}

#[test]
fn plugins_upload_side_by_side_and_delete_is_refused_while_used() {
    let (s, _d, _p) = server();
    let upload = |path: &str| {
        let r = s
            .http
            .post(s.api("/plugins"))
            .bearer_auth(ADMIN)
            .body(std::fs::read(path).unwrap())
            .send()
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json::<Value>().unwrap())
    };
    let (status, p1) = upload(artifacts::PROBE);
    assert_eq!(status, 201, "{p1}");
    let (status, _) = upload(artifacts::PROBE);
    assert_eq!(status, 200, "the same bytes again are not a new plugin");
    let (status, p2) = upload(artifacts::PROBE_NEXT);
    assert_eq!(status, 201);
    assert_eq!(
        (p1["version"].as_str(), p2["version"].as_str()),
        (Some("0.1.0"), Some("0.2.0"))
    );
    let (_, shown) = s.get("/plugins/probe/0.1.0", ADMIN);
    assert_eq!(shown["contract_version"], "0.2.0");
    assert_eq!(shown["sha256"], p1["sha256"]);

    let id = create(&s, json!({ "handler": "probe@^0.1" }));
    assert_eq!(s.job(&id)["plugin"]["version"], "0.1.0");
    let r = s
        .http
        .delete(s.api("/plugins/probe/0.1.0"))
        .bearer_auth(ADMIN)
        .send()
        .unwrap();
    assert_eq!(r.status(), 409);
    assert_eq!(
        r.json::<Value>().unwrap()["details"]["migrations"][0],
        id.as_str()
    );
    let r = s
        .http
        .delete(s.api("/plugins/probe/0.2.0"))
        .bearer_auth(ADMIN)
        .send()
        .unwrap();
    assert_eq!(r.status(), 204);
    let (status, _) = s.get("/plugins/probe/0.2.0", ADMIN);
    assert_eq!(status, 404);
}

#[test]
fn completion_webhook_receives_the_final_snapshot() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let receiver = std::thread::spawn(move || {
        // The first attempt is refused with a 500, to check the retry.
        let mut bodies = vec![];
        for answer in ["500 Internal Server Error", "204 No Content"] {
            let (mut conn, _) = listener.accept().unwrap();
            conn.set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let mut buf = vec![0u8; 1 << 20];
            let mut got = 0;
            let body = loop {
                let n = conn.read(&mut buf[got..]).unwrap();
                got += n;
                let text = String::from_utf8_lossy(&buf[..got]).to_string();
                if let Some(at) = text.find("\r\n\r\n") {
                    let len: usize = text
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse().unwrap())
                        })
                        .unwrap_or(0);
                    if got >= at + 4 + len {
                        break text[at + 4..at + 4 + len].to_string();
                    }
                }
                assert!(n > 0, "connection closed early");
            };
            conn.write_all(
                format!("HTTP/1.1 {answer}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .unwrap();
            bodies.push(body);
        }
        bodies
    });
    let (s, _d, _p) = server();
    let id = create(
        &s,
        json!({ "handler": "stepper", "parameters": { "steps": [{ "id": "a" }] }, "grants": { "data": "data" }, "options": { "webhook": url } }),
    );
    s.post(&format!("/migrations/{id}/execute"), ADMIN, &json!({}));
    let bodies = receiver.join().unwrap();
    let last: Value = serde_json::from_str(&bodies[1]).unwrap();
    assert_eq!(last["id"], id.as_str());
    assert_eq!(last["status"], "completed");
    assert_eq!(bodies[0], bodies[1], "the retry sends the same snapshot");
}

#[test]
fn metrics_count_jobs_and_sandbox_kills() {
    let (s, _d, _p) = server();
    let id = create(
        &s,
        json!({ "handler": "misbehave", "parameters": { "mode": "ok" }, "options": { "auto_rollback": false } }),
    );
    // Swap the mode after planning is not possible; plan a panicking one instead.
    let (status, body) = s.post(
        "/migrations",
        ADMIN,
        &json!({ "handler": "misbehave", "parameters": { "mode": "panic" } }),
    );
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["code"], "plugin-failed");
    assert_eq!(body["details"]["cause"]["cause"], "panic");
    s.post(&format!("/migrations/{id}/execute"), ADMIN, &json!({}));
    s.wait_for(&id, |j| j["status"] == "completed");
    let text = s
        .http
        .get(format!("{}/metrics", s.url))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        text.contains("plover_jobs{state=\"completed\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("plover_sandbox_kills_total{cause=\"panic\"} 1"),
        "{text}"
    );
    assert!(text.contains("plover_plugin_call_seconds_count"), "{text}");
    assert!(
        text.contains("plover_step_duration_seconds_count 1"),
        "{text}"
    );
}

#[test]
fn audit_trail_records_every_mutating_request_with_the_token_name() {
    let (s, _d, _p) = server();
    let (_, viewer) = s.post(
        "/tokens",
        ADMIN,
        &json!({ "name": "watcher", "role": "viewer" }),
    );
    let viewer = viewer["token"].as_str().unwrap().to_string();
    let id = stepper(&s, json!([{ "id": "a" }]));
    s.post(&format!("/migrations/{id}/execute"), &viewer, &json!({}));
    s.post(&format!("/migrations/{id}/execute"), ADMIN, &json!({}));
    s.get("/migrations", &viewer);
    let (status, page) = s.get("/audit", ADMIN);
    assert_eq!(status, 200, "{page}");
    let rows: Vec<(String, String, String, u64)> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["actor"].as_str().unwrap().into(),
                e["method"].as_str().unwrap().into(),
                e["path"].as_str().unwrap().into(),
                e["status"].as_u64().unwrap(),
            )
        })
        .collect();
    let exec = format!("/api/v1/migrations/{id}/execute");
    assert_eq!(
        rows,
        [
            (
                "admin".to_string(),
                "POST".to_string(),
                "/api/v1/tokens".to_string(),
                201
            ),
            (
                "admin".into(),
                "POST".into(),
                "/api/v1/migrations".into(),
                201
            ),
            ("watcher".into(), "POST".into(), exec.clone(), 403),
            ("admin".into(), "POST".into(), exec, 202),
        ],
        "reads are not audited; refused writes are"
    );
    let (status, _) = s.get("/audit", &viewer);
    assert_eq!(status, 403);
}

#[test]
fn the_all_jobs_stream_reports_every_state_change() {
    let (s, _d, _p) = server();
    let resp = s
        .http
        .get(s.api("/events"))
        .bearer_auth(ADMIN)
        .timeout(Duration::from_secs(60))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let reader = std::thread::spawn(move || {
        let mut states = vec![];
        let mut event = String::new();
        for line in BufReader::new(resp).lines() {
            let line = line.unwrap();
            if let Some(v) = line.strip_prefix("event:") {
                event = v.trim().to_string();
            } else if let Some(v) = line.strip_prefix("data:") {
                let d: Value = serde_json::from_str(v.trim()).unwrap();
                if event == "state" {
                    states.push(d["to"].as_str().unwrap().to_string());
                }
                if states.len() == 5 {
                    break;
                }
            }
        }
        states
    });
    std::thread::sleep(Duration::from_millis(200));
    let a = stepper(&s, json!([{ "id": "a" }]));
    s.post(&format!("/migrations/{a}/execute"), ADMIN, &json!({}));
    s.wait_for(&a, |j| j["status"] == "completed");
    let b = stepper(&s, json!([{ "id": "b" }]));
    s.post(&format!("/migrations/{b}/cancel"), ADMIN, &json!({}));
    assert_eq!(
        reader.join().unwrap(),
        ["planned", "executing", "completed", "planned", "cancelled"]
    );
}

/// Every `$ref` in `v`.
fn refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                if k == "$ref" {
                    out.push(v.as_str().unwrap().to_string());
                } else {
                    refs(v, out);
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

#[test]
fn openapi_document_matches_the_routes() {
    let (s, _d, _p) = server();
    let (status, doc) = s.get("/openapi.json", ADMIN);
    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    let documented: std::collections::BTreeSet<(String, String)> = paths
        .iter()
        .flat_map(|(p, ops)| {
            ops.as_object()
                .unwrap()
                .keys()
                .map(move |m| (m.to_uppercase(), p.clone()))
        })
        .collect();
    // Every route the server has (the authorization table's, in template form) is documented.
    let routes = [
        ("GET", "/api/v1/plugins"),
        ("POST", "/api/v1/plugins"),
        ("GET", "/api/v1/plugins/{name}/{version}"),
        ("DELETE", "/api/v1/plugins/{name}/{version}"),
        ("GET", "/api/v1/migrations"),
        ("POST", "/api/v1/migrations"),
        ("GET", "/api/v1/migrations/{id}"),
        ("DELETE", "/api/v1/migrations/{id}"),
        ("POST", "/api/v1/migrations/{id}/{action}"),
        ("POST", "/api/v1/migrations/{id}/retry-objects"),
        ("GET", "/api/v1/migrations/{id}/logs"),
        ("GET", "/api/v1/migrations/{id}/objects"),
        ("GET", "/api/v1/migrations/{id}/events"),
        ("GET", "/api/v1/events"),
        ("GET", "/api/v1/tokens"),
        ("POST", "/api/v1/tokens"),
        ("DELETE", "/api/v1/tokens/{name}"),
        ("GET", "/api/v1/audit"),
        ("GET", "/api/v1/nodes"),
        ("GET", "/api/v1/migrations/{id}/export/{file}"),
        ("POST", "/api/v1/session"),
        ("GET", "/api/v1/session"),
        ("DELETE", "/api/v1/session"),
        ("GET", "/api/v1/connections"),
        ("POST", "/api/v1/buckets/{name}/import"),
        ("GET", "/api/v1/buckets/{name}/entries"),
        ("POST", "/api/v1/demo"),
        ("GET", "/api/v1/openapi.json"),
        ("POST", "/api/v1/workers/claim"),
        ("POST", "/api/v1/workers/tasks/{task}/heartbeat"),
        ("POST", "/api/v1/workers/tasks/{task}/report"),
        ("POST", "/api/v1/workers/tasks/{task}/complete"),
        ("POST", "/api/v1/workers/tasks/{task}/fail"),
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("GET", "/readyz/plugins"),
        ("GET", "/metrics"),
    ];
    for (m, p) in routes {
        assert!(
            documented.contains(&(m.to_string(), p.to_string())),
            "{m} {p} is not documented"
        );
    }
    assert_eq!(
        documented.len(),
        routes.len(),
        "documented operations that are not routes: {documented:?}"
    );
    // And every documented operation reaches a handler, not the 404 fallback.
    for (m, p) in &documented {
        let concrete = p
            .replace("{id}", "x")
            .replace("{name}", "x")
            .replace("{version}", "1.0.0")
            .replace("{action}", "execute")
            .replace("{task}", "x");
        let r = s
            .http
            .request(m.parse().unwrap(), format!("{}{concrete}", s.url))
            .bearer_auth(ADMIN)
            .timeout(Duration::from_secs(5))
            .send()
            .unwrap();
        if r.status() == 404 {
            let body: Value = r.json().unwrap_or(Value::Null);
            assert_ne!(
                body["message"], "no such endpoint; the API lives under /api/v1",
                "{m} {p}"
            );
        }
    }
    // Operation ids are unique (tools key generated clients by them).
    let mut ids = std::collections::BTreeSet::new();
    for ops in paths.values() {
        for op in ops.as_object().unwrap().values() {
            let id = op["operationId"]
                .as_str()
                .expect("every operation has an id");
            assert!(
                ids.insert(id.to_string()),
                "operation id {id} is used twice"
            );
        }
    }
    // Every schema reference resolves.
    let mut all = vec![];
    refs(&doc, &mut all);
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for r in all {
        let name = r.trim_start_matches("#/components/schemas/");
        assert!(schemas.contains_key(name), "dangling reference {r}");
    }
    for name in [
        "JobSnapshot",
        "NewMigration",
        "ErrorBody",
        "FeedEvent",
        "PluginSummary",
        "JobOptions",
    ] {
        assert!(schemas.contains_key(name), "{name} missing");
    }
}

#[test]
fn idle_event_streams_get_keep_alive_comments() {
    let (s, _d, _p) = server();
    let id = stepper(&s, json!([{ "id": "a" }]));
    // Following from the last event: nothing to replay.
    let last = s.job(&id)["last_event_seq"].as_u64().unwrap();
    let resp = events(&s, &id, Some(last));
    let started = std::time::Instant::now();
    let mut lines = BufReader::new(resp).lines();
    // The stream opens with the retry hint and a comment; nothing happens to the job, so the
    // next line can only be a keep-alive comment, about 15 s later.
    let mut comments = 0;
    while comments < 2 {
        let line = lines.next().unwrap().unwrap();
        assert!(
            line.is_empty() || line.starts_with(':') || line.starts_with("retry:"),
            "unexpected {line}"
        );
        comments += line.starts_with(':') as usize;
    }
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(14) && waited < Duration::from_secs(30),
        "{waited:?}"
    );
}

#[test]
fn a_request_past_its_time_limit_gets_408_and_leaves_nothing_behind() {
    let data = tempfile::tempdir().unwrap();
    let plugins = plugin_dir();
    let config = "request_timeout_secs = 1\n[limits]\ncall_timeout = 2500\n";
    let s = Server::start_with_config(data.path(), plugins.path(), config);
    let started = std::time::Instant::now();
    let (status, body) = s.post(
        "/migrations",
        ADMIN,
        &json!({ "handler": "misbehave", "parameters": { "mode": "sleep", "calls": ["plan"] } }),
    );
    assert_eq!(status, 408, "{body}");
    assert_eq!(body["code"], "timeout");
    assert!(
        started.elapsed() < Duration::from_secs(2500 / 1000 + 1),
        "answered before the plan call ended"
    );
    // The plan call ends at its own deadline; the job it was creating is not stored.
    std::thread::sleep(Duration::from_secs(3));
    let (_, page) = s.get("/migrations", ADMIN);
    assert_eq!(page["total"], 0, "{page}");
}

#[test]
fn a_watcher_that_falls_behind_the_live_fan_out_still_gets_every_event_once() {
    let (s, _d, _p) = server();
    // Thousands of events (a log line per batch), enough to fill the socket buffers, so the
    // stream stops pulling from the live fan-out and lags behind it.
    // Every log line kept, so every event stays replayable (pruned log lines cannot be).
    let id = create(
        &s,
        json!({ "handler": "stepper", "parameters": { "steps": [{ "id": "a", "batches": 7000, "batch_ms": 0, "per_batch": 10 }] },
                "grants": { "data": "data" }, "options": { "max_log_lines": 100000 } }),
    );
    let resp = events(&s, &id, None);
    s.post(&format!("/migrations/{id}/execute"), ADMIN, &json!({}));
    let done = s.wait_for(&id, |j| j["status"] == "completed");
    let last = done["last_event_seq"].as_u64().unwrap();
    assert!(last > 4096 + 100, "only {last} events: not enough to lag");
    let (all, _) = read_sse(resp, None);
    let ids: Vec<u64> = all.iter().filter_map(|e| e.id).collect();
    if let Some(i) = (0..ids.len()).find(|&i| ids[i] != i as u64 + 1) {
        panic!(
            "sequence breaks at position {i}: ...{:?}...",
            &ids[i.saturating_sub(3)..(i + 3).min(ids.len())]
        );
    }
    assert_eq!(ids.len() as u64, last, "every event once");
    assert_eq!(all.last().unwrap().event, "final");
}
