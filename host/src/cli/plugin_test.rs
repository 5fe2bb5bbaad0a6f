//! `plover plugin test HANDLER.wasm`: the lifecycle check of `plugin_check`, run here, with
//! no server. The compiled-plugin cache is the server's (`data_dir/cache` of the same
//! configuration), so a large plugin compiles once for both.

use crate::config::Config;
use crate::connectors::{
    ConnectionConfig, ConnectionProvider, HostConnections, JobStateSpace, KvBucket, MemoryBucket,
    SledBuckets,
};
use crate::plugin_check::{CheckSetup, check, report, seed};
use crate::runtime::{CacheOutcome, Runtime, RuntimeConfig};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

#[derive(clap::Args)]
pub struct PluginTestArgs {
    /// The component to check (.wasm).
    file: PathBuf,
    /// The job kind; the plugin's first when absent.
    #[arg(long)]
    kind: Option<String>,
    /// Handler parameters: a JSON object, or @FILE holding one.
    #[arg(long, default_value = "{}")]
    params: String,
    /// Job option overrides as a JSON object, e.g. '{"batch_size":100}'.
    #[arg(long, default_value = "{}")]
    options: String,
    /// Grant an in-memory bucket: NAME (empty) or NAME=SEED (a JSON object or JSON Lines
    /// file of its first contents); repeatable.
    #[arg(long = "bucket")]
    buckets: Vec<String>,
    /// Grant a connection of the configuration file: BINDING=CONNECTION (redis, postgres or
    /// http); repeatable.
    #[arg(long = "grant")]
    grants: Vec<String>,
    /// The server's configuration file: its connections, limits and data directory (whose
    /// compiled-plugin cache the check shares).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Simulate a host crash after this checkpoint of the run (from 1), resume, and check that
    /// the result equals an uninterrupted run.
    #[arg(long)]
    crash_at: Option<u64>,
    /// Show every log line of the plugin, not only the last ones.
    #[arg(long)]
    verbose: bool,
}

/// Run the check; exit 0 when it passed, 1 when it failed, 2 when it could not run.
pub fn plugin_test(args: PluginTestArgs) -> ExitCode {
    match prepare_and_check(args) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("plover plugin test: {message}");
            ExitCode::from(2)
        }
    }
}

fn prepare_and_check(args: PluginTestArgs) -> Result<ExitCode, String> {
    let config = Config::load(args.config.as_deref()).map_err(|e| format!("{e:#}"))?;
    let bytes = std::fs::read(&args.file).map_err(|e| format!("{}: {e}", args.file.display()))?;
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: Some(config.data_dir.join("cache")),
        fuel_metering: config.fuel_metering,
        default_limits: config.limits.clone(),
        ..RuntimeConfig::default()
    })
    .map_err(|e| format!("{e:#}"))?;
    let started = Instant::now();
    let (plugin, load) = runtime
        .load_with(&bytes, config.limits.clone())
        .map_err(|e| format!("{}: {e}", args.file.display()))?;
    let loaded = format!(
        "{} {} (contract {}, {} KiB): {} in {} ms",
        plugin.info().name,
        plugin.info().version,
        plugin.contract_version(),
        bytes.len() / 1024,
        match load.cache {
            CacheOutcome::Hit => "loaded from the compiled cache",
            CacheOutcome::Miss => "compiled (and cached)",
            CacheOutcome::Disabled => "compiled",
        },
        started.elapsed().as_millis()
    );

    let setup = CheckSetup {
        kind: args.kind,
        parameters: json_arg("--params", &args.params)?,
        options: json_arg("--options", &args.options)?,
        buckets: buckets(&args.buckets)?,
        connections: connections(&config, &args.grants)?,
        crash_at: args.crash_at,
    };
    if setup.crash_at == Some(0) {
        return Err("--crash-at counts checkpoints from 1".into());
    }
    let result = check(&plugin, &setup);
    print!("{}", report::render(&result, &loaded, args.verbose));
    Ok(if result.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// A JSON object given inline or as @FILE.
fn json_arg(flag: &str, value: &str) -> Result<serde_json::Value, String> {
    let text = match value.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path).map_err(|e| format!("{flag} {path}: {e}"))?,
        None => value.to_string(),
    };
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{flag} is not JSON: {e}"))?;
    if !v.is_object() {
        return Err(format!("{flag} must be a JSON object"));
    }
    Ok(v)
}

fn buckets(specs: &[String]) -> Result<BTreeMap<String, seed::Seed>, String> {
    let mut out = BTreeMap::new();
    for spec in specs {
        let (name, seed) = match spec.split_once('=') {
            Some((n, path)) => (n, seed::read_seed(std::path::Path::new(path))?),
            None => (spec.as_str(), vec![]),
        };
        if name.is_empty() || out.insert(name.to_string(), seed).is_some() {
            return Err(format!(
                "--bucket {spec}: each bucket needs a name of its own"
            ));
        }
    }
    Ok(out)
}

/// The job-state space of the connections opened here: never used (the check gives the
/// plugin a private bucket of its own), but the connection set needs one.
struct UnusedJobState;

impl JobStateSpace for UnusedJobState {
    fn bucket(&self, _job: &str, _outside: bool, _fence: Option<u64>) -> Arc<dyn KvBucket> {
        Arc::new(MemoryBucket::new())
    }
}

fn connections(
    config: &Config,
    grants: &[String],
) -> Result<BTreeMap<String, crate::connectors::Connector>, String> {
    if grants.is_empty() {
        return Ok(BTreeMap::new());
    }
    let mut wanted = BTreeMap::new();
    for grant in grants {
        let Some((binding, name)) = grant.split_once('=') else {
            return Err(format!("--grant {grant}: expected BINDING=CONNECTION"));
        };
        match config.connections.get(name) {
            None => {
                return Err(format!(
                    "--grant {grant}: no connection named '{name}' in the configuration (configured: {})",
                    config
                        .connections
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            Some(ConnectionConfig::Sled { .. }) => {
                return Err(format!(
                    "--grant {grant}: '{name}' is a bucket of the server's own database, which a check does not open; seed an in-memory one with --bucket {binding}=FILE"
                ));
            }
            Some(_) => {}
        }
        wanted.insert(binding.to_string(), name.to_string());
    }
    let scratch = sled::Config::new()
        .temporary(true)
        .open()
        .map_err(|e| format!("a scratch database: {e}"))?;
    let provider = HostConnections::new(
        SledBuckets::new(scratch),
        Arc::new(UnusedJobState),
        config.connections.clone(),
        false,
    );
    wanted
        .into_iter()
        .map(|(binding, name)| {
            provider
                .connect(&name)
                .map(|c| (binding, c))
                .map_err(|e| format!("connection '{name}': {e}"))
        })
        .collect()
}
