//! The migration engine: the controller that plans, dry-runs, gates, executes, pauses,
//! cancels, retries and rolls back jobs, recording everything durably and resuming after a
//! crash.
//!
//! Invariants:
//! - Every change to a job goes through [`handle::JobHandle::update`], which writes the record
//!   and its change-feed events in one atomic, durable commit and only then shows them to
//!   readers.
//! - Only transitions allowed by [`state`] happen; an illegal request is refused with the
//!   job's current state and changes nothing.
//! - Approval and dry-run results are bound to the plan hash and the plugin's sha256.
//! - Memory holds the jobs in use ([`table`]), never the history: lists, counts and pages are
//!   read from the store's indexes.
//!
//! - With several nodes on one store, a node changes a job only while it holds the job's
//!   lease ([`ownership`]); an action on a job another node holds is forwarded there.
//!
//! Files: `lifecycle.rs` the operator's actions, `recovery.rs` resuming after a restart or
//! taking over another node's jobs, `executor.rs` background runs, `tracking.rs` what a
//! running step reports, `ownership.rs` leases, `remote.rs` what other nodes do.

pub mod dag;
mod executor;
pub mod handle;
pub mod job;
mod lifecycle;
mod object_retry;
pub mod options;
pub mod ownership;
mod permits;
mod recovery;
mod remote;
pub mod state;
mod table;
pub mod tracking;
mod worker_steps;

pub(crate) use crate::model::truncated;
pub(crate) use lifecycle::handler_options;
pub use lifecycle::{DeleteMode, MAX_JSON_DEPTH, MAX_SPEC_BYTES, NewMigration};
pub use object_retry::RETRY_CHUNK;
pub use remote::Request;

use crate::connectors::{ConnectionProvider, Grants};
use crate::model::{LogLevel, MigrationError, ObjectResult};
use crate::runtime::{PluginError, PluginRegistry, RegistryError};
use crate::store::{JobQuery, JobStore, StoreError};
use chrono::{DateTime, Utc};
use handle::{JobHandle, StateChange};
use job::{EventBody, FeedEvent, JobRecord, JobSnapshot, JobSummary, LogSource};
use options::JobOptions;
use serde::{Deserialize, Serialize};
use state::{Action, JobStatus};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use table::JobTable;
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
    /// A grant the plugin does not declare (see `runtime::declared`).
    #[error("{0}")]
    UndeclaredBinding(String),
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
    /// Too much is running to take this on now; try again.
    #[error("{0}")]
    Busy(String),
    #[error("{0}")]
    RollbackWouldBeLost(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Another node holds the job's lease (the request is forwarded there).
    #[error("migration {job} is being worked on by node {owner}")]
    OwnedElsewhere { job: String, owner: String },
    /// The node that owns the job refused the request it was forwarded.
    #[error("{}", .0.message)]
    Remote(ownership::RemoteRefusal),
    /// Nobody could carry the request out in time.
    #[error("{0}")]
    Unreachable(String),
}

/// Filters and paging for [`Engine::list`].
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
pub struct ListFilter {
    pub status: Option<JobStatus>,
    /// Plugin name.
    pub handler: Option<String>,
    /// Continue after this cursor (`next_cursor` of the previous page).
    pub cursor: Option<String>,
    pub offset: Option<usize>,
    pub limit: Option<usize>,
}

/// A page of jobs, newest first.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct JobPage {
    pub items: Vec<JobSummary>,
    /// How many jobs match the filters in all.
    pub total: u64,
    pub offset: usize,
    pub limit: usize,
    /// Pass as `cursor` for the next page (cheaper than a growing offset); absent after the
    /// last page.
    pub next_cursor: Option<String>,
}

/// The most jobs one list page holds.
pub const MAX_PAGE: usize = 500;

/// The most object results one filtered page looks at.
pub const MAX_OBJECTS_SCANNED: usize = 5000;

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

/// Which object results a page holds.
#[derive(Debug, Clone, Copy, Default)]
pub struct ObjectFilter {
    /// Only results with this status.
    pub status: Option<crate::model::ObjectStatus>,
    /// Leave out errors a later retry of failed objects redid (each object's latest result).
    pub current: bool,
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

/// `binding=connection, …`, as a job's grants read in an error.
fn describe_grants(grants: &BTreeMap<String, String>) -> String {
    grants
        .iter()
        .map(|(b, c)| format!("{b}={c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Called with the final snapshot whenever a job settles in a final state.
pub type FinalHook = Box<dyn Fn(&JobSnapshot) + Send + Sync>;

pub(crate) struct Inner {
    registry: Arc<PluginRegistry>,
    store: Arc<dyn JobStore>,
    connections: Arc<dyn ConnectionProvider>,
    defaults: JobOptions,
    jobs: JobTable,
    changes: broadcast::Sender<StateChange>,
    final_hooks: Mutex<Vec<FinalHook>>,
    /// Called with a running job's snapshot, at most once per its `webhook_progress_secs`.
    progress_hooks: Arc<Mutex<Vec<FinalHook>>>,
    /// Slots for `plan` and `validate` calls.
    dry_calls: permits::Permits,
    /// The most object results one step may record.
    max_results_per_step: std::sync::atomic::AtomicU64,
    /// Who may write for a job, when several nodes share the store (set once, at start).
    ownership: std::sync::OnceLock<Arc<dyn ownership::Ownership>>,
    /// Loads a plugin by sha256 that this node has not loaded (uploaded through another node).
    plugin_source: std::sync::OnceLock<PluginSource>,
    /// How long a request waits for a plugin still loading since start-up, in milliseconds.
    plugin_wait_ms: std::sync::atomic::AtomicU64,
    /// The tasks of steps on worker queues this node offers.
    workers: Arc<crate::workers::WorkerQueues>,
}

/// Loads the plugin with this sha256 into the registry, if the host keeps it somewhere.
pub type PluginSource = Box<dyn Fn(&str) + Send + Sync>;

impl Inner {
    /// The loaded plugin with this sha256, loaded now if the host keeps it but had not. While
    /// start-up loads go on, waits for them: at most the request wait when `for_request`,
    /// else (a job resuming in the background) until they end.
    fn plugin_by_sha256(
        &self,
        sha256: &str,
        for_request: bool,
    ) -> Option<Arc<crate::runtime::LoadedPlugin>> {
        let wait = for_request.then(|| self.plugin_wait());
        self.registry.by_sha256_waiting(sha256, wait).or_else(|| {
            self.plugin_source.get().and_then(|load| {
                load(sha256);
                self.registry.by_sha256(sha256)
            })
        })
    }

    /// "Still loading" for a job pinned to `plugin` while start-up loads go on.
    fn plugin_still_loading(&self, plugin: &job::PluginRef) -> Option<EngineError> {
        let unfinished = self.registry.loads().unfinished();
        (!unfinished.is_empty()).then(|| {
            EngineError::Registry(RegistryError::StillLoading {
                wanted: format!("{}@{}", plugin.name, plugin.version),
                unfinished: unfinished.join(", "),
            })
        })
    }

    fn plugin_wait(&self) -> Duration {
        Duration::from_millis(
            self.plugin_wait_ms
                .load(std::sync::atomic::Ordering::Relaxed),
        )
    }

    fn ownership(&self) -> Option<Arc<dyn ownership::Ownership>> {
        self.ownership.get().cloned()
    }

    /// The connectors a run of `handle`'s job may use, its state bucket fenced by the lease
    /// held now.
    fn grants_for(
        &self,
        handle: &JobHandle,
        plugin: &crate::runtime::LoadedPlugin,
    ) -> Result<Grants, String> {
        let grants = handle.lock().grants.clone();
        self.connect_grants(handle.id(), &grants, handle.fence(), plugin)
    }

    /// The connectors job `id` may use: each binding's named connection, and its state bucket.
    /// Each must be of the kind `plugin` declares for it (if it declares bindings), and those
    /// it declares read-only are.
    fn connect_grants(
        &self,
        id: &str,
        grants: &BTreeMap<String, String>,
        fence: Option<u64>,
        plugin: &crate::runtime::LoadedPlugin,
    ) -> Result<Grants, String> {
        let mut connectors = Vec::with_capacity(grants.len());
        for (binding, connection) in grants {
            let connector = self
                .connections
                .connect(connection)
                .map_err(|e| format!("grant '{binding}': {e}"))?;
            connectors.push((binding.clone(), connector));
        }
        let outside = connectors.iter().any(|(_, c)| !c.is_embedded());
        let mut connected = Grants::new(self.connections.job_state(id, outside, fence));
        for (binding, connector) in connectors {
            connected = connected.with(binding, connector);
        }
        crate::runtime::declared::narrow(&plugin.label(), plugin.declared_bindings(), connected)
            .map_err(|e| {
                // Which connection it was, for the operator who granted it.
                format!("{e} (grants: {})", describe_grants(grants))
            })
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

impl Engine {
    /// An engine over `store`. Nothing is loaded and nothing runs until [`Engine::recover`].
    pub fn open(
        registry: Arc<PluginRegistry>,
        store: Arc<dyn JobStore>,
        connections: Arc<dyn ConnectionProvider>,
        defaults: JobOptions,
    ) -> Result<Engine, EngineError> {
        defaults.check().map_err(EngineError::InvalidRequest)?;
        let (changes, _) = broadcast::channel(1024);
        let inner = Inner {
            registry,
            jobs: JobTable::new(store.clone(), changes.clone()),
            store,
            connections,
            defaults,
            changes,
            final_hooks: Mutex::new(vec![]),
            progress_hooks: Default::default(),
            dry_calls: permits::Permits::new(
                std::thread::available_parallelism().map_or(2, |n| n.get().max(2)),
            ),
            max_results_per_step: crate::runtime::bounds::DEFAULT_MAX_RESULTS_PER_STEP.into(),
            ownership: Default::default(),
            plugin_source: Default::default(),
            plugin_wait_ms: 30_000.into(),
            workers: Default::default(),
        };
        Ok(Engine {
            inner: Arc::new(inner),
        })
    }

    /// Share the store with other nodes: from now on a job is changed only under its lease.
    /// Set once, before [`Engine::recover`] or any request.
    pub fn set_ownership(&self, ownership: Arc<dyn ownership::Ownership>) {
        let _ = self.inner.ownership.set(ownership);
    }

    /// Where to find a plugin a job is pinned to that is not loaded here (set once, at start).
    pub fn set_plugin_source(&self, source: PluginSource) {
        let _ = self.inner.plugin_source.set(source);
    }

    /// How long a request (create, dry run) waits for a plugin still loading since start-up
    /// before it is answered "still loading".
    pub fn set_plugin_wait(&self, wait: Duration) {
        self.inner.plugin_wait_ms.store(
            wait.as_millis() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// This node's id when it shares the store with others.
    pub fn node(&self) -> Option<String> {
        self.inner.ownership().map(|o| o.node().to_string())
    }

    /// The job's handle with its lease held for the caller: claimed unless this node holds
    /// it, or the node that does named.
    fn owned(&self, id: &str) -> Result<(Arc<JobHandle>, ownership::LeaseGuard), EngineError> {
        let handle = self.handle(id)?;
        match handle.hold(&self.inner.ownership(), true)? {
            ownership::Hold::Held(guard) => Ok((handle, guard)),
            ownership::Hold::Elsewhere(owner) => Err(EngineError::OwnedElsewhere {
                job: id.to_string(),
                owner,
            }),
        }
    }

    /// Hold job `id`'s lease for work done outside the engine's own runs (benchmarks, tools
    /// driving a step by hand): kept until the guard is dropped.
    pub fn hold_lease(&self, id: &str) -> Result<ownership::LeaseGuard, EngineError> {
        self.owned(id).map(|(_, guard)| guard)
    }

    /// The tasks this node offers to external workers.
    pub fn workers(&self) -> &Arc<crate::workers::WorkerQueues> {
        &self.inner.workers
    }

    pub fn registry(&self) -> &Arc<PluginRegistry> {
        &self.inner.registry
    }

    pub fn defaults(&self) -> &JobOptions {
        &self.inner.defaults
    }

    /// The connections jobs may be granted (names and kinds are what the API shows).
    pub fn connections(&self) -> &Arc<dyn ConnectionProvider> {
        &self.inner.connections
    }

    pub fn store(&self) -> &Arc<dyn JobStore> {
        &self.inner.store
    }

    /// Call `hook` with the final snapshot of every job that settles from now on.
    pub fn on_final(&self, hook: FinalHook) {
        self.inner
            .final_hooks
            .lock()
            .expect("hooks lock")
            .push(hook);
    }

    /// Call `hook` with the snapshot of every running job that asks for progress notices
    /// (`webhook_progress_secs`), at most that often per job.
    pub fn on_progress(&self, hook: FinalHook) {
        self.inner
            .progress_hooks
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
            .get(id)?
            .ok_or_else(|| EngineError::NotFound(id.to_string()))
    }

    /// The job's handle, for live readers (SSE). May read the store: call it off async threads.
    pub fn job_handle(&self, id: &str) -> Result<Arc<JobHandle>, EngineError> {
        self.handle(id)
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

    /// A page of jobs, newest first, read through the store's indexes: its cost does not
    /// grow with the number of jobs (a large `offset` costs what it skips; `cursor` does not).
    pub fn list(&self, filter: &ListFilter) -> Result<JobPage, EngineError> {
        let offset = filter.offset.unwrap_or(0);
        let limit = filter.limit.unwrap_or(50).clamp(1, MAX_PAGE);
        let page = self.inner.store.list(&JobQuery {
            status: filter.status,
            plugin: filter.handler.clone(),
            cursor: filter.cursor.clone(),
            offset,
            limit,
        })?;
        let total = self
            .inner
            .store
            .count(filter.status, filter.handler.as_deref())?;
        Ok(JobPage {
            items: page.items,
            total,
            offset,
            limit,
            next_cursor: page.next_cursor,
        })
    }

    /// How many jobs are in each state, from the store's counters.
    pub fn counts_by_status(&self) -> Result<Vec<(JobStatus, u64)>, EngineError> {
        JobStatus::ALL
            .into_iter()
            .map(|s| Ok((s, self.inner.store.count(Some(s), None)?)))
            .collect()
    }

    /// Jobs pinned to the plugin with this sha256 that are not finished with it.
    pub fn plugin_in_use(&self, name: &str, sha256: &str) -> Result<Vec<String>, EngineError> {
        let unfinished: Vec<JobStatus> = JobStatus::ALL
            .into_iter()
            .filter(|s| {
                !matches!(
                    s,
                    JobStatus::Completed | JobStatus::RolledBack | JobStatus::Cancelled
                )
            })
            .collect();
        let mut users = vec![];
        for id in self.inner.store.ids_with_status(&unfinished, Some(name))? {
            if let Some(h) = self.inner.jobs.get(&id)?
                && h.lock().plugin.sha256 == sha256
            {
                users.push(id);
            }
        }
        Ok(users)
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
        let steps: Vec<String> = {
            let handle = self.handle(id)?;
            let rec = handle.lock();
            rec.plan.steps.iter().map(|s| s.id.clone()).collect()
        };
        let stored = self
            .inner
            .store
            .objects_from(id, from, limit.clamp(1, 5000))?;
        Ok(stored
            .into_iter()
            .map(|o| IndexedObject {
                index: o.index,
                step: steps.get(o.step as usize).cloned().unwrap_or_default(),
                at: o.at,
                result: o.result,
            })
            .collect())
    }

    /// Object results with index `>= from` that pass `filter`, at most `limit`, looking at
    /// no more than [`MAX_OBJECTS_SCANNED`] results: a page's cost stays bounded however rare
    /// the status is. Also the index to continue from, `None` once every result was seen.
    pub fn objects_with_status(
        &self,
        id: &str,
        from: u64,
        limit: usize,
        filter: ObjectFilter,
    ) -> Result<(Vec<IndexedObject>, Option<u64>), EngineError> {
        let limit = limit.clamp(1, 5000);
        // Where each step's latest round of results starts: an error before it was redone by
        // a retry of failed objects.
        let rounds: BTreeMap<String, u64> = {
            let handle = self.handle(id)?;
            let rec = handle.lock();
            rec.steps
                .iter()
                .map(|s| (s.id.clone(), s.round_from))
                .collect()
        };
        let wanted = |o: &IndexedObject| {
            let superseded = o.result.status == crate::model::ObjectStatus::Error
                && rounds.get(&o.step).is_some_and(|&from| o.index < from);
            filter.status.is_none_or(|s| o.result.status == s) && !(filter.current && superseded)
        };
        let (mut found, mut next) = (vec![], Some(from));
        let mut scanned = 0;
        while let Some(at) = next {
            if found.len() >= limit || scanned >= MAX_OBJECTS_SCANNED {
                break;
            }
            let page = self.objects(id, at, 1000)?;
            next = page.last().map(|o| o.index + 1);
            scanned += page.len();
            for o in page {
                if wanted(&o) && found.len() < limit {
                    found.push(o);
                } else if found.len() >= limit {
                    next = Some(o.index);
                    break;
                }
            }
        }
        Ok((found, next))
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

    /// The jobs a background run works on now.
    pub fn running_jobs(&self) -> Vec<String> {
        self.inner
            .jobs
            .live()
            .into_iter()
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

/// Collects what a plugin reports during `plan` and `validate`, to append as host-side logs.
/// Keeps at most [`CollectedLogs::MAX_LINES`]; the rest are counted.
#[derive(Default)]
struct CollectedLogs {
    lines: Mutex<(Vec<(LogLevel, String)>, u64)>,
    /// The run a cancel request reaches the plugin through (`is-cancelled`).
    control: Option<Arc<handle::RunControl>>,
}

impl CollectedLogs {
    const MAX_LINES: usize = 1000;

    fn watching(control: Arc<handle::RunControl>) -> Self {
        CollectedLogs {
            control: Some(control),
            ..Default::default()
        }
    }

    fn into_events(self) -> Vec<EventBody> {
        let (lines, dropped) = self.lines.into_inner().expect("logs lock");
        let mut events: Vec<EventBody> = lines
            .into_iter()
            .map(|(level, message)| EventBody::Log {
                level,
                source: LogSource::Plugin,
                step: None,
                message,
            })
            .collect();
        if dropped > 0 {
            events.push(EventBody::Log {
                level: LogLevel::Warning,
                source: LogSource::Host,
                step: None,
                message: format!(
                    "{dropped} more log lines of this call were dropped (at most {} are kept)",
                    Self::MAX_LINES
                ),
            });
        }
        events
    }
}

impl crate::runtime::JobEvents for CollectedLogs {
    fn log(&self, level: LogLevel, message: String) {
        let mut lines = self.lines.lock().expect("logs lock");
        if lines.0.len() < Self::MAX_LINES {
            lines.0.push((level, message));
        } else {
            lines.1 += 1;
        }
    }
    fn progress(&self, _: u64, _: Option<u64>, _: Option<String>) {}
    fn objects(&self, _: Vec<ObjectResult>) -> Result<(), String> {
        Ok(())
    }
    fn checkpoint(&self, _: Vec<u8>) {}
    fn is_cancelled(&self) -> bool {
        self.control.as_ref().is_some_and(|c| c.is_stopping())
    }
}

fn error_kind_of(e: &EngineError) -> String {
    match e {
        EngineError::Handler(m) => executor::kind_name(m.kind).to_string(),
        EngineError::Plugin(p) => p.cause.cause_name().to_string(),
        _ => "engine".to_string(),
    }
}
