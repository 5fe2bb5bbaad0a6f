//! Any node of a cluster answers any request: actions sent to a node that does not run the job
//! take effect, event streams on one node follow jobs run on another (and resume after that
//! node restarts), plugins uploaded to one node load on the others, and every node lists the
//! cluster. Also how a node starts on a store: an older schema migrated forward, a database
//! that does not answer yet waited for.

use super::cluster::Cluster;
use super::common::{ADMIN, Server, WAIT, events, plugin_dir, read_sse};
use plover_tests::artifacts;
use plover_tests::services::Schema;
use serde_json::json;
use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

fn long_stepper(c: &Cluster, on: usize, batches: u64, batch_ms: u64) -> String {
    c.node(on).create(&json!({
        "handler": "stepper",
        "parameters": { "steps": [{ "id": "a", "batches": batches, "batch_ms": batch_ms, "per_batch": 1 }] },
        "grants": { "data": "data" }
    }))
}

/// Poll until `owner_of` (as node `ask` sees it) is `want`.
fn wait_owner(c: &Cluster, ask: usize, id: &str, want: Option<usize>) {
    let started = Instant::now();
    while c.owner_of(ask, id) != want {
        assert!(
            started.elapsed() < WAIT,
            "the job's owner never became {want:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn actions_sent_to_a_node_that_does_not_run_the_job_take_effect() {
    let c = Cluster::start("clact", 3);
    let id = long_stepper(&c, 0, 400, 50);
    c.node(0)
        .post(&format!("/migrations/{id}/execute"), ADMIN, &json!({}));
    c.node(1)
        .wait_for(&id, |j| j["completed_objects"].as_u64().unwrap_or(0) >= 3);
    assert_eq!(c.owner_of(1, &id), Some(0));

    // A request the owner refuses comes back with the owner's answer.
    let (status, body) = c
        .node(1)
        .post(&format!("/migrations/{id}/validate"), ADMIN, &json!({}));
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["code"], "illegal-transition", "{body}");
    assert_eq!(body["details"]["status"], "executing", "{body}");

    let (status, body) = c
        .node(1)
        .post(&format!("/migrations/{id}/pause"), ADMIN, &json!({}));
    assert_eq!(status, 202, "{body}");
    let paused = c.node(2).wait_for(&id, |j| j["status"] == "paused");
    wait_owner(&c, 2, &id, None);

    let (status, body) = c
        .node(2)
        .post(&format!("/migrations/{id}/resume"), ADMIN, &json!({}));
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["status"], "executing", "{body}");
    wait_owner(&c, 0, &id, Some(2));
    c.node(0).wait_for(&id, |j| {
        j["completed_objects"].as_u64() > paused["completed_objects"].as_u64()
    });

    let (status, body) = c
        .node(0)
        .post(&format!("/migrations/{id}/cancel"), ADMIN, &json!({}));
    assert_eq!(status, 202, "{body}");
    let cancelled = c.node(1).wait_for(&id, |j| j["status"] == "cancelled");
    assert!(cancelled["completed_objects"].as_u64().unwrap() < 400);
    wait_owner(&c, 1, &id, None);
    // Deleting through any node forgets it everywhere.
    let (status, body) = c
        .node(0)
        .delete(&format!("/migrations/{id}?force=true"), ADMIN);
    assert_eq!(status, 204, "{body}");
    for i in 0..3 {
        assert_eq!(c.node(i).get(&format!("/migrations/{id}"), ADMIN).0, 404);
    }
}

#[test]
fn an_event_stream_on_one_node_follows_a_job_run_on_another_and_resumes_after_a_restart() {
    let mut c = Cluster::start("clsse", 3);
    let id = long_stepper(&c, 0, 80, 25);
    // Every job's state changes, on a node that does not run it.
    let all = c
        .node(2)
        .http
        .get(c.node(2).api("/events"))
        .bearer_auth(ADMIN)
        .timeout(Duration::from_secs(120))
        .send()
        .unwrap();
    let states = std::thread::spawn({
        let id = id.clone();
        move || {
            let mut seen = vec![];
            for line in BufReader::new(all).lines() {
                let Some(data) = line.unwrap().strip_prefix("data:").map(str::to_string) else {
                    continue;
                };
                let change: serde_json::Value = serde_json::from_str(data.trim()).unwrap();
                if change["job"] == id.as_str() {
                    seen.push(change["to"].as_str().unwrap().to_string());
                    if change["to"] == "completed" {
                        return seen;
                    }
                }
            }
            seen
        }
    });
    let first = events(c.node(1), &id, None);
    c.node(0)
        .post(&format!("/migrations/{id}/execute"), ADMIN, &json!({}));
    let (part1, _) = read_sse(first, Some(15));
    assert_eq!(part1.len(), 15);
    let last = part1.last().unwrap().id.unwrap();
    // The watcher's node restarts; the stream resumes there after the last event seen.
    c.nodes[1].take().unwrap().kill();
    c.restart(1);
    let (part2, _) = read_sse(events(c.node(1), &id, Some(last)), None);
    let end = part2.last().unwrap();
    assert_eq!(end.event, "final");
    assert_eq!(end.data["status"], "completed");
    let ids: Vec<u64> = part1.iter().chain(&part2).filter_map(|e| e.id).collect();
    let expected: Vec<u64> = (1..=*ids.last().unwrap()).collect();
    assert_eq!(
        ids, expected,
        "every event once, in order, across the restart"
    );
    // The same events, with the same numbers, as the node that ran the job streams them.
    let (at_owner, _) = read_sse(events(c.node(0), &id, None), None);
    let strip = |v: Vec<&super::common::SseEvent>| {
        v.into_iter()
            .filter(|e| e.event != "final")
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(
        strip(at_owner.iter().collect()),
        strip(part1.iter().chain(&part2).collect())
    );
    assert_eq!(
        states.join().unwrap(),
        ["executing", "completed"],
        "the other node streamed the job's state changes"
    );
}

#[test]
fn a_plugin_uploaded_to_one_node_is_loaded_by_the_others_and_removed_from_all() {
    let c = Cluster::start("clplug", 2);
    let uploaded = c
        .node(0)
        .http
        .post(c.node(0).api("/plugins"))
        .bearer_auth(ADMIN)
        .body(std::fs::read(artifacts::PROBE_NEXT).unwrap())
        .send()
        .unwrap();
    assert_eq!(uploaded.status(), 201);
    let started = Instant::now();
    while c.node(1).get("/plugins/probe/0.2.0", ADMIN).0 != 200 {
        assert!(started.elapsed() < WAIT, "node 1 never loaded the upload");
        std::thread::sleep(Duration::from_millis(50));
    }
    let id = c.node(1).create(&json!({ "handler": "probe@0.2.0" }));
    assert_eq!(c.node(0).job(&id)["plugin"]["version"], "0.2.0");
    let (status, body) = c.node(1).delete(&format!("/migrations/{id}"), ADMIN);
    assert_eq!(status, 204, "{body}");
    let (status, body) = c.node(1).delete("/plugins/probe/0.2.0", ADMIN);
    assert_eq!(status, 204, "{body}");
    let started = Instant::now();
    while c.node(0).get("/plugins/probe/0.2.0", ADMIN).0 != 404 {
        assert!(started.elapsed() < WAIT, "node 0 kept the removed plugin");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn every_node_lists_the_cluster_with_the_jobs_each_runs_and_labels_its_metrics() {
    let mut c = Cluster::start("clnodes", 2);
    let id = long_stepper(&c, 1, 200, 50);
    c.node(1)
        .post(&format!("/migrations/{id}/execute"), ADMIN, &json!({}));
    wait_owner(&c, 0, &id, Some(1));
    let (status, nodes) = c.node(0).get("/nodes", ADMIN);
    assert_eq!(status, 200, "{nodes}");
    let nodes = nodes.as_array().unwrap().clone();
    assert_eq!(nodes.len(), 2, "{nodes:?}");
    for n in &nodes {
        assert_eq!(n["alive"], true, "{n}");
        assert!(
            n["last_heartbeat"].is_string() && n["version"].is_string(),
            "{n}"
        );
    }
    for i in 0..2 {
        let id = super::cluster::node_id(c.node(i)).unwrap();
        assert!(nodes.iter().any(|n| n["id"] == id.as_str()), "{nodes:?}");
        let text = c.node(i).metrics();
        let labelled = text
            .lines()
            .filter(|l| l.starts_with("plover_jobs{"))
            .all(|l| l.contains(&format!("node=\"{id}\"")));
        assert!(labelled, "{text}");
    }
    // A node that stops cleanly hands its job over at once and shows as stopped.
    let stopped_id = super::cluster::node_id(c.node(1)).unwrap();
    let status = c.nodes[1].take().unwrap().terminate();
    assert!(status.success());
    wait_owner(&c, 0, &id, Some(0));
    let (_, nodes) = c.node(0).get("/nodes", ADMIN);
    let gone = nodes
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == stopped_id.as_str())
        .unwrap()
        .clone();
    assert_eq!(gone["alive"], false, "{gone}");
    assert!(gone["stopped_at"].is_string(), "{gone}");
    c.restart(1);
    let (status, viewer) = c.node(1).post(
        "/tokens",
        ADMIN,
        &json!({ "name": "looker", "role": "viewer" }),
    );
    assert_eq!(status, 201, "{viewer}");
    let token = viewer["token"].as_str().unwrap();
    assert_eq!(
        c.node(0).get("/nodes", token).0,
        200,
        "viewers may list nodes"
    );
    assert_eq!(c.node(0).get("/nodes", "nope").0, 401);
}

#[test]
fn a_node_migrates_an_older_schema_forward_and_serves_its_jobs() {
    let schema = Schema::new("clolder");
    let pool = plover_host::store::connect_postgres(&schema.store_url(), 2).unwrap();
    plover_host::store::pg_schema::migrate_to(&pool, 4).unwrap();
    let mut client = schema.client();
    let before: Option<i32> = client
        .query_one("SELECT max(version) FROM plover_schema_history", &[])
        .unwrap()
        .get(0);
    assert_eq!(before, Some(4));
    drop(pool);
    let (dir, plugins) = (tempfile::tempdir().unwrap(), plugin_dir());
    let config = format!("store = \"{}\"\nlease_ms = 2000\n", schema.store_url());
    let node = Server::start_with_config(dir.path(), plugins.path(), &config);
    let after: Option<i32> = client
        .query_one("SELECT max(version) FROM plover_schema_history", &[])
        .unwrap()
        .get(0);
    assert_eq!(
        after,
        Some(plover_host::store::pg_schema::latest_version() as i32)
    );
    let id = node.create(&json!({
        "handler": "stepper",
        "parameters": { "steps": [{ "id": "a", "batches": 2 }] },
        "grants": { "data": "data" }
    }));
    node.post(&format!("/migrations/{id}/execute"), ADMIN, &json!({}));
    node.wait_for(&id, |j| j["status"] == "completed");
}

/// A loopback port that refuses connections until [`LateProxy::open`], then forwards them to
/// the local PostgreSQL: a database that does not answer yet, and then does.
struct LateProxy {
    port: u16,
}

impl LateProxy {
    fn new() -> LateProxy {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = probe.local_addr().unwrap().port();
        drop(probe);
        LateProxy { port }
    }

    fn open(&self) {
        let listener = std::net::TcpListener::bind(("127.0.0.1", self.port)).unwrap();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let server = std::net::TcpStream::connect("127.0.0.1:5432").unwrap();
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
    }
}

#[test]
fn a_node_is_not_ready_while_its_store_does_not_answer_and_serves_once_it_does() {
    let schema = Schema::new("cllate");
    let proxy = LateProxy::new();
    let url = schema
        .store_url()
        .replace("port=5432", &format!("port={}", proxy.port));
    let (dir, plugins) = (tempfile::tempdir().unwrap(), plugin_dir());
    let config = format!("store = \"{url}\"\nlease_ms = 2000\n");
    let starting = {
        let (dir, plugins) = (dir.path().to_path_buf(), plugins.path().to_path_buf());
        std::thread::spawn(move || Server::start_with_config(&dir, &plugins, &config))
    };
    std::thread::sleep(Duration::from_secs(2));
    assert!(!starting.is_finished(), "it served without its store");
    proxy.open();
    let node = starting.join().unwrap();
    let ready = node
        .http
        .get(format!("{}/readyz", node.url))
        .send()
        .unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(node.get("/migrations", ADMIN).0, 200);
}
