//! The WebAssembly runtime: one process-wide wasmtime `Engine`, one `Linker` with the host
//! imports, plugin loading (from bytes, files or a directory) through a precompiled cache, and
//! sandboxed calls.
//!
//! Invariants:
//! - One `Engine` and one `Linker` per [`Runtime`]; each plugin is compiled once and keeps an
//!   `InstancePre`; each call gets a fresh `Store` with the plugin's limits.
//! - Nothing a plugin does can panic or hang the host: traps, limits and refused writes come
//!   back as [`PluginError`]s naming the plugin, the call and the cause.

pub mod bounds;
pub mod cache;
mod clock;
pub mod contract;
pub mod declared;
pub mod error;
pub mod events;
pub(crate) mod guest_output;
pub(crate) mod host_imports;
pub mod loading;
pub mod plugin;
pub mod registry;
pub mod sandbox;
pub mod signing;
pub mod stats;

pub use cache::CacheOutcome;
pub use error::{Call, LoadError, PluginError, PluginFailure};
pub use events::{ForceStop, JobEvents, NoEvents};
pub use plugin::{HandlerResult, JobContext, LoadedPlugin, PluginSummary};
pub use registry::{PluginRegistry, PluginRequirement, Publisher, RegistryError};
pub use sandbox::SandboxLimits;

use cache::ArtifactCache;
use contract::ContractExport;
use host_imports::CallState;
use semver::Version;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How often the engine's epoch advances: the granularity of call deadlines and force stops.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Runtime-wide settings. Per-plugin limits are [`SandboxLimits`].
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Where compiled plugins are cached; `None` compiles on every load.
    pub cache_dir: Option<PathBuf>,
    /// Count fuel so `SandboxLimits::fuel` can bound a call's work. Costs throughput.
    pub fuel_metering: bool,
    /// Pre-reserve instance slots (the pooling allocator): instantiation measured 16.7 µs
    /// against 26.4 µs on demand (BENCHMARKS.md). A plugin's memory limit cannot exceed the
    /// slot size, which is `default_limits.memory_bytes`.
    pub pooling: bool,
    /// Most native stack one call's wasm frames may use.
    pub max_wasm_stack: usize,
    /// Limits for plugins loaded without their own.
    pub default_limits: SandboxLimits,
    /// Deadline of `describe` when a plugin is loaded.
    pub describe_timeout: Duration,
    /// Which plugin signers are trusted, and whether unsigned plugins load.
    pub trust: signing::TrustPolicy,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            cache_dir: None,
            fuel_metering: false,
            pooling: true,
            max_wasm_stack: 512 * 1024,
            default_limits: SandboxLimits::default(),
            describe_timeout: Duration::from_secs(5),
            trust: signing::TrustPolicy::default(),
        }
    }
}

/// One file of a plugins directory and what loading it gave.
pub type DirEntryLoad = (PathBuf, Result<Arc<LoadedPlugin>, LoadError>);

/// What loading a plugin did, for logs and benchmarks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadReport {
    pub cache: CacheOutcome,
}

/// The `*.wasm` files in `dir` (not recursively), by name.
pub fn plugin_files(dir: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let io = |source| LoadError::Io {
        path: dir.display().to_string(),
        source,
    };
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "wasm"))
        .collect();
    paths.sort();
    Ok(paths)
}

pub struct Runtime {
    engine: Engine,
    linker: Linker<CallState>,
    cache: Option<ArtifactCache>,
    config: RuntimeConfig,
}

impl Runtime {
    pub fn new(config: RuntimeConfig) -> anyhow::Result<Self> {
        let mut wasm = Config::new();
        wasm.wasm_component_model(true)
            .epoch_interruption(true)
            .consume_fuel(config.fuel_metering)
            .max_wasm_stack(config.max_wasm_stack);
        if config.pooling {
            let mut pool = PoolingAllocationConfig::default();
            pool.total_component_instances(256)
                .total_core_instances(2048)
                .total_memories(1024)
                .total_tables(2048)
                .max_memory_size(config.default_limits.memory_bytes as usize);
            wasm.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        }
        let engine = Engine::new(&wasm)?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
        clock::shadow_monotonic_clock(&mut linker)?;
        // Both contract lines' imports, served by the same host code (see `contract::v0_1`).
        contract::v0_1::HandlerPlugin::add_to_linker::<CallState, HasSelf<CallState>>(
            &mut linker,
            |s| s,
        )?;
        contract::v0_2::HandlerPlugin::add_to_linker::<CallState, HasSelf<CallState>>(
            &mut linker,
            |s| s,
        )?;

        let cache = match &config.cache_dir {
            Some(dir) => Some(ArtifactCache::new(dir, &engine)?),
            None => None,
        };
        spawn_epoch_ticker(&engine);
        Ok(Runtime {
            engine,
            linker,
            cache,
            config,
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }

    /// Load a plugin from its bytes with the default limits.
    pub fn load_bytes(&self, bytes: &[u8]) -> Result<Arc<LoadedPlugin>, LoadError> {
        self.load_with(bytes, self.config.default_limits.clone())
            .map(|(p, _)| p)
    }

    /// Load a plugin with the default limits and the signature it came with.
    pub fn load_signed(
        &self,
        bytes: &[u8],
        signature: Option<&signing::PluginSignature>,
    ) -> Result<Arc<LoadedPlugin>, LoadError> {
        self.load_checked(bytes, self.config.default_limits.clone(), signature)
            .map(|(p, _)| p)
    }

    /// Load a plugin from a `.wasm` file with the default limits, and its signature from the
    /// `.wasm.sig` file beside it when there is one.
    pub fn load_file(&self, path: &Path) -> Result<Arc<LoadedPlugin>, LoadError> {
        let bytes = std::fs::read(path).map_err(|source| LoadError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let signature = signing::read_beside(path).map_err(LoadError::Signature)?;
        self.load_signed(&bytes, signature.as_ref())
    }

    /// Load every `*.wasm` file in `dir` (not recursively). Each file loads or fails on its own.
    pub fn load_dir(&self, dir: &Path) -> Result<Vec<DirEntryLoad>, LoadError> {
        Ok(plugin_files(dir)?
            .into_iter()
            .map(|p| {
                let r = self.load_file(&p);
                (p, r)
            })
            .collect())
    }

    /// Load a plugin with explicit limits, saying whether the compiled cache was used.
    pub fn load_with(
        &self,
        bytes: &[u8],
        limits: SandboxLimits,
    ) -> Result<(Arc<LoadedPlugin>, LoadReport), LoadError> {
        self.load_checked(bytes, limits, None)
    }

    /// Check the signature against the trust policy (before anything is compiled: code no
    /// trusted key vouches for is never even compiled), then load.
    pub fn load_checked(
        &self,
        bytes: &[u8],
        limits: SandboxLimits,
        signature: Option<&signing::PluginSignature>,
    ) -> Result<(Arc<LoadedPlugin>, LoadReport), LoadError> {
        check_header(bytes)?;
        let declared = declared::read_declared(bytes).map_err(LoadError::BadInfo)?;
        let sha256 = hex::encode(Sha256::digest(bytes));
        let signed_by = self
            .config
            .trust
            .check(&sha256, signature)
            .map_err(LoadError::Signature)?;
        let (component, cache) = match &self.cache {
            Some(cache) => cache.load_or_compile(&self.engine, bytes, &sha256),
            None => Component::new(&self.engine, bytes).map(|c| (c, CacheOutcome::Disabled)),
        }
        .map_err(|e| LoadError::Malformed(format!("{e:#}")))?;

        let contract = match contract::exported_contract(&self.engine, &component) {
            ContractExport::Handler(v) if contract::is_compatible(&v) => v,
            ContractExport::Handler(v) => {
                return Err(LoadError::ContractVersion {
                    plugin: v.to_string(),
                    host: contract::host_contract_names(),
                });
            }
            ContractExport::Unversioned(name) => {
                return Err(LoadError::ContractVersion {
                    plugin: format!("(unversioned export '{name}')"),
                    host: contract::host_contract_names(),
                });
            }
            ContractExport::Missing(exports) => return Err(LoadError::WrongWorld { exports }),
        };

        let instance_pre =
            self.linker
                .instantiate_pre(&component)
                .map_err(|e| LoadError::UnsupportedImport {
                    message: format!("{e:#}"),
                    imports: contract::imported_names(&self.engine, &component),
                })?;
        let pre = contract::HandlerPre::new(&contract, instance_pre).map_err(|e| {
            LoadError::WrongWorld {
                exports: vec![format!("a handler interface of another shape ({e:#})")],
            }
        })?;

        // Until describe says who it is, a plugin is named by its hash.
        let label = format!("sha256:{}", &sha256[..12]);
        // describe answers at once or not at all: a short deadline, so a plugin that loops
        // there cannot hold an upload (or the start-up) for a whole call deadline.
        let describe_limits = SandboxLimits {
            call_timeout: limits.call_timeout.min(self.config.describe_timeout),
            ..limits.clone()
        };
        let target = plugin::CallTarget {
            pre: &pre,
            engine: &self.engine,
            limits: &describe_limits,
            fuel_metering: self.config.fuel_metering,
            label: &label,
        };
        let mut info = LoadedPlugin::describe_with(&target).map_err(LoadError::Describe)?;
        let version = check_info(&mut info)?;
        let plugin = LoadedPlugin {
            info,
            version,
            sha256,
            contract,
            limits,
            pre,
            engine: self.engine.clone(),
            fuel_metering: self.config.fuel_metering,
            signed_by,
            declared,
        };
        Ok((Arc::new(plugin), LoadReport { cache }))
    }
}

/// Tell a component from a core module or from something that is not wasm at all, so the
/// error says which, before compiling anything.
fn check_header(bytes: &[u8]) -> Result<(), LoadError> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(LoadError::NotWasm);
    }
    // Core modules have version 1 and layer 0; components put layer 1 in bytes 6..8.
    match bytes[4..8] {
        [1, 0, 0, 0] => Err(LoadError::CoreModule),
        [_, _, 1, 0] => Ok(()),
        _ => Err(LoadError::Malformed(
            "unknown WebAssembly binary version".into(),
        )),
    }
}

/// At most `max` characters of what a plugin said, for an error message.
fn shown(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        format!(
            "{}… ({} bytes)",
            text.chars().take(max).collect::<String>(),
            text.len()
        )
    }
}

fn check_info(info: &mut crate::model::PluginInfo) -> Result<Version, LoadError> {
    let name_ok = !info.name.is_empty()
        && info.name.len() <= 64
        && info
            .name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !name_ok {
        return Err(LoadError::BadInfo(format!(
            "name '{}' must be 1-64 lower-case letters, digits or dashes",
            shown(&info.name, 64)
        )));
    }
    if info.kinds.is_empty() {
        return Err(LoadError::BadInfo(format!(
            "{} handles no job kinds",
            info.name
        )));
    }
    bounds::info(info).map_err(|why| LoadError::BadInfo(format!("{}: {why}", info.name)))?;
    if info.version.len() > 64 {
        return Err(LoadError::BadInfo(format!(
            "version '{}' of {} is longer than 64 bytes",
            shown(&info.version, 64),
            info.name
        )));
    }
    Version::parse(&info.version).map_err(|e| {
        LoadError::BadInfo(format!(
            "version '{}' of {} is not semver: {e}",
            info.version, info.name
        ))
    })
}

/// Advance the engine's epoch every [`EPOCH_TICK`] for as long as the engine lives.
fn spawn_epoch_ticker(engine: &Engine) {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("plover-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .expect("spawning the epoch thread");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_check_tells_core_modules_components_and_junk_apart() {
        assert!(matches!(
            check_header(b"hello world"),
            Err(LoadError::NotWasm)
        ));
        assert!(matches!(
            check_header(b"\0asm\x01\0\0\0"),
            Err(LoadError::CoreModule)
        ));
        assert!(check_header(b"\0asm\x0d\0\x01\0").is_ok());
        assert!(matches!(
            check_header(b"\0asm\x09\0\x07\0"),
            Err(LoadError::Malformed(_))
        ));
    }
}
