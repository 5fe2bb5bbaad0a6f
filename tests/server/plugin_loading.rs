//! Plugins load in the background at start-up: an 18 MB Python component compiling for half a
//! minute blocks neither the API nor the plugins already loaded, `/readyz/plugins` tells which
//! are ready, and jobs needing the one still compiling wait for it. With the bundled Python
//! handler, json-reshape, killed mid-run and resumed by a node that has to compile it again.

use super::common::{ADMIN, Server, WAIT, object_names_once, read_bucket};
use plover_host::connectors::{KvBucket, SledBuckets};
use plover_tests::artifacts;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

const DOCUMENTS: usize = 6_000;

/// A plugin directory with kv-copy (small: loads first) and json-reshape (18 MB).
fn plugins() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for path in [artifacts::KV_COPY, artifacts::JSON_RESHAPE] {
        let name = Path::new(path).file_name().unwrap();
        std::fs::copy(path, dir.path().join(name)).unwrap();
    }
    dir
}

fn seed(data_dir: &Path) {
    let db = plover_host::store::open_database(&data_dir.join("db")).unwrap();
    let buckets = SledBuckets::new(db.clone());
    let docs: Vec<(String, Vec<u8>)> = (0..DOCUMENTS)
        .map(|i| {
            let doc = json!({ "uid": i, "legacy": true, "name": format!("user {i}") });
            (format!("doc/{i:05}"), doc.to_string().into_bytes())
        })
        .collect();
    buckets.open("docs").unwrap().set_many(&docs).unwrap();
    buckets
        .open("settings")
        .unwrap()
        .set_many(&[("flag/a".into(), b"1".to_vec())])
        .unwrap();
    db.flush().unwrap();
}

/// What `/readyz/plugins` says about the file named `file`, and its status code.
fn load_state(server: &Server, file: &str) -> (u16, String) {
    let resp = server
        .http
        .get(format!("{}/readyz/plugins", server.url))
        .send()
        .unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().unwrap();
    let line = text
        .lines()
        .find(|l| l.contains(file))
        .unwrap_or_else(|| panic!("{file} not in /readyz/plugins:\n{text}"));
    (status, line.to_string())
}

fn reshape_job() -> Value {
    json!({
        "handler": "json-reshape",
        "parameters": { "prefix": "doc/", "rename": { "uid": "id" }, "drop": ["legacy"], "defaults": { "v": 2 } },
        "grants": { "source": "docs", "target": "docs-v2" },
        "options": { "batch_size": 20 }
    })
}

#[test]
fn a_python_plugin_compiling_at_start_up_blocks_nothing_and_jobs_that_need_it_wait() {
    let data = tempfile::tempdir().unwrap();
    let plugins = plugins();
    seed(data.path());
    let file_name = |path: &str| {
        Path::new(path)
            .file_name()
            .unwrap()
            .to_string_lossy()
            .to_string()
    };
    let (reshape_file, copy_file) = (
        file_name(artifacts::JSON_RESHAPE),
        file_name(artifacts::KV_COPY),
    );
    // Requests may wait for a plugin for 90 % of this.
    let config = "request_timeout_secs = 300\n";
    let server = Server::launch(data.path(), plugins.path(), config);

    // Serving at once; the big plugin is still loading.
    let ready = server
        .http
        .get(format!("{}/readyz", server.url))
        .send()
        .unwrap();
    assert_eq!(ready.status(), 200);
    let (status, line) = load_state(&server, &reshape_file);
    assert_eq!(status, 503, "{line}");
    assert!(
        line.ends_with(": waiting") || line.ends_with(": compiling"),
        "{line}"
    );

    // A job for json-reshape, asked for now: the request waits for the plugin.
    let (url, body) = (server.url.clone(), reshape_job());
    let create = std::thread::spawn(move || {
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(300))
            .build()
            .unwrap();
        let resp = http
            .post(format!("{url}/api/v1/migrations"))
            .bearer_auth(ADMIN)
            .json(&body)
            .send()
            .unwrap();
        (resp.status().as_u16(), resp.json::<Value>().unwrap())
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(!create.is_finished(), "answered before its plugin loaded");

    // Meanwhile kv-copy, the smaller plugin, is loaded and a job of it runs to the end.
    let started = Instant::now();
    while !load_state(&server, &copy_file)
        .1
        .contains("loaded as kv-copy@")
    {
        assert!(started.elapsed() < WAIT, "kv-copy never loaded");
        std::thread::sleep(Duration::from_millis(20));
    }
    let copy = server.create(&json!({
        "handler": "kv-copy",
        "parameters": { "prefix": "flag/" },
        "grants": { "source": "settings", "target": "settings-copy" }
    }));
    let (status, _) = server.post(&format!("/migrations/{copy}/execute"), ADMIN, &json!({}));
    assert_eq!(status, 202);
    let done = server.wait_for(&copy, |j| j["status"] != "executing");
    assert_eq!(done["status"], "completed", "{}", done["errors"]);
    let (status, line) = load_state(&server, &reshape_file);
    assert_eq!(
        (status, line.ends_with(": compiling")),
        (503, true),
        "the kv-copy job finished while json-reshape compiled: {line}"
    );
    assert!(!create.is_finished(), "answered before its plugin loaded");

    // The waiting request is answered once the plugin has loaded.
    let (status, job) = create.join().unwrap();
    assert_eq!(status, 201, "{job}");
    let (status, line) = load_state(&server, &reshape_file);
    assert_eq!(status, 200);
    assert!(line.contains("loaded as json-reshape@0.1.0 in "), "{line}");
    let ready = server
        .http
        .get(format!("{}/readyz", server.url))
        .send()
        .unwrap();
    assert_eq!(ready.text().unwrap(), "ready");

    // Killed mid-run; the node that restarts must compile json-reshape again (its cache is
    // gone), and the job it resumes waits for it, then finishes exactly.
    let id = job["id"].as_str().unwrap().to_string();
    let (status, _) = server.post(&format!("/migrations/{id}/execute"), ADMIN, &json!({}));
    assert_eq!(status, 202);
    let snap = server.wait_for(&id, |j| {
        j["completed_objects"].as_u64().unwrap() >= 200 || j["status"] != "executing"
    });
    assert_eq!(
        snap["status"], "executing",
        "finished before the kill; make it longer"
    );
    let (data_dir, plugin_dir) = server.kill();
    std::fs::remove_dir_all(data_dir.join("cache")).unwrap();

    // This node lets a request wait for a plugin only 90 % of 2 s.
    let server = Server::launch(&data_dir, &plugin_dir, "request_timeout_secs = 2\n");
    let (status, line) = load_state(&server, &reshape_file);
    assert_eq!(status, 503, "{line}");
    let resumed = server.job(&id);
    assert_eq!(resumed["status"], "executing", "{resumed}");

    // A new job for json-reshape waits that long, then is refused and nothing is created.
    let refused = server
        .http
        .post(format!("{}/api/v1/migrations", server.url))
        .bearer_auth(ADMIN)
        .json(&reshape_job())
        .send()
        .unwrap();
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["retry-after"], "2");
    let refused: Value = refused.json().unwrap();
    assert_eq!(refused["code"], "plugin-loading", "{refused}");
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("json-reshape"),
        "{refused}"
    );
    let (_, list) = server.get("/migrations", ADMIN);
    assert_eq!(list["items"].as_array().unwrap().len(), 2, "{list}");
    let done = server.wait_for(&id, |j| j["status"] != "executing");
    assert_eq!(done["status"], "completed", "{}", done["errors"]);
    assert_eq!(done["failed_objects"], 0);
    let names = object_names_once(&server, &id);
    assert_eq!(names.len(), DOCUMENTS, "every document recorded once");

    let (data_dir, _) = server.kill();
    let target = read_bucket(&data_dir, "docs-v2");
    assert_eq!(target.len(), DOCUMENTS);
    let expected: BTreeMap<String, Value> = (0..DOCUMENTS)
        .map(|i| {
            let doc = json!({ "id": i, "name": format!("user {i}"), "v": 2 });
            (format!("doc/{i:05}"), doc)
        })
        .collect();
    for (key, raw) in target {
        let doc: Value = serde_json::from_slice(&raw).unwrap();
        assert_eq!(doc, expected[&key], "{key}");
    }
}
