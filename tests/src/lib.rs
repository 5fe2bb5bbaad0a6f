//! Shared helpers for Plover's end-to-end tests and benchmarks.
//!
//! [`artifacts`] holds the paths of every guest component, built from source by this crate's
//! build script: the bundled plugins (`KV_COPY`, `CONFIG_UPGRADE`) and the fixtures
//! (`MISBEHAVE`, `PROBE`, `NOT_A_HANDLER`, `FUTURE_CONTRACT`).

pub mod artifacts {
    include!(concat!(env!("OUT_DIR"), "/artifacts.rs"));
}

/// Helpers the benchmarks share.
pub mod bench {
    use std::time::Duration;

    /// The median of `samples` (the upper one of an even count).
    pub fn median(mut samples: Vec<Duration>) -> Duration {
        samples.sort();
        samples[samples.len() / 2]
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
