//! The WIT contract as the host sees it: one module per contract line the host accepts, each
//! generating its bindings from its frozen `wit/vX.Y.Z/` folder. The newest line (`v0_2`)
//! converts to and from the host's own [`crate::model`]; an older one (`v0_1`) adapts to the
//! newest, exports and imports alike (the Zed extension host's pattern), so the engine and the
//! host imports know one contract. [`HandlerPre`] and [`Handler`] hide which line a plugin
//! speaks.

/// `From` between two enums whose cases have the same names, each case bare or carrying one
/// value (converted with `Into`): the bindings of two contract lines, or a binding and the
/// model. `same_cases!(A => B { X, Y(v) })`.
macro_rules! same_cases {
    ($from:ty => $to:ty { $($case:ident $(($value:ident))?),* $(,)? }) => {
        impl From<$from> for $to {
            fn from(v: $from) -> Self {
                type From_ = $from;
                type To_ = $to;
                match v {
                    $(From_::$case $(($value))? => To_::$case $(($value.into()))?,)*
                }
            }
        }
    };
}

pub mod v0_1;
pub mod v0_2;

use super::host_imports::CallState;
use super::plugin::HandlerResult;
use crate::model;
use semver::Version;
use wasmtime::component::{Component, InstancePre};
use wasmtime::{Engine, Store};

/// The interface every handler exports, without its version.
pub const HANDLER_INTERFACE: &str = "plover:migration/handler";

/// The newest contract version this host implements.
pub fn host_contract_version() -> Version {
    Version::new(0, 2, 0)
}

/// The newest version of each contract line the host runs, newest first.
pub fn host_contract_lines() -> [Version; 2] {
    [host_contract_version(), Version::new(0, 1, 1)]
}

/// The lines the host runs, for error messages: `plover:migration@0.2.0 and ...@0.1.1`.
pub fn host_contract_names() -> String {
    host_contract_lines()
        .iter()
        .map(|v| format!("plover:migration@{v}"))
        .collect::<Vec<_>>()
        .join(" and ")
}

/// Whether a plugin built against `plugin` can run on this host: one of the host's lines by
/// semver's caret rule (for 0.x the same minor), and no newer than the host's version of it.
pub fn is_compatible(plugin: &Version) -> bool {
    host_contract_lines().iter().any(|host| {
        let same_line = if host.major == 0 {
            plugin.major == 0 && plugin.minor == host.minor
        } else {
            plugin.major == host.major
        };
        same_line && plugin <= host
    })
}

/// A linked plugin of either contract line, ready to instantiate for each call.
pub enum HandlerPre {
    V0_1(v0_1::HandlerPluginPre<CallState>),
    V0_2(v0_2::HandlerPluginPre<CallState>),
}

/// One instance of a plugin, for one call.
pub enum Handler {
    V0_1(v0_1::HandlerPlugin),
    V0_2(v0_2::HandlerPlugin),
}

impl HandlerPre {
    /// Check that `pre` has the exports of `contract`'s line (which must be compatible).
    pub fn new(contract: &Version, pre: InstancePre<CallState>) -> wasmtime::Result<Self> {
        Ok(if contract.minor == 1 {
            HandlerPre::V0_1(v0_1::HandlerPluginPre::new(pre)?)
        } else {
            HandlerPre::V0_2(v0_2::HandlerPluginPre::new(pre)?)
        })
    }

    pub fn instantiate(&self, store: &mut Store<CallState>) -> wasmtime::Result<Handler> {
        Ok(match self {
            HandlerPre::V0_1(p) => Handler::V0_1(p.instantiate(store)?),
            HandlerPre::V0_2(p) => Handler::V0_2(p.instantiate(store)?),
        })
    }
}

/// A lifecycle call's answer in model terms.
type Answer<T> = wasmtime::Result<HandlerResult<T>>;

fn answer<W: Into<T>, T>(r: Result<W, v0_2::wit::MigrationError>) -> HandlerResult<T> {
    r.map(Into::into).map_err(Into::into)
}

impl Handler {
    pub fn describe(&self, store: &mut Store<CallState>) -> wasmtime::Result<model::PluginInfo> {
        Ok(match self {
            Handler::V0_1(h) => v0_1::describe(h, store)?,
            Handler::V0_2(h) => h.plover_migration_handler().call_describe(store)?,
        }
        .into())
    }

    pub fn plan(
        &self,
        store: &mut Store<CallState>,
        spec: &model::MigrationSpec,
    ) -> Answer<model::Plan> {
        let spec = v0_2::wit::MigrationSpec::from(spec);
        Ok(answer(match self {
            Handler::V0_1(h) => v0_1::plan(h, store, &spec)?,
            Handler::V0_2(h) => h.plover_migration_handler().call_plan(store, &spec)?,
        }))
    }

    pub fn validate(
        &self,
        store: &mut Store<CallState>,
        spec: &model::MigrationSpec,
        plan: &model::Plan,
    ) -> Answer<model::ValidationReport> {
        let spec = v0_2::wit::MigrationSpec::from(spec);
        let plan = v0_2::wit::MigrationPlan::from(plan);
        Ok(answer(match self {
            Handler::V0_1(h) => v0_1::validate(h, store, &spec, &plan)?,
            Handler::V0_2(h) => h
                .plover_migration_handler()
                .call_validate(store, &spec, &plan)?,
        }))
    }

    /// Run `step`; `objects` names the only objects to touch (a retry of failed objects).
    pub fn execute(
        &self,
        store: &mut Store<CallState>,
        spec: &model::MigrationSpec,
        step: &model::PlanStep,
        checkpoint: Option<&[u8]>,
        objects: Option<&[String]>,
    ) -> Answer<model::StepReport> {
        let spec = v0_2::wit::MigrationSpec::from(spec);
        let step = v0_2::wit::PlanStep::from(step);
        Ok(answer(match self {
            Handler::V0_1(h) => v0_1::execute(h, store, &spec, &step, checkpoint, objects)?,
            Handler::V0_2(h) => h
                .plover_migration_handler()
                .call_execute(store, &spec, &step, checkpoint, objects)?,
        }))
    }

    pub fn rollback(
        &self,
        store: &mut Store<CallState>,
        spec: &model::MigrationSpec,
        step: &model::PlanStep,
    ) -> Answer<model::StepReport> {
        let spec = v0_2::wit::MigrationSpec::from(spec);
        let step = v0_2::wit::PlanStep::from(step);
        Ok(answer(match self {
            Handler::V0_1(h) => v0_1::rollback(h, store, &spec, &step)?,
            Handler::V0_2(h) => h
                .plover_migration_handler()
                .call_rollback(store, &spec, &step)?,
        }))
    }
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
        assert!(is_compatible(&Version::new(0, 2, 0)));
        assert!(
            !is_compatible(&Version::new(0, 3, 0)),
            "0.3 would break 0.2"
        );
        assert!(!is_compatible(&Version::new(0, 2, 1)));
        assert!(!is_compatible(&Version::new(1, 0, 0)));
        assert!(!is_compatible(&Version::new(0, 0, 9)));
        assert!(
            !is_compatible(&Version::new(0, 1, 2)),
            "a newer patch than the host knows is refused"
        );
    }
}
