//! A step on a worker queue: the executor's `execute` or `rollback` call, carried out by an
//! external worker instead of the plugin. The task's reports go to the step's
//! [`StepEvents`], so they are tracked, committed and shown exactly like a plugin's.

use super::executor::RunSetupRef;
use super::handle::{JobHandle, RunControl, StopReason};
use super::tracking::StepEvents;
use crate::model::{ErrorKind, LogLevel, MigrationError, ObjectResult, PlanStep, StepReport};
use crate::runtime::JobEvents;
use crate::workers::{RunStop, Settle, TaskKind, TaskOffer, TaskSink};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where a worker's reports go: the step's tracking, and the job's log for host lines.
struct StepSink {
    events: Arc<StepEvents>,
    handle: Arc<JobHandle>,
    step: String,
}

impl JobEvents for StepSink {
    fn log(&self, level: LogLevel, message: String) {
        self.events.log(level, message)
    }
    fn progress(&self, done: u64, total: Option<u64>, current_object: Option<String>) {
        self.events.progress(done, total, current_object)
    }
    fn objects(&self, results: Vec<ObjectResult>) -> Result<(), String> {
        self.events.objects(results)
    }
    fn checkpoint(&self, data: Vec<u8>) {
        self.events.checkpoint(data)
    }
    fn is_cancelled(&self) -> bool {
        self.events.is_cancelled()
    }
}

impl TaskSink for StepSink {
    fn commit_now(&self) -> Result<(), String> {
        self.events.commit_now().map_err(|e| e.to_string())
    }
    fn host_note(&self, message: String) {
        let _ = self
            .handle
            .host_log(LogLevel::Info, Some(&self.step), message);
    }
}

fn run_stop(control: &RunControl) -> RunStop {
    if control.force.is_triggered() {
        return RunStop::Forced;
    }
    match control.stop_reason() {
        None => RunStop::Running,
        Some(StopReason::Pause) => RunStop::Asked("pause"),
        Some(StopReason::Cancel) => RunStop::Asked("cancel"),
        Some(StopReason::Timeout) => RunStop::Asked("timeout"),
        Some(StopReason::Halt) => RunStop::Asked("halt"),
        Some(StopReason::Handoff) => RunStop::Asked("handoff"),
    }
}

/// One attempt of `step` (`kind`) by a worker, waited for on this (blocking) thread. The job's
/// `step_timeout_secs` bounds it as it bounds a plugin's call: past it the worker is told
/// `timeout` (and fenced after the cancel grace), and the step fails with kind `timeout`.
pub(super) fn call(
    setup: &RunSetupRef,
    events: &Arc<StepEvents>,
    step: &PlanStep,
    kind: TaskKind,
    attempt: u32,
    checkpoint: Option<Vec<u8>>,
    objects: Option<&[String]>,
) -> (Result<StepReport, MigrationError>, Settle) {
    let handle = &setup.handle;
    let offer = TaskOffer {
        job: handle.id().to_string(),
        kind,
        attempt,
        spec: handle.lock().spec.clone(),
        step: step.clone(),
        checkpoint,
        objects: objects.map(<[String]>::to_vec),
    };
    let sink = Arc::new(StepSink {
        events: events.clone(),
        handle: handle.clone(),
        step: step.id.clone(),
    });
    let control = setup.control.clone();
    let (limit, grace) = {
        let options = &handle.lock().options;
        (
            (options.step_timeout_secs > 0).then(|| Duration::from_secs(options.step_timeout_secs)),
            Duration::from_secs(options.cancel_grace_secs),
        )
    };
    let started = Instant::now();
    let past = |extra: Duration| limit.is_some_and(|l| started.elapsed() >= l + extra);
    let (end, settle) = setup
        .workers
        .run(offer, sink, &|| match run_stop(&control) {
            RunStop::Running if past(grace) => RunStop::Forced,
            RunStop::Running if past(Duration::ZERO) => RunStop::Asked("timeout"),
            other => other,
        });
    let end = match (end, limit) {
        // Stopped by the step's deadline, not by the operator.
        (Err(e), Some(limit))
            if e.kind == ErrorKind::Cancelled
                && past(Duration::ZERO)
                && control.stop_reason().is_none() =>
        {
            Err(MigrationError::new(
                ErrorKind::Timeout,
                format!(
                    "the task on worker queue '{}' ran past the step's limit of {} s (step_timeout_secs): {}",
                    step.queue.as_deref().unwrap_or_default(),
                    limit.as_secs(),
                    e.message
                ),
                false,
            ))
        }
        (end, _) => end,
    };
    (end, settle)
}
