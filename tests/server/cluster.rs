//! Several `plover serve` processes on one PostgreSQL store (a schema of their own), moving
//! data between Redis prefixes: a node killed, frozen or restarted while it runs a job, and the
//! job finishing exactly once on another.

use super::common::{ADMIN, Server, WAIT, events, plugin_dir, read_sse};
use plover_tests::services::{REDIS_URL, RedisPrefix, Schema, redis};
use serde_json::json;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How long a lease lasts in these tests.
pub const LEASE_MS: u64 = 2000;

/// Nodes sharing the store in `schema`, with Redis connections `src` and `dst` over `redis`.
pub struct Cluster {
    pub nodes: Vec<Option<Server>>,
    /// Each node's id (a restart gives a new one).
    ids: Vec<String>,
    dirs: Vec<tempfile::TempDir>,
    plugins: tempfile::TempDir,
    pub config: String,
    /// The store's schema and the Redis keys, dropped with the cluster.
    _schema: Schema,
    pub redis: RedisPrefix,
}

impl Cluster {
    pub fn start(tag: &str, nodes: usize) -> Cluster {
        let schema = Schema::new(tag);
        let redis = RedisPrefix::new(tag);
        let config = format!(
            "store = \"{store}\"\nstore_pool_size = 6\nlease_ms = {LEASE_MS}\n\
             [connections.src]\ntype = \"redis\"\nurl = \"{REDIS_URL}\"\nkey_prefix = \"{p}src:\"\n\
             [connections.dst]\ntype = \"redis\"\nurl = \"{REDIS_URL}\"\nkey_prefix = \"{p}dst:\"\n",
            store = schema.store_url(),
            p = redis.prefix,
        );
        let plugins = plugin_dir();
        let dirs: Vec<tempfile::TempDir> =
            (0..nodes).map(|_| tempfile::tempdir().unwrap()).collect();
        // Started together, as an orchestrator would: they migrate the schema in turns.
        let started: Vec<_> = dirs
            .iter()
            .map(|d| {
                let (dir, plugins, config) = (
                    d.path().to_path_buf(),
                    plugins.path().to_path_buf(),
                    config.clone(),
                );
                std::thread::spawn(move || Server::start_with_config(&dir, &plugins, &config))
            })
            .collect();
        let nodes: Vec<Option<Server>> = started
            .into_iter()
            .map(|s| Some(s.join().unwrap()))
            .collect();
        let ids = nodes
            .iter()
            .map(|n| node_id(n.as_ref().unwrap()).expect("a node id in the metrics"))
            .collect();
        Cluster {
            nodes,
            ids,
            dirs,
            plugins,
            config,
            _schema: schema,
            redis,
        }
    }

    pub fn node(&self, i: usize) -> &Server {
        self.nodes[i].as_ref().expect("a running node")
    }

    /// Start node `i` again (a new process over its data directory).
    pub fn restart(&mut self, i: usize) {
        let dir: PathBuf = self.dirs[i].path().to_path_buf();
        let node = Server::start_with_config(&dir, self.plugins.path(), &self.config);
        self.ids[i] = node_id(&node).expect("a node id in the metrics");
        self.nodes[i] = Some(node);
    }

    /// Put `n` keys `k000000…` with distinct values under the `src` connection.
    pub fn seed(&self, n: usize) {
        let mut conn = redis();
        for chunk in (0..n).collect::<Vec<_>>().chunks(5000) {
            let mut cmd = redis::cmd("MSET");
            for i in chunk {
                cmd.arg(format!("{}src:k{i:06}", self.redis.prefix))
                    .arg(format!("value {i}"));
            }
            let () = cmd.query(&mut conn).unwrap();
        }
    }

    /// Every key under `bucket` (`src` or `dst`) with its value, sorted.
    pub fn contents(&self, bucket: &str) -> Vec<(String, String)> {
        let mut conn = redis();
        let prefix = format!("{}{bucket}:", self.redis.prefix);
        let mut keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}*"))
            .query(&mut conn)
            .unwrap();
        keys.sort();
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(5000) {
            let values: Vec<String> = redis::cmd("MGET").arg(chunk).query(&mut conn).unwrap();
            out.extend(
                chunk
                    .iter()
                    .map(|k| k[prefix.len()..].to_string())
                    .zip(values),
            );
        }
        out
    }

    /// A kv-copy of every `src` key to `dst`, planned on node `on`.
    pub fn kv_copy(&self, on: usize, batch_size: u64) -> String {
        self.node(on).create(&json!({
            "handler": "kv-copy@^1",
            "parameters": { "prefix": "k" },
            "grants": { "source": "src", "target": "dst" },
            "options": { "batch_size": batch_size, "parallel_workers": 1 }
        }))
    }

    /// The node (by index) whose `/nodes` entry holds job `id`'s lease now, as node `ask` sees it.
    pub fn owner_of(&self, ask: usize, id: &str) -> Option<usize> {
        let (status, nodes) = self.node(ask).get("/nodes", ADMIN);
        assert_eq!(status, 200, "{nodes}");
        let holder = nodes
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["jobs"].as_array().unwrap().iter().any(|j| j == id))?;
        self.ids.iter().position(|i| holder["id"] == i.as_str())
    }
}

/// A node's own id, from its metrics.
pub fn node_id(s: &Server) -> Option<String> {
    let text = s.metrics();
    let at = text.find("node=\"")? + 6;
    Some(text[at..at + text[at..].find('"')?].to_string())
}

/// Every object result of job `id`, paged from node `s`: (names, count).
pub fn object_names(s: &Server, id: &str) -> (BTreeSet<String>, usize) {
    let (mut names, mut count, mut after) = (BTreeSet::new(), 0, None::<u64>);
    loop {
        let path = match after {
            Some(a) => format!("/migrations/{id}/objects?limit=5000&after={a}"),
            None => format!("/migrations/{id}/objects?limit=5000"),
        };
        let (status, page) = s.get(&path, ADMIN);
        assert_eq!(status, 200, "{page}");
        let items = page["items"].as_array().unwrap();
        if items.is_empty() {
            return (names, count);
        }
        for o in items {
            names.insert(format!(
                "{}/{}",
                o["step"].as_str().unwrap(),
                o["name"].as_str().unwrap()
            ));
            count += 1;
        }
        after = page["next_after"].as_u64();
    }
}

#[test]
fn a_job_on_a_killed_node_resumes_on_another_within_the_lease_and_finishes_exactly_once() {
    let mut c = Cluster::start("clkill", 3);
    const KEYS: usize = 100_000;
    c.seed(KEYS);
    let id = c.kv_copy(0, 200);
    let (status, body) = c
        .node(0)
        .post(&format!("/migrations/{id}/execute"), ADMIN, &json!({}));
    assert_eq!(status, 202, "{body}");
    c.node(1).wait_for(&id, |j| {
        j["completed_objects"].as_u64().unwrap_or(0) >= 5_000
    });
    assert_eq!(c.owner_of(1, &id), Some(0), "node 0 runs it");
    c.nodes[0].take().unwrap().kill();
    let killed = Instant::now();
    // Another node takes the job over once the lease has run out.
    // Until its lease runs out the dead node is still listed as holding the job.
    let taker = loop {
        match c.owner_of(1, &id) {
            Some(i) if i != 0 => break i,
            _ => {}
        }
        assert!(
            killed.elapsed() < Duration::from_secs(20),
            "nobody took the job over"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let took = killed.elapsed();
    assert!(
        took >= Duration::from_millis(LEASE_MS * 3 / 4),
        "taken over after {took:?}, before the lease could have run out"
    );
    let done = c.node(taker).wait_for(&id, |j| j["status"] == "completed");
    assert_eq!(done["failed_objects"], 0, "{done}");
    assert_eq!(c.contents("dst"), c.contents("src"), "the target is exact");
    let (names, count) = object_names(c.node(3 - taker), &id);
    assert_eq!(count, names.len(), "no object result twice");
    assert_eq!(
        done["completed_objects"].as_u64().unwrap() as usize,
        count,
        "{done}"
    );
    assert!(
        names.iter().filter(|n| n.starts_with("copy/")).count() == KEYS,
        "every key copied once: {} results",
        names.len()
    );
    // The node comes back and serves the same job as the others see it.
    c.restart(0);
    let again = c.node(0).job(&id);
    assert_eq!(again["status"], "completed");
    assert_eq!(again["last_event_seq"], done["last_event_seq"]);
}

#[test]
fn a_frozen_owner_loses_its_job_and_writes_nothing_for_it_when_it_wakes() {
    let c = Cluster::start("clfreeze", 3);
    let id = c.node(0).create(&json!({
        "handler": "stepper",
        "parameters": { "steps": [{ "id": "a", "batches": 60, "batch_ms": 100, "per_batch": 5 }] },
        "grants": { "data": "data" }
    }));
    c.node(0)
        .post(&format!("/migrations/{id}/execute"), ADMIN, &json!({}));
    c.node(1)
        .wait_for(&id, |j| j["completed_objects"].as_u64().unwrap_or(0) >= 20);
    c.node(0).signal("STOP");
    let frozen = Instant::now();
    let at_freeze = c.node(1).job(&id)["completed_objects"].as_u64().unwrap();
    let taker = loop {
        match c.owner_of(1, &id) {
            Some(i) if i != 0 => break i,
            _ => {}
        }
        assert!(
            frozen.elapsed() < Duration::from_secs(20),
            "nobody took the job over"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    // Let the new owner make progress, then wake the frozen one while the job still runs.
    let progressed = c.node(taker).wait_for(&id, |j| {
        j["completed_objects"].as_u64().unwrap_or(0) > at_freeze
    });
    assert_eq!(progressed["status"], "executing", "{progressed}");
    c.node(0).signal("CONT");
    let done = c.node(taker).wait_for(&id, |j| j["status"] == "completed");
    assert_eq!(done["completed_objects"], 300, "every object once: {done}");
    let (names, count) = object_names(c.node(taker), &id);
    assert_eq!((names.len(), count), (300, 300));
    // The woken node is alive, heartbeats again, and changes nothing of the job.
    std::thread::sleep(Duration::from_millis(LEASE_MS * 2));
    assert_eq!(c.node(0).get("/migrations", ADMIN).0, 200);
    let later = c.node(2).job(&id);
    assert_eq!(later["last_event_seq"], done["last_event_seq"], "{later}");
    assert_eq!(later["end_time"], done["end_time"]);
    let (_, nodes) = c.node(0).get("/nodes", ADMIN);
    let entry = nodes
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == c.ids[0].as_str())
        .unwrap_or_else(|| panic!("{nodes}"));
    assert_eq!(entry["alive"], true, "{entry}");
    // Its feed, as the woken node streams it, is one sequence: nothing twice, nothing missing.
    let (all, _) = read_sse(events(c.node(0), &id, None), None);
    let ids: Vec<u64> = all.iter().filter_map(|e| e.id).collect();
    let expected: Vec<u64> = (1..=done["last_event_seq"].as_u64().unwrap()).collect();
    assert_eq!(ids, expected);
}

#[test]
fn a_rolling_restart_of_every_node_finishes_every_job_exactly_once() {
    let mut c = Cluster::start("clroll", 3);
    let jobs: Vec<String> = (0..6)
        .map(|i| {
            let id = c.node(i % 3).create(&json!({
                "handler": "stepper",
                "parameters": { "steps": [
                    { "id": "a", "batches": 30, "batch_ms": 100, "per_batch": 2 },
                    { "id": "b", "batches": 10, "batch_ms": 50, "per_batch": 1, "after": ["a"] }
                ] },
                "grants": { "data": "data" }
            }));
            let (status, body) =
                c.node(i % 3)
                    .post(&format!("/migrations/{id}/execute"), ADMIN, &json!({}));
            assert_eq!(status, 202, "{body}");
            id
        })
        .collect();
    for i in 0..3 {
        let status = c.nodes[i].take().unwrap().terminate();
        assert!(status.success(), "node {i} stopped cleanly: {status:?}");
        c.restart(i);
    }
    for id in &jobs {
        let done = c.node(0).wait_for(id, |j| j["status"] == "completed");
        assert_eq!(done["completed_objects"], 70, "{id}: {done}");
        let (names, count) = object_names(c.node(1), id);
        assert_eq!((names.len(), count), (70, 70), "{id}");
    }
    let started = Instant::now();
    while started.elapsed() < WAIT {
        let (_, nodes) = c.node(2).get("/nodes", ADMIN);
        let alive = nodes
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| n["alive"] == true)
            .count();
        if alive == 3 {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the restarted nodes are not all alive");
}
