//! Connections the host configures, by name. A job's grants bind its binding names (what the
//! plugin sees, e.g. `source`) to these connection names (what the operator sees, e.g.
//! `sessions-old`). Connection details (URLs, passwords) never reach a plugin.

use super::http_out::{HttpConnection, HttpRules};
use super::postgres::{PostgresDatabase, PostgresOptions};
use super::redis_kv::RedisBucket;
use super::{Connector, SledBuckets};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// How one named connection is reached (the `[connections.NAME]` tables of the host config).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum ConnectionConfig {
    /// A bucket in the host's embedded sled database.
    Sled { bucket: String },
    /// Keys in a Redis database, all under `key_prefix` (the plugin never sees the prefix).
    Redis {
        /// `redis://host:port/db`.
        url: String,
        #[serde(default)]
        key_prefix: String,
        /// The most connections the host keeps open to it.
        #[serde(default = "default_max_connections")]
        max_connections: u32,
    },
    /// A PostgreSQL database.
    Postgres {
        /// `postgres://user@host:port/db` or `host=... user=... dbname=...`.
        url: String,
        /// Schemas to search, e.g. `migrations,public`; the server's default when absent.
        #[serde(default)]
        search_path: Option<String>,
        /// The most connections the host keeps open to it.
        #[serde(default = "default_max_connections")]
        max_connections: u32,
        /// A connection string for `plan` and `validate` only: a role that cannot write
        /// makes dry runs read-only by the database's own permissions.
        #[serde(default)]
        read_only_url: Option<String>,
        /// Accept a role that can reach beyond the data (a superuser, a member of
        /// `pg_execute_server_program`, `pg_read_server_files`, `pg_write_server_files` or
        /// `pg_signal_backend`). Refused by default: plugins act with the role's power.
        #[serde(default)]
        allow_privileged_role: bool,
    },
    /// Outgoing HTTP to the origins its rules allow.
    Http(HttpRules),
}

fn default_max_connections() -> u32 {
    8
}

/// Resolves connection names to connectors, and gives every job its private state bucket.
pub trait ConnectionProvider: Send + Sync {
    /// The connector behind connection `name`.
    fn connect(&self, name: &str) -> Result<Connector, String>;
    /// The private bucket of job `job` (see `kv.bucket.job-state` in the contract). The job
    /// store owns it and forgets it with the job. With `outside`, the job also writes to
    /// systems outside the host's database, so each write is on disk before it returns.
    /// `fence` is the job's lease epoch this node holds, when several nodes share the store:
    /// a write is refused once another node has taken the job over.
    fn job_state(&self, job: &str, outside: bool, fence: Option<u64>) -> Arc<dyn super::KvBucket>;
    /// The configured connection names, for error messages and the API.
    fn names(&self) -> Vec<String>;
    /// The configured connections by name with their kind (`sled`, `redis`, `postgres`,
    /// `http`): what an operator may grant, never how they are reached.
    fn kinds(&self) -> Vec<(String, &'static str)>;
    /// Whether a name that is not configured means the embedded bucket of that name.
    fn any_sled_bucket(&self) -> bool {
        false
    }
}

/// Where the jobs' private state buckets live (the job store's database).
pub trait JobStateSpace: Send + Sync {
    /// Job `job`'s bucket; see [`ConnectionProvider::job_state`] for `outside` and `fence`.
    fn bucket(&self, job: &str, outside: bool, fence: Option<u64>) -> Arc<dyn super::KvBucket>;
}

/// The connections of one host: its sled database plus the configured connections. Each
/// configured connection is opened once, on first use, and shared by every job (pools).
pub struct HostConnections {
    buckets: SledBuckets,
    job_state: Arc<dyn JobStateSpace>,
    configured: BTreeMap<String, ConnectionConfig>,
    opened: Mutex<BTreeMap<String, Connector>>,
    /// The PostgreSQL connections among them, for the start-up role check.
    postgres: Mutex<BTreeMap<String, Arc<PostgresDatabase>>>,
    /// When true, a name not configured refers to the sled bucket of that name. Convenient on
    /// a developer's machine; operators turn it off to allow configured connections only.
    pub any_sled_bucket: bool,
}

impl HostConnections {
    pub fn new(
        buckets: SledBuckets,
        job_state: Arc<dyn JobStateSpace>,
        configured: BTreeMap<String, ConnectionConfig>,
        any_sled_bucket: bool,
    ) -> Self {
        HostConnections {
            buckets,
            job_state,
            configured,
            opened: Mutex::new(BTreeMap::new()),
            postgres: Mutex::new(BTreeMap::new()),
            any_sled_bucket,
        }
    }

    /// Open every configured connection, so a mistake in the configuration (a malformed URL,
    /// an origin pattern, a database role with too much power) stops the host at start-up.
    /// A database that does not answer does not keep the host from starting: its role is
    /// checked when it is first used.
    pub fn open_all(&self) -> Result<(), String> {
        for (name, config) in &self.configured {
            let connector = self.connect(name)?;
            if let (ConnectionConfig::Postgres { .. }, Some(db)) = (
                config,
                self.postgres.lock().expect("connections lock").get(name),
            ) {
                match db.check_roles_now() {
                    Ok(true) => {}
                    Ok(false) => tracing::warn!(
                        connection = %name,
                        "the database does not answer; its role is checked when it is first used"
                    ),
                    Err(why) => return Err(format!("connection '{name}': {why}")),
                }
            }
            drop(connector);
        }
        Ok(())
    }

    fn open(&self, name: &str, config: &ConnectionConfig) -> Result<Connector, String> {
        Ok(match config {
            ConnectionConfig::Sled { bucket } => {
                Connector::Kv(self.buckets.open(bucket).map_err(|e| e.to_string())?)
            }
            ConnectionConfig::Redis {
                url,
                key_prefix,
                max_connections,
            } => Connector::Kv(Arc::new(RedisBucket::with_pool_size(
                url,
                key_prefix,
                *max_connections,
            )?)),
            ConnectionConfig::Postgres {
                url,
                search_path,
                max_connections,
                read_only_url,
                allow_privileged_role,
            } => {
                let db = Arc::new(PostgresDatabase::with_options(
                    url,
                    &PostgresOptions {
                        search_path: search_path.clone(),
                        max_connections: *max_connections,
                        read_only_url: read_only_url.clone(),
                        allow_privileged_role: *allow_privileged_role,
                    },
                )?);
                self.postgres
                    .lock()
                    .expect("connections lock")
                    .insert(name.to_string(), db.clone());
                Connector::Sql(db)
            }
            ConnectionConfig::Http(rules) => {
                Connector::Http(Arc::new(HttpConnection::new(rules.clone())?))
            }
        })
    }
}

fn valid_bucket_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl ConnectionProvider for HostConnections {
    fn connect(&self, name: &str) -> Result<Connector, String> {
        let Some(config) = self.configured.get(name) else {
            if self.any_sled_bucket && valid_bucket_name(name) {
                let bucket = self.buckets.open(name).map_err(|e| e.to_string())?;
                return Ok(Connector::Kv(bucket));
            }
            return Err(format!(
                "no connection named '{name}' is configured (configured: {})",
                self.names().join(", ")
            ));
        };
        let mut opened = self.opened.lock().expect("connections lock");
        if let Some(c) = opened.get(name) {
            return Ok(c.clone());
        }
        let connector = self
            .open(name, config)
            .map_err(|e| format!("connection '{name}': {e}"))?;
        opened.insert(name.to_string(), connector.clone());
        Ok(connector)
    }

    fn job_state(&self, job: &str, outside: bool, fence: Option<u64>) -> Arc<dyn super::KvBucket> {
        self.job_state.bucket(job, outside, fence)
    }

    fn names(&self) -> Vec<String> {
        self.configured.keys().cloned().collect()
    }

    fn any_sled_bucket(&self) -> bool {
        self.any_sled_bucket
    }

    fn kinds(&self) -> Vec<(String, &'static str)> {
        self.configured
            .iter()
            .map(|(name, config)| {
                let kind = match config {
                    ConnectionConfig::Sled { .. } => "sled",
                    ConnectionConfig::Redis { .. } => "redis",
                    ConnectionConfig::Postgres { .. } => "postgres",
                    ConnectionConfig::Http(_) => "http",
                };
                (name.clone(), kind)
            })
            .collect()
    }
}

#[cfg(all(test, feature = "server"))]
mod tests {
    use super::*;

    fn connections(toml_text: &str) -> HostConnections {
        let configured: BTreeMap<String, ConnectionConfig> = toml::from_str(toml_text).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let flush = Arc::new(crate::store::GroupFlush::new(db.clone()));
        let state = Arc::new(crate::store::SledJobState::open(flush).unwrap());
        HostConnections::new(SledBuckets::new(db), state, configured, false)
    }

    #[test]
    fn a_configuration_mistake_stops_the_start_naming_the_connection() {
        for (toml_text, expected) in [
            (
                "[bad-db]\ntype = \"postgres\"\nurl = \"postgres://[nope\"",
                "connection 'bad-db': postgres connection string",
            ),
            (
                "[bad-cache]\ntype = \"redis\"\nurl = \"memcached://x\"",
                "connection 'bad-cache': redis url",
            ),
            (
                "[bad-api]\ntype = \"http\"\nallow = [\"ftp://files.example\"]",
                "connection 'bad-api': allowed origin 'ftp://files.example'",
            ),
            (
                "[bad-ca]\ntype = \"http\"\nallow = [\"https://x.example\"]\nca_cert = \"/nonexistent/ca.pem\"",
                "connection 'bad-ca': ca_cert /nonexistent/ca.pem",
            ),
        ] {
            let err = connections(toml_text).open_all().unwrap_err();
            assert!(err.starts_with(expected), "{err}");
        }
        let good = connections(
            "[db]\ntype = \"postgres\"\nurl = \"host=127.0.0.1 user=postgres\"\nallow_privileged_role = true\n[api]\ntype = \"http\"\nallow = [\"https://x.example\"]",
        );
        good.open_all()
            .expect("valid connections open without connecting");
        assert!(matches!(good.connect("db"), Ok(Connector::Sql(_))));
        assert!(
            matches!(good.connect("elsewhere"), Err(e) if e.contains("no connection named 'elsewhere'"))
        );
        assert!(
            toml::from_str::<BTreeMap<String, ConnectionConfig>>(
                "[x]\ntype = \"http\"\nallow = []\nproxy = 1"
            )
            .is_err(),
            "unknown keys are refused"
        );
    }
}
