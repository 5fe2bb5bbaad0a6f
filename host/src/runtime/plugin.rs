//! A loaded plugin and the lifecycle calls on it. Every call gets a fresh `Store` from the
//! plugin's `InstancePre`, so nothing a call does (or breaks) survives into the next one.

use super::clock::WaitLimit;
use super::contract::{Handler, HandlerPre};
use super::error::{Call, PluginError, PluginFailure};
use super::events::{ForceStop, JobEvents};
use super::guest_output::GuestOutput;
use super::host_imports::{
    Access, CallState, ConnectorFailure, JobScope, LimitExceeded, StoreCorruption,
};
use super::sandbox::{CallLimiter, SandboxLimits, wasi_context};
use crate::connectors::Grants;
use crate::model;
use semver::Version;
use serde::Serialize;
use std::sync::Arc;
use std::time::Instant;
use wasmtime::component::ResourceTable;
use wasmtime::{Engine, Store, Trap, UpdateDeadline};

/// A plugin ready to run: compiled, linked, described.
pub struct LoadedPlugin {
    pub(crate) info: model::PluginInfo,
    pub(crate) version: Version,
    pub(crate) sha256: String,
    pub(crate) contract: Version,
    pub(crate) limits: SandboxLimits,
    pub(crate) pre: HandlerPre,
    pub(crate) engine: Engine,
    pub(crate) fuel_metering: bool,
    /// The trusted key that signed it, by the name the operator gave it.
    pub(crate) signed_by: Option<String>,
    /// The bindings it declares; `None` when it declares none (see [`super::declared`]).
    pub(crate) declared: Option<Vec<super::declared::DeclaredBinding>>,
}

/// What one job hands a call: its grants, where events go, the step's last checkpoint and the
/// force-stop flag.
#[derive(Clone)]
pub struct JobContext {
    pub grants: Grants,
    pub events: Arc<dyn JobEvents>,
    pub checkpoint: Option<Vec<u8>>,
    pub force_stop: ForceStop,
    /// A tighter deadline for this call than the plugin's own `call_timeout`.
    pub call_timeout: Option<std::time::Duration>,
}

/// A plugin's public description, as the registry and the API show it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PluginSummary {
    pub name: String,
    pub version: String,
    pub kinds: Vec<String>,
    pub description: String,
    pub sha256: String,
    pub contract_version: String,
    pub limits: SandboxLimits,
    /// The trusted key that signed it (the name in `trusted_keys`); absent when unsigned.
    pub signed_by: Option<String>,
    /// The bindings it declares it needs, to grant before running it; absent when it declares
    /// none (then any binding may be granted).
    pub bindings: Option<Vec<super::declared::DeclaredBinding>>,
}

/// The result of a call that ran to its end: the handler's own answer, which may be an error.
pub type HandlerResult<T> = Result<T, model::MigrationError>;

/// Whether what a call returned is a success, which commits its connector transactions.
pub(crate) trait CallOutcome {
    fn succeeded(&self) -> bool;
}

impl<T, E> CallOutcome for Result<T, E> {
    fn succeeded(&self) -> bool {
        self.is_ok()
    }
}

impl CallOutcome for () {
    fn succeeded(&self) -> bool {
        true
    }
}

impl CallOutcome for model::PluginInfo {
    fn succeeded(&self) -> bool {
        true
    }
}

/// Raised from the epoch callback; turned into [`PluginFailure::Deadline`] or `ForceStopped`.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Interrupted {
    #[error("deadline reached")]
    Deadline,
    #[error("force-stopped")]
    ForceStopped,
}

impl std::fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPlugin")
            .field("plugin", &self.label())
            .field("sha256", &self.sha256)
            .finish()
    }
}

impl LoadedPlugin {
    pub fn info(&self) -> &model::PluginInfo {
        &self.info
    }
    pub fn name(&self) -> &str {
        &self.info.name
    }
    pub fn version(&self) -> &Version {
        &self.version
    }
    pub fn sha256(&self) -> &str {
        &self.sha256
    }
    pub fn contract_version(&self) -> &Version {
        &self.contract
    }
    pub fn limits(&self) -> &SandboxLimits {
        &self.limits
    }
    /// `name@version`, the way errors and logs name a plugin.
    pub fn label(&self) -> String {
        format!("{}@{}", self.info.name, self.version)
    }

    pub fn summary(&self) -> PluginSummary {
        PluginSummary {
            name: self.info.name.clone(),
            version: self.version.to_string(),
            kinds: self.info.kinds.clone(),
            description: self.info.description.clone(),
            sha256: self.sha256.clone(),
            contract_version: self.contract.to_string(),
            limits: self.limits.clone(),
            signed_by: self.signed_by.clone(),
            bindings: self.declared.clone(),
        }
    }

    /// The bindings it declares; `None` when it declares none.
    pub fn declared_bindings(&self) -> Option<&[super::declared::DeclaredBinding]> {
        self.declared.as_deref()
    }

    /// Hold what a call returned to the bounds of [`super::bounds`]: texts are cut, and a
    /// value the host cannot keep (a plan too large) fails the call as `limit-exceeded`.
    fn bounded<T>(
        &self,
        call: Call,
        result: Result<HandlerResult<T>, PluginError>,
        check: impl FnOnce(&mut T) -> Result<(), String>,
    ) -> Result<HandlerResult<T>, PluginError> {
        match result {
            Ok(Ok(mut value)) => match check(&mut value) {
                Ok(()) => Ok(Ok(value)),
                Err(message) => {
                    crate::metrics::get()
                        .kills
                        .with_label_values(&["limit-exceeded"])
                        .inc();
                    Err(PluginError {
                        plugin: self.label(),
                        call,
                        cause: PluginFailure::LimitExceeded { message },
                    })
                }
            },
            Ok(Err(mut e)) => {
                super::bounds::error(&mut e);
                Ok(Err(e))
            }
            Err(e) => Err(e),
        }
    }

    /// Ask the plugin to plan `spec`. Read-only.
    pub fn plan(
        &self,
        job: &JobContext,
        spec: &model::MigrationSpec,
    ) -> Result<HandlerResult<model::Plan>, PluginError> {
        let result = self.call(Call::Plan, Some(job), Access::ReadOnly, |store, h| {
            h.plan(store, spec)
        });
        self.bounded(Call::Plan, result, super::bounds::plan)
    }

    /// Dry-run `plan`. Read-only.
    pub fn validate(
        &self,
        job: &JobContext,
        spec: &model::MigrationSpec,
        plan: &model::Plan,
    ) -> Result<HandlerResult<model::ValidationReport>, PluginError> {
        let result = self.call(Call::Validate, Some(job), Access::ReadOnly, |store, h| {
            h.validate(store, spec, plan)
        });
        self.bounded(Call::Validate, result, |r| {
            super::bounds::report(r);
            Ok(())
        })
    }

    /// Run one step, continuing from `job.checkpoint`; `objects` names the only objects to
    /// touch when the operator retries a step's failed objects (contract 0.2 only).
    pub fn execute(
        &self,
        job: &JobContext,
        spec: &model::MigrationSpec,
        step: &model::PlanStep,
        objects: Option<&[String]>,
    ) -> Result<HandlerResult<model::StepReport>, PluginError> {
        let checkpoint = job.checkpoint.clone();
        let result = self.call(
            Call::Execute(step.id.clone()),
            Some(job),
            Access::ReadWrite,
            |store, h| h.execute(store, spec, step, checkpoint.as_deref(), objects),
        );
        self.bounded(Call::Execute(step.id.clone()), result, |r| {
            super::bounds::step_report(r);
            Ok(())
        })
    }

    /// Undo one step.
    pub fn rollback(
        &self,
        job: &JobContext,
        spec: &model::MigrationSpec,
        step: &model::PlanStep,
    ) -> Result<HandlerResult<model::StepReport>, PluginError> {
        let result = self.call(
            Call::Rollback(step.id.clone()),
            Some(job),
            Access::ReadWrite,
            |store, h| h.rollback(store, spec, step),
        );
        self.bounded(Call::Rollback(step.id.clone()), result, |r| {
            super::bounds::step_report(r);
            Ok(())
        })
    }

    /// Benchmark hook: make a store and instantiate, calling nothing.
    #[doc(hidden)]
    pub fn bench_instantiate(&self) -> Result<(), PluginError> {
        self.call(Call::Describe, None, Access::ReadOnly, |_, _| Ok(()))
    }

    /// Benchmark hook: instantiate once, then call `execute` of `step` `times` times on that one
    /// instance. The lifecycle itself never reuses an instance; this isolates the call cost.
    #[doc(hidden)]
    pub fn bench_execute_repeatedly(
        &self,
        job: &JobContext,
        spec: &model::MigrationSpec,
        step: &model::PlanStep,
        times: u32,
    ) -> Result<(), PluginError> {
        self.call(
            Call::Execute(step.id.clone()),
            Some(job),
            Access::ReadWrite,
            |store, h| {
                for _ in 0..times {
                    let _ = h.execute(&mut *store, spec, step, None, None)?;
                }
                Ok(())
            },
        )
    }

    /// Ask the plugin who it is (no job, no connectors).
    pub(crate) fn describe_with(target: &CallTarget<'_>) -> Result<model::PluginInfo, PluginError> {
        target.run(Call::Describe, None, Access::ReadOnly, |store, h| {
            h.describe(store)
        })
    }

    fn call<R: CallOutcome>(
        &self,
        call: Call,
        job: Option<&JobContext>,
        access: Access,
        f: impl FnOnce(&mut Store<CallState>, &Handler) -> wasmtime::Result<R>,
    ) -> Result<R, PluginError> {
        let label = self.label();
        let target = CallTarget {
            pre: &self.pre,
            engine: &self.engine,
            limits: &self.limits,
            fuel_metering: self.fuel_metering,
            label: &label,
        };
        target.run(call, job, access, f)
    }
}

/// What a call runs against: a plugin's linked component, its limits and its name.
#[derive(Clone, Copy)]
pub(crate) struct CallTarget<'a> {
    pub pre: &'a HandlerPre,
    pub engine: &'a Engine,
    pub limits: &'a SandboxLimits,
    pub fuel_metering: bool,
    pub label: &'a str,
}

impl CallTarget<'_> {
    /// [`CallTarget::run_uncounted`], counted in the runtime's call statistics.
    fn run<R: CallOutcome>(
        &self,
        call: Call,
        job: Option<&JobContext>,
        access: Access,
        f: impl FnOnce(&mut Store<CallState>, &Handler) -> wasmtime::Result<R>,
    ) -> Result<R, PluginError> {
        let started = Instant::now();
        let result = self.run_uncounted(call, job, access, f);
        super::stats::record_call(started.elapsed(), result.as_ref().err().map(|e| &e.cause));
        result
    }

    /// Make a store, instantiate, call `f`, and turn whatever went wrong into a
    /// [`PluginError`].
    fn run_uncounted<R: CallOutcome>(
        &self,
        call: Call,
        job: Option<&JobContext>,
        access: Access,
        f: impl FnOnce(&mut Store<CallState>, &Handler) -> wasmtime::Result<R>,
    ) -> Result<R, PluginError> {
        let CallTarget {
            pre,
            engine,
            limits,
            fuel_metering,
            label,
        } = *self;
        let fail = |cause| PluginError {
            plugin: label.to_string(),
            call: call.clone(),
            cause,
        };
        let mut limits = limits.clone();
        if let Some(t) = job.and_then(|j| j.call_timeout) {
            limits.call_timeout = limits.call_timeout.min(t);
        }
        let limits = &limits;
        let output = GuestOutput::to_log(job.map(|j| j.events.clone()));
        let deadline = Instant::now() + limits.call_timeout;
        let force_stop = job.map(|j| j.force_stop.clone()).unwrap_or_default();
        let state = CallState {
            wasi: wasi_context(&output),
            table: ResourceTable::new(),
            limiter: CallLimiter::new(limits),
            output,
            access,
            job: job.map(|j| JobScope {
                grants: j.grants.clone(),
                events: j.events.clone(),
                checkpoint: j.checkpoint.clone(),
                may_checkpoint: matches!(call, Call::Execute(_)),
            }),
            denied_writes: vec![],
            wait_limit: WaitLimit {
                deadline,
                force_stop: force_stop.clone(),
            },
            sql: Default::default(),
        };
        let mut store = Store::new(engine, state);
        store.limiter(|s| &mut s.limiter);

        // The epoch ticks every few milliseconds; at each tick past the first this callback decides
        // whether the call may go on. That gives both the wall-clock deadline and a force stop.
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            if force_stop.is_triggered() {
                return Err(Interrupted::ForceStopped.into());
            }
            if Instant::now() >= deadline {
                return Err(Interrupted::Deadline.into());
            }
            Ok(UpdateDeadline::Continue(1))
        });
        if fuel_metering {
            store
                .set_fuel(limits.fuel.unwrap_or(u64::MAX))
                .map_err(|e| {
                    fail(PluginFailure::Instantiate {
                        message: format!("{e:#}"),
                    })
                })?;
        }

        let instance = match pre.instantiate(&mut store) {
            Ok(i) => i,
            Err(e) => {
                store.data().output.finish();
                let cause = classify(&e, &store, limits);
                let cause = match cause {
                    PluginFailure::Trap { message, .. } => PluginFailure::Instantiate { message },
                    other => other,
                };
                return Err(fail(cause));
            }
        };
        let outcome = f(&mut store, &instance);
        store.data().output.finish();
        // Connector transactions end with the call: committed only if it succeeded.
        let succeeded = matches!(&outcome, Ok(r) if r.succeeded());
        let commit = access == Access::ReadWrite && succeeded;
        let finished = store.data_mut().finish_transactions(commit, succeeded);
        let state = store.data();
        if !state.denied_writes.is_empty() {
            return Err(fail(PluginFailure::WriteDenied {
                attempts: state.denied_writes.len(),
                first: state.denied_writes[0].clone(),
            }));
        }
        let value = outcome.map_err(|e| fail(classify(&e, &store, limits)))?;
        finished.map_err(|e| fail(PluginFailure::Connector { message: e.0 }))?;
        Ok(value)
    }
}

/// A Python guest (componentize-py) that lets an exception escape prints its traceback, then
/// traps with "Python function threw an unexpected exception": the operator needs the
/// exception (its type and message first), not the runtime's panic.
fn uncaught_python_exception(stderr: &str) -> Option<String> {
    const START: &str = "Traceback (most recent call last):";
    let at = stderr.rfind(START)?;
    let traceback = &stderr[at..];
    let traceback = traceback
        .find("\nthread '")
        .map_or(traceback, |end| &traceback[..end])
        .trim_end();
    let exception = traceback
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())?
        .trim();
    Some(format!(
        "uncaught Python exception {exception}\n{traceback}"
    ))
}

/// How many times one function appears on the guest's stack at a trap that is to be read
/// as a stack overflow (a guest's own stack is 1 MiB: a few hundred frames of a few KiB).
const DEEP_RECURSION: usize = 16;

/// The most frames any one function has on the guest's stack when `err` trapped.
fn recursion_depth(err: &wasmtime::Error) -> usize {
    let Some(trace) = err.downcast_ref::<wasmtime::WasmBacktrace>() else {
        return 0;
    };
    let mut counts = std::collections::HashMap::new();
    for frame in trace.frames() {
        *counts.entry(frame.func_index()).or_insert(0usize) += 1;
    }
    counts.into_values().max().unwrap_or(0)
}

/// The guest function that made the failing host call, when the component keeps names.
fn calling_function(err: &wasmtime::Error) -> Option<String> {
    let trace = err.downcast_ref::<wasmtime::WasmBacktrace>()?;
    trace
        .frames()
        .iter()
        .find_map(|f| f.func_name().map(str::to_string))
}

/// Name the cause of a failed call from the error and what the store saw.
fn classify(
    err: &wasmtime::Error,
    store: &Store<CallState>,
    limits: &SandboxLimits,
) -> PluginFailure {
    let state = store.data();
    if let Some(i) = err.downcast_ref::<Interrupted>() {
        return match i {
            Interrupted::Deadline => PluginFailure::Deadline {
                limit: limits.call_timeout,
            },
            Interrupted::ForceStopped => PluginFailure::ForceStopped,
        };
    }
    if let Some(ConnectorFailure(message)) = err.downcast_ref::<ConnectorFailure>() {
        return PluginFailure::Connector {
            message: message.clone(),
        };
    }
    if let Some(StoreCorruption(message)) = err.downcast_ref::<StoreCorruption>() {
        return PluginFailure::DataCorruption {
            message: message.clone(),
        };
    }
    if let Some(LimitExceeded(message)) = err.downcast_ref::<LimitExceeded>() {
        return PluginFailure::LimitExceeded {
            message: message.clone(),
        };
    }
    if let Some(exit) = err.downcast_ref::<wasmtime_wasi::I32Exit>() {
        return PluginFailure::Exited { code: exit.0 };
    }
    let stderr = state.output.stderr_text();
    let trap = err.downcast_ref::<Trap>();
    if format!("{err:#}").contains("fuel allocated for hostcalls has been exhausted") {
        return PluginFailure::LimitExceeded {
            message: format!(
                "a call to the host carried more data than one host call may ({} bytes){}",
                store.hostcall_fuel(),
                calling_function(err)
                    .map(|f| format!("; it was called from {f}"))
                    .unwrap_or_default()
            ),
        };
    }
    match trap {
        Some(Trap::StackOverflow) => return PluginFailure::StackOverflow,
        // A guest whose stack in linear memory runs out writes below it: that is an
        // out-of-bounds access, deep in a recursion.
        Some(Trap::MemoryOutOfBounds) if recursion_depth(err) >= DEEP_RECURSION => {
            return PluginFailure::StackOverflow;
        }
        Some(Trap::OutOfFuel) => {
            return PluginFailure::OutOfFuel {
                fuel: limits.fuel.unwrap_or(u64::MAX),
            };
        }
        Some(Trap::Interrupt) => {
            return PluginFailure::Deadline {
                limit: limits.call_timeout,
            };
        }
        _ => {}
    }
    if state.limiter.memory_denied {
        return PluginFailure::OutOfMemory {
            limit_bytes: limits.memory_bytes,
            stderr,
        };
    }
    if let Some(message) = uncaught_python_exception(&stderr) {
        return PluginFailure::Panic { message };
    }
    if let Some(at) = stderr.find("panicked at") {
        return PluginFailure::Panic {
            message: stderr[at..].to_string(),
        };
    }
    let message = match trap {
        Some(t) => t.to_string(),
        None => format!("{err:#}"),
    };
    PluginFailure::Trap { message, stderr }
}

#[cfg(test)]
mod python_tests {
    #[test]
    fn an_uncaught_python_exception_is_named_before_its_traceback() {
        let stderr = "noise\nTraceback (most recent call last):\n  File \"/0/app.py\", line 10, in plan\nZeroDivisionError: division by zero\n\nthread '<unnamed>' (1) panicked at runtime/src/lib.rs:1293:29:\nPython function threw an unexpected exception";
        let message = super::uncaught_python_exception(stderr).unwrap();
        assert!(
            message.starts_with(
                "uncaught Python exception ZeroDivisionError: division by zero\nTraceback"
            ),
            "{message}"
        );
        assert!(message.contains("app.py\", line 10, in plan"));
        assert!(!message.contains("panicked"));
        assert_eq!(super::uncaught_python_exception("panicked at x"), None);
    }
}
