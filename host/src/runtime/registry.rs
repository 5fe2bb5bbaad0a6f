//! Loaded plugins by name and version, resolved by semver requirement (`kv-copy@^1.2`).

use super::plugin::LoadedPlugin;
use semver::{Version, VersionReq};
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

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
    plugins: RwLock<BTreeMap<String, BTreeMap<Version, Arc<LoadedPlugin>>>>,
}

impl PluginRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a plugin. Loading the same bytes twice is a no-op; the same name and version with
    /// other bytes is refused.
    pub fn insert(&self, plugin: Arc<LoadedPlugin>) -> Result<Arc<LoadedPlugin>, RegistryError> {
        let mut all = self.plugins.write().expect("registry lock");
        let versions = all.entry(plugin.name().to_string()).or_default();
        if let Some(existing) = versions.get(plugin.version()) {
            if existing.sha256() == plugin.sha256() {
                return Ok(existing.clone());
            }
            return Err(RegistryError::VersionConflict {
                name: plugin.name().to_string(),
                version: plugin.version().to_string(),
                existing: existing.sha256().to_string(),
            });
        }
        versions.insert(plugin.version().clone(), plugin.clone());
        Ok(plugin)
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
            .map(|(_, p)| p.clone())
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

    pub fn by_sha256(&self, sha256: &str) -> Option<Arc<LoadedPlugin>> {
        let all = self.plugins.read().expect("registry lock");
        all.values()
            .flat_map(|v| v.values())
            .find(|p| p.sha256() == sha256)
            .cloned()
    }

    /// Every loaded plugin, by name then version.
    pub fn list(&self) -> Vec<Arc<LoadedPlugin>> {
        let all = self.plugins.read().expect("registry lock");
        all.values().flat_map(|v| v.values().cloned()).collect()
    }

    /// Forget `name@version`; returns it if it was loaded.
    pub fn remove(&self, name: &str, version: &Version) -> Option<Arc<LoadedPlugin>> {
        let mut all = self.plugins.write().expect("registry lock");
        let versions = all.get_mut(name)?;
        let removed = versions.remove(version);
        if versions.is_empty() {
            all.remove(name);
        }
        removed
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
