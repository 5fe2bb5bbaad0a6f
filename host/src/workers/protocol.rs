//! What goes between the host and a worker: the task offered, the claim's answer, reports
//! and heartbeats. The HTTP side (`api/workers.rs`) serves these as JSON.

use super::{TaskSink, WorkerError};
use crate::model::{LogLevel, MigrationSpec, ObjectResult, ObjectStatus, PlanStep};
use crate::runtime::bounds;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Which call of the step the task stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum TaskKind {
    Execute,
    Rollback,
}

/// A step attempt offered to workers.
#[derive(Debug, Clone)]
pub struct TaskOffer {
    pub job: String,
    pub kind: TaskKind,
    pub attempt: u32,
    pub spec: MigrationSpec,
    pub step: PlanStep,
    pub checkpoint: Option<Vec<u8>>,
    pub objects: Option<Vec<String>>,
}

impl TaskOffer {
    /// `JOB.STEP.KIND.ATTEMPT`: names the attempt in logs; the lease is what fences.
    pub fn task_id(&self) -> String {
        let kind = match self.kind {
            TaskKind::Execute => "execute",
            TaskKind::Rollback => "rollback",
        };
        format!("{}.{}.{kind}.{}", self.job, self.step.id, self.attempt)
    }

    pub(super) fn claimed(&self, lease: String, lease_for: Duration) -> ClaimedTask {
        ClaimedTask {
            task: self.task_id(),
            lease,
            lease_ms: lease_for.as_millis() as u64,
            job: self.job.clone(),
            kind: self.kind,
            attempt: self.attempt,
            queue: self.step.queue.clone().unwrap_or_default(),
            spec: self.spec.clone(),
            step: self.step.clone(),
            checkpoint: self
                .checkpoint
                .as_ref()
                .map(|c| String::from_utf8_lossy(c).into_owned()),
            objects: self.objects.clone(),
        }
    }
}

/// A task given to a worker: what to do, and the lease under which it reports.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ClaimedTask {
    /// Names the task in every later request.
    pub task: String,
    /// Sent with every report; a request under another lease is refused.
    pub lease: String,
    /// The lease ends this long after the last heartbeat or report.
    pub lease_ms: u64,
    pub job: String,
    pub kind: TaskKind,
    pub attempt: u32,
    pub queue: String,
    /// The migration as it was created (kind, parameters, source, target).
    pub spec: MigrationSpec,
    /// The plan's step this task runs.
    pub step: PlanStep,
    /// The last checkpoint committed for the step (text, as a worker sent it): resume here.
    pub checkpoint: Option<String>,
    /// Only these objects are to be touched (a retry of failed objects).
    pub objects: Option<Vec<String>>,
}

/// The answer to a heartbeat or report.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Beat {
    /// The lease now ends this long from now.
    pub lease_ms: u64,
    /// Set when the run is stopping (`pause`, `cancel`, `timeout`, `halt`, `handoff`): stop
    /// at a safe point, report a checkpoint, then fail the task with kind `cancelled`.
    pub stop: Option<String>,
}

/// One log line of a report.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
pub struct WorkerLog {
    #[serde(default = "info")]
    pub level: LogLevel,
    pub message: String,
}

fn info() -> LogLevel {
    LogLevel::Info
}

/// A report's progress.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
pub struct WorkerProgress {
    pub done: u64,
    pub total: Option<u64>,
    pub current: Option<String>,
}

/// One object's result.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
pub struct WorkerObject {
    pub name: String,
    pub status: ObjectStatus,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default = "object_type")]
    pub object_type: String,
    #[serde(default)]
    pub duration_micros: u64,
}

fn object_type() -> String {
    "object".into()
}

/// What a worker reports between claim and end. Everything in it is recorded before the
/// answer; results become visible with the checkpoint after them (or the task's completion).
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkerReport {
    pub lease: String,
    #[serde(default)]
    pub logs: Vec<WorkerLog>,
    pub progress: Option<WorkerProgress>,
    #[serde(default)]
    pub objects: Vec<WorkerObject>,
    /// Text the next attempt starts from (JSON recommended), after the objects above.
    pub checkpoint: Option<String>,
}

/// The most log lines one report may carry.
pub const MAX_LOGS_PER_REPORT: usize = 10_000;

impl WorkerReport {
    /// Hand the report to `sink`, bounded like a plugin's events.
    pub(super) fn apply(self, sink: &dyn TaskSink) -> Result<(), WorkerError> {
        if self.logs.len() > MAX_LOGS_PER_REPORT {
            return Err(WorkerError::Refused(format!(
                "a report carries at most {MAX_LOGS_PER_REPORT} log lines; this one has {}",
                self.logs.len()
            )));
        }
        if self.objects.len() > bounds::MAX_RESULTS_PER_CALL {
            return Err(WorkerError::Refused(format!(
                "a report carries at most {} object results; this one has {}",
                bounds::MAX_RESULTS_PER_CALL,
                self.objects.len()
            )));
        }
        if let Some(cp) = &self.checkpoint
            && cp.len() > bounds::MAX_CHECKPOINT
        {
            return Err(WorkerError::Refused(format!(
                "a checkpoint holds at most {} bytes; this one has {}",
                bounds::MAX_CHECKPOINT,
                cp.len()
            )));
        }
        for mut log in self.logs {
            bounds::cut(&mut log.message, bounds::MAX_MESSAGE, "log");
            sink.log(log.level, log.message);
        }
        if !self.objects.is_empty() {
            let results = self
                .objects
                .into_iter()
                .map(|o| {
                    let mut r = ObjectResult {
                        name: o.name,
                        object_type: o.object_type,
                        status: o.status,
                        error: o.error,
                        duration_micros: o.duration_micros,
                    };
                    bounds::object(&mut r);
                    r
                })
                .collect();
            sink.objects(results).map_err(WorkerError::Refused)?;
        }
        if let Some(p) = self.progress {
            let mut current = p.current;
            if let Some(c) = current.as_mut() {
                bounds::cut(c, bounds::MAX_OBJECT_NAME, "current-object");
            }
            sink.progress(p.done, p.total, current);
        }
        if let Some(cp) = self.checkpoint {
            sink.checkpoint(cp.into_bytes());
        }
        Ok(())
    }
}
