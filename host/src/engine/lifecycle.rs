//! What operators ask of jobs: create (plan), validate (dry run), replan, execute, approve,
//! pause, resume, cancel, retry, roll back and delete. Each checks the state machine, commits
//! its change with an audit event, and starts or stops background work.

use super::handle::{JobHandle, RunControl, StopReason, move_to};
use super::job::{
    self, ApprovalRecord, DryRunRecord, EventBody, JobRecord, JobSnapshot, StepState,
};
use super::options::JobOptions;
use super::state::{Action, JobStatus, StepStatus};
use super::{CollectedLogs, Engine, EngineError, dag, error_kind_of, executor};
use crate::model::truncated;
use crate::model::{MigrationOptions, MigrationSpec, Plan};
use crate::runtime::{JobContext, LoadedPlugin};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A request to create a migration.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewMigration {
    /// Plugin requirement, e.g. `kv-copy@^1`.
    #[schema(min_length = 1, max_length = 200, pattern = "^[A-Za-z0-9_-]+(@.+)?$")]
    pub handler: String,
    /// Job kind; defaults to the handler's first kind.
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default = "empty_object")]
    pub parameters: serde_json::Value,
    #[serde(default = "empty_object")]
    pub source: serde_json::Value,
    #[serde(default = "empty_object")]
    pub target: serde_json::Value,
    /// Binding name (what the plugin opens) to host connection name.
    #[serde(default)]
    pub grants: BTreeMap<String, String>,
    /// Overrides of the host's default job options.
    #[serde(default)]
    pub options: serde_json::Value,
}

fn empty_object() -> serde_json::Value {
    serde_json::json!({})
}

/// Bounds of what a request may store, so that everything stored can be read back (the
/// JSON reader nests at most 128 levels; a record wraps parameters in a few levels of its own).
pub const MAX_JSON_DEPTH: usize = 32;
/// The most bytes the parameters, source and target of one job may take, together.
pub const MAX_SPEC_BYTES: usize = 1 << 20;
/// The most grants one job may have.
pub const MAX_GRANTS: usize = 64;

/// How deep `v` nests (a scalar is 0).
fn json_depth(v: &serde_json::Value) -> usize {
    match v {
        serde_json::Value::Array(a) => 1 + a.iter().map(json_depth).max().unwrap_or(0),
        serde_json::Value::Object(o) => 1 + o.values().map(json_depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// Refuse a request whose stored form would be too large or too deep to read back.
fn check_request(request: &NewMigration) -> Result<(), EngineError> {
    let invalid = |m: String| Err(EngineError::InvalidRequest(m));
    if request.handler.len() > 200 {
        return invalid("handler must be at most 200 characters".into());
    }
    if request.kind.as_ref().is_some_and(|k| k.len() > 64) {
        return invalid("kind must be at most 64 characters".into());
    }
    let mut bytes = 0;
    for (name, value) in [
        ("parameters", &request.parameters),
        ("source", &request.source),
        ("target", &request.target),
        ("options", &request.options),
    ] {
        let depth = json_depth(value);
        if depth > MAX_JSON_DEPTH {
            return invalid(format!(
                "{name} nests {depth} levels deep; at most {MAX_JSON_DEPTH} are allowed"
            ));
        }
        bytes += serde_json::to_vec(value).map(|v| v.len()).unwrap_or(0);
    }
    if bytes > MAX_SPEC_BYTES {
        return invalid(format!(
            "parameters, source, target and options take {bytes} bytes; at most {MAX_SPEC_BYTES} are allowed"
        ));
    }
    if request.grants.len() > MAX_GRANTS {
        return invalid(format!("at most {MAX_GRANTS} grants are allowed"));
    }
    for (binding, connection) in &request.grants {
        let name_ok = |s: &str, max: usize| {
            !s.is_empty()
                && s.len() <= max
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        };
        if !name_ok(binding, 64) {
            return invalid(format!(
                "binding name '{}' must be 1-64 letters, digits, '-', '_' or '.'",
                truncated(binding, 80)
            ));
        }
        if !name_ok(connection, 128) {
            return invalid(format!(
                "connection name '{}' must be 1-128 letters, digits, '-', '_' or '.'",
                truncated(connection, 80)
            ));
        }
    }
    Ok(())
}

/// A plugin that declares its bindings gets only those: granting another is refused.
fn check_declared(
    plugin: &LoadedPlugin,
    grants: &BTreeMap<String, String>,
) -> Result<(), EngineError> {
    let Some(declared) = plugin.declared_bindings() else {
        return Ok(());
    };
    let undeclared: Vec<&str> = grants
        .keys()
        .filter(|b| !declared.iter().any(|d| &d.name == *b))
        .map(String::as_str)
        .collect();
    if undeclared.is_empty() {
        return Ok(());
    }
    Err(EngineError::UndeclaredBinding(format!(
        "{} does not declare the binding{} {} (it declares: {})",
        plugin.label(),
        if undeclared.len() > 1 { "s" } else { "" },
        undeclared.join(", "),
        crate::runtime::declared::list(declared)
    )))
}

/// Whether a delete may drop what rollback needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteMode {
    /// Refuse to delete a job that changed data it could still undo.
    Safe,
    /// Delete anyway (the operator said so; the audit trail records it).
    Force,
}

/// The identity a dry run or an approval is bound to.
fn plan_hash(plan: &Plan) -> String {
    hex::encode(Sha256::digest(
        serde_json::to_vec(plan).expect("plans serialise"),
    ))
}

pub(super) fn audit(actor: &str, action: Action, outcome: impl Into<String>) -> EventBody {
    EventBody::Audit {
        actor: actor.to_string(),
        action: action.as_str().to_string(),
        outcome: outcome.into(),
    }
}

/// How long a request waits for a free `plan`/`validate` slot before it is refused.
const DRY_CALL_WAIT: Duration = Duration::from_secs(10);

impl Engine {
    /// At most `n` `plan`/`validate` calls run at once (the rest wait for a slot).
    pub fn set_concurrent_dry_calls(&self, n: usize) {
        self.inner.dry_calls.set_limit(n);
    }

    /// At most `n` object results per step; a step that records more stops.
    pub fn set_max_results_per_step(&self, n: u64) {
        self.inner
            .max_results_per_step
            .store(n, std::sync::atomic::Ordering::Relaxed);
    }

    fn resolve_plugin(&self, requirement: &str) -> Result<Arc<LoadedPlugin>, EngineError> {
        Ok(self
            .inner
            .registry
            .resolve_waiting(requirement, self.inner.plugin_wait())?)
    }

    fn plan_with(
        &self,
        plugin: &LoadedPlugin,
        id: &str,
        spec: &MigrationSpec,
        grants: &BTreeMap<String, String>,
    ) -> Result<(Plan, Vec<EventBody>), EngineError> {
        // `plan` may not write: its state bucket needs no fence.
        let grants = self
            .inner
            .connect_grants(id, grants, None, plugin)
            .map_err(EngineError::InvalidRequest)?;
        let logs = Arc::new(CollectedLogs::default());
        let ctx = JobContext {
            grants,
            events: logs.clone(),
            checkpoint: None,
            force_stop: Default::default(),
            call_timeout: None,
        };
        let permit = self.inner.dry_calls.acquire(DRY_CALL_WAIT).ok_or_else(|| {
            EngineError::Busy(format!(
                "{} plan and dry-run calls are running already; try again shortly",
                self.inner.dry_calls.limit()
            ))
        })?;
        let plan = plugin.plan(&ctx, spec)?.map_err(EngineError::Handler)?;
        drop(permit);
        dag::topological_order(&plan)?;
        drop(ctx);
        let logs = Arc::try_unwrap(logs)
            .map(CollectedLogs::into_events)
            .unwrap_or_default();
        Ok((plan, logs))
    }

    /// Create a migration: resolve the handler, ask it for a plan, store the job as `planned`.
    /// This calls the plugin; call it off async threads.
    pub fn create(&self, request: NewMigration, actor: &str) -> Result<JobSnapshot, EngineError> {
        check_request(&request)?;
        let plugin = self.resolve_plugin(&request.handler)?;
        check_declared(&plugin, &request.grants)?;
        let kind = match request.kind {
            Some(k) if plugin.info().kinds.contains(&k) => k,
            Some(k) => {
                return Err(EngineError::InvalidRequest(format!(
                    "{} does not handle kind '{k}' (it handles: {})",
                    plugin.label(),
                    plugin.info().kinds.join(", ")
                )));
            }
            None => plugin.info().kinds[0].clone(),
        };
        if !request.parameters.is_object() {
            return Err(EngineError::InvalidRequest(
                "parameters must be a JSON object".into(),
            ));
        }
        let options = self
            .inner
            .defaults
            .with_overrides(&request.options)
            .map_err(EngineError::InvalidRequest)?;
        let id = uuid::Uuid::new_v4().to_string();
        let spec = MigrationSpec {
            id: id.clone(),
            kind,
            parameters: request.parameters,
            source: request.source,
            target: request.target,
            bindings: request.grants.keys().cloned().collect(),
            options: handler_options(&options),
        };
        let (plan, logs) = self.plan_with(&plugin, &id, &spec, &request.grants)?;
        let now = Utc::now();
        let record = JobRecord {
            id: id.clone(),
            created_at: now,
            updated_at: now,
            created_by: actor.to_string(),
            handler: request.handler,
            plugin: job::PluginRef {
                name: plugin.name().into(),
                version: plugin.version().to_string(),
                sha256: plugin.sha256().into(),
            },
            spec,
            grants: request.grants,
            options,
            plan_hash: plan_hash(&plan),
            steps: new_step_states(&plan),
            plan,
            status: JobStatus::Planned,
            dry_run: None,
            approval: None,
            started_at: None,
            ended_at: None,
            executing_ms_before: 0,
            run_started_at: None,
            errors: vec![],
            warnings: vec![],
            counts: Default::default(),
            current_step: None,
            current_object: None,
            next_seq: 1,
            logs_kept: 0,
            logs_dropped: 0,
            object_index: 0,
            audit: vec![],
        };
        let handle = JobHandle::new(record, self.inner.store.clone(), self.inner.changes.clone());
        // A new job's lease is this node's, for its first commit.
        let _lease = match handle.hold(&self.inner.ownership(), false)? {
            super::ownership::Hold::Held(guard) => guard,
            super::ownership::Hold::Elsewhere(owner) => {
                return Err(EngineError::Unreachable(format!(
                    "node {owner} holds the lease of the new migration {id}"
                )));
            }
        };
        let steps = handle.lock().plan.steps.len();
        handle.update(|rec| {
            let mut events = vec![EventBody::State {
                from: None,
                to: JobStatus::Planned,
                reason: format!("planned {steps} steps"),
            }];
            events.extend(logs);
            events.push(EventBody::Audit {
                actor: actor.to_string(),
                action: "create".into(),
                outcome: format!("plan {}", &rec.plan_hash[..12]),
            });
            (events, ())
        })?;
        self.inner.jobs.insert(&handle);
        Ok(job::snapshot(&handle.record(), Utc::now()))
    }

    /// Run a dry run in the background: `validating`, then back to `planned` (or
    /// `awaiting-approval`) with the report stored and bound to this plan and plugin. A cancel
    /// meanwhile stops the call and cancels the job.
    pub fn validate(&self, id: &str, actor: &str) -> Result<JobSnapshot, EngineError> {
        let (handle, lease) = self.owned(id)?;
        let pinned = {
            let rec = handle.lock();
            self.check(&rec, Action::Validate)?;
            rec.plugin.clone()
        };
        // Looked up without the job's lock: it may wait for a plugin still loading.
        let plugin = self
            .inner
            .plugin_by_sha256(&pinned.sha256, true)
            .ok_or_else(|| {
                self.inner.plugin_still_loading(&pinned).unwrap_or_else(|| {
                    EngineError::Refused(format!(
                        "plugin {}@{} is no longer loaded",
                        pinned.name, pinned.version
                    ))
                })
            })?;
        let control = Arc::new(RunControl::bounded_by(handle.lease_clock()));
        let back_to = handle.update(|rec| {
            if let Err(e) = self.check(rec, Action::Validate) {
                return (vec![], Err(e));
            }
            let back = rec.status;
            (
                vec![
                    move_to(rec, JobStatus::Validating, "dry run requested"),
                    audit(actor, Action::Validate, "started"),
                ],
                Ok(back),
            )
        })??;
        *handle.run.lock().expect("run lock") = Some(control.clone());
        let inner = self.inner.clone();
        let engine = self.clone();
        let actor = actor.to_string();
        let h = handle.clone();
        let lease = lease.share();
        std::thread::spawn(move || {
            let _lease = lease;
            let record = h.record();
            let logs = Arc::new(CollectedLogs::watching(control.clone()));
            let result = inner
                .grants_for(&h, &plugin)
                .map_err(EngineError::InvalidRequest)
                .and_then(|grants| {
                    let ctx = JobContext {
                        grants,
                        events: logs.clone(),
                        checkpoint: None,
                        force_stop: control.force.clone(),
                        call_timeout: None,
                    };
                    let _permit = loop {
                        if let Some(p) = inner.dry_calls.acquire(Duration::from_millis(200)) {
                            break p;
                        }
                        if control.is_stopping() {
                            return Err(EngineError::Refused("cancelled while waiting".into()));
                        }
                    };
                    plugin
                        .validate(&ctx, &record.spec, &record.plan)?
                        .map_err(EngineError::Handler)
                });
            let logs = Arc::try_unwrap(logs)
                .map(CollectedLogs::into_events)
                .unwrap_or_default();
            if control.is_handing_off() {
                // The node that takes the job over finds it validating and plans it again.
                control.finish();
                return;
            }
            let cancelled = control.stop_reason() == Some(StopReason::Cancel);
            let _ = h.update(|rec| {
                let mut events = logs;
                if cancelled {
                    rec.ended_at = Some(Utc::now());
                    events.push(move_to(
                        rec,
                        JobStatus::Cancelled,
                        "cancelled by request during the dry run",
                    ));
                    return (events, ());
                }
                engine.record_dry_run(rec, result, &actor, back_to, &mut events);
                (events, ())
            });
            control.finish();
            if cancelled {
                inner.job_settled(&h);
            }
        });
        Ok(job::snapshot(&handle.record(), Utc::now()))
    }

    /// Store a dry run's outcome on `rec` and move it back to `back_to`.
    fn record_dry_run(
        &self,
        rec: &mut JobRecord,
        result: Result<crate::model::ValidationReport, EngineError>,
        actor: &str,
        back_to: JobStatus,
        events: &mut Vec<EventBody>,
    ) {
        match result {
            Ok(report) => {
                let passed = report.passed(rec.options.validation_level);
                events.push(EventBody::DryRun {
                    passed,
                    findings: report.findings.len(),
                });
                rec.dry_run = Some(DryRunRecord {
                    plan_hash: rec.plan_hash.clone(),
                    plugin_sha256: rec.plugin.sha256.clone(),
                    passed,
                    report,
                    at: Utc::now(),
                    by: actor.to_string(),
                });
                let verdict = if passed {
                    "the dry run passed"
                } else {
                    "the dry run found blocking problems"
                };
                events.push(move_to(rec, back_to, verdict));
            }
            Err(e) => {
                let message = e.to_string();
                rec.errors.push(job::JobError {
                    at: Utc::now(),
                    step: None,
                    phase: "validate".into(),
                    kind: error_kind_of(&e),
                    recovery: vec![],
                    message: message.clone(),
                });
                rec.dry_run = Some(DryRunRecord {
                    plan_hash: rec.plan_hash.clone(),
                    plugin_sha256: rec.plugin.sha256.clone(),
                    passed: false,
                    report: Default::default(),
                    at: Utc::now(),
                    by: actor.to_string(),
                });
                events.push(EventBody::DryRun {
                    passed: false,
                    findings: 0,
                });
                events.push(EventBody::Log {
                    level: crate::model::LogLevel::Error,
                    source: job::LogSource::Host,
                    step: None,
                    message: format!("the dry run failed: {message}"),
                });
                events.push(move_to(
                    rec,
                    back_to,
                    format!("the dry run failed: {message}"),
                ));
            }
        }
    }

    /// Ask the plugin for a new plan (the data or the loaded plugin changed). Approvals and
    /// dry runs of the old plan no longer apply.
    pub fn replan(&self, id: &str, actor: &str) -> Result<JobSnapshot, EngineError> {
        let (handle, _lease) = self.owned(id)?;
        let record = handle.record();
        self.check(&record, Action::Replan)?;
        let plugin = self.resolve_plugin(&record.handler)?;
        let (plan, logs) = self.plan_with(&plugin, id, &record.spec, &record.grants)?;
        handle.update(|rec| {
            if let Err(e) = self.check(rec, Action::Replan) {
                return (vec![], Err(e));
            }
            rec.plugin = job::PluginRef {
                name: plugin.name().into(),
                version: plugin.version().to_string(),
                sha256: plugin.sha256().into(),
            };
            rec.plan_hash = plan_hash(&plan);
            rec.steps = new_step_states(&plan);
            rec.plan = plan;
            let mut events = logs;
            if rec.status != JobStatus::Planned {
                events.push(move_to(rec, JobStatus::Planned, "re-planned"));
            }
            events.push(audit(
                actor,
                Action::Replan,
                format!("plan {}", &rec.plan_hash[..12]),
            ));
            (events, Ok(()))
        })??;
        self.snapshot(id)
    }

    /// Start executing, or wait for approval when the job requires it. Answers at once.
    pub fn execute(&self, id: &str, actor: &str) -> Result<JobSnapshot, EngineError> {
        let (handle, lease) = self.owned(id)?;
        let start = handle.update(|rec| {
            if let Err(e) = self
                .check(rec, Action::Execute)
                .and_then(|_| self.gates(rec))
            {
                return (vec![], Err(e));
            }
            if rec.options.approval_required && !approved(rec) {
                let events = vec![
                    move_to(
                        rec,
                        JobStatus::AwaitingApproval,
                        "this plan needs an approval before it runs",
                    ),
                    audit(actor, Action::Execute, "awaiting approval"),
                ];
                return (events, Ok(false));
            }
            (begin_execution(rec, actor, Action::Execute), Ok(true))
        })??;
        if start {
            executor::spawn_execution(&self.inner, &handle, lease.share());
        }
        self.snapshot(id)
    }

    /// Refusals that do not depend on the state: dry-run-only jobs and the dry-run gate.
    fn gates(&self, rec: &JobRecord) -> Result<(), EngineError> {
        if rec.options.dry_run {
            return Err(EngineError::Refused(format!(
                "migration {} is a dry-run job: it validates only and never executes",
                rec.id
            )));
        }
        if rec.options.dry_run_required {
            let same = |d: &DryRunRecord| {
                d.plan_hash == rec.plan_hash && d.plugin_sha256 == rec.plugin.sha256
            };
            match &rec.dry_run {
                Some(d) if same(d) && d.passed => {}
                Some(d) if same(d) => {
                    return Err(EngineError::Refused(format!(
                        "the dry run of plan {} did not pass; fix the problems and run it again",
                        &rec.plan_hash[..12]
                    )));
                }
                Some(_) => return Err(EngineError::Refused("the last dry run was of another plan or plugin; run a dry run of this plan first".into())),
                None => return Err(EngineError::Refused("this migration requires a passing dry run of its plan before it executes".into())),
            }
        }
        Ok(())
    }

    /// Approve the current plan. A job awaiting approval starts at once.
    pub fn approve(&self, id: &str, actor: &str) -> Result<JobSnapshot, EngineError> {
        let (handle, lease) = self.owned(id)?;
        let start = handle.update(|rec| {
            if let Err(e) = self.check(rec, Action::Approve) {
                return (vec![], Err(e));
            }
            rec.approval = Some(ApprovalRecord {
                plan_hash: rec.plan_hash.clone(),
                plugin_sha256: rec.plugin.sha256.clone(),
                at: Utc::now(),
                by: actor.to_string(),
            });
            let mut events = vec![audit(
                actor,
                Action::Approve,
                format!("plan {}", &rec.plan_hash[..12]),
            )];
            if rec.status == JobStatus::AwaitingApproval {
                if let Err(e) = self.gates(rec) {
                    return (events, Ok(Err(e)));
                }
                events.extend(begin_execution(rec, actor, Action::Approve));
                return (events, Ok(Ok(true)));
            }
            (events, Ok(Ok(false)))
        })??;
        match start {
            Ok(true) => executor::spawn_execution(&self.inner, &handle, lease.share()),
            Ok(false) => {}
            Err(e) => return Err(e),
        }
        self.snapshot(id)
    }

    /// Stop after the current batch; `resume` continues from the checkpoints.
    pub fn pause(&self, id: &str, actor: &str) -> Result<JobSnapshot, EngineError> {
        let (handle, _lease) = self.owned(id)?;
        handle.update(|rec| match self.check(rec, Action::Pause) {
            Ok(()) => (vec![audit(actor, Action::Pause, "requested")], Ok(())),
            Err(e) => (vec![], Err(e)),
        })??;
        self.request_stop(&handle, StopReason::Pause);
        self.snapshot(id)
    }

    pub fn resume(&self, id: &str, actor: &str) -> Result<JobSnapshot, EngineError> {
        let (handle, lease) = self.owned(id)?;
        self.wait_for_run_end(&handle);
        handle.update(|rec| {
            if let Err(e) = self.check(rec, Action::Resume) {
                return (vec![], Err(e));
            }
            rec.run_started_at = Some(Utc::now());
            let mut events = vec![move_to(rec, JobStatus::Executing, "resumed")];
            events.push(audit(actor, Action::Resume, "resumed"));
            (events, Ok(()))
        })??;
        executor::spawn_execution(&self.inner, &handle, lease.share());
        self.snapshot(id)
    }

    /// Cancel: a running job (executing, or validating) stops at its next safe point (the
    /// plugin sees `is-cancelled`), and by force after the job's grace period.
    pub fn cancel(&self, id: &str, actor: &str) -> Result<JobSnapshot, EngineError> {
        let (handle, _lease) = self.owned(id)?;
        let running = handle.update(|rec| {
            if let Err(e) = self.check(rec, Action::Cancel) {
                return (vec![], Err(e));
            }
            let mut events = vec![audit(actor, Action::Cancel, "requested")];
            if rec.status.is_running() {
                return (events, Ok(true));
            }
            rec.ended_at = Some(Utc::now());
            events.push(move_to(rec, JobStatus::Cancelled, "cancelled by request"));
            (events, Ok(false))
        })??;
        if running {
            self.request_stop(&handle, StopReason::Cancel);
        } else {
            self.inner.job_settled(&handle);
        }
        self.snapshot(id)
    }

    fn request_stop(&self, handle: &JobHandle, reason: StopReason) {
        let grace = Duration::from_secs(handle.lock().options.cancel_grace_secs);
        if let Some(run) = handle.run.lock().expect("run lock").as_ref() {
            run.request_stop(reason, grace);
        }
    }

    /// Wait for a run that is winding down (after pause or cancel) to hand the job back.
    pub(super) fn wait_for_run_end(&self, handle: &JobHandle) {
        let run: Option<Arc<RunControl>> = handle.run.lock().expect("run lock").clone();
        if let Some(run) = run {
            let started = Instant::now();
            while !run.is_finished() && started.elapsed() < Duration::from_secs(30) {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }

    /// Re-run a failed job's failed steps from their checkpoints.
    pub fn retry(&self, id: &str, actor: &str) -> Result<JobSnapshot, EngineError> {
        let (handle, lease) = self.owned(id)?;
        self.wait_for_run_end(&handle);
        handle.update(|rec| {
            if let Err(e) = self.check(rec, Action::Retry) {
                return (vec![], Err(e));
            }
            for s in rec
                .steps
                .iter_mut()
                .filter(|s| matches!(s.status, StepStatus::Failed | StepStatus::Running))
            {
                s.status = StepStatus::Interrupted;
                s.attempts = 0;
                s.error = None;
            }
            rec.ended_at = None;
            rec.run_started_at = Some(Utc::now());
            let events = vec![
                move_to(
                    rec,
                    JobStatus::Executing,
                    "retrying failed steps from their checkpoints",
                ),
                audit(actor, Action::Retry, "started"),
            ];
            (events, Ok(()))
        })??;
        executor::spawn_execution(&self.inner, &handle, lease.share());
        self.snapshot(id)
    }

    /// Roll back every step that changed data, in reverse dependency order, in the background.
    pub fn rollback(&self, id: &str, actor: &str) -> Result<JobSnapshot, EngineError> {
        let (handle, lease) = self.owned(id)?;
        self.wait_for_run_end(&handle);
        handle.update(|rec| {
            if let Err(e) = self.check(rec, Action::Rollback) {
                return (vec![], Err(e));
            }
            if !rec.rollback_available() {
                return (
                    vec![],
                    Err(EngineError::Refused(format!(
                        "migration {} changed nothing that can be rolled back",
                        rec.id
                    ))),
                );
            }
            for s in rec
                .steps
                .iter_mut()
                .filter(|s| s.status == StepStatus::RollbackFailed)
            {
                s.status = StepStatus::Failed;
            }
            rec.ended_at = None;
            let events = vec![
                move_to(rec, JobStatus::RollingBack, "rollback requested"),
                audit(actor, Action::Rollback, "started"),
            ];
            (events, Ok(()))
        })??;
        executor::spawn_rollback(&self.inner, &handle, lease.share());
        self.snapshot(id)
    }

    /// Forget a job that is not running, with its events, results and private state bucket.
    /// A job that changed data it could still undo (paused, failed, cancelled part way) keeps
    /// its rollback journal: deleting it is refused unless `mode` is [`DeleteMode::Force`].
    pub fn delete(&self, id: &str, actor: &str, mode: DeleteMode) -> Result<(), EngineError> {
        let (handle, _lease) = self.owned(id)?;
        handle.delete(|rec| {
            self.check(rec, Action::Delete)?;
            // A job that ran to its end (whole or partial) keeps nothing half-done.
            let partly_applied = rec.rollback_available()
                && !matches!(rec.status, JobStatus::Completed | JobStatus::Partial);
            if partly_applied && mode == DeleteMode::Safe {
                return Err(EngineError::RollbackWouldBeLost(format!(
                    "migration {} is {} with changes it can still roll back; deleting it drops its rollback journal. Roll it back first, or delete with force",
                    rec.id, rec.status
                )));
            }
            if partly_applied {
                tracing::warn!(job = %rec.id, by = actor, "deleted by force with a rollback journal");
            }
            Ok(())
        })
    }
}

fn approved(rec: &JobRecord) -> bool {
    rec.approval
        .as_ref()
        .is_some_and(|a| a.plan_hash == rec.plan_hash && a.plugin_sha256 == rec.plugin.sha256)
}

fn begin_execution(rec: &mut JobRecord, actor: &str, action: Action) -> Vec<EventBody> {
    rec.started_at.get_or_insert_with(Utc::now);
    rec.run_started_at = Some(Utc::now());
    vec![
        move_to(rec, JobStatus::Executing, "execution started"),
        audit(actor, action, "execution started"),
    ]
}

fn new_step_states(plan: &Plan) -> Vec<StepState> {
    plan.steps
        .iter()
        .map(|s| StepState {
            id: s.id.clone(),
            status: StepStatus::Pending,
            attempts: 0,
            checkpoint: None,
            started_at: None,
            ended_at: None,
            objects: 0,
            progress_done: 0,
            progress_total: s.expected_objects,
            summary: None,
            error: None,
            outcome: Default::default(),
            round_from: 0,
            retry: None,
        })
        .collect()
}

/// What a handler is told of the job's options.
pub(crate) fn handler_options(o: &JobOptions) -> MigrationOptions {
    MigrationOptions {
        dry_run: o.dry_run,
        validation_level: o.validation_level,
        batch_size: o.batch_size,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn requests_too_deep_or_too_large_to_read_back_are_refused() {
        let mut deep = json!(1);
        for _ in 0..40 {
            deep = json!([deep]);
        }
        let too_deep = NewMigration {
            handler: "x".into(),
            parameters: json!({ "a": deep }),
            ..Default::default()
        };
        let err = check_request(&too_deep).unwrap_err().to_string();
        assert!(err.contains("nests 41 levels"), "{err}");
        let big = NewMigration {
            handler: "x".into(),
            parameters: json!({ "a": "x".repeat(MAX_SPEC_BYTES) }),
            ..Default::default()
        };
        assert!(
            check_request(&big)
                .unwrap_err()
                .to_string()
                .contains("bytes")
        );
        let bad_binding = NewMigration {
            handler: "x".into(),
            grants: [("a/b".to_string(), "c".to_string())].into(),
            ..Default::default()
        };
        assert!(check_request(&bad_binding).is_err());
        let fine = NewMigration {
            handler: "kv-copy@^1".into(),
            parameters: json!({ "prefix": "a/" }),
            grants: [("source".to_string(), "sessions-old".to_string())].into(),
            ..Default::default()
        };
        check_request(&fine).unwrap();
    }
}
