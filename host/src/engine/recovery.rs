//! Resuming what a crash or shutdown interrupted, and taking over what another node was doing
//! when it stopped renewing its leases. Only the jobs a background run worked on are read
//! (through the store's status index), so start-up does not grow with finished history.

use super::handle::{JobHandle, move_to};
use super::job::{self, EventBody, LogSource};
use super::ownership::{Hold, LeaseGuard};
use super::state::{JobStatus, StepStatus};
use super::{Engine, EngineError, executor};
use crate::model::LogLevel;
use chrono::Utc;
use std::sync::Arc;
use std::time::{Duration, Instant};

impl Engine {
    /// Resume what a crash or shutdown interrupted (one node on the store). Returns the ids
    /// of the jobs resumed.
    pub fn recover(&self) -> Result<Vec<String>, EngineError> {
        let interrupted = self
            .inner
            .store
            .ids_with_status(&JobStatus::RUNNING, None)?;
        let mut resumed = vec![];
        for id in interrupted {
            let Some(handle) = self.inner.jobs.get(&id)? else {
                continue;
            };
            let Hold::Held(lease) = handle.hold(&self.inner.ownership(), true)? else {
                continue;
            };
            if self.resume_interrupted(&handle, lease) {
                resumed.push(id);
            }
        }
        Ok(resumed)
    }

    /// Take over job `id`, whose owner stopped renewing its lease: claim the lease and resume
    /// the job from its last checkpoints. False when there was nothing to take (another node
    /// was quicker, or the job no longer runs).
    pub fn take_over(&self, id: &str) -> Result<bool, EngineError> {
        let Some(handle) = self.inner.jobs.get(id)? else {
            return Ok(false);
        };
        // A run of this node that lost the lease may still be winding down.
        let old_run = handle.run.lock().expect("run lock").clone();
        if let Some(run) = old_run {
            let started = Instant::now();
            while !run.is_finished() && started.elapsed() < Duration::from_secs(10) {
                std::thread::sleep(Duration::from_millis(5));
            }
            if !run.is_finished() {
                return Ok(false);
            }
        }
        let Hold::Held(lease) = handle.hold(&self.inner.ownership(), true)? else {
            return Ok(false);
        };
        Ok(self.resume_interrupted(&handle, lease))
    }

    /// Go on with a job a run was working on when its node stopped; true when a run resumed.
    /// Nothing happens if a run of this node works on the job already.
    fn resume_interrupted(&self, handle: &Arc<JobHandle>, lease: LeaseGuard) -> bool {
        let _one_at_a_time = handle.resuming.lock().expect("resume lock");
        let running = handle.run.lock().expect("run lock").clone();
        if running.is_some_and(|run| !run.is_finished()) {
            return false;
        }
        match handle.status() {
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
                false
            }
            JobStatus::Executing if resume_execution(handle).unwrap_or(false) => {
                executor::spawn_execution(&self.inner, handle, lease);
                true
            }
            JobStatus::RollingBack => {
                let _ = handle.host_log(
                    LogLevel::Info,
                    None,
                    "resuming rollback after a host restart",
                );
                executor::spawn_rollback(&self.inner, handle, lease);
                true
            }
            _ => false,
        }
    }
}

/// Mark the steps a restart interrupted; `Ok(true)` when every one of them can resume.
fn resume_execution(handle: &JobHandle) -> Result<bool, crate::store::StoreError> {
    handle.update(|rec| {
        // The run the crash ended counts toward the time executed (for the ETA).
        if let Some(started) = rec.run_started_at.take() {
            rec.executing_ms_before += (rec.updated_at - started).num_milliseconds().max(0) as u64;
        }
        rec.run_started_at = Some(Utc::now());
        let mut events = vec![];
        let mut unresumable = vec![];
        for (state, step) in rec.steps.iter_mut().zip(&rec.plan.steps) {
            if state.status != StepStatus::Running {
                continue;
            }
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
        for (step, message) in &unresumable {
            rec.errors.push(job::JobError {
                at: Utc::now(),
                step: Some(step.clone()),
                phase: "engine".into(),
                kind: "not-resumable".into(),
                recovery: vec![],
                message: message.clone(),
            });
            events.push(EventBody::Log {
                level: LogLevel::Error,
                source: LogSource::Host,
                step: Some(step.clone()),
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
            events.push(move_to(
                rec,
                JobStatus::Failed,
                "a step that cannot resume was interrupted; rollback is available",
            ));
            (events, false)
        }
    })
}
