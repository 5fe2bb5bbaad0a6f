//! Typed errors of the runtime. A plugin can fail in two ways: it *returns* a
//! `model::MigrationError` (that is data, handled by the engine), or the sandbox stops it
//! ([`PluginError`]): a trap, a panic, a limit, a refused write. Loading has its own
//! [`LoadError`].

use serde::Serialize;
use std::fmt;
use std::time::Duration;

/// Which export was being called.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case", tag = "call", content = "step")]
pub enum Call {
    Describe,
    Plan,
    Validate,
    Execute(String),
    Rollback(String),
}

impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Call::Describe => write!(f, "describe"),
            Call::Plan => write!(f, "plan"),
            Call::Validate => write!(f, "validate"),
            Call::Execute(step) => write!(f, "execute of step '{step}'"),
            Call::Rollback(step) => write!(f, "rollback of step '{step}'"),
        }
    }
}

/// Why the sandbox stopped a call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case", tag = "cause")]
pub enum PluginFailure {
    #[error("ran past its deadline of {}", humanize(*limit))]
    Deadline {
        /// The deadline, in milliseconds.
        #[serde(rename = "limit_ms", with = "super::sandbox::duration_millis")]
        #[schema(value_type = u64)]
        limit: Duration,
    },
    #[error("was stopped by force (cancelled past its grace period)")]
    ForceStopped,
    #[error("ran out of fuel ({fuel} units)")]
    OutOfFuel { fuel: u64 },
    #[error("ran out of memory (limit {limit_bytes} bytes){}", detail(.stderr))]
    OutOfMemory { limit_bytes: u64, stderr: String },
    #[error("overflowed its stack")]
    StackOverflow,
    #[error("panicked: {message}")]
    Panic { message: String },
    #[error("trapped: {message}{}", detail(.stderr))]
    Trap { message: String, stderr: String },
    #[error("attempted {attempts} write(s) during a read-only call, first: {first}")]
    WriteDenied { attempts: usize, first: String },
    #[error("could not be instantiated: {message}")]
    Instantiate { message: String },
    #[error("finished, but its connector work could not be made durable: {message}")]
    Connector { message: String },
    #[error("exceeded a limit: {message}")]
    LimitExceeded { message: String },
    #[error("exited with status {code} (a plugin must return, not call exit)")]
    Exited { code: i32 },
    #[error("stopped: the host's database is damaged ({message})")]
    DataCorruption { message: String },
}

fn humanize(d: Duration) -> String {
    if d.as_secs() >= 1 {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        format!("{}ms", d.as_millis())
    }
}

fn detail(stderr: &str) -> String {
    if stderr.is_empty() {
        String::new()
    } else {
        format!("; guest stderr: {stderr}")
    }
}

impl PluginFailure {
    /// A short stable name for metrics and API errors.
    pub fn cause_name(&self) -> &'static str {
        match self {
            PluginFailure::Deadline { .. } => "deadline",
            PluginFailure::ForceStopped => "force-stopped",
            PluginFailure::OutOfFuel { .. } => "out-of-fuel",
            PluginFailure::OutOfMemory { .. } => "out-of-memory",
            PluginFailure::StackOverflow => "stack-overflow",
            PluginFailure::Panic { .. } => "panic",
            PluginFailure::Trap { .. } => "trap",
            PluginFailure::WriteDenied { .. } => "write-denied",
            PluginFailure::Instantiate { .. } => "instantiate",
            PluginFailure::Connector { .. } => "connector",
            PluginFailure::LimitExceeded { .. } => "limit-exceeded",
            PluginFailure::Exited { .. } => "exit",
            PluginFailure::DataCorruption { .. } => "data-corruption",
        }
    }
}

/// A call the sandbox stopped, naming the plugin, the call and the cause.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error, utoipa::ToSchema)]
#[error("plugin {plugin}: {call} {cause}")]
pub struct PluginError {
    /// `name@version`.
    pub plugin: String,
    pub call: Call,
    pub cause: PluginFailure,
}

/// Why a plugin could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("not a WebAssembly binary (no \\0asm header)")]
    NotWasm,
    #[error("a core WebAssembly module, not a component: build the plugin for wasm32-wasip2")]
    CoreModule,
    #[error("malformed component: {0}")]
    Malformed(String),
    #[error(
        "not a Plover handler: the component exports no {interface} interface (it exports: {exports})",
        interface = super::contract::HANDLER_INTERFACE,
        exports = if .exports.is_empty() { "nothing".to_string() } else { .exports.join(", ") }
    )]
    WrongWorld { exports: Vec<String> },
    #[error(
        "plugin built against contract plover:migration@{plugin}, but this host implements {host}"
    )]
    ContractVersion { plugin: String, host: String },
    #[error("the plugin imports something the host does not provide: {message} (it imports: {imports})", imports = .imports.join(", "))]
    UnsupportedImport {
        message: String,
        imports: Vec<String>,
    },
    #[error("describe failed: {0}")]
    Describe(#[source] PluginError),
    #[error("bad plugin info from describe: {0}")]
    BadInfo(String),
    #[error("reading {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("internal error while loading: {0}")]
    Internal(String),
    #[error("signature: {0}")]
    Signature(super::signing::SignatureRefusal),
}
