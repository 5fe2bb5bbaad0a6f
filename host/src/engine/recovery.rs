//! Resuming what a crash or shutdown interrupted. Only the jobs a background run worked on are
//! read (through the store's status index), so start-up does not grow with finished history.

use super::handle::move_to;
use super::job::{self, EventBody, LogSource};
use super::state::{JobStatus, StepStatus};
use super::{Engine, executor};
use crate::model::LogLevel;
use chrono::Utc;

impl Engine {
    /// Resume what a crash or shutdown interrupted. Returns the ids of the jobs resumed.
    pub fn recover(&self) -> Result<Vec<String>, super::EngineError> {
        let interrupted = self.inner.store.ids_with_status(
            &[
                JobStatus::Validating,
                JobStatus::Executing,
                JobStatus::RollingBack,
            ],
            None,
        )?;
        let mut resumed = vec![];
        for id in interrupted {
            let Some(handle) = self.inner.jobs.get(&id)? else {
                continue;
            };
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
                }
                JobStatus::Executing if resume_execution(&handle).unwrap_or(false) => {
                    executor::spawn_execution(&self.inner, &handle);
                    resumed.push(id);
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
        Ok(resumed)
    }
}

/// Mark the steps a restart interrupted; `Ok(true)` when every one of them can resume.
fn resume_execution(handle: &super::handle::JobHandle) -> Result<bool, crate::store::StoreError> {
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
