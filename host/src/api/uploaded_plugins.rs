//! Where uploaded plugins are kept, by sha256: files in the data directory, or PostgreSQL when
//! the jobs are there (so every node sharing it loads the same plugins). A plugin is durable
//! before its upload is acknowledged. Precompiled artifacts stay a per-node cache.

use super::plugins::StoredPluginMeta;
use crate::runtime::Publisher;
use crate::store::{PgPool, StoreError};
use std::path::{Path, PathBuf};

pub trait UploadedPlugins: Send + Sync {
    /// Keep `bytes` (whose hash is `sha256`) with `meta`; durable when this returns.
    fn save(&self, sha256: &str, bytes: &[u8], meta: &StoredPluginMeta) -> Result<(), StoreError>;
    fn remove(&self, sha256: &str) -> Result<(), StoreError>;
    /// Call `each` with every kept plugin whose sha256 `skip` does not name: where it came
    /// from (for logs), bytes, metadata.
    fn for_each(
        &self,
        skip: &dyn Fn(&str) -> bool,
        each: &mut dyn FnMut(String, Vec<u8>, StoredPluginMeta),
    ) -> Result<(), StoreError>;
    /// The sha256 of every kept plugin.
    fn shas(&self) -> Result<Vec<String>, StoreError>;
}

/// `<sha256>.wasm` with its metadata beside it in `<sha256>.json`.
pub struct PluginDir {
    dir: PathBuf,
}

impl PluginDir {
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        Ok(PluginDir {
            dir: dir.to_path_buf(),
        })
    }
}

fn io_failure(what: &str, e: std::io::Error) -> StoreError {
    StoreError::unavailable(format!("{what}: {e}"))
}

/// Write `bytes` to `path` so that it is on disk (file and directory entry) when this returns.
fn write_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

impl PluginDir {
    fn wasm_files(&self) -> Result<Vec<PathBuf>, StoreError> {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .map_err(|e| io_failure("reading the plugin directory", e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "wasm"))
            .collect();
        paths.sort();
        Ok(paths)
    }
}

impl UploadedPlugins for PluginDir {
    fn shas(&self) -> Result<Vec<String>, StoreError> {
        Ok(self
            .wasm_files()?
            .iter()
            .filter_map(|p| p.file_stem().and_then(|s| s.to_str()).map(str::to_string))
            .collect())
    }

    fn save(&self, sha256: &str, bytes: &[u8], meta: &StoredPluginMeta) -> Result<(), StoreError> {
        let path = self.dir.join(format!("{sha256}.wasm"));
        write_durably(
            &path.with_extension("json"),
            &serde_json::to_vec(meta).expect("serialises"),
        )
        .and_then(|()| {
            if path.exists() {
                Ok(())
            } else {
                write_durably(&path, bytes)
            }
        })
        .map_err(|e| io_failure("storing the plugin", e))
    }

    fn remove(&self, sha256: &str) -> Result<(), StoreError> {
        let path = self.dir.join(format!("{sha256}.wasm"));
        for p in [path.with_extension("json"), path] {
            match std::fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_failure(&format!("removing {}", p.display()), e)),
            }
        }
        Ok(())
    }

    fn for_each(
        &self,
        skip: &dyn Fn(&str) -> bool,
        each: &mut dyn FnMut(String, Vec<u8>, StoredPluginMeta),
    ) -> Result<(), StoreError> {
        for path in self.wasm_files()? {
            if path.file_stem().and_then(|s| s.to_str()).is_some_and(skip) {
                continue;
            }
            let bytes = match std::fs::read(&path) {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e, "plugin not loaded");
                    continue;
                }
            };
            let meta = std::fs::read(path.with_extension("json"))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or(StoredPluginMeta {
                    publisher: Publisher::Uploaded,
                    claimed: false,
                    signature: None,
                });
            each(path.display().to_string(), bytes, meta);
        }
        Ok(())
    }
}

/// The `uploaded_plugins` table of the store database.
pub struct PgPlugins {
    pool: PgPool,
}

impl PgPlugins {
    pub fn new(pool: PgPool) -> Self {
        PgPlugins { pool }
    }
}

fn pg_failure(e: impl std::fmt::Display) -> StoreError {
    StoreError::unavailable(format!("uploaded plugins: {e}"))
}

fn publisher_text(p: &Publisher) -> String {
    serde_json::to_value(p)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

impl UploadedPlugins for PgPlugins {
    fn save(&self, sha256: &str, bytes: &[u8], meta: &StoredPluginMeta) -> Result<(), StoreError> {
        self.pool
            .get()
            .map_err(pg_failure)?
            .execute(
                "INSERT INTO uploaded_plugins (sha256, bytes, publisher, claimed, signature)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (sha256) DO UPDATE SET publisher = EXCLUDED.publisher,
                     claimed = EXCLUDED.claimed, signature = EXCLUDED.signature",
                &[
                    &sha256,
                    &bytes,
                    &publisher_text(&meta.publisher),
                    &meta.claimed,
                    &meta
                        .signature
                        .as_ref()
                        .and_then(|s| serde_json::to_string(s).ok()),
                ],
            )
            .map_err(pg_failure)?;
        Ok(())
    }

    fn remove(&self, sha256: &str) -> Result<(), StoreError> {
        self.pool
            .get()
            .map_err(pg_failure)?
            .execute("DELETE FROM uploaded_plugins WHERE sha256 = $1", &[&sha256])
            .map_err(pg_failure)?;
        Ok(())
    }

    fn shas(&self) -> Result<Vec<String>, StoreError> {
        Ok(self
            .pool
            .get()
            .map_err(pg_failure)?
            .query(
                "SELECT sha256 FROM uploaded_plugins ORDER BY uploaded_at, sha256",
                &[],
            )
            .map_err(pg_failure)?
            .iter()
            .map(|r| r.get(0))
            .collect())
    }

    fn for_each(
        &self,
        skip: &dyn Fn(&str) -> bool,
        each: &mut dyn FnMut(String, Vec<u8>, StoredPluginMeta),
    ) -> Result<(), StoreError> {
        let shas = self.shas()?;
        let mut client = self.pool.get().map_err(pg_failure)?;
        // One at a time: a plugin can be tens of megabytes.
        for sha in shas.into_iter().filter(|s| !skip(s)) {
            let Some(row) = client
                .query_opt(
                    "SELECT bytes, publisher, claimed, signature FROM uploaded_plugins
                     WHERE sha256 = $1",
                    &[&sha],
                )
                .map_err(pg_failure)?
            else {
                continue;
            };
            let publisher: String = row.get(1);
            let meta = StoredPluginMeta {
                publisher: serde_json::from_value(serde_json::Value::String(publisher))
                    .unwrap_or(Publisher::Uploaded),
                claimed: row.get(2),
                signature: row
                    .get::<_, Option<String>>(3)
                    .and_then(|s| crate::runtime::signing::parse(&s).ok()),
            };
            each(
                format!("the store database, sha256 {sha}"),
                row.get(0),
                meta,
            );
        }
        Ok(())
    }
}
