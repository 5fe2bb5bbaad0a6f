//! On-disk cache of compiled plugins, keyed by the plugin's sha256 and the engine's
//! compatibility hash (wasmtime version, target, settings), so a restart skips compilation.
//!
//! Trust: a cached artifact is native code that is loaded without re-validation. The cache
//! directory must be writable only by the host (it lives inside the host's data directory).

use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Whether a load compiled the plugin or found it in the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    Hit,
    Miss,
    /// No cache directory is configured.
    Disabled,
}

pub(crate) struct ArtifactCache {
    dir: PathBuf,
    engine_key: String,
}

/// Feeds `Hash` output into SHA-256, so the key is stable across runs of the same build.
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn finish(&self) -> u64 {
        unreachable!("only the digest is used")
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

impl ArtifactCache {
    pub(crate) fn new(dir: &Path, engine: &Engine) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut h = Sha256Hasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut h);
        let engine_key = hex::encode(&h.0.finalize()[..8]);
        Ok(ArtifactCache {
            dir: dir.to_path_buf(),
            engine_key,
        })
    }

    fn path_for(&self, sha256: &str) -> PathBuf {
        self.dir.join(format!("{sha256}-{}.cwasm", self.engine_key))
    }

    /// The compiled component for `bytes`, from the cache when possible. A corrupt or stale
    /// entry is recompiled and replaced.
    pub(crate) fn load_or_compile(
        &self,
        engine: &Engine,
        bytes: &[u8],
        sha256: &str,
    ) -> wasmtime::Result<(Component, CacheOutcome)> {
        let path = self.path_for(sha256);
        // Read into memory rather than map the file: a mapping would turn anything that later
        // truncates the file into a SIGBUS inside the host.
        if let Ok(artifact) = std::fs::read(&path) {
            // SAFETY: the file was written by `precompile_component` of an engine with the same
            // compatibility hash, into a directory only the host writes (see module docs).
            match unsafe { Component::deserialize(engine, &artifact) } {
                Ok(c) => return Ok((c, CacheOutcome::Hit)),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "discarding unusable cached plugin")
                }
            }
        }
        let compiled = engine.precompile_component(bytes)?;
        // Write then rename, so a crash never leaves a half-written artifact under the real name.
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        if let Err(e) = std::fs::write(&tmp, &compiled).and_then(|_| std::fs::rename(&tmp, &path)) {
            tracing::warn!(path = %path.display(), error = %e, "could not cache compiled plugin");
            let _ = std::fs::remove_file(&tmp);
        }
        // SAFETY: `compiled` was produced just now by this engine.
        let component = unsafe { Component::deserialize(engine, &compiled)? };
        Ok((component, CacheOutcome::Miss))
    }
}
