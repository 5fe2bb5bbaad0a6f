//! Loading the plugins a node finds at start-up, in the background: the API serves at once,
//! the smallest plugins are ready first, and an 18 MB Python component compiling for half a
//! minute holds up only the jobs that need it (they wait; see `PluginRegistry::resolve_waiting`).
//! Also: following the plugins other nodes upload or remove.

use crate::api::AppState;
use crate::runtime::loading::LoadState;
use crate::runtime::{LoadedPlugin, PluginRegistry, Publisher};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

/// Find the plugins in the host's directories now (an unreadable directory stops the start),
/// then load them and the uploaded ones on a thread of their own: the bundled ones first,
/// smallest first, then the uploaded ones, each under the publisher its metadata names. A
/// plugin that fails to load is logged, shown by `/readyz/plugins`, and skipped.
pub fn load_in_background(state: &Arc<AppState>, bundled_dirs: &[PathBuf]) -> anyhow::Result<()> {
    let mut files = vec![];
    for dir in bundled_dirs {
        if !dir.exists() {
            tracing::warn!(dir = %dir.display(), "plugin directory does not exist; skipped");
            continue;
        }
        files.extend(crate::runtime::plugin_files(dir)?);
    }
    files.sort_by_key(|p| std::fs::metadata(p).map_or(u64::MAX, |m| m.len()));
    let registry = state.engine.registry().clone();
    registry
        .loads()
        .begin(files.iter().map(|p| p.display().to_string()));
    let state = state.clone();
    std::thread::Builder::new()
        .name("plugin-loading".into())
        .spawn(move || {
            let started = Instant::now();
            let runtime = &state.runtime;
            for path in files {
                let source = path.display().to_string();
                load_one(&registry, &source, Publisher::Bundled, false, || {
                    runtime.load_file(&path)
                });
            }
            let uploaded = state
                .uploaded
                .for_each(&|_| false, &mut |from, bytes, meta| {
                    registry.loads().add(from.clone());
                    load_one(&registry, &from, meta.publisher, meta.claimed, || {
                        runtime.load_signed(&bytes, meta.signature.as_ref())
                    });
                });
            if let Err(e) = uploaded {
                tracing::error!(error = %e, "could not read the uploaded plugins");
            }
            registry.loads().end();
            tracing::info!(
                took_ms = started.elapsed().as_millis() as u64,
                "plugins found at start-up are loaded"
            );
        })?;
    Ok(())
}

fn load_one(
    registry: &PluginRegistry,
    source: &str,
    publisher: Publisher,
    claim: bool,
    load: impl FnOnce() -> Result<Arc<LoadedPlugin>, crate::runtime::LoadError>,
) {
    let loads = registry.loads();
    loads.set(source, LoadState::Compiling);
    let started = Instant::now();
    let loaded = load()
        .map_err(anyhow::Error::from)
        .and_then(|p| Ok(registry.insert_from(p, publisher, claim)?));
    match loaded {
        Ok(p) => {
            let took_ms = started.elapsed().as_millis() as u64;
            tracing::info!(plugin = %p.label(), sha256 = p.sha256(), from = source, took_ms, "plugin loaded");
            loads.set(
                source,
                LoadState::Loaded {
                    plugin: p.label(),
                    took_ms,
                },
            );
        }
        Err(e) => {
            tracing::error!(from = source, error = %e, "plugin not loaded");
            loads.set(
                source,
                LoadState::Failed {
                    error: e.to_string(),
                },
            );
        }
    }
}

/// Bring the uploaded plugins loaded here in line with the store another node changed: load
/// the new ones (compiled once into this node's cache), unload the removed ones.
pub fn sync_uploaded_plugins(state: &AppState) -> anyhow::Result<()> {
    let registry = state.engine.registry();
    let stored: std::collections::HashSet<String> = state.uploaded.shas()?.into_iter().collect();
    for p in registry.list() {
        if registry.publisher(p.name()) == Some(Publisher::Uploaded) && !stored.contains(p.sha256())
        {
            registry.remove(p.name(), p.version());
            tracing::info!(plugin = %p.label(), "plugin removed through another node; unloaded");
        }
    }
    state.uploaded.for_each(
        &|sha| registry.by_sha256(sha).is_some(),
        &mut |from, bytes, meta| match state
            .runtime
            .load_signed(&bytes, meta.signature.as_ref())
            .map_err(anyhow::Error::from)
            .and_then(|p| Ok(registry.insert_from(p, meta.publisher, meta.claimed)?))
        {
            Ok(p) => tracing::info!(plugin = %p.label(), from, "plugin uploaded through another node; loaded"),
            Err(e) => tracing::error!(from, error = %e, "plugin not loaded"),
        },
    )?;
    Ok(())
}
