//! Start and stop real `plover serve` processes.

use plover_host::connectors::KvBucket;
use plover_tests::artifacts;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const ADMIN: &str = "test-admin-token";
pub const WAIT: Duration = Duration::from_secs(120);

/// The plugins every test server loads at start-up.
pub const BUNDLED: [&str; 7] = [
    artifacts::KV_COPY,
    artifacts::CONFIG_UPGRADE,
    artifacts::STEPPER,
    artifacts::MISBEHAVE,
    artifacts::SESSION_MOVE,
    artifacts::SQL_SCHEMA,
    artifacts::CONNECTOR_PROBE,
];

/// A directory holding the plugins a test server loads at start-up.
pub fn plugin_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for path in BUNDLED {
        let name = Path::new(path).file_name().unwrap();
        std::fs::copy(path, dir.path().join(name)).unwrap();
    }
    dir
}

pub struct Server {
    child: Child,
    pub url: String,
    pub data_dir: PathBuf,
    plugins: PathBuf,
    pub http: reqwest::blocking::Client,
}

impl Server {
    /// Start a server on a free loopback port over `data_dir`, loading the plugins in `plugins`.
    pub fn start(data_dir: &Path, plugins: &Path) -> Server {
        Self::start_with_config(data_dir, plugins, "")
    }

    /// [`Server::start`] with a configuration file holding `toml`. Returns once the plugins
    /// found at start-up have loaded (as an orchestrator watching `/readyz/plugins` would).
    pub fn start_with_config(data_dir: &Path, plugins: &Path, toml: &str) -> Server {
        let server = Self::launch(data_dir, plugins, toml);
        server.wait_for_plugins();
        server
    }

    /// Wait until `/readyz/plugins` says every plugin found at start-up has loaded or failed.
    pub fn wait_for_plugins(&self) {
        let started = Instant::now();
        loop {
            let resp = self.http.get(format!("{}/readyz/plugins", self.url)).send();
            if resp.is_ok_and(|r| r.status() == 200) {
                return;
            }
            assert!(
                started.elapsed() < WAIT,
                "plugins still loading after {WAIT:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Start a server and return as soon as it serves, while its plugins may still load.
    pub fn launch(data_dir: &Path, plugins: &Path, toml: &str) -> Server {
        let config = data_dir.join("test-config.toml");
        std::fs::write(&config, toml).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_plover"))
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .args(["--bind", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .arg("--plugins-dir")
            .arg(plugins)
            .env("PLOVER_BOOTSTRAP_TOKEN", ADMIN)
            .env("PLOVER_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting plover");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("plover listening on ") {
                    let _ = tx.send(url.to_string());
                }
            }
        });
        let url = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the server printed its address");
        Server {
            child,
            url,
            data_dir: data_dir.to_path_buf(),
            plugins: plugins.to_path_buf(),
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
        }
    }

    /// Run `plover serve` over `data_dir` expecting it to refuse to start: its exit status and
    /// what it wrote to stderr.
    pub fn start_failing(data_dir: &Path, plugins: &Path) -> (std::process::ExitStatus, String) {
        Self::start_failing_with_config(data_dir, plugins, "")
    }

    /// [`Server::start_failing`] with a configuration file holding `toml`.
    pub fn start_failing_with_config(
        data_dir: &Path,
        plugins: &Path,
        toml: &str,
    ) -> (std::process::ExitStatus, String) {
        std::fs::create_dir_all(data_dir).unwrap();
        let config = data_dir.join("test-config.toml");
        std::fs::write(&config, toml).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_plover"))
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .args(["--bind", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .arg("--plugins-dir")
            .arg(plugins)
            .env("PLOVER_BOOTSTRAP_TOKEN", ADMIN)
            .env("PLOVER_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting plover");
        let started = Instant::now();
        while child.try_wait().unwrap().is_none() {
            if started.elapsed() > Duration::from_secs(60) {
                let _ = child.kill();
                panic!("the server started instead of refusing to");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let output = child.wait_with_output().unwrap();
        (
            output.status,
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    /// Send `signal` (`STOP`, `CONT`, `TERM`…) to the process.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args([format!("-{signal}"), pid])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -{signal}");
    }

    /// SIGKILL: no shutdown of any kind.
    pub fn kill(mut self) -> (PathBuf, PathBuf) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        (self.data_dir.clone(), self.plugins.clone())
    }

    /// SIGTERM, then wait for the process to exit by itself.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the server did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn api(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.url)
    }

    pub fn get(&self, path: &str, token: &str) -> (u16, Value) {
        let r = self
            .http
            .get(self.api(path))
            .bearer_auth(token)
            .send()
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().unwrap_or(Value::Null))
    }

    pub fn post(&self, path: &str, token: &str, body: &Value) -> (u16, Value) {
        let r = self
            .http
            .post(self.api(path))
            .bearer_auth(token)
            .json(body)
            .send()
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().unwrap_or(Value::Null))
    }

    pub fn delete(&self, path: &str, token: &str) -> (u16, Value) {
        let r = self
            .http
            .delete(self.api(path))
            .bearer_auth(token)
            .send()
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().unwrap_or(Value::Null))
    }

    /// Create a migration; its id.
    pub fn create(&self, body: &Value) -> String {
        let (status, job) = self.post("/migrations", ADMIN, body);
        assert_eq!(status, 201, "{job}");
        job["id"].as_str().unwrap().to_string()
    }

    /// The Prometheus text of `/metrics`.
    pub fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.url))
            .send()
            .unwrap()
            .text()
            .unwrap()
    }

    /// A migration's snapshot.
    pub fn job(&self, id: &str) -> Value {
        let (status, body) = self.get(&format!("/migrations/{id}"), ADMIN);
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Poll until `done` holds for the job's snapshot.
    pub fn wait_for(&self, id: &str, done: impl Fn(&Value) -> bool) -> Value {
        let started = Instant::now();
        loop {
            let job = self.job(id);
            if done(&job) {
                return job;
            }
            assert!(started.elapsed() < WAIT, "timed out; last snapshot: {job}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SseEvent {
    pub id: Option<u64>,
    pub event: String,
    pub data: Value,
}

/// Read events until `final` (included) or until `max` events were read.
pub fn read_sse(resp: reqwest::blocking::Response, max: Option<usize>) -> (Vec<SseEvent>, bool) {
    let mut out = vec![];
    let (mut id, mut event, mut data) = (None, String::new(), String::new());
    let mut saw_retry = false;
    for line in BufReader::new(resp).lines() {
        let line = line.unwrap();
        if line.starts_with("retry:") {
            saw_retry = true;
        } else if let Some(v) = line.strip_prefix("id:") {
            id = v.trim().parse().ok();
        } else if let Some(v) = line.strip_prefix("event:") {
            event = v.trim().to_string();
        } else if let Some(v) = line.strip_prefix("data:") {
            data.push_str(v.trim_start());
        } else if line.is_empty() && !data.is_empty() {
            let e = SseEvent {
                id: id.take(),
                event: std::mem::take(&mut event),
                data: serde_json::from_str(&data).unwrap(),
            };
            data.clear();
            let is_final = e.event == "final";
            out.push(e);
            if is_final || max.is_some_and(|m| out.len() >= m) {
                break;
            }
        }
    }
    (out, saw_retry)
}

/// Follow job `id`'s event stream on `s`, after `last_event_id` if given.
pub fn events(s: &Server, id: &str, last_event_id: Option<u64>) -> reqwest::blocking::Response {
    let mut req = s
        .http
        .get(s.api(&format!("/migrations/{id}/events")))
        .bearer_auth(ADMIN)
        .timeout(Duration::from_secs(120));
    if let Some(l) = last_event_id {
        req = req.header("Last-Event-ID", l.to_string());
    }
    let resp = req.send().unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    resp
}

/// Run the `plover` binary with `args` (in `cwd` when given, with `envs` set): its exit
/// status and everything it wrote, stdout then stderr.
pub fn run_plover(args: &[&str], cwd: Option<&Path>, envs: &[(&str, &str)]) -> (i32, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_plover"));
    cmd.args(args).envs(envs.iter().copied());
    if let Some(dir) = cwd {
        cmd.current_dir(dir);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Every entry of the sled bucket `name` in a stopped server's data directory.
pub fn read_bucket(data_dir: &Path, name: &str) -> BTreeMap<String, Vec<u8>> {
    let db = plover_host::store::open_database(&data_dir.join("db")).unwrap();
    let bucket = plover_host::connectors::SledBuckets::new(db)
        .open(name)
        .unwrap();
    let mut out = BTreeMap::new();
    let mut cursor = None;
    loop {
        let page = bucket.scan("", cursor.as_deref(), 10_000).unwrap();
        out.extend(page.entries);
        cursor = page.next_cursor;
        if cursor.is_none() {
            break;
        }
    }
    out
}

/// The names of job `id`'s object results, read through the paged API, each asserted to
/// appear once.
pub fn object_names_once(server: &Server, id: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    let mut after = None::<u64>;
    loop {
        let q = after.map(|a| format!("&after={a}")).unwrap_or_default();
        let (_, page) = server.get(&format!("/migrations/{id}/objects?limit=5000{q}"), ADMIN);
        let items = page["items"].as_array().unwrap();
        if items.is_empty() {
            return names;
        }
        for o in items {
            let name = o["name"].as_str().unwrap().to_string();
            assert!(names.insert(name.clone()), "{name} recorded twice");
        }
        after = page["next_after"].as_u64();
    }
}
