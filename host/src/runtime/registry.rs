//! Loaded plugins by name and version, resolved by semver requirement (`kv-copy@^1.2`).

use super::loading::PluginLoads;
use super::plugin::LoadedPlugin;
use semver::{Version, VersionReq};
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    #[error(
        "'{0}' is not a plugin requirement: expected NAME or NAME@SEMVER-REQUIREMENT (e.g. kv-copy@^1.2)"
    )]
    BadRequirement(String),
    #[error("no plugin named '{0}' is loaded")]
    UnknownPlugin(String),
    #[error("no loaded version of '{name}' matches {requirement} (loaded: {loaded})")]
    NoMatchingVersion {
        name: String,
        requirement: String,
        loaded: String,
    },
    #[error("{name}@{version} is already loaded with different bytes (sha256 {existing})")]
    VersionConflict {
        name: String,
        version: String,
        existing: String,
    },
    #[error(
        "the plugin name '{name}' belongs to another publisher ({owner}); an admin may take it over explicitly (claim)"
    )]
    NameOwned { name: String, owner: String },
    #[error(
        "'{wanted}' is not loaded yet: this node is still loading plugins it found at start-up ({unfinished}); retry shortly, or watch /readyz/plugins"
    )]
    StillLoading { wanted: String, unfinished: String },
}

/// Who a plugin comes from. A name belongs to the publisher of its first loaded version: a
/// plugin from another publisher may not take it (and so capture jobs that ask for it by
/// name and semver range) unless an admin claims it explicitly.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Publisher {
    /// Loaded from the host's plugin directories at start-up.
    Bundled,
    /// Uploaded through the API by an admin.
    Uploaded,
}

impl std::fmt::Display for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Publisher::Bundled => "bundled with the host",
            Publisher::Uploaded => "uploaded",
        })
    }
}

/// A loaded plugin and who published it.
#[derive(Clone)]
struct Entry {
    plugin: Arc<LoadedPlugin>,
    publisher: Publisher,
}

/// A parsed `name@requirement`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginRequirement {
    pub name: String,
    pub version: VersionReq,
}

impl std::str::FromStr for PluginRequirement {
    type Err = RegistryError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || RegistryError::BadRequirement(s.to_string());
        let (name, req) = match s.split_once('@') {
            Some((n, r)) => (n, VersionReq::parse(r).map_err(|_| bad())?),
            None => (s, VersionReq::STAR),
        };
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(bad());
        }
        Ok(PluginRequirement {
            name: name.to_string(),
            version: req,
        })
    }
}

#[derive(Default)]
pub struct PluginRegistry {
    plugins: RwLock<BTreeMap<String, BTreeMap<Version, Entry>>>,
    /// The plugins loading in the background since start-up.
    loads: PluginLoads,
}

impl PluginRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a plugin bundled with the host (see [`PluginRegistry::insert_from`]).
    pub fn insert(&self, plugin: Arc<LoadedPlugin>) -> Result<Arc<LoadedPlugin>, RegistryError> {
        self.insert_from(plugin, Publisher::Bundled, false)
    }

    /// Add a plugin from `publisher`. Loading the same bytes twice is a no-op; the same name
    /// and version with other bytes is refused, and so is a name another publisher owns unless
    /// `claim` (then every version of the name belongs to `publisher` from now on).
    pub fn insert_from(
        &self,
        plugin: Arc<LoadedPlugin>,
        publisher: Publisher,
        claim: bool,
    ) -> Result<Arc<LoadedPlugin>, RegistryError> {
        let mut all = self.plugins.write().expect("registry lock");
        let versions = all.entry(plugin.name().to_string()).or_default();
        if let Some(existing) = versions.get(plugin.version()) {
            if existing.plugin.sha256() == plugin.sha256() {
                return Ok(existing.plugin.clone());
            }
            return Err(RegistryError::VersionConflict {
                name: plugin.name().to_string(),
                version: plugin.version().to_string(),
                existing: existing.plugin.sha256().to_string(),
            });
        }
        if let Some(other) = versions.values().find(|e| e.publisher != publisher) {
            if !claim {
                return Err(RegistryError::NameOwned {
                    name: plugin.name().to_string(),
                    owner: other.publisher.to_string(),
                });
            }
            for e in versions.values_mut() {
                e.publisher = publisher.clone();
            }
        }
        versions.insert(
            plugin.version().clone(),
            Entry {
                plugin: plugin.clone(),
                publisher,
            },
        );
        Ok(plugin)
    }

    /// Who published the plugin named `name`.
    pub fn publisher(&self, name: &str) -> Option<Publisher> {
        let all = self.plugins.read().expect("registry lock");
        all.get(name)
            .and_then(|v| v.values().next())
            .map(|e| e.publisher.clone())
    }

    /// Exactly `name@version` (build metadata included), if loaded.
    pub fn exact(&self, name: &str, version: &Version) -> Option<Arc<LoadedPlugin>> {
        let all = self.plugins.read().expect("registry lock");
        all.get(name)
            .and_then(|v| v.get(version))
            .map(|e| e.plugin.clone())
    }

    /// The highest loaded version matching `requirement` (e.g. `kv-copy@^1.2` or `kv-copy`).
    pub fn resolve(&self, requirement: &str) -> Result<Arc<LoadedPlugin>, RegistryError> {
        let req: PluginRequirement = requirement.parse()?;
        let all = self.plugins.read().expect("registry lock");
        let versions = all
            .get(&req.name)
            .ok_or_else(|| RegistryError::UnknownPlugin(req.name.clone()))?;
        versions
            .iter()
            .rev()
            .find(|(v, _)| req.version.matches(v))
            .map(|(_, e)| e.plugin.clone())
            .ok_or_else(|| RegistryError::NoMatchingVersion {
                name: req.name.clone(),
                requirement: req.version.to_string(),
                loaded: versions
                    .keys()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    /// The start-up loads, for readiness and for the lookups below that wait for them.
    pub fn loads(&self) -> &PluginLoads {
        &self.loads
    }

    /// [`Self::resolve`], waiting up to `max_wait` while start-up loads go on: the plugin may
    /// be the one still compiling. Then [`RegistryError::StillLoading`] if it is not there.
    pub fn resolve_waiting(
        &self,
        requirement: &str,
        max_wait: Duration,
    ) -> Result<Arc<LoadedPlugin>, RegistryError> {
        requirement.parse::<PluginRequirement>()?;
        self.wait_for(requirement, Some(Instant::now() + max_wait), || {
            self.resolve(requirement).ok()
        })
        .map_or_else(
            || {
                self.resolve(requirement)
                    .map_err(|e| self.still_loading(requirement, e))
            },
            Ok,
        )
    }

    /// [`Self::by_sha256`], waiting while start-up loads go on (at most `max_wait`, or until
    /// they end).
    pub fn by_sha256_waiting(
        &self,
        sha256: &str,
        max_wait: Option<Duration>,
    ) -> Option<Arc<LoadedPlugin>> {
        self.wait_for(sha256, max_wait.map(|w| Instant::now() + w), || {
            self.by_sha256(sha256)
        })
    }

    fn wait_for(
        &self,
        wanted: &str,
        deadline: Option<Instant>,
        lookup: impl Fn() -> Option<Arc<LoadedPlugin>>,
    ) -> Option<Arc<LoadedPlugin>> {
        let mut logged = false;
        loop {
            let seen = self.loads.generation();
            if let Some(found) = lookup() {
                return Some(found);
            }
            if !logged && self.loads.in_progress() {
                tracing::info!(wanted, "waiting for the plugins loading since start-up");
                logged = true;
            }
            if !self.loads.wait_after(seen, deadline) {
                return lookup();
            }
        }
    }

    /// `e`, or [`RegistryError::StillLoading`] when start-up loads still go on.
    fn still_loading(&self, wanted: &str, e: RegistryError) -> RegistryError {
        let unfinished = self.loads.unfinished();
        if !self.loads.in_progress() || unfinished.is_empty() {
            return e;
        }
        RegistryError::StillLoading {
            wanted: wanted.to_string(),
            unfinished: unfinished.join(", "),
        }
    }

    pub fn by_sha256(&self, sha256: &str) -> Option<Arc<LoadedPlugin>> {
        let all = self.plugins.read().expect("registry lock");
        all.values()
            .flat_map(|v| v.values())
            .find(|e| e.plugin.sha256() == sha256)
            .map(|e| e.plugin.clone())
    }

    /// Every loaded plugin, by name then version.
    pub fn list(&self) -> Vec<Arc<LoadedPlugin>> {
        let all = self.plugins.read().expect("registry lock");
        all.values()
            .flat_map(|v| v.values().map(|e| e.plugin.clone()))
            .collect()
    }

    /// Forget `name@version`; returns it if it was loaded.
    pub fn remove(&self, name: &str, version: &Version) -> Option<Arc<LoadedPlugin>> {
        let mut all = self.plugins.write().expect("registry lock");
        let versions = all.get_mut(name)?;
        let removed = versions.remove(version);
        if versions.is_empty() {
            all.remove(name);
        }
        removed.map(|e| e.plugin)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_requirements() {
        let r: PluginRequirement = "kv-copy@^1.2".parse().unwrap();
        assert_eq!(r.name, "kv-copy");
        assert!(r.version.matches(&Version::new(1, 9, 0)));
        assert!(!r.version.matches(&Version::new(2, 0, 0)));
        let any: PluginRequirement = "kv-copy".parse().unwrap();
        assert!(any.version.matches(&Version::new(7, 0, 0)));
        assert!("kv copy@1".parse::<PluginRequirement>().is_err());
        assert!("kv-copy@not-semver".parse::<PluginRequirement>().is_err());
        assert!("@1".parse::<PluginRequirement>().is_err());
    }
}
