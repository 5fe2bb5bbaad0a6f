//! Background runs: executing a plan's steps in dependency order (up to `parallel_workers` at
//! once, with retries), and rolling completed steps back in reverse dependency order.
//!
//! Each run is one thread (plus one per running step); plugin calls block, so they never run
//! on the async server's threads.

use super::Inner;
use super::dag;
use super::handle::{JobHandle, RunControl, StopReason, move_to};
use super::job::{EventBody, JobError, LogSource};
use super::ownership::LeaseGuard;
use super::state::{JobStatus, StepStatus};
use super::tracking::StepEvents;
use crate::connectors::Grants;
use crate::model::{ErrorKind, LogLevel, MigrationError, PlanStep, StepOutcome};
use crate::runtime::{JobContext, LoadedPlugin, PluginError, PluginFailure};
use crate::store::JobStore;
use crate::workers::{Settle, TaskKind, WorkerQueues};
use chrono::Utc;
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How a step's run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum StepEnd {
    Completed,
    Interrupted,
    Failed,
}

/// Everything a run needs that does not change while it runs.
struct RunSetup {
    handle: Arc<JobHandle>,
    plugin: Arc<LoadedPlugin>,
    control: Arc<RunControl>,
    grants: Grants,
    /// The most object results one step may record.
    max_results: u64,
    progress_hooks: Arc<std::sync::Mutex<Vec<super::FinalHook>>>,
    store: Arc<dyn JobStore>,
    workers: Arc<WorkerQueues>,
}

/// Start executing a job already moved to `executing`; the run keeps `lease` until it ends.
pub(super) fn spawn_execution(inner: &Arc<Inner>, handle: &Arc<JobHandle>, lease: LeaseGuard) {
    spawn_run(inner, handle, lease, "exec", execute)
}

/// Start rolling back a job already moved to `rolling-back`.
pub(super) fn spawn_rollback(inner: &Arc<Inner>, handle: &Arc<JobHandle>, lease: LeaseGuard) {
    spawn_run(inner, handle, lease, "rollback", |setup| {
        rollback(&setup);
    })
}

fn spawn_run(
    inner: &Arc<Inner>,
    handle: &Arc<JobHandle>,
    lease: LeaseGuard,
    what: &str,
    body: fn(RunSetup),
) {
    // Plugin calls stop the moment the lease would lapse (several nodes on one store).
    let control = Arc::new(RunControl::bounded_by(handle.lease_clock()));
    *handle.run.lock().expect("run lock") = Some(control.clone());
    let (inner, handle) = (inner.clone(), handle.clone());
    let id = handle.id().to_string();
    let name = format!("{what}-{}", &id[..8.min(id.len())]);
    std::thread::Builder::new()
        .name(name)
        .spawn(move || {
            let _lease = lease;
            let setup = match prepare(&inner, &handle, control.clone()) {
                Ok(s) => s,
                Err(message) => {
                    fail_without_run(&handle, &message);
                    control.finish();
                    return;
                }
            };
            body(setup);
            control.finish();
            if !control.is_handing_off() {
                inner.job_settled(&handle);
            }
        })
        .expect("spawning a job thread");
}

fn prepare(
    inner: &Arc<Inner>,
    handle: &Arc<JobHandle>,
    control: Arc<RunControl>,
) -> Result<RunSetup, String> {
    let record = handle.record();
    let plugin = inner
        .plugin_by_sha256(&record.plugin.sha256, false)
        .ok_or_else(|| {
            format!(
                "plugin {}@{} (sha256 {}) is not loaded",
                record.plugin.name, record.plugin.version, record.plugin.sha256
            )
        })?;
    let grants = inner.grants_for(handle, &plugin)?;
    Ok(RunSetup {
        handle: handle.clone(),
        plugin,
        control,
        grants,
        max_results: inner
            .max_results_per_step
            .load(std::sync::atomic::Ordering::Relaxed),
        progress_hooks: inner.progress_hooks.clone(),
        store: inner.store.clone(),
        workers: inner.workers.clone(),
    })
}

/// A run could not even start (plugin gone, connection gone): the job fails with the reason.
fn fail_without_run(handle: &JobHandle, message: &str) {
    let _ = handle.update(|rec| {
        let to = if rec.status == JobStatus::RollingBack {
            JobStatus::RollbackFailed
        } else {
            JobStatus::Failed
        };
        rec.errors.push(JobError {
            at: Utc::now(),
            step: None,
            phase: "engine".into(),
            kind: "dependency-unavailable".into(),
            recovery: vec![],
            message: message.to_string(),
        });
        rec.ended_at = Some(Utc::now());
        (vec![move_to(rec, to, message)], ())
    });
}

fn execute(setup: RunSetup) {
    let (handle, control) = (&setup.handle, &setup.control);
    let record = handle.record();
    let options = record.options.clone();
    let plan = record.plan.clone();
    // A run that retries a partial job's failed objects does not roll back on failure: the
    // job was already usable, and undoing all of it because a few objects failed again (or
    // the handler refused to retry them) would destroy what the operator accepted.
    let auto_rollback = options.auto_rollback && !record.steps.iter().any(|s| s.retry.is_some());
    let run_started = Instant::now();
    spawn_watchdog(&setup, record.executing_ms_before);

    let (tx, rx) = mpsc::channel::<(usize, StepEnd)>();
    let mut running: HashSet<usize> = HashSet::new();
    let mut failed = false;
    loop {
        if !control.is_stopping() && !failed {
            let statuses: Vec<StepStatus> = handle.lock().steps.iter().map(|s| s.status).collect();
            let ready = dag::ready_steps(
                &plan,
                |i| statuses[i] == StepStatus::Completed,
                |i| {
                    matches!(statuses[i], StepStatus::Pending | StepStatus::Interrupted)
                        && !running.contains(&i)
                },
            );
            for i in ready {
                if running.len() >= options.parallel_workers as usize {
                    break;
                }
                running.insert(i);
                let (tx, setup) = (tx.clone(), RunSetupRef::from(&setup));
                let step = plan.steps[i].clone();
                std::thread::spawn(move || {
                    let end = run_step(&setup, &step);
                    let _ = tx.send((i, end));
                });
            }
        }
        if running.is_empty() {
            break;
        }
        let (i, end) = rx.recv().expect("a step thread always reports");
        running.remove(&i);
        if end == StepEnd::Failed && !failed {
            failed = true;
            if !running.is_empty() {
                control.request_stop(
                    StopReason::Halt,
                    Duration::from_secs(options.cancel_grace_secs),
                );
            }
        }
    }

    if control.is_handing_off() {
        // Nothing more is written: the node that takes the job over resumes it from the
        // checkpoints (and counts the time this run took from its start).
        return;
    }
    let ran_ms = run_started.elapsed().as_millis() as u64;
    let stop = control.stop_reason();
    let all_done = handle
        .lock()
        .steps
        .iter()
        .all(|s| s.status == StepStatus::Completed);
    // Either a final state to move to, or the reason the run failed.
    let outcome: Result<(JobStatus, String), String> = if stop == Some(StopReason::Timeout) {
        Err(format!(
            "the job ran past its limit of {}s",
            options.timeout_secs
        ))
    } else if failed {
        Err("a step failed".to_string())
    } else if all_done {
        let partial: Vec<String> = handle
            .lock()
            .steps
            .iter()
            .filter(|s| s.outcome == StepOutcome::Partial)
            .map(|s| format!("'{}'", s.id))
            .collect();
        if partial.is_empty() {
            Ok((JobStatus::Completed, "every step completed".to_string()))
        } else {
            Ok((
                JobStatus::Partial,
                format!(
                    "every step ended; step {} left failed objects the handler tolerates",
                    partial.join(", ")
                ),
            ))
        }
    } else if stop == Some(StopReason::Pause) {
        Ok((
            JobStatus::Paused,
            "paused by request; resume continues from the checkpoints".to_string(),
        ))
    } else if stop == Some(StopReason::Cancel) {
        Ok((JobStatus::Cancelled, "cancelled by request".to_string()))
    } else {
        Err("some steps could not start: their dependencies did not complete".to_string())
    };
    let _ = handle.update(|rec| {
        rec.executing_ms_before += ran_ms;
        rec.run_started_at = None;
        let mut events = vec![];
        match &outcome {
            Ok((to, reason)) => {
                if to.is_final() {
                    rec.ended_at = Some(Utc::now());
                }
                events.push(move_to(rec, *to, reason.clone()));
            }
            Err(reason) => {
                // A failed step recorded its own error; anything else says here why the run
                // ended, so a job never fails (or rolls back) with an empty error list.
                if stop == Some(StopReason::Timeout) || !failed {
                    rec.errors.push(JobError {
                        at: Utc::now(),
                        step: None,
                        phase: "engine".into(),
                        kind: if stop == Some(StopReason::Timeout) {
                            "timeout"
                        } else {
                            "internal"
                        }
                        .into(),
                        recovery: vec![],
                        message: reason.clone(),
                    });
                }
                if !auto_rollback {
                    rec.ended_at = Some(Utc::now());
                    let reason = if options.auto_rollback {
                        format!("{reason} while retrying failed objects; not rolled back automatically (retry, or roll back explicitly)")
                    } else {
                        reason.clone()
                    };
                    events.push(move_to(rec, JobStatus::Failed, reason));
                }
            }
        }
        (events, ())
    });
    if outcome.is_err() && auto_rollback && !control.is_handing_off() {
        let moved = handle.update(|rec| {
            (
                vec![move_to(
                    rec,
                    JobStatus::RollingBack,
                    "a step failed; rolling back automatically",
                )],
                (),
            )
        });
        if moved.is_ok() {
            rollback(&setup);
        }
    }
}

/// Stop the job when it runs past `timeout_secs` of executing time.
fn spawn_watchdog(setup: &RunSetup, already_ms: u64) {
    let options = setup.handle.lock().options.clone();
    if options.timeout_secs == 0 {
        return;
    }
    let limit =
        Duration::from_secs(options.timeout_secs).saturating_sub(Duration::from_millis(already_ms));
    let control = setup.control.clone();
    let grace = Duration::from_secs(options.cancel_grace_secs);
    std::thread::spawn(move || {
        let started = Instant::now();
        while !control.is_finished() {
            if started.elapsed() >= limit {
                control.request_stop(StopReason::Timeout, grace);
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    });
}

/// The parts of [`RunSetup`] a step thread needs, cheaply cloned.
#[derive(Clone)]
pub(super) struct RunSetupRef {
    pub(super) handle: Arc<JobHandle>,
    plugin: Arc<LoadedPlugin>,
    pub(super) control: Arc<RunControl>,
    grants: Grants,
    max_results: u64,
    progress_hooks: Arc<std::sync::Mutex<Vec<super::FinalHook>>>,
    pub(super) store: Arc<dyn JobStore>,
    pub(super) workers: Arc<WorkerQueues>,
}

impl From<&RunSetup> for RunSetupRef {
    fn from(s: &RunSetup) -> Self {
        RunSetupRef {
            handle: s.handle.clone(),
            plugin: s.plugin.clone(),
            control: s.control.clone(),
            grants: s.grants.clone(),
            max_results: s.max_results,
            progress_hooks: s.progress_hooks.clone(),
            store: s.store.clone(),
            workers: s.workers.clone(),
        }
    }
}

fn context(
    setup: &RunSetupRef,
    events: Arc<StepEvents>,
    checkpoint: Option<Vec<u8>>,
    step_timeout_secs: u64,
) -> JobContext {
    JobContext {
        grants: setup.grants.clone(),
        events,
        checkpoint,
        force_stop: setup.control.force.clone(),
        call_timeout: (step_timeout_secs > 0).then(|| Duration::from_secs(step_timeout_secs)),
    }
}

/// Run one step to its end: the whole step, or the failed objects a retry asked for.
fn run_step(setup: &RunSetupRef, step: &PlanStep) -> StepEnd {
    let retry = setup
        .handle
        .lock()
        .step(&step.id)
        .and_then(|s| s.retry.clone());
    match retry {
        Some(retry) => super::object_retry::run(setup, step, retry),
        None => run_call(setup, step, None, true),
    }
}

/// Run one `execute` call of `step` to its end, retrying retryable errors. `objects` names the
/// only objects to touch (a retry of failed objects, which starts from no checkpoint); the
/// step completes with the call when `last`, else the call's results are committed and the
/// step goes on running.
pub(super) fn run_call(
    setup: &RunSetupRef,
    step: &PlanStep,
    objects: Option<&[String]>,
    last: bool,
) -> StepEnd {
    let handle = &setup.handle;
    let options = handle.lock().options.clone();
    loop {
        let started = handle.update(|rec| {
            let s = rec.step_mut(&step.id).expect("step of the plan");
            s.status = StepStatus::Running;
            s.attempts += 1;
            s.started_at.get_or_insert_with(Utc::now);
            s.error = None;
            let attempt = s.attempts;
            let checkpoint = s.checkpoint.clone().filter(|_| objects.is_none());
            rec.current_step = Some(step.id.clone());
            let event = EventBody::Step {
                step: step.id.clone(),
                status: StepStatus::Running,
                attempt,
                summary: None,
                error: None,
            };
            (vec![event], (attempt, checkpoint))
        });
        let Ok((attempt, checkpoint)) = started else {
            return StepEnd::Failed;
        };
        let events = step_events(setup, step);
        // Dropped when this attempt's end is recorded: a worker's complete/fail is answered then.
        let (result, settle) = if step.queue.is_some() {
            let (end, settle) = super::worker_steps::call(
                setup,
                &events,
                step,
                TaskKind::Execute,
                attempt,
                checkpoint,
                objects,
            );
            (Ok(end), Some(settle))
        } else {
            let ctx = context(setup, events.clone(), checkpoint, options.step_timeout_secs);
            // Clone first: a guard inside the call expression would hold the record's lock
            // for the whole plugin call, and the plugin's own events need that lock.
            let spec = handle.lock().spec.clone();
            (
                setup.plugin.execute(&ctx, &spec, step, objects),
                None::<Settle>,
            )
        };
        events.write_staged();

        if setup.control.is_handing_off() {
            // Keep what can still be kept (a checkpoint waiting in memory), change nothing else.
            events.stop();
            return StepEnd::Interrupted;
        }
        let stopping = setup.control.is_stopping();
        match result {
            Ok(Ok(_)) if events.failure().is_some() => {
                let e = events.failure().expect("checked");
                let kind = if e.is_corruption() {
                    "data-corruption"
                } else {
                    "dependency-unavailable"
                };
                return fail_step(
                    setup,
                    step,
                    &events,
                    attempt,
                    StepFailure {
                        phase: "execute",
                        kind,
                        message: &format!("the step's progress could not be recorded: {e}"),
                        recovery: &[],
                    },
                );
            }
            Ok(Ok(report)) => {
                let completed = handle.update_with_objects(|rec| {
                    let (mut evs, segments) = events.drain_for_completion(rec);
                    let s = rec.step_mut(&step.id).expect("step");
                    // Partial if any call of the step (a retry makes several) was.
                    if report.outcome == StepOutcome::Partial {
                        s.outcome = StepOutcome::Partial;
                    }
                    if !last {
                        return (evs, segments, None);
                    }
                    s.status = StepStatus::Completed;
                    s.ended_at = Some(Utc::now());
                    s.summary = Some(report.summary.clone());
                    s.retry = None;
                    if let Some(total) = step.expected_objects.or(s.progress_total) {
                        s.progress_done = s.progress_done.max(total);
                    }
                    let took = s
                        .started_at
                        .map(|t| (Utc::now() - t).to_std().unwrap_or_default());
                    evs.push(EventBody::Step {
                        step: step.id.clone(),
                        status: StepStatus::Completed,
                        attempt,
                        summary: Some(report.summary),
                        error: None,
                    });
                    (evs, segments, took)
                });
                return match completed {
                    Ok(took) => {
                        if let Some(took) = took {
                            crate::metrics::step_completed(took);
                        }
                        StepEnd::Completed
                    }
                    Err(_) => StepEnd::Failed,
                };
            }
            Ok(Err(e)) if stopping && e.kind == ErrorKind::Cancelled => {
                return interrupt(setup, step, &events, attempt);
            }
            Err(PluginError {
                cause: PluginFailure::ForceStopped,
                ..
            }) if stopping => {
                return interrupt(setup, step, &events, attempt);
            }
            Ok(Err(e)) if e.retryable && attempt < options.retry.attempts && !stopping => {
                let discarded = events.stop();
                drop(settle);
                let wait = options.retry.backoff(attempt + 1);
                let _ = handle.host_log(
                    LogLevel::Warning,
                    Some(&step.id),
                    format!(
                        "attempt {attempt} of step '{}' failed ({}: {}); retrying from its checkpoint in {} ms{}",
                        step.id,
                        kind_name(e.kind),
                        e.message,
                        wait.as_millis(),
                        if discarded > 0 { format!(" ({discarded} uncommitted object results will be redone)") } else { String::new() }
                    ),
                );
                if !sleep_unless_stopped(&setup.control, wait) {
                    return interrupt(setup, step, &events, attempt);
                }
            }
            Ok(Err(e)) => {
                return fail_step(
                    setup,
                    step,
                    &events,
                    attempt,
                    StepFailure {
                        phase: "execute",
                        kind: kind_name(e.kind),
                        message: &e.message,
                        recovery: &e.recovery,
                    },
                );
            }
            Err(pe) => {
                let kind = match pe.cause {
                    PluginFailure::Deadline { .. } => "timeout",
                    ref other => other.cause_name(),
                };
                return fail_step(
                    setup,
                    step,
                    &events,
                    attempt,
                    StepFailure {
                        phase: "execute",
                        kind,
                        message: &pe.to_string(),
                        recovery: &[],
                    },
                );
            }
        }
    }
}

/// Where one call of `step` (by its plugin or its worker) reports to.
fn step_events(setup: &RunSetupRef, step: &PlanStep) -> Arc<StepEvents> {
    let source = if step.queue.is_some() {
        LogSource::Worker
    } else {
        LogSource::Plugin
    };
    Arc::new(
        StepEvents::new(setup.handle.clone(), setup.control.clone(), &step.id)
            .with_max_results(setup.max_results)
            .with_progress_hooks(setup.progress_hooks.clone())
            .with_log_source(source),
    )
}

/// Sleep `wait` unless the run is asked to stop first; false when it was.
fn sleep_unless_stopped(control: &RunControl, wait: Duration) -> bool {
    let started = Instant::now();
    while started.elapsed() < wait {
        if control.is_stopping() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10).min(wait));
    }
    true
}

fn interrupt(setup: &RunSetupRef, step: &PlanStep, events: &StepEvents, attempt: u32) -> StepEnd {
    events.stop();
    let _ = setup.handle.update(|rec| {
        let s = rec.step_mut(&step.id).expect("step");
        s.status = StepStatus::Interrupted;
        let event = EventBody::Step {
            step: step.id.clone(),
            status: StepStatus::Interrupted,
            attempt,
            summary: None,
            error: None,
        };
        (vec![event], ())
    });
    StepEnd::Interrupted
}

/// Why a step's call failed, as the job's error records it.
pub(super) struct StepFailure<'a> {
    pub(super) phase: &'a str,
    pub(super) kind: &'a str,
    pub(super) message: &'a str,
    /// What the handler says an operator can do (contract 0.2).
    pub(super) recovery: &'a [crate::model::RecoveryAction],
}

pub(super) fn fail_step(
    setup: &RunSetupRef,
    step: &PlanStep,
    events: &StepEvents,
    attempt: u32,
    failure: StepFailure<'_>,
) -> StepEnd {
    let StepFailure {
        phase,
        kind,
        message,
        recovery,
    } = failure;
    let discarded = events.stop();
    let _ = setup.handle.update(|rec| {
        let s = rec.step_mut(&step.id).expect("step");
        s.status = if phase == "rollback" { StepStatus::RollbackFailed } else { StepStatus::Failed };
        s.ended_at = Some(Utc::now());
        s.error = Some(message.to_string());
        let status = s.status;
        rec.errors.push(JobError {
            at: Utc::now(),
            step: Some(step.id.clone()),
            phase: phase.into(),
            kind: kind.into(),
            message: message.to_string(),
            recovery: recovery.to_vec(),
        });
        let mut evs = vec![
            EventBody::Step { step: step.id.clone(), status, attempt, summary: None, error: Some(message.to_string()) },
            EventBody::Log {
                level: LogLevel::Error,
                source: super::job::LogSource::Host,
                step: Some(step.id.clone()),
                message: format!("{phase} of step '{}' failed ({kind}): {message}", step.id),
            },
        ];
        if discarded > 0 {
            evs.push(EventBody::Log {
                level: LogLevel::Warning,
                source: super::job::LogSource::Host,
                step: Some(step.id.clone()),
                message: format!("{discarded} object results reported after the last checkpoint were not recorded; a retry redoes them"),
            });
        }
        (evs, ())
    });
    StepEnd::Failed
}

pub(super) fn kind_name(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::InvalidSpec => "invalid-spec",
        ErrorKind::ValidationFailed => "validation-failed",
        ErrorKind::StepFailed => "step-failed",
        ErrorKind::DependencyUnavailable => "dependency-unavailable",
        ErrorKind::DataCorruption => "data-corruption",
        ErrorKind::Timeout => "timeout",
        ErrorKind::Cancelled => "cancelled",
        ErrorKind::InsufficientResources => "insufficient-resources",
    }
}

/// Roll back every step that may have changed data, in reverse dependency order. Stops at the
/// first rollback that fails (undoing earlier steps on top of a half-undone later one could
/// make things worse); the job then ends `rollback-failed` with every error kept.
fn rollback(setup: &RunSetup) {
    let handle = &setup.handle;
    let record = handle.record();
    let order = dag::topological_order(&record.plan)
        .unwrap_or_else(|_| (0..record.plan.steps.len()).collect());
    let options = record.options.clone();
    let setup_ref = RunSetupRef::from(setup);
    let mut failed = false;
    for &i in order.iter().rev() {
        let step = &record.plan.steps[i];
        let status = handle.lock().steps[i].status;
        if !status.touched_data() {
            continue;
        }
        if !step.reversible {
            let _ = handle.update(|rec| {
                let message = format!(
                    "step '{}' is not reversible; rollback left it as it was",
                    step.id
                );
                rec.warnings.push(message.clone());
                rec.steps[i].status = StepStatus::RollbackSkipped;
                (
                    vec![EventBody::Step {
                        step: step.id.clone(),
                        status: StepStatus::RollbackSkipped,
                        attempt: 0,
                        summary: Some(message),
                        error: None,
                    }],
                    (),
                )
            });
            continue;
        }
        match rollback_step(&setup_ref, step, &options) {
            StepEnd::Failed => {
                failed = true;
                break;
            }
            StepEnd::Interrupted => return, // handed off: the next owner goes on
            StepEnd::Completed => {}
        }
    }
    let _ = handle.update(|rec| {
        rec.ended_at = Some(Utc::now());
        let (to, reason) = if failed {
            (JobStatus::RollbackFailed, "a rollback step failed")
        } else {
            (JobStatus::RolledBack, "every changed step was rolled back")
        };
        (vec![move_to(rec, to, reason)], ())
    });
}

fn rollback_step(
    setup: &RunSetupRef,
    step: &PlanStep,
    options: &super::options::JobOptions,
) -> StepEnd {
    let handle = &setup.handle;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let _ = handle.update(|rec| {
            rec.current_step = Some(step.id.clone());
            (
                vec![EventBody::Step {
                    step: step.id.clone(),
                    status: StepStatus::Running,
                    attempt,
                    summary: Some("rolling back".into()),
                    error: None,
                }],
                (),
            )
        });
        let events = step_events(setup, step);
        let (result, settle) = if step.queue.is_some() {
            let (end, settle) = super::worker_steps::call(
                setup,
                &events,
                step,
                TaskKind::Rollback,
                attempt,
                None,
                None,
            );
            (Ok(end), Some(settle))
        } else {
            let ctx = context(setup, events.clone(), None, options.step_timeout_secs);
            let spec = handle.lock().spec.clone();
            (setup.plugin.rollback(&ctx, &spec, step), None::<Settle>)
        };
        events.write_staged();
        if setup.control.is_handing_off() {
            events.stop();
            return StepEnd::Interrupted;
        }
        match result {
            Ok(Ok(report)) => {
                let done = handle.update_with_objects(|rec| {
                    let (mut evs, segments) = events.drain_for_completion(rec);
                    let s = rec.step_mut(&step.id).expect("step");
                    s.status = StepStatus::RolledBack;
                    evs.push(EventBody::Step {
                        step: step.id.clone(),
                        status: StepStatus::RolledBack,
                        attempt,
                        summary: Some(report.summary),
                        error: None,
                    });
                    (evs, segments, ())
                });
                return if done.is_ok() {
                    StepEnd::Completed
                } else {
                    StepEnd::Failed
                };
            }
            Ok(Err(MigrationError {
                retryable: true,
                kind,
                message,
                ..
            })) if attempt < options.retry.attempts => {
                events.stop();
                drop(settle);
                let wait = options.retry.backoff(attempt + 1);
                let _ = handle.host_log(
                    LogLevel::Warning,
                    Some(&step.id),
                    format!("rollback attempt {attempt} of step '{}' failed ({}: {message}); retrying in {} ms", step.id, kind_name(kind), wait.as_millis()),
                );
                // A hand-off meanwhile stops the next attempt at once.
                sleep_unless_stopped(&setup.control, wait);
            }
            Ok(Err(e)) => {
                return fail_step(
                    setup,
                    step,
                    &events,
                    attempt,
                    StepFailure {
                        phase: "rollback",
                        kind: kind_name(e.kind),
                        message: &e.message,
                        recovery: &e.recovery,
                    },
                );
            }
            Err(pe) => {
                return fail_step(
                    setup,
                    step,
                    &events,
                    attempt,
                    StepFailure {
                        phase: "rollback",
                        kind: pe.cause.cause_name(),
                        message: &pe.to_string(),
                        recovery: &[],
                    },
                );
            }
        }
    }
}
