//! The migration engine: the controller that plans, dry-runs, gates, executes, pauses,
//! cancels, retries and rolls back jobs, recording everything durably and resuming after a
//! crash.
//!
//! Invariants:
//! - Every change to a job goes through [`handle::JobHandle::update`], which writes the record
//!   and its change-feed events in one atomic commit and only then shows them to readers.
//! - Only transitions allowed by [`state`] happen; an illegal request is refused with the
//!   job's current state and changes nothing.
//! - Approval and dry-run results are bound to the plan hash and the plugin's sha256.

pub mod dag;
mod executor;
pub mod handle;
pub mod job;
pub mod options;
pub mod state;
pub mod tracking;

use crate::connectors::{ConnectionProvider, Grants};
use crate::model::{LogLevel, MigrationError, MigrationOptions, MigrationSpec, ObjectResult, Plan};
use crate::runtime::{
    ForceStop, JobContext, LoadedPlugin, PluginError, PluginRegistry, RegistryError,
};
use crate::store::{JobStore, StoreError};
use chrono::{DateTime, Utc};
use handle::{JobHandle, RunControl, StateChange, StopReason, move_to};
use job::{
    ApprovalRecord, DryRunRecord, EventBody, FeedEvent, JobRecord, JobSnapshot, JobSummary,
    LogSource, StepState,
};
use options::JobOptions;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use state::{Action, JobStatus, StepStatus};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::broadcast;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("no migration with id '{0}'")]
    NotFound(String),
    #[error("cannot {action} migration {job}: it is {status}")]
    IllegalTransition {
        job: String,
        status: JobStatus,
        action: Action,
    },
    #[error("{0}")]
    InvalidRequest(String),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Plugin(#[from] PluginError),
    #[error("the handler refused: {0}")]
    Handler(MigrationError),
    #[error("the plan is not a valid step graph: {0}")]
    InvalidPlan(#[from] dag::PlanError),
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A request to create a migration.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewMigration {
    /// Plugin requirement, e.g. `kv-copy@^1`.
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

/// Filters and paging for [`Engine::list`].
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
pub struct ListFilter {
    pub status: Option<JobStatus>,
    /// Plugin name.
    pub handler: Option<String>,
    pub offset: Option<usize>,
    pub limit: Option<usize>,
}

/// A page of jobs, newest first.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct JobPage {
    pub items: Vec<JobSummary>,
    pub total: usize,
    pub offset: usize,
    pub limit: usize,
}

/// One kept log line.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LogLine {
    pub seq: u64,
    pub at: DateTime<Utc>,
    pub level: LogLevel,
    pub source: LogSource,
    pub step: Option<String>,
    pub message: String,
}

/// One object result with its position, the cursor for paging.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct IndexedObject {
    pub index: u64,
    pub step: String,
    pub at: DateTime<Utc>,
    #[serde(flatten)]
    pub result: ObjectResult,
}

/// Called with the final snapshot whenever a job settles in a final state.
pub type FinalHook = Box<dyn Fn(&JobSnapshot) + Send + Sync>;

pub(crate) struct Inner {
    registry: Arc<PluginRegistry>,
    store: Arc<dyn JobStore>,
    connections: Arc<dyn ConnectionProvider>,
    defaults: JobOptions,
    jobs: RwLock<BTreeMap<String, Arc<JobHandle>>>,
    changes: broadcast::Sender<StateChange>,
    final_hooks: Mutex<Vec<FinalHook>>,
}

impl Inner {
    fn grants_for(&self, record: &JobRecord) -> Result<Grants, String> {
        self.connect_grants(&record.id, &record.grants)
    }

    /// The connectors job `id` may use: each binding's named connection, and its state bucket.
    fn connect_grants(
        &self,
        id: &str,
        grants: &BTreeMap<String, String>,
    ) -> Result<Grants, String> {
        let mut connected = Grants::new(self.connections.job_state(id)?);
        for (binding, connection) in grants {
            let connector = self
                .connections
                .connect(connection)
                .map_err(|e| format!("grant '{binding}': {e}"))?;
            connected = connected.with(binding.clone(), connector);
        }
        Ok(connected)
    }

    /// A run ended: tell the final hooks if the job is now final.
    fn job_settled(&self, handle: &JobHandle) {
        let record = handle.record();
        if record.status.is_final() {
            let snap = job::snapshot(&record, Utc::now());
            for hook in self.final_hooks.lock().expect("hooks lock").iter() {
                hook(&snap);
            }
        }
    }
}

#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

/// Collects what a plugin reports during `plan` and `validate`, to append as host-side logs.
#[derive(Default)]
struct CollectedLogs(Mutex<Vec<(LogLevel, String)>>);

impl crate::runtime::JobEvents for CollectedLogs {
    fn log(&self, level: LogLevel, message: String) {
        self.0.lock().expect("logs lock").push((level, message));
    }
    fn progress(&self, _: u64, _: Option<u64>, _: Option<String>) {}
    fn objects(&self, _: Vec<ObjectResult>) {}
    fn checkpoint(&self, _: Vec<u8>) {}
    fn is_cancelled(&self) -> bool {
        false
    }
}

impl CollectedLogs {
    fn into_events(self) -> Vec<EventBody> {
        self.0
            .into_inner()
            .expect("logs lock")
            .into_iter()
            .map(|(level, message)| EventBody::Log {
                level,
                source: LogSource::Plugin,
                step: None,
                message,
            })
            .collect()
    }
}

/// The identity a dry run or an approval is bound to.
fn plan_hash(plan: &Plan) -> String {
    hex::encode(Sha256::digest(
        serde_json::to_vec(plan).expect("plans serialise"),
    ))
}

fn audit(actor: &str, action: Action, outcome: impl Into<String>) -> EventBody {
    EventBody::Audit {
        actor: actor.to_string(),
        action: action.as_str().to_string(),
        outcome: outcome.into(),
    }
}

impl Engine {
    /// Load every stored job. Nothing runs until [`Engine::recover`].
    pub fn open(
        registry: Arc<PluginRegistry>,
        store: Arc<dyn JobStore>,
        connections: Arc<dyn ConnectionProvider>,
        defaults: JobOptions,
    ) -> Result<Engine, EngineError> {
        defaults.check().map_err(EngineError::InvalidRequest)?;
        let (changes, _) = broadcast::channel(1024);
        let mut jobs = BTreeMap::new();
        for record in store.all()? {
            jobs.insert(
                record.id.clone(),
                JobHandle::new(record, store.clone(), changes.clone()),
            );
        }
        let inner = Inner {
            registry,
            store,
            connections,
            defaults,
            jobs: RwLock::new(jobs),
            changes,
            final_hooks: Mutex::new(vec![]),
        };
        Ok(Engine {
            inner: Arc::new(inner),
        })
    }

    pub fn registry(&self) -> &Arc<PluginRegistry> {
        &self.inner.registry
    }

    pub fn defaults(&self) -> &JobOptions {
        &self.inner.defaults
    }

    /// Call `hook` with the final snapshot of every job that settles from now on.
    pub fn on_final(&self, hook: FinalHook) {
        self.inner
            .final_hooks
            .lock()
            .expect("hooks lock")
            .push(hook);
    }

    /// Follow state changes of every job.
    pub fn subscribe_changes(&self) -> broadcast::Receiver<StateChange> {
        self.inner.changes.subscribe()
    }

    fn handle(&self, id: &str) -> Result<Arc<JobHandle>, EngineError> {
        self.inner
            .jobs
            .read()
            .expect("jobs lock")
            .get(id)
            .cloned()
            .ok_or_else(|| EngineError::NotFound(id.to_string()))
    }

    /// The job's handle, for live readers (SSE).
    pub fn job_handle(&self, id: &str) -> Result<Arc<JobHandle>, EngineError> {
        self.handle(id)
    }

    /// Resume what a crash or shutdown interrupted. Returns the ids of the jobs resumed.
    pub fn recover(&self) -> Vec<String> {
        let handles: Vec<Arc<JobHandle>> = self
            .inner
            .jobs
            .read()
            .expect("jobs lock")
            .values()
            .cloned()
            .collect();
        let mut resumed = vec![];
        for handle in handles {
            let status = handle.status();
            let id = handle.lock().id.clone();
            match status {
                JobStatus::Validating => {
                    let _ = handle.update(|rec| {
                        (
                            vec![move_to(
                                rec,
                                JobStatus::Planned,
                                "the dry run was interrupted by a host restart; run it again",
                            )],
                            (),
                        )
                    });
                }
                JobStatus::Executing => {
                    let outcome = handle.update(|rec| {
                        let mut events = vec![];
                        let mut unresumable = vec![];
                        for (state, step) in rec.steps.iter_mut().zip(&rec.plan.steps) {
                            if state.status == StepStatus::Running {
                                if step.resumable {
                                    state.status = StepStatus::Interrupted;
                                } else {
                                    let message = format!(
                                        "interrupted by a host restart, and the handler says step '{}' cannot resume",
                                        step.id
                                    );
                                    state.status = StepStatus::Failed;
                                    state.error = Some(message.clone());
                                    unresumable.push((step.id.clone(), message));
                                }
                            }
                        }
                        for (step, message) in &unresumable {
                            rec.errors.push(job::JobError {
                                at: Utc::now(),
                                step: Some(step.clone()),
                                phase: "engine".into(),
                                kind: "not-resumable".into(),
                                message: message.clone(),
                            });
                        }
                        if unresumable.is_empty() {
                            events.push(EventBody::Log {
                                level: LogLevel::Info,
                                source: LogSource::Host,
                                step: None,
                                message: "resuming after a host restart from the last checkpoints".into(),
                            });
                            (events, true)
                        } else {
                            rec.ended_at = Some(Utc::now());
                            events.push(move_to(rec, JobStatus::Failed, "a step that cannot resume was interrupted; rollback is available"));
                            (events, false)
                        }
                    });
                    if outcome.unwrap_or(false) {
                        executor::spawn_execution(&self.inner, &handle);
                        resumed.push(id);
                    }
                }
                JobStatus::RollingBack => {
                    let _ = handle.host_log(
                        LogLevel::Info,
                        None,
                        "resuming rollback after a host restart",
                    );
                    executor::spawn_rollback(&self.inner, &handle);
                    resumed.push(id);
                }
                _ => {}
            }
        }
        resumed
    }

    fn resolve_plugin(&self, requirement: &str) -> Result<Arc<LoadedPlugin>, EngineError> {
        Ok(self.inner.registry.resolve(requirement)?)
    }

    fn plan_with(
        &self,
        plugin: &LoadedPlugin,
        id: &str,
        spec: &MigrationSpec,
        grants: &BTreeMap<String, String>,
    ) -> Result<(Plan, Vec<EventBody>), EngineError> {
        let grants = self
            .inner
            .connect_grants(id, grants)
            .map_err(EngineError::InvalidRequest)?;
        let logs = Arc::new(CollectedLogs::default());
        let ctx = JobContext {
            grants,
            events: logs.clone(),
            checkpoint: None,
            force_stop: ForceStop::new(),
            call_timeout: None,
        };
        let plan = plugin.plan(&ctx, spec)?.map_err(EngineError::Handler)?;
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
        let plugin = self.resolve_plugin(&request.handler)?;
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
        for binding in request.grants.keys() {
            if binding.is_empty() || binding.len() > 64 {
                return Err(EngineError::InvalidRequest(format!(
                    "binding name '{binding}' must be 1-64 characters"
                )));
            }
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
        let (plan, logs) = match self.plan_with(&plugin, &id, &spec, &request.grants) {
            Ok(p) => p,
            Err(e) => {
                let _ = self.inner.connections.drop_job_state(&id);
                return Err(e);
            }
        };
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
            errors: vec![],
            warnings: vec![],
            counts: Default::default(),
            current_step: None,
            current_object: None,
            next_seq: 1,
            log_seqs: Default::default(),
            logs_dropped: 0,
            object_index: 0,
        };
        let handle = JobHandle::new(record, self.inner.store.clone(), self.inner.changes.clone());
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
        self.inner
            .jobs
            .write()
            .expect("jobs lock")
            .insert(id.clone(), handle.clone());
        Ok(job::snapshot(&handle.record(), Utc::now()))
    }

    /// Check `action` is allowed now, else the illegal-transition error.
    fn check(&self, rec: &JobRecord, action: Action) -> Result<(), EngineError> {
        if state::allows(rec.status, action) {
            Ok(())
        } else {
            Err(EngineError::IllegalTransition {
                job: rec.id.clone(),
                status: rec.status,
                action,
            })
        }
    }

    pub fn snapshot(&self, id: &str) -> Result<JobSnapshot, EngineError> {
        Ok(job::snapshot(&self.handle(id)?.record(), Utc::now()))
    }

    pub fn list(&self, filter: &ListFilter) -> JobPage {
        let jobs = self.inner.jobs.read().expect("jobs lock");
        let mut matching: Vec<JobSummary> = jobs
            .values()
            .map(|h| h.record())
            .filter(|r| filter.status.is_none_or(|s| r.status == s))
            .filter(|r| filter.handler.as_deref().is_none_or(|h| r.plugin.name == h))
            .map(|r| job::summary(&r))
            .collect();
        matching.sort_by(|a, b| {
            b.created_at
                .cmp(&a.created_at)
                .then_with(|| b.id.cmp(&a.id))
        });
        let total = matching.len();
        let offset = filter.offset.unwrap_or(0);
        let limit = filter.limit.unwrap_or(50).clamp(1, 500);
        let items = matching.into_iter().skip(offset).take(limit).collect();
        JobPage {
            items,
            total,
            offset,
            limit,
        }
    }

    /// Run a dry run in the background: `validating`, then back to `planned` (or
    /// `awaiting-approval`) with the report stored and bound to this plan and plugin.
    pub fn validate(&self, id: &str, actor: &str) -> Result<JobSnapshot, EngineError> {
        let handle = self.handle(id)?;
        let plugin = {
            let rec = handle.lock();
            self.check(&rec, Action::Validate)?;
            self.inner
                .registry
                .by_sha256(&rec.plugin.sha256)
                .ok_or_else(|| {
                    EngineError::Refused(format!(
                        "plugin {}@{} is no longer loaded",
                        rec.plugin.name, rec.plugin.version
                    ))
                })?
        };
        let back_to = handle.update(|rec| {
            let back = rec.status;
            (
                vec![
                    move_to(rec, JobStatus::Validating, "dry run requested"),
                    audit(actor, Action::Validate, "started"),
                ],
                back,
            )
        })?;
        let inner = self.inner.clone();
        let actor = actor.to_string();
        let h = handle.clone();
        std::thread::spawn(move || {
            let record = h.record();
            let logs = Arc::new(CollectedLogs::default());
            let result = inner
                .grants_for(&record)
                .map_err(EngineError::InvalidRequest)
                .and_then(|grants| {
                    let ctx = JobContext {
                        grants,
                        events: logs.clone(),
                        checkpoint: None,
                        force_stop: ForceStop::new(),
                        call_timeout: None,
                    };
                    plugin
                        .validate(&ctx, &record.spec, &record.plan)?
                        .map_err(EngineError::Handler)
                });
            let logs = Arc::try_unwrap(logs)
                .map(CollectedLogs::into_events)
                .unwrap_or_default();
            let _ = h.update(|rec| {
                let mut events = logs;
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
                            by: actor.clone(),
                        });
                        let verdict = if passed {
                            "the dry run passed"
                        } else {
                            "the dry run found blocking problems"
                        };
                        events.push(move_to(rec, back_to, verdict));
                    }
                    Err(e) => {
                        rec.errors.push(job::JobError {
                            at: Utc::now(),
                            step: None,
                            phase: "validate".into(),
                            kind: error_kind_of(&e),
                            message: e.to_string(),
                        });
                        rec.dry_run = Some(DryRunRecord {
                            plan_hash: rec.plan_hash.clone(),
                            plugin_sha256: rec.plugin.sha256.clone(),
                            passed: false,
                            report: Default::default(),
                            at: Utc::now(),
                            by: actor.clone(),
                        });
                        events.push(EventBody::DryRun {
                            passed: false,
                            findings: 0,
                        });
                        events.push(move_to(rec, back_to, format!("the dry run failed: {e}")));
                    }
                }
                (events, ())
            });
        });
        Ok(job::snapshot(&handle.record(), Utc::now()))
    }

    /// Ask the plugin for a new plan (the data or the loaded plugin changed). Approvals and
    /// dry runs of the old plan no longer apply.
    pub fn replan(&self, id: &str, actor: &str) -> Result<JobSnapshot, EngineError> {
        let handle = self.handle(id)?;
        let record = handle.record();
        self.check(&record, Action::Replan)?;
        let plugin = self.resolve_plugin(&record.handler)?;
        let (plan, logs) = self.plan_with(&plugin, id, &record.spec, &record.grants)?;
        handle.update(|rec| {
            if !state::allows(rec.status, Action::Replan) {
                return (
                    vec![],
                    Err(EngineError::IllegalTransition {
                        job: rec.id.clone(),
                        status: rec.status,
                        action: Action::Replan,
                    }),
                );
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
        let handle = self.handle(id)?;
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
            executor::spawn_execution(&self.inner, &handle);
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
            match &rec.dry_run {
                Some(d) if d.plan_hash == rec.plan_hash && d.plugin_sha256 == rec.plugin.sha256 && d.passed => {}
                Some(d) if d.plan_hash == rec.plan_hash && d.plugin_sha256 == rec.plugin.sha256 => {
                    return Err(EngineError::Refused(format!("the dry run of plan {} did not pass; fix the problems and run it again", &rec.plan_hash[..12])));
                }
                Some(_) => return Err(EngineError::Refused("the last dry run was of another plan or plugin; run a dry run of this plan first".into())),
                None => return Err(EngineError::Refused("this migration requires a passing dry run of its plan before it executes".into())),
            }
        }
        Ok(())
    }

    /// Approve the current plan. A job awaiting approval starts at once.
    pub fn approve(&self, id: &str, actor: &str) -> Result<JobSnapshot, EngineError> {
        let handle = self.handle(id)?;
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
            Ok(true) => executor::spawn_execution(&self.inner, &handle),
            Ok(false) => {}
            Err(e) => return Err(e),
        }
        self.snapshot(id)
    }

    /// Stop after the current batch; `resume` continues from the checkpoints.
    pub fn pause(&self, id: &str, actor: &str) -> Result<JobSnapshot, EngineError> {
        let handle = self.handle(id)?;
        {
            let rec = handle.lock();
            self.check(&rec, Action::Pause)?;
        }
        handle.update(|_| (vec![audit(actor, Action::Pause, "requested")], ()))?;
        self.request_stop(&handle, StopReason::Pause);
        self.snapshot(id)
    }

    pub fn resume(&self, id: &str, actor: &str) -> Result<JobSnapshot, EngineError> {
        let handle = self.handle(id)?;
        self.wait_for_run_end(&handle);
        handle.update(|rec| {
            if let Err(e) = self.check(rec, Action::Resume) {
                return (vec![], Err(e));
            }
            let mut events = vec![move_to(rec, JobStatus::Executing, "resumed")];
            events.push(audit(actor, Action::Resume, "resumed"));
            (events, Ok(()))
        })??;
        executor::spawn_execution(&self.inner, &handle);
        self.snapshot(id)
    }

    /// Cancel: a running job stops at its next safe point (the plugin sees `is-cancelled`),
    /// and by force after the job's grace period.
    pub fn cancel(&self, id: &str, actor: &str) -> Result<JobSnapshot, EngineError> {
        let handle = self.handle(id)?;
        let running = handle.update(|rec| {
            if let Err(e) = self.check(rec, Action::Cancel) {
                return (vec![], Err(e));
            }
            let mut events = vec![audit(actor, Action::Cancel, "requested")];
            if rec.status == JobStatus::Executing {
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
    fn wait_for_run_end(&self, handle: &JobHandle) {
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
        let handle = self.handle(id)?;
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
        executor::spawn_execution(&self.inner, &handle);
        self.snapshot(id)
    }

    /// Roll back every step that changed data, in reverse dependency order, in the background.
    pub fn rollback(&self, id: &str, actor: &str) -> Result<JobSnapshot, EngineError> {
        let handle = self.handle(id)?;
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
        executor::spawn_rollback(&self.inner, &handle);
        self.snapshot(id)
    }

    /// Forget a job that is not running, with its events and its private state bucket.
    pub fn delete(&self, id: &str, _actor: &str) -> Result<(), EngineError> {
        let handle = self.handle(id)?;
        {
            let rec = handle.lock();
            self.check(&rec, Action::Delete)?;
            self.inner.store.delete(id)?;
        }
        self.inner.jobs.write().expect("jobs lock").remove(id);
        if let Err(e) = self.inner.connections.drop_job_state(id) {
            tracing::warn!(job = id, error = %e, "could not drop the job's state bucket");
        }
        Ok(())
    }

    /// Whether any job is pinned to the plugin with this sha256 and not yet finished with it.
    pub fn plugin_in_use(&self, sha256: &str) -> Vec<String> {
        self.inner
            .jobs
            .read()
            .expect("jobs lock")
            .values()
            .map(|h| h.record())
            .filter(|r| {
                r.plugin.sha256 == sha256
                    && !matches!(
                        r.status,
                        JobStatus::Completed | JobStatus::RolledBack | JobStatus::Cancelled
                    )
            })
            .map(|r| r.id)
            .collect()
    }

    pub fn events_after(
        &self,
        id: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<FeedEvent>, EngineError> {
        self.handle(id)?;
        Ok(self.inner.store.events_after(id, after, limit)?)
    }

    pub fn logs(&self, id: &str, after: u64, limit: usize) -> Result<Vec<LogLine>, EngineError> {
        self.handle(id)?;
        let events = self
            .inner
            .store
            .logs_after(id, after, limit.clamp(1, 1000))?;
        Ok(events
            .into_iter()
            .filter_map(|e| match e.body {
                EventBody::Log {
                    level,
                    source,
                    step,
                    message,
                } => Some(LogLine {
                    seq: e.seq,
                    at: e.at,
                    level,
                    source,
                    step,
                    message,
                }),
                _ => None,
            })
            .collect())
    }

    /// Object results with index `>= from`, at most `limit`.
    pub fn objects(
        &self,
        id: &str,
        from: u64,
        limit: usize,
    ) -> Result<Vec<IndexedObject>, EngineError> {
        self.handle(id)?;
        let limit = limit.clamp(1, 5000);
        let mut out = Vec::with_capacity(limit);
        let mut next = from;
        while out.len() < limit {
            let events = self.inner.store.objects_from(id, next, 4)?;
            if events.is_empty() {
                break;
            }
            let before = out.len();
            for e in events {
                if let EventBody::Objects {
                    step,
                    first_index,
                    results,
                } = e.body
                {
                    for (i, result) in results.into_iter().enumerate() {
                        let index = first_index + i as u64;
                        if index >= next && out.len() < limit {
                            out.push(IndexedObject {
                                index,
                                step: step.clone(),
                                at: e.at,
                                result,
                            });
                        }
                    }
                }
            }
            if out.len() == before {
                break;
            }
            next = out.last().map(|o| o.index + 1).unwrap_or(next);
        }
        Ok(out)
    }

    /// Block until the job satisfies `done` or `timeout` passes; the last snapshot either way.
    pub fn wait_until(
        &self,
        id: &str,
        timeout: Duration,
        done: impl Fn(&JobSnapshot) -> bool,
    ) -> Result<JobSnapshot, EngineError> {
        let started = Instant::now();
        loop {
            let snap = self.snapshot(id)?;
            if done(&snap) || started.elapsed() >= timeout {
                return Ok(snap);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Block until no background run works on the job (its final state is committed before the
    /// run's thread ends; this waits for the thread too).
    pub fn wait_idle(&self, id: &str, timeout: Duration) -> Result<JobSnapshot, EngineError> {
        let handle = self.handle(id)?;
        let started = Instant::now();
        while !handle_idle(&handle) && started.elapsed() < timeout {
            std::thread::sleep(Duration::from_millis(5));
        }
        self.snapshot(id)
    }

    /// Make sure everything committed is on disk (graceful shutdown).
    pub fn flush(&self) -> Result<(), EngineError> {
        Ok(self.inner.store.flush()?)
    }

    /// Ask every running job to pause cooperatively, for a graceful shutdown. Jobs stay
    /// `executing` in the store only if the host dies first; either way they resume.
    pub fn running_jobs(&self) -> Vec<String> {
        self.inner
            .jobs
            .read()
            .expect("jobs lock")
            .values()
            .filter(|h| h.status().is_running())
            .map(|h| h.lock().id.clone())
            .collect()
    }
}

fn handle_idle(handle: &JobHandle) -> bool {
    handle
        .run
        .lock()
        .expect("run lock")
        .as_ref()
        .is_none_or(|r| r.is_finished())
}

fn approved(rec: &JobRecord) -> bool {
    rec.approval
        .as_ref()
        .is_some_and(|a| a.plan_hash == rec.plan_hash && a.plugin_sha256 == rec.plugin.sha256)
}

fn begin_execution(rec: &mut JobRecord, actor: &str, action: Action) -> Vec<EventBody> {
    rec.started_at.get_or_insert_with(Utc::now);
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
        })
        .collect()
}

/// What a handler is told of the job's options.
fn handler_options(o: &JobOptions) -> MigrationOptions {
    MigrationOptions {
        dry_run: o.dry_run,
        validation_level: o.validation_level,
        batch_size: o.batch_size,
    }
}

fn error_kind_of(e: &EngineError) -> String {
    match e {
        EngineError::Handler(m) => executor::kind_name(m.kind).to_string(),
        EngineError::Plugin(p) => p.cause.cause_name().to_string(),
        _ => "engine".to_string(),
    }
}
