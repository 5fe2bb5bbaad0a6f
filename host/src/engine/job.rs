//! A job as the engine persists it ([`JobRecord`]), the change-feed events it emits
//! ([`FeedEvent`]), and the snapshot users see ([`JobSnapshot`]).

use super::options::JobOptions;
use super::state::{Action, JobStatus, StepStatus};
use crate::model::{LogLevel, MigrationSpec, ObjectResult, Plan, ValidationReport};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The plugin a job is pinned to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PluginRef {
    pub name: String,
    pub version: String,
    pub sha256: String,
}

/// A step's durable state. `checkpoint` is committed together with the object results
/// reported before it (see `engine::tracking`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StepState {
    pub id: String,
    pub status: StepStatus,
    pub attempts: u32,
    #[serde(with = "opt_base64")]
    pub checkpoint: Option<Vec<u8>>,
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    /// Objects committed for this step (success, error and skipped).
    pub objects: u64,
    /// The handler's latest progress report for this step.
    pub progress_done: u64,
    pub progress_total: Option<u64>,
    pub summary: Option<String>,
    pub error: Option<String>,
    /// How the step ended, once completed: `partial` when the handler tolerated failed objects.
    #[serde(default)]
    pub outcome: crate::model::StepOutcome,
    /// Where the step's latest round of object results starts in the job's result index: 0,
    /// or where the latest retry of its failed objects began.
    #[serde(default)]
    pub round_from: u64,
    /// A retry of the step's failed objects that has not finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<ObjectRetry>,
}

/// A retry of one step's failed objects (`retry-objects`): the objects whose results at
/// positions `from..to` of the job's result index are errors are run again. Which of them are
/// done is read from the results after `to`, so a retry resumed after a crash redoes none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ObjectRetry {
    pub from: u64,
    pub to: u64,
    /// Whether the failures being redone were taken off the job's failed count (done once,
    /// when the retry starts running; the new results count again).
    pub recounted: bool,
}

mod opt_base64 {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(bytes) => s.serialize_some(&STANDARD.encode(bytes)),
            None => s.serialize_none(),
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|t| STANDARD.decode(t).map_err(serde::de::Error::custom))
            .transpose()
    }
}

/// A dry run's outcome, valid only for the plan and plugin it ran against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DryRunRecord {
    pub plan_hash: String,
    pub plugin_sha256: String,
    pub passed: bool,
    pub report: ValidationReport,
    pub at: DateTime<Utc>,
    pub by: String,
}

/// An approval, valid only for the plan and plugin that were approved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ApprovalRecord {
    pub plan_hash: String,
    pub plugin_sha256: String,
    pub at: DateTime<Utc>,
    pub by: String,
}

/// An error kept on the job: a handler error, a sandbox failure or an engine decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobError {
    pub at: DateTime<Utc>,
    pub step: Option<String>,
    /// `execute`, `rollback`, `plan`, `validate` or `engine`.
    pub phase: String,
    /// An error kind (`step-failed`, ...) or a sandbox cause (`deadline`, `panic`, ...).
    pub kind: String,
    pub message: String,
    /// What the handler says an operator can do next (contract 0.2 handlers only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recovery: Vec<crate::model::RecoveryAction>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ObjectCounts {
    pub completed: u64,
    pub failed: u64,
    pub skipped: u64,
}

/// Everything the engine knows about one job. Written as one value; events go beside it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobRecord {
    pub id: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub created_by: String,
    /// The requirement the job was created with, e.g. `kv-copy@^1`.
    pub handler: String,
    pub plugin: PluginRef,
    pub spec: MigrationSpec,
    /// Binding name to host connection name.
    pub grants: BTreeMap<String, String>,
    pub options: JobOptions,
    pub plan: Plan,
    pub plan_hash: String,
    pub status: JobStatus,
    pub steps: Vec<StepState>,
    pub dry_run: Option<DryRunRecord>,
    pub approval: Option<ApprovalRecord>,
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    /// Time spent executing before the current run (so pauses do not count toward ETA).
    pub executing_ms_before: u64,
    /// When the current execution run started, while one runs.
    #[serde(default)]
    pub run_started_at: Option<DateTime<Utc>>,
    pub errors: Vec<JobError>,
    pub warnings: Vec<String>,
    pub counts: ObjectCounts,
    /// The step and object the handler reported last.
    pub current_step: Option<String>,
    pub current_object: Option<String>,
    /// The next change-feed sequence number.
    pub next_seq: u64,
    /// How many log lines are kept (the newest ones, at most the job's `max_log_lines`).
    pub logs_kept: u64,
    pub logs_dropped: u64,
    /// How many object results were ever committed (their index space).
    pub object_index: u64,
    /// The newest operator actions on the job (the feed keeps them all).
    #[serde(default)]
    pub audit: Vec<AuditNote>,
}

/// One operator action, as the job page shows its audit trail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditNote {
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub outcome: String,
}

/// How many audit notes a record keeps.
pub const AUDIT_NOTES: usize = 50;

/// An error as the API shows it: whether trying again can help, and what to do next.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ErrorView {
    #[serde(flatten)]
    pub error: JobError,
    /// Trying again (`retry`) may succeed without changing anything.
    pub retryable: bool,
    /// What an operator can do next.
    pub advice: String,
}

impl std::ops::Deref for ErrorView {
    type Target = JobError;
    fn deref(&self) -> &JobError {
        &self.error
    }
}

impl ErrorView {
    fn of(e: &JobError) -> ErrorView {
        let (retryable, advice) = match e.kind.as_str() {
            "dependency-unavailable" => (
                true,
                "a system the job needs did not answer or could not be reached: make it available, then retry",
            ),
            "timeout" | "deadline" => (
                true,
                "the work ran past its time limit: retry, or raise step_timeout_secs / timeout_secs first",
            ),
            "insufficient-resources" | "out-of-memory" | "out-of-fuel" | "limit-exceeded" => (
                false,
                "the plugin ran out of what the host allows: raise the limit or make the batches smaller, then retry",
            ),
            "data-corruption" => (
                false,
                "data is damaged: do not retry; roll back and look at the source",
            ),
            "not-resumable" => (
                false,
                "the step was interrupted and cannot resume: roll back, then run the job again",
            ),
            "invalid-spec" | "validation-failed" => (
                false,
                "the parameters or the data do not fit the handler: roll back, fix them, plan a new job",
            ),
            "cancelled" => (false, "cancelled by request: roll back what was done"),
            _ => (
                false,
                "the step failed: read its log, then retry (resumes from the checkpoint) or roll back",
            ),
        };
        ErrorView {
            error: e.clone(),
            retryable,
            advice: advice.to_string(),
        }
    }
}

impl JobRecord {
    pub fn step(&self, id: &str) -> Option<&StepState> {
        self.steps.iter().find(|s| s.id == id)
    }

    pub fn step_mut(&mut self, id: &str) -> Option<&mut StepState> {
        self.steps.iter_mut().find(|s| s.id == id)
    }

    /// Some step may have changed data and can be undone.
    pub fn rollback_available(&self) -> bool {
        super::state::allows(self.status, super::state::Action::Rollback)
            && self
                .steps
                .iter()
                .zip(&self.plan.steps)
                .any(|(s, p)| s.status.touched_data() && p.reversible)
    }
}

/// What happened, as the change feed records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum EventBody {
    State {
        from: Option<JobStatus>,
        to: JobStatus,
        reason: String,
    },
    Step {
        step: String,
        status: StepStatus,
        attempt: u32,
        summary: Option<String>,
        error: Option<String>,
    },
    Progress {
        step: String,
        done: u64,
        total: Option<u64>,
        current_object: Option<String>,
        percentage: f64,
        eta_seconds: Option<u64>,
    },
    Log {
        level: LogLevel,
        source: LogSource,
        step: Option<String>,
        message: String,
    },
    /// Object results committed: positions `first_index .. first_index + count`. `results`
    /// holds the first of them (at most 100); page the rest from `/objects`.
    Objects {
        step: String,
        first_index: u64,
        count: u64,
        results: Vec<ObjectResult>,
    },
    Audit {
        actor: String,
        action: String,
        outcome: String,
    },
    DryRun {
        passed: bool,
        findings: usize,
    },
}

impl EventBody {
    /// The SSE event name.
    pub fn kind(&self) -> &'static str {
        match self {
            EventBody::State { .. } => "state",
            EventBody::Step { .. } => "step",
            EventBody::Progress { .. } => "progress",
            EventBody::Log { .. } => "log",
            EventBody::Objects { .. } => "objects",
            EventBody::Audit { .. } => "audit",
            EventBody::DryRun { .. } => "dry-run",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum LogSource {
    Host,
    Plugin,
    /// An external worker running a step on a queue.
    Worker,
}

/// One entry of a job's change feed. `seq` increases by one per event, per job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FeedEvent {
    pub seq: u64,
    pub at: DateTime<Utc>,
    #[serde(flatten)]
    pub body: EventBody,
}

/// A step as users see it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct StepView {
    pub id: String,
    pub kind: crate::model::StepKind,
    pub description: String,
    pub depends_on: Vec<String>,
    pub status: StepStatus,
    pub attempts: u32,
    pub expected_objects: Option<u64>,
    pub objects: u64,
    pub progress_done: u64,
    pub reversible: bool,
    pub resumable: bool,
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    pub summary: Option<String>,
    pub error: Option<String>,
    /// `partial` when the step completed with failed objects the handler tolerates.
    pub outcome: crate::model::StepOutcome,
    /// Where the step's latest round of results starts in `/objects` (0, or where the latest
    /// `retry-objects` began): its failures still to fix are the errors from there on.
    pub results_from: u64,
    /// What the handler expected the step to take (contract 0.2), beside `duration_ms`.
    pub estimated_duration_ms: Option<u64>,
    /// How long the step took, once it ended.
    pub duration_ms: Option<u64>,
}

/// A job's full state for the API and dashboard (logs and object results are paged apart).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct JobSnapshot {
    pub id: String,
    pub handler: String,
    pub plugin: PluginRef,
    pub kind: String,
    pub status: JobStatus,
    /// 0 to 100: by objects when the plan gives counts, by steps otherwise.
    pub percentage: f64,
    pub estimated_seconds_remaining: Option<u64>,
    pub current_step: Option<String>,
    pub current_object: Option<String>,
    pub completed_objects: u64,
    pub failed_objects: u64,
    pub skipped_objects: u64,
    pub total_objects: Option<u64>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub created_by: String,
    pub start_time: Option<DateTime<Utc>>,
    pub end_time: Option<DateTime<Utc>>,
    pub duration_ms: Option<u64>,
    /// What the handler expected the migration to take (contract 0.2): the plan's own
    /// estimate, else the sum of its steps' when each has one. Compare with `duration_ms`.
    pub estimated_duration_ms: Option<u64>,
    pub errors: Vec<ErrorView>,
    pub warnings: Vec<String>,
    pub rollback_available: bool,
    /// What may be asked of the job in its state (a role may allow less).
    pub allowed_actions: Vec<Action>,
    /// The newest operator actions on the job, oldest first.
    pub audit: Vec<AuditNote>,
    pub plan: Plan,
    pub plan_hash: String,
    pub steps: Vec<StepView>,
    pub options: JobOptions,
    pub grants: BTreeMap<String, String>,
    pub spec: MigrationSpec,
    pub dry_run: Option<DryRunRecord>,
    pub approval: Option<ApprovalRecord>,
    pub logs_kept: u64,
    pub logs_dropped: u64,
    pub last_event_seq: u64,
}

/// A job in a list: no plan, logs or results.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobSummary {
    pub id: String,
    pub handler: String,
    pub plugin: PluginRef,
    pub kind: String,
    pub status: JobStatus,
    pub percentage: f64,
    pub completed_objects: u64,
    pub failed_objects: u64,
    pub total_objects: Option<u64>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub start_time: Option<DateTime<Utc>>,
    pub end_time: Option<DateTime<Utc>>,
}

/// A step's work, in units of objects: (done, total). The total is what the plan expects,
/// else what the step's own progress reports say, else one unit; a completed step is done.
fn step_work(state: &StepState, step: &crate::model::PlanStep) -> (u64, u64) {
    let total = step
        .expected_objects
        .or(state.progress_total)
        .unwrap_or(1)
        .max(1);
    let done = if state.status == StepStatus::Completed {
        total
    } else if step.expected_objects.is_some() || state.progress_total.is_some() {
        state.progress_done.min(total)
    } else {
        0
    };
    (done, total)
}

/// Progress over the plan's expected work: (percentage, total objects if known).
///
/// The percentage weighs every step by its work (see [`step_work`]), so it moves with each
/// progress report, and reaches 100 only when every step completed. `total_objects` is what
/// the migration steps expect to move: the number `completed_objects` counts toward.
pub fn progress_of(r: &JobRecord) -> (f64, Option<u64>) {
    let (mut done, mut total) = (0u64, 0u64);
    for (state, step) in r.steps.iter().zip(&r.plan.steps) {
        let (d, t) = step_work(state, step);
        done += d;
        total += t;
    }
    let all_done = r.steps.iter().all(|s| s.status == StepStatus::Completed);
    let mut pct = round1(100.0 * done as f64 / total.max(1) as f64);
    if !all_done {
        pct = pct.min(99.9);
    }
    let moving: Vec<Option<u64>> = r
        .plan
        .steps
        .iter()
        .filter(|s| s.kind == crate::model::StepKind::Migration)
        .map(|s| s.expected_objects)
        .collect();
    let total_objects = if moving.is_empty() || moving.iter().any(Option::is_none) {
        None
    } else {
        Some(moving.into_iter().flatten().sum())
    };
    (pct, total_objects)
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// Seconds left: the work still to do at the rate of this run so far (time paused does not
/// count). With steady progress it converges to the real remaining time.
pub fn eta_seconds(r: &JobRecord, now: DateTime<Utc>) -> Option<u64> {
    if r.status != JobStatus::Executing {
        return None;
    }
    let elapsed_ms = r.executing_ms_before
        + r.run_started_at
            .map(|s| (now - s).num_milliseconds().max(0) as u64)
            .unwrap_or(0);
    let (pct, _) = progress_of(r);
    if pct <= 0.0 || elapsed_ms == 0 {
        return None;
    }
    let remaining = elapsed_ms as f64 * (100.0 - pct) / pct;
    Some((remaining / 1000.0).ceil() as u64)
}

pub fn snapshot(r: &JobRecord, now: DateTime<Utc>) -> JobSnapshot {
    let (percentage, total_objects) = progress_of(r);
    let duration_ms = r
        .started_at
        .map(|s| (r.ended_at.unwrap_or(now) - s).num_milliseconds().max(0) as u64);
    JobSnapshot {
        id: r.id.clone(),
        handler: r.handler.clone(),
        plugin: r.plugin.clone(),
        kind: r.spec.kind.clone(),
        status: r.status,
        percentage,
        estimated_seconds_remaining: eta_seconds(r, now),
        current_step: r.current_step.clone(),
        current_object: r.current_object.clone(),
        completed_objects: r.counts.completed,
        failed_objects: r.counts.failed,
        skipped_objects: r.counts.skipped,
        total_objects,
        created_at: r.created_at,
        updated_at: r.updated_at,
        created_by: r.created_by.clone(),
        start_time: r.started_at,
        end_time: r.ended_at,
        duration_ms,
        estimated_duration_ms: r.plan.estimate_ms(),
        errors: r.errors.iter().map(ErrorView::of).collect(),
        warnings: r.warnings.clone(),
        rollback_available: r.rollback_available(),
        allowed_actions: Action::ALL
            .into_iter()
            .filter(|a| {
                crate::engine::state::allows(r.status, *a)
                    && (*a != Action::Rollback || r.rollback_available())
            })
            .collect(),
        audit: r.audit.clone(),
        plan: r.plan.clone(),
        plan_hash: r.plan_hash.clone(),
        steps: r
            .steps
            .iter()
            .zip(&r.plan.steps)
            .map(|(s, p)| StepView {
                id: s.id.clone(),
                kind: p.kind,
                description: p.description.clone(),
                depends_on: p.depends_on.clone(),
                status: s.status,
                attempts: s.attempts,
                expected_objects: p.expected_objects,
                objects: s.objects,
                progress_done: s.progress_done,
                reversible: p.reversible,
                resumable: p.resumable,
                started_at: s.started_at,
                ended_at: s.ended_at,
                summary: s.summary.clone(),
                error: s.error.clone(),
                outcome: s.outcome,
                results_from: s.round_from,
                estimated_duration_ms: p.estimated_duration_ms,
                duration_ms: s
                    .started_at
                    .zip(s.ended_at)
                    .map(|(a, b)| (b - a).num_milliseconds().max(0) as u64),
            })
            .collect(),
        options: r.options.clone(),
        grants: r.grants.clone(),
        spec: r.spec.clone(),
        dry_run: r.dry_run.clone(),
        approval: r.approval.clone(),
        logs_kept: r.logs_kept,
        logs_dropped: r.logs_dropped,
        last_event_seq: r.next_seq.saturating_sub(1),
    }
}

pub fn summary(r: &JobRecord) -> JobSummary {
    let (percentage, total_objects) = progress_of(r);
    JobSummary {
        id: r.id.clone(),
        handler: r.handler.clone(),
        plugin: r.plugin.clone(),
        kind: r.spec.kind.clone(),
        status: r.status,
        percentage,
        completed_objects: r.counts.completed,
        failed_objects: r.counts.failed,
        total_objects,
        created_at: r.created_at,
        updated_at: r.updated_at,
        start_time: r.started_at,
        end_time: r.ended_at,
    }
}
