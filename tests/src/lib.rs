//! Shared helpers for Plover's end-to-end tests and benchmarks.
//!
//! [`artifacts`] holds the paths of every guest component, built from source by this crate's
//! build script: the bundled plugins (`KV_COPY`, `CONFIG_UPGRADE`) and the fixtures
//! (`MISBEHAVE`, `PROBE`, `NOT_A_HANDLER`, `FUTURE_CONTRACT`).

/// The `plover` binary's allocator, so that in-process tests and benchmarks measure what the
/// server runs (feature `system-allocator`: the system's, for comparison in benchmarks).
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static ALLOCATOR: plover_host::allocator::PloverAllocator = plover_host::allocator::PloverAllocator;

pub mod artifacts {
    include!(concat!(env!("OUT_DIR"), "/artifacts.rs"));
}

pub mod browser;

/// Helpers the benchmarks share.
pub mod bench {
    use std::time::Duration;

    /// Which allocator serves this process, for benchmark headers.
    pub fn allocator_in_use() -> String {
        let probe = Box::new(0u64);
        match plover_host::allocator::describe(&*probe as *const u64 as *const u8) {
            (true, eager_commit) => format!("mimalloc, arena eager commit {eager_commit}"),
            (false, _) => "the system's".into(),
        }
    }

    /// The median of `samples` (the upper one of an even count).
    pub fn median(mut samples: Vec<Duration>) -> Duration {
        samples.sort();
        samples[samples.len() / 2]
    }

    /// A migration step called `id` with no plan behind it, for benchmarks that call one
    /// step directly (the probes take any step id they know).
    pub fn bare_step(id: &str) -> plover_host::model::PlanStep {
        plover_host::model::PlanStep {
            id: id.into(),
            kind: plover_host::model::StepKind::Migration,
            description: String::new(),
            depends_on: vec![],
            expected_objects: None,
            reversible: true,
            resumable: true,
            queue: None,
            estimated_duration_ms: None,
        }
    }

    /// This process's resident memory, in bytes.
    pub fn resident_bytes() -> u64 {
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
        let pages: u64 = statm
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        pages * 4096
    }

    /// A `plover serve` the benchmark started (killed when dropped).
    pub struct ServerProcess {
        pub child: std::process::Child,
        /// `http://127.0.0.1:PORT`, once the API serves.
        pub url: String,
    }

    /// `plover serve` on a free loopback port over `data` and `plugins`, its first admin
    /// token `token`, logging only errors: what each benchmark starts (and adds to).
    pub fn serve_command(
        plover: &str,
        data: &std::path::Path,
        plugins: &std::path::Path,
        token: &str,
    ) -> std::process::Command {
        let mut command = std::process::Command::new(plover);
        command
            .args(["serve", "--bind", "127.0.0.1:0", "--data-dir"])
            .arg(data)
            .arg("--plugins-dir")
            .arg(plugins)
            .env("PLOVER_BOOTSTRAP_TOKEN", token)
            .env("PLOVER_LOG", "error");
        command
    }

    impl ServerProcess {
        /// Spawn `command` (a `plover serve …`) and wait until it says it is listening.
        pub fn spawn(mut command: std::process::Command) -> ServerProcess {
            use std::io::BufRead;
            let mut child = command
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("the plover binary");
            // "starting on" comes first (the port is bound), "listening on" once the API serves.
            let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
            let url = loop {
                let mut line = String::new();
                assert!(
                    stdout.read_line(&mut line).unwrap() > 0,
                    "the server exited"
                );
                if let Some(url) = line.trim().strip_prefix("plover listening on ") {
                    break url.to_string();
                }
            };
            // Keep draining stdout so the server never blocks on a full pipe.
            std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
            ServerProcess { child, url }
        }
    }

    impl Drop for ServerProcess {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// Bytes the files under `dir` take.
    pub fn disk_bytes(dir: &std::path::Path) -> u64 {
        let mut total = 0;
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            total += if path.is_dir() {
                disk_bytes(&path)
            } else {
                entry.metadata().map(|m| m.len()).unwrap_or(0)
            };
        }
        total
    }
}

/// The machine's real PostgreSQL (127.0.0.1:5432, trust auth, database `test`) and Redis
/// (127.0.0.1:6379), each test in its own schema or key prefix so runs never collide.
pub mod services {
    use plover_host::connectors::postgres::PostgresDatabase;
    use plover_host::connectors::{Connector, RedisBucket};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    pub use native_tls::TlsAcceptor;

    pub const POSTGRES_URL: &str = "host=127.0.0.1 port=5432 user=postgres dbname=test";
    pub const REDIS_URL: &str = "redis://127.0.0.1:6379/0";

    /// A name no other test (or concurrent run) uses: `tag`, the process id and a counter.
    /// A server on loopback that answers every request with headers promising 1000 bytes,
    /// then sends one every 200 ms: a wait the plugin cannot be interrupted in. Its address.
    pub fn trickling_server() -> String {
        use std::io::{BufRead, BufReader, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    let mut line = String::new();
                    while reader.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
                        line.clear();
                    }
                    let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n");
                    for _ in 0..1000 {
                        if stream.write_all(b"t").is_err() {
                            return;
                        }
                        std::thread::sleep(std::time::Duration::from_millis(200));
                    }
                });
            }
        });
        base
    }

    /// A TLS acceptor for a certificate made now for `127.0.0.1` (openssl, one day), and the
    /// certificate's path, for a client to trust.
    pub fn loopback_tls(dir: &std::path::Path) -> (native_tls::TlsAcceptor, std::path::PathBuf) {
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        let made = std::process::Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            ])
            .args([
                "-subj",
                "/CN=127.0.0.1",
                "-addext",
                "subjectAltName=IP:127.0.0.1",
            ])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .expect("the openssl command");
        assert!(
            made.status.success(),
            "{}",
            String::from_utf8_lossy(&made.stderr)
        );
        let identity = native_tls::Identity::from_pkcs8(
            &std::fs::read(&cert).unwrap(),
            &std::fs::read(&key).unwrap(),
        )
        .unwrap();
        (native_tls::TlsAcceptor::new(identity).unwrap(), cert)
    }

    pub fn unique(tag: &str) -> String {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        format!(
            "{tag}_{}_{}_{nanos}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        )
    }

    pub fn postgres() -> postgres::Client {
        postgres::Client::connect(POSTGRES_URL, postgres::NoTls)
            .expect("PostgreSQL on 127.0.0.1:5432 (scripts/setup.sh --services starts it)")
    }

    pub fn redis() -> redis::Connection {
        redis::Client::open(REDIS_URL)
            .and_then(|c| c.get_connection())
            .expect("Redis on 127.0.0.1:6379 (scripts/setup.sh --services starts it)")
    }

    /// A schema of its own, owned by a login role of its own with no other power (the
    /// least-privilege role a migration should run as); both are dropped with everything in
    /// them when this value is.
    pub struct Schema {
        pub name: String,
        /// The role that owns the schema.
        pub role: String,
    }

    impl Schema {
        pub fn new(tag: &str) -> Schema {
            let name = unique(tag).to_lowercase();
            let role = format!("{name}_app");
            postgres()
                .batch_execute(&format!(
                    "CREATE ROLE {role} LOGIN; CREATE SCHEMA {name} AUTHORIZATION {role}"
                ))
                .unwrap();
            Schema { name, role }
        }

        /// The connection string of the schema's own role.
        pub fn url(&self) -> String {
            format!("host=127.0.0.1 port=5432 user={} dbname=test", self.role)
        }

        /// A connection string for Plover's own store in this schema (its tables land there).
        pub fn store_url(&self) -> String {
            format!("{} options='-c search_path={}'", self.url(), self.name)
        }

        /// The host's SQL connector for this schema, as a job would be granted it.
        pub fn connector(&self) -> Connector {
            Connector::Sql(Arc::new(
                PostgresDatabase::new(&self.url(), Some(&self.name), 4).unwrap(),
            ))
        }

        /// A client acting as the schema's role (what it creates, the role owns), its
        /// search path the schema.
        pub fn client(&self) -> postgres::Client {
            let mut c = postgres();
            c.batch_execute(&format!(
                "SET search_path = {}; SET ROLE {}",
                self.name, self.role
            ))
            .unwrap();
            c
        }
    }

    impl Drop for Schema {
        fn drop(&mut self) {
            if let Ok(mut c) = postgres::Client::connect(POSTGRES_URL, postgres::NoTls) {
                let _ = c.batch_execute(&format!(
                    "DROP SCHEMA IF EXISTS {} CASCADE; DROP OWNED BY {role}; DROP ROLE IF EXISTS {role}",
                    self.name,
                    role = self.role
                ));
            }
        }
    }

    /// A Redis key prefix of its own; its keys are deleted when this value is dropped.
    pub struct RedisPrefix {
        pub prefix: String,
    }

    impl RedisPrefix {
        pub fn new(tag: &str) -> RedisPrefix {
            RedisPrefix {
                prefix: format!("{}:", unique(tag)),
            }
        }

        /// The host's Redis bucket over this prefix.
        pub fn bucket(&self) -> Arc<RedisBucket> {
            Arc::new(RedisBucket::new(REDIS_URL, &self.prefix).unwrap())
        }

        /// Every key under the prefix (without it), sorted.
        pub fn keys(&self) -> Vec<String> {
            let mut conn = redis();
            let mut keys: Vec<String> = redis::cmd("KEYS")
                .arg(format!("{}*", self.prefix))
                .query(&mut conn)
                .unwrap();
            keys.sort();
            keys.into_iter()
                .map(|k| k[self.prefix.len()..].to_string())
                .collect()
        }
    }

    impl Drop for RedisPrefix {
        fn drop(&mut self) {
            if let Ok(c) = redis::Client::open(REDIS_URL)
                && let Ok(mut conn) = c.get_connection()
            {
                let keys: Vec<String> = redis::cmd("KEYS")
                    .arg(format!("{}*", self.prefix))
                    .query(&mut conn)
                    .unwrap_or_default();
                for chunk in keys.chunks(1000) {
                    let _: Result<(), _> = redis::cmd("DEL").arg(chunk).query(&mut conn);
                }
            }
        }
    }
}
