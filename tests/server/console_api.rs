//! What the console asked of the API, tested over plain HTTP against the real server: sign-in
//! sessions (cookie attributes, CSRF, sign-out, revocation), the connection list (no
//! secrets), bucket import and browse, streamed exports, the object status filter, the demo
//! and its CLI, and webhooks (https, signed, progress at most every N seconds).

use super::common::{ADMIN, Server, plugin_dir};
use plover_tests::services::{TlsAcceptor, loopback_tls};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn server_with(toml: &str) -> (Server, tempfile::TempDir, tempfile::TempDir) {
    let data = tempfile::tempdir().unwrap();
    let plugins = plugin_dir();
    (
        Server::start_with_config(data.path(), plugins.path(), toml),
        data,
        plugins,
    )
}

fn import(s: &Server, bucket: &str, lines: &str) -> (u16, Value) {
    let r = s
        .http
        .post(s.api(&format!("/buckets/{bucket}/import")))
        .bearer_auth(ADMIN)
        .body(lines.to_string())
        .send()
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().unwrap_or(Value::Null))
}

#[test]
fn a_token_is_exchanged_for_a_session_cookie_that_csrf_sign_out_and_revocation_govern() {
    let (s, _d, _p) = server_with("");
    let (_, made) = s.post(
        "/tokens",
        ADMIN,
        &json!({ "name": "ops", "role": "operator" }),
    );
    let token = made["token"].as_str().unwrap().to_string();
    let bad = s
        .http
        .post(s.api("/session"))
        .json(&json!({ "token": "plv_nope" }))
        .send()
        .unwrap();
    assert_eq!(bad.status(), 401);
    let signed = s
        .http
        .post(s.api("/session"))
        .json(&json!({ "token": token }))
        .send()
        .unwrap();
    assert_eq!(signed.status(), 201);
    let cookie = signed.headers()["set-cookie"].to_str().unwrap().to_string();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    let session: Value = signed.json().unwrap();
    assert_eq!(session["name"], "ops");
    assert_eq!(session["role"], "operator");
    assert!(!cookie.contains(&token), "the cookie is not the token");
    let pair = cookie.split(';').next().unwrap().to_string();
    let csrf = session["csrf"].as_str().unwrap().to_string();
    let with_cookie = |method: reqwest::Method, path: &str, csrf: Option<&str>| {
        let mut r = s.http.request(method, s.api(path)).header("cookie", &pair);
        if let Some(c) = csrf {
            r = r.header("x-csrf-token", c);
        }
        let r = r.send().unwrap();
        let status = r.status().as_u16();
        (status, r.json::<Value>().unwrap_or(Value::Null))
    };
    // Reading with the cookie works; changing needs the CSRF token too; the role still rules.
    assert_eq!(
        with_cookie(reqwest::Method::GET, "/migrations", None).0,
        200
    );
    let (status, body) = with_cookie(reqwest::Method::POST, "/demo", None);
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("csrf")),
        "{body}"
    );
    let (status, body) = with_cookie(reqwest::Method::POST, "/demo", Some("not-it"));
    assert_eq!(status, 403, "{body}");
    let (status, job) = with_cookie(reqwest::Method::POST, "/demo", Some(&csrf));
    assert_eq!(status, 201, "{job}");
    assert_eq!(
        with_cookie(reqwest::Method::POST, "/tokens", Some(&csrf)).0,
        403,
        "operator, not admin"
    );
    // The audit trail names the token behind the session.
    let (_, audit) = s.get("/audit?limit=1000", ADMIN);
    assert!(
        audit["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["actor"] == "ops" && e["path"] == "/api/v1/demo")
    );
    // Signing out ends the session (and needs the CSRF token, like any change).
    assert_eq!(
        with_cookie(reqwest::Method::DELETE, "/session", None).0,
        403
    );
    let (status, _) = with_cookie(reqwest::Method::DELETE, "/session", Some(&csrf));
    assert_eq!(status, 204);
    assert_eq!(
        with_cookie(reqwest::Method::GET, "/migrations", None).0,
        401
    );
    // A new session ends when its token is revoked.
    let again: Value = s
        .http
        .post(s.api("/session"))
        .json(&json!({ "token": token }))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let pair2 = s
        .http
        .post(s.api("/session"))
        .json(&json!({ "token": token }))
        .send()
        .unwrap()
        .headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    assert!(again["csrf"].is_string());
    let show = |pair: &str| {
        s.http
            .get(s.api("/session"))
            .header("cookie", pair)
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(show(&pair2), 200);
    assert_eq!(s.delete("/tokens/ops", ADMIN).0, 204);
    assert_eq!(show(&pair2), 401, "revoking the token ended its sessions");
    assert_eq!(s.http.get(s.api("/session")).send().unwrap().status(), 401);
}

#[test]
fn connections_are_listed_by_name_and_kind_without_how_they_are_reached() {
    let (s, _d, _p) = server_with(
        "[connections.cache]\ntype = \"redis\"\nurl = \"redis://127.0.0.1:6379/0\"\nkey_prefix = \"secret-prefix:\"\n\
         [connections.local]\ntype = \"sled\"\nbucket = \"hidden-bucket-name\"\n",
    );
    let (status, list) = s.get("/connections", ADMIN);
    assert_eq!(status, 200, "{list}");
    assert_eq!(
        list["items"],
        json!([{ "name": "cache", "kind": "redis" }, { "name": "local", "kind": "sled" }])
    );
    assert_eq!(list["any_sled_bucket"], true);
    let text = list.to_string();
    for secret in ["redis://", "secret-prefix", "hidden-bucket-name", "6379"] {
        assert!(!text.contains(secret), "{text}");
    }
    let (_, viewer) = s.post("/tokens", ADMIN, &json!({ "name": "v", "role": "viewer" }));
    assert_eq!(
        s.get("/connections", viewer["token"].as_str().unwrap()).0,
        200
    );
    assert_eq!(s.get("/connections", "nope").0, 401);
}

#[test]
fn buckets_import_json_lines_whole_or_not_at_all_and_page_their_entries() {
    let (s, _d, _p) = server_with(
        "[connections.cache]\ntype = \"redis\"\nurl = \"redis://127.0.0.1:6379/0\"\nkey_prefix = \"plover-test-never-written:\"\n",
    );
    let (status, done) = import(
        &s,
        "people",
        "{\"key\": \"p/1\", \"value\": \"alice\"}\n\n{\"key\": \"p/2\", \"value\": {\"name\": \"bob\"}}\n{\"key\": \"q/1\", \"value\": 7}\n",
    );
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["written"], 3);
    let (status, page) = s.get("/buckets/people/entries?prefix=p/&limit=1", ADMIN);
    assert_eq!(status, 200, "{page}");
    assert_eq!(
        page["items"],
        json!([{ "key": "p/1", "value": "alice", "value_base64": null }])
    );
    let next = page["next_after"].as_str().unwrap();
    let (_, page) = s.get(
        &format!("/buckets/people/entries?prefix=p/&after={next}"),
        ADMIN,
    );
    assert_eq!(page["items"][0]["value"], "{\"name\":\"bob\"}");
    assert!(page["next_after"].is_null(), "{page}");
    // A bad line refuses the whole import, naming the line.
    let (status, body) = import(
        &s,
        "people",
        "{\"key\": \"p/3\", \"value\": 1}\n{\"key\": 5}\n",
    );
    assert_eq!(status, 422, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("line 2"),
        "{body}"
    );
    let (_, all) = s.get("/buckets/people/entries", ADMIN);
    assert_eq!(
        all["items"].as_array().unwrap().len(),
        3,
        "nothing of it was written"
    );
    let (status, body) = import(
        &s,
        "people",
        &format!("{{\"key\": \"{}\", \"value\": 1}}\n", "k".repeat(2000)),
    );
    assert_eq!(status, 422, "{body}");
    // Only buckets of the embedded database.
    let (status, body) = import(&s, "cache", "{\"key\": \"x\", \"value\": 1}\n");
    assert_eq!(
        (status, body["code"].as_str()),
        (422, Some("not-an-embedded-bucket")),
        "{body}"
    );
    assert_eq!(s.get("/buckets/cache/entries", ADMIN).0, 422);
    assert_eq!(s.get("/buckets/no%2Fsuch/entries", ADMIN).0, 404);
    let (_, viewer) = s.post("/tokens", ADMIN, &json!({ "name": "v", "role": "viewer" }));
    let viewer = viewer["token"].as_str().unwrap();
    assert_eq!(s.get("/buckets/people/entries", viewer).0, 200);
    let r = s
        .http
        .post(s.api("/buckets/people/import"))
        .bearer_auth(viewer)
        .body("")
        .send()
        .unwrap();
    assert_eq!(r.status(), 403, "importing is for operators");
}

#[test]
fn exports_stream_every_log_line_and_object_result_as_csv_and_json_lines() {
    let (s, _d, _p) = server_with("");
    let lines: String = (0..2500)
        .map(|i| format!("{{\"key\": \"e/{i:05}\", \"value\": \"v,\\\"{i}\\\"\"}}\n"))
        .collect();
    assert_eq!(import(&s, "exp-src", &lines).0, 200);
    let id = s.create(&json!({
        "handler": "kv-copy@^1", "parameters": { "prefix": "e/" },
        "grants": { "source": "exp-src", "target": "exp-dst" }, "options": { "batch_size": 300 }
    }));
    s.post(&format!("/migrations/{id}/execute"), ADMIN, &json!({}));
    s.wait_for(&id, |j| j["status"] == "completed");
    let get = |file: &str| {
        let r = s
            .http
            .get(s.api(&format!("/migrations/{id}/export/{file}")))
            .bearer_auth(ADMIN)
            .send()
            .unwrap();
        assert_eq!(r.status(), 200, "{file}");
        let ct = r.headers()["content-type"].to_str().unwrap().to_string();
        let cd = r.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .to_string();
        (ct, cd, r.text().unwrap())
    };
    let (ct, cd, csv) = get("objects.csv");
    assert!(ct.starts_with("text/csv"), "{ct}");
    assert!(cd.contains(&format!("{id}-objects.csv")), "{cd}");
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(rows.len(), 2501, "a header and a row per result");
    assert!(
        rows[1].starts_with("0,copy,e/00000,key,success,"),
        "{}",
        rows[1]
    );
    let (ct, _, jsonl) = get("objects.jsonl");
    assert_eq!(ct, "application/x-ndjson");
    let objects: Vec<Value> = jsonl
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(objects.len(), 2500);
    assert_eq!(objects[2499]["name"], "e/02499");
    assert_eq!(objects[2499]["index"], 2499);
    let (_, _, logs_csv) = get("logs.csv");
    let (_, logs) = s.get(&format!("/migrations/{id}/logs?limit=1000"), ADMIN);
    assert_eq!(
        logs_csv.lines().count(),
        1 + logs["items"].as_array().unwrap().len()
    );
    assert!(logs_csv.starts_with("seq,at,level,source,step,message\r\n"));
    let (_, _, logs_jsonl) = get("logs.jsonl");
    assert_eq!(
        logs_jsonl.lines().count(),
        logs["items"].as_array().unwrap().len()
    );
    let r = s
        .http
        .get(s.api(&format!("/migrations/{id}/export/secrets.txt")))
        .bearer_auth(ADMIN)
        .send()
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = s
        .http
        .get(s.api("/migrations/nope/export/logs.csv"))
        .bearer_auth(ADMIN)
        .send()
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[test]
fn object_results_filter_by_status_a_bounded_scan_per_page() {
    let (s, _d, _p) = server_with("");
    // 12,000 results, all successful: a filter for errors finds none, 5,000 looked at a page.
    let mut lines = String::new();
    for i in 0..12_000 {
        lines.push_str(&format!(
            "{{\"key\": \"f/{i:05}\", \"value\": {{\"n\": {i}}}}}\n"
        ));
    }
    assert_eq!(import(&s, "filter-src", &lines).0, 200);
    let id = s.create(&json!({
        "handler": "kv-copy@^1", "parameters": { "prefix": "f/" },
        "grants": { "source": "filter-src", "target": "filter-dst" }, "options": { "batch_size": 1000 }
    }));
    s.post(&format!("/migrations/{id}/execute"), ADMIN, &json!({}));
    s.wait_for(&id, |j| j["status"] == "completed");
    // No errors among 12,000 results: a page looks at 5,000 and says where to go on.
    let (status, page) = s.get(
        &format!("/migrations/{id}/objects?status=error&limit=10"),
        ADMIN,
    );
    assert_eq!(status, 200, "{page}");
    assert!(page["items"].as_array().unwrap().is_empty());
    assert_eq!(page["next_after"], 4999, "{page}");
    let (_, page) = s.get(
        &format!("/migrations/{id}/objects?status=error&after=4999"),
        ADMIN,
    );
    assert_eq!(page["next_after"], 9999);
    let (_, page) = s.get(
        &format!("/migrations/{id}/objects?status=error&after=9999"),
        ADMIN,
    );
    assert!(page["next_after"].is_null(), "the end: {page}");
    let (_, page) = s.get(
        &format!("/migrations/{id}/objects?status=success&limit=3&after=10"),
        ADMIN,
    );
    let idx: Vec<u64> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["index"].as_u64().unwrap())
        .collect();
    assert_eq!(idx, [11, 12, 13]);
    assert_eq!(page["next_after"], 13);
    assert_eq!(
        s.get(&format!("/migrations/{id}/objects?status=broken"), ADMIN)
            .0,
        400
    );
}

#[test]
fn the_demo_seeds_sample_sessions_and_plans_a_copy_that_runs_from_the_cli() {
    let (s, _d, _p) = server_with("");
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_plover"))
            .args(args)
            .env("PLOVER_SERVER", &s.url)
            .env("PLOVER_TOKEN", ADMIN)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, out) = cli(&["demo", "--run"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("seeded 2000 sample sessions"), "{out}");
    let (code, out) = cli(&["bucket", "list", "demo-sessions-copy", "--limit", "2500"]);
    assert_eq!(code, Some(0));
    let rows: Vec<&str> = out.lines().collect();
    assert_eq!(rows.len(), 2000, "every session copied");
    assert!(
        rows[0].starts_with("session/00001\t")
            && rows[0].contains("\"migrated_by\":\"plover-demo\""),
        "{}",
        rows[0]
    );
    // The CLI imports JSON Lines too, from a file or stdin.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("seed.jsonl");
    std::fs::write(
        &file,
        "{\"key\": \"a\", \"value\": \"1\"}\n{\"key\": \"b\", \"value\": \"2\"}\n",
    )
    .unwrap();
    let (code, out) = cli(&["bucket", "import", "cli-bucket", file.to_str().unwrap()]);
    assert_eq!(
        (code, out.trim()),
        (Some(0), "imported 2 keys into cli-bucket")
    );
    let (_, out) = cli(&["bucket", "list", "cli-bucket"]);
    assert_eq!(out, "a\t1\nb\t2\n");
    // A second demo plans another copy over the same sample data.
    let (code, out) = cli(&["demo"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("next: plover run"), "{out}");
    let (_, list) = s.get("/migrations?handler=kv-copy", ADMIN);
    assert_eq!(list["total"], 2);
}

/// Requests a loopback webhook receiver got: headers (lower-case names) and body.
type Received = Arc<Mutex<Vec<(Vec<(String, String)>, Vec<u8>)>>>;

/// A webhook receiver on loopback (https when `tls` is given); its URL and what it receives.
fn receiver(tls: Option<TlsAcceptor>) -> (String, Received) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let scheme = if tls.is_some() { "https" } else { "http" };
    let url = format!("{scheme}://{}/hook", listener.local_addr().unwrap());
    let got: Received = Arc::default();
    let keep = got.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let handle = |mut conn: Box<dyn ReadWrite>| {
                let mut reader = BufReader::new(&mut conn);
                let mut headers = vec![];
                let mut line = String::new();
                while reader.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
                    if let Some((k, v)) = line.trim_end().split_once(':') {
                        headers.push((k.trim().to_lowercase(), v.trim().to_string()));
                    }
                    line.clear();
                }
                let len: usize = headers
                    .iter()
                    .find(|(k, _)| k == "content-length")
                    .and_then(|(_, v)| v.parse().ok())
                    .unwrap_or(0);
                let mut body = vec![0; len];
                let _ = reader.read_exact(&mut body);
                keep.lock().unwrap().push((headers, body));
                let _ = conn.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
            };
            match &tls {
                Some(acceptor) => {
                    if let Ok(s) = acceptor.accept(stream) {
                        handle(Box::new(s));
                    }
                }
                None => handle(Box::new(stream)),
            }
        }
    });
    (url, got)
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

fn header<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
    h.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

#[test]
fn webhooks_reach_https_endpoints_signed_with_progress_at_most_every_n_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let (acceptor, ca) = loopback_tls(dir.path());
    let (url, got) = receiver(Some(acceptor));
    let (s, _d, _p) = server_with(&format!(
        "webhook_secret = \"shh\"\nwebhook_ca_cert = \"{}\"\n",
        ca.display()
    ));
    let id = s.create(&json!({
        "handler": "stepper",
        "parameters": { "steps": [{ "id": "a", "batches": 40, "batch_ms": 100, "per_batch": 1 }] },
        "grants": { "data": "data" },
        "options": { "webhook": url, "webhook_progress_secs": 1 }
    }));
    s.post(&format!("/migrations/{id}/execute"), ADMIN, &json!({}));
    s.wait_for(&id, |j| j["status"] == "completed");
    let started = Instant::now();
    let deliveries = loop {
        let all = got.lock().unwrap().clone();
        if all
            .iter()
            .any(|(h, _)| header(h, "x-plover-event") == Some("final"))
        {
            break all;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no final notice"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let (mut progress, mut finals, mut times) = (0, 0, vec![]);
    for (h, body) in &deliveries {
        let sent = header(h, "x-plover-signature").expect("signed");
        assert_eq!(
            sent,
            plover_host::server::webhook_signature("shh", body),
            "a valid HMAC"
        );
        let snap: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(snap["id"], id.as_str());
        match header(h, "x-plover-event") {
            Some("progress") => {
                progress += 1;
                assert_eq!(snap["status"], "executing");
                times.push(
                    chrono::DateTime::parse_from_rfc3339(snap["updated_at"].as_str().unwrap())
                        .unwrap(),
                );
            }
            Some("final") => {
                finals += 1;
                assert_eq!(snap["status"], "completed");
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(finals, 1);
    // About four seconds of work: a notice a second at most, and more than one.
    assert!((2..=6).contains(&progress), "{progress} progress notices");
    for pair in times.windows(2) {
        let gap = (pair[1] - pair[0]).num_milliseconds();
        assert!(gap >= 900, "two notices {gap} ms apart");
    }
    // A webhook must be http or https.
    let (status, body) = s.post(
        "/migrations",
        ADMIN,
        &json!({
            "handler": "stepper", "parameters": { "steps": [] }, "options": { "webhook": "ftp://x" }
        }),
    );
    assert_eq!(status, 422, "{body}");
}
