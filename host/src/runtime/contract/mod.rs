//! The WIT contract as the host sees it: one module per contract version the host accepts,
//! each generating its bindings from its frozen `wit/vX.Y.Z/` folder and converting to and
//! from the host's own [`crate::model`]. Today that is only the 0.1 line (0.1.0 and 0.1.1).

pub mod v0_1;

use semver::Version;
use wasmtime::Engine;
use wasmtime::component::Component;

/// The interface every handler exports, without its version.
pub const HANDLER_INTERFACE: &str = "plover:migration/handler";

/// The newest contract version this host implements.
pub fn host_contract_version() -> Version {
    Version::new(0, 1, 1)
}

/// Whether a plugin built against `plugin` can run on this host: the same major version, and
/// for 0.x the same minor (semver's caret rule), no newer than the host's.
pub fn is_compatible(plugin: &Version) -> bool {
    let host = host_contract_version();
    let same_line = if host.major == 0 {
        plugin.major == 0 && plugin.minor == host.minor
    } else {
        plugin.major == host.major
    };
    same_line && plugin <= &host
}

/// What a component says about the contract, read from its exports before instantiating.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContractExport {
    /// It exports `plover:migration/handler@<version>`.
    Handler(Version),
    /// It exports the handler interface with no version or an unparsable one.
    Unversioned(String),
    /// It exports no handler at all; these are the names it does export.
    Missing(Vec<String>),
}

pub fn exported_contract(engine: &Engine, component: &Component) -> ContractExport {
    let ty = component.component_type();
    let mut names = vec![];
    for (name, _) in ty.exports(engine) {
        if let Some(rest) = name.strip_prefix(HANDLER_INTERFACE) {
            return match rest.strip_prefix('@').map(Version::parse) {
                Some(Ok(v)) => ContractExport::Handler(v),
                _ => ContractExport::Unversioned(name.to_string()),
            };
        }
        names.push(name.to_string());
    }
    ContractExport::Missing(names)
}

/// The names of everything a component imports, for error messages.
pub fn imported_names(engine: &Engine, component: &Component) -> Vec<String> {
    component
        .component_type()
        .imports(engine)
        .map(|(name, _)| name.to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compatibility_follows_semver_caret_for_zero_major() {
        assert!(is_compatible(&Version::new(0, 1, 0)));
        assert!(is_compatible(&Version::new(0, 1, 1)));
        assert!(
            !is_compatible(&Version::new(0, 2, 0)),
            "0.2 is a breaking change from 0.1"
        );
        assert!(!is_compatible(&Version::new(1, 0, 0)));
        assert!(!is_compatible(&Version::new(0, 0, 9)));
        assert!(
            !is_compatible(&Version::new(0, 1, 2)),
            "a newer patch than the host knows is refused"
        );
    }
}
