//! Host configuration: a TOML file, then `PLOVER_*` environment overrides, then flags.
//! Runtime configuration lives here, apart from code; secrets (connection details) never
//! leave the host.

use crate::connectors::ConnectionConfig;
use crate::engine::options::JobOptions;
use crate::runtime::SandboxLimits;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where the API listens. Loopback by default: expose it deliberately.
    pub bind: SocketAddr,
    /// The embedded database, uploaded plugins and the compiled-plugin cache live here.
    pub data_dir: PathBuf,
    /// Where jobs are kept: unset for the embedded database in `data_dir`, or a PostgreSQL
    /// connection string (`postgres://…` or `host=… dbname=…`). `PLOVER_DATABASE_URL`
    /// overrides it.
    pub store: Option<String>,
    /// How many connections the PostgreSQL store may hold open.
    pub store_pool_size: u32,
    /// What this node is called among the nodes sharing a PostgreSQL store (default: the
    /// host name). `PLOVER_NODE_NAME` overrides it.
    pub node_name: Option<String>,
    /// How long a node's lease on a job lasts without renewal, in milliseconds: the jobs of a
    /// node that dies resume on another within about this long (PostgreSQL store).
    pub lease_ms: u64,
    /// How long an external worker's lease on a task lasts without a heartbeat, in
    /// milliseconds: the task of a worker that died is offered again within about this long.
    pub worker_lease_ms: u64,
    /// Where this node's API is reached, shown in `GET /api/v1/nodes`.
    pub advertise_url: Option<String>,
    /// Mark the console's session cookie `Secure` (set it when the console is served over
    /// https, e.g. behind a TLS proxy).
    pub secure_cookies: bool,
    /// Directories whose `*.wasm` plugins are loaded at start-up (bundled handlers).
    pub plugin_dirs: Vec<PathBuf>,
    /// `text` or `json` logs.
    pub log_format: LogFormat,
    /// Largest request body, in bytes (plugin uploads included).
    pub max_body_bytes: usize,
    /// Per-request time limit, in seconds (the SSE streams excepted).
    pub request_timeout_secs: u64,
    /// How long a client may take to send a request's headers before its connection is closed.
    pub header_read_timeout_secs: u64,
    /// How many entries the host audit trail keeps (the oldest are dropped).
    pub audit_retention: u64,
    /// How many bytes each job's private state bucket may hold.
    pub job_state_quota_bytes: u64,
    /// Read the whole database at start-up, so damage is reported then (not by a later call).
    pub verify_on_start: bool,
    /// The embedded database's page-cache budget, in bytes of compressed pages (the memory
    /// it takes is 20-30 times larger; see BENCHMARKS.md).
    pub db_cache_bytes: u64,
    /// How many `plan` and `validate` calls may run at once (0: the number of cores).
    pub max_concurrent_dry_calls: usize,
    /// How many object results one step may record.
    pub max_object_results_per_step: u64,
    /// Limits for every plugin.
    pub limits: SandboxLimits,
    /// Count fuel so `limits.fuel` bounds a call's work.
    pub fuel_metering: bool,
    /// Defaults of every job's options.
    pub defaults: JobOptions,
    /// Named connections (sled, redis, postgres, http) that grants may name.
    pub connections: BTreeMap<String, ConnectionConfig>,
    /// Let grants name any sled bucket, not only configured connections.
    pub any_sled_bucket: bool,
    /// Called with the final snapshot of every job (per-job webhooks add to it).
    pub webhook: Option<String>,
    /// Signs every webhook payload (HMAC-SHA256, header `X-Plover-Signature`).
    /// `PLOVER_WEBHOOK_SECRET` overrides it.
    pub webhook_secret: Option<String>,
    /// A PEM certificate authority trusted for `https` webhooks besides the system's roots.
    pub webhook_ca_cert: Option<PathBuf>,
    /// Refuse every plugin (uploaded or from a directory) not signed by a trusted key.
    pub require_signed: bool,
    /// Public keys of trusted plugin signers, by name: base64 of the 32-byte ed25519 key (as
    /// `plover plugin keygen` prints it) or a PEM `PUBLIC KEY`. A plugin's API view names the
    /// key that signed it.
    pub trusted_keys: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            bind: "127.0.0.1:7373".parse().expect("a valid address"),
            data_dir: PathBuf::from("plover-data"),
            store: None,
            store_pool_size: 16,
            node_name: None,
            lease_ms: 10_000,
            worker_lease_ms: 15_000,
            advertise_url: None,
            secure_cookies: false,
            plugin_dirs: vec![PathBuf::from("plugins/target/wasm32-wasip2/release")],
            log_format: LogFormat::Text,
            max_body_bytes: 64 << 20,
            request_timeout_secs: 60,
            header_read_timeout_secs: 10,
            audit_retention: 100_000,
            job_state_quota_bytes: crate::store::DEFAULT_JOB_STATE_QUOTA,
            verify_on_start: true,
            db_cache_bytes: crate::store::DEFAULT_CACHE_BYTES,
            max_concurrent_dry_calls: 0,
            max_object_results_per_step: crate::runtime::bounds::DEFAULT_MAX_RESULTS_PER_STEP,
            limits: SandboxLimits::default(),
            fuel_metering: false,
            defaults: JobOptions::default(),
            connections: BTreeMap::new(),
            any_sled_bucket: true,
            webhook: None,
            webhook_secret: None,
            webhook_ca_cert: None,
            require_signed: false,
            trusted_keys: BTreeMap::new(),
        }
    }
}

impl Config {
    /// Read `path` (when given), then apply the environment.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Config> {
        let mut config = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| anyhow::anyhow!("reading {}: {e}", p.display()))?;
                toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?
            }
            None => Config::default(),
        };
        config.apply_env(|k| std::env::var(k).ok())?;
        Ok(config)
    }

    /// `PLOVER_BIND`, `PLOVER_DATA_DIR`, `PLOVER_DATABASE_URL`, `PLOVER_PLUGIN_DIRS`
    /// (colon-separated), `PLOVER_LOG_FORMAT`, `PLOVER_WEBHOOK`, `PLOVER_NODE_NAME`.
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> anyhow::Result<()> {
        if let Some(v) = get("PLOVER_BIND") {
            self.bind = v
                .parse()
                .map_err(|e| anyhow::anyhow!("PLOVER_BIND '{v}': {e}"))?;
        }
        if let Some(v) = get("PLOVER_DATA_DIR") {
            self.data_dir = v.into();
        }
        if let Some(v) = get("PLOVER_DATABASE_URL").filter(|v| !v.is_empty()) {
            self.store = Some(v);
        }
        if let Some(v) = get("PLOVER_PLUGIN_DIRS") {
            self.plugin_dirs = v
                .split(':')
                .filter(|s| !s.is_empty())
                .map(PathBuf::from)
                .collect();
        }
        if let Some(v) = get("PLOVER_LOG_FORMAT") {
            self.log_format = match v.as_str() {
                "json" => LogFormat::Json,
                "text" => LogFormat::Text,
                other => anyhow::bail!("PLOVER_LOG_FORMAT must be text or json, not '{other}'"),
            };
        }
        if let Some(v) = get("PLOVER_WEBHOOK") {
            self.webhook = Some(v);
        }
        if let Some(v) = get("PLOVER_WEBHOOK_SECRET").filter(|v| !v.is_empty()) {
            self.webhook_secret = Some(v);
        }
        if let Some(v) = get("PLOVER_NODE_NAME").filter(|v| !v.is_empty()) {
            self.node_name = Some(v);
        }
        Ok(())
    }

    /// What this node is called: `node_name`, else the host name.
    pub fn node_name(&self) -> String {
        self.node_name.clone().unwrap_or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string())
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "plover".into())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_then_environment() {
        let mut c: Config = toml::from_str(
            r#"
            bind = "127.0.0.1:9000"
            [defaults]
            batch_size = 42
            [connections.sessions-old]
            type = "sled"
            bucket = "sessions"
            "#,
        )
        .unwrap();
        assert_eq!(c.defaults.batch_size, 42);
        assert_eq!(
            c.connections["sessions-old"],
            ConnectionConfig::Sled {
                bucket: "sessions".into()
            }
        );
        c.apply_env(|k| (k == "PLOVER_BIND").then(|| "127.0.0.1:9100".to_string()))
            .unwrap();
        assert_eq!(c.bind.port(), 9100);
        assert_eq!(c.store, None, "sled unless a database is named");
        c.apply_env(|k| (k == "PLOVER_DATABASE_URL").then(|| "postgres://db/plover".to_string()))
            .unwrap();
        assert_eq!(c.store.as_deref(), Some("postgres://db/plover"));
        assert!(
            c.apply_env(|k| (k == "PLOVER_LOG_FORMAT").then(|| "xml".to_string()))
                .is_err()
        );
        assert!(
            toml::from_str::<Config>("bnd = 1").is_err(),
            "unknown keys are refused"
        );
    }
}
