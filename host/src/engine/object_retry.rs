//! `retry-objects`: run again only the failed objects of a step that ended `partial`
//! (contract 0.2), instead of the whole migration.
//!
//! The step's results live in the job's append-only result index. A retry takes the errors
//! of the step's latest round (positions `from..to`, see [`ObjectRetry`]) and hands their
//! names to the handler's `execute`, [`RETRY_CHUNK`] at a time; the new results form the next
//! round, from `to` on. Which names are done is read back from that new round, so a retry
//! interrupted by a crash, a pause or a failure goes on with the rest: no object is retried
//! twice once its new result is committed, and none is skipped.

use super::Engine;
use super::EngineError;
use super::executor::{self, RunSetupRef, StepEnd, StepFailure, run_call};
use super::handle::move_to;
use super::job::{EventBody, JobSnapshot, LogSource, ObjectRetry};
use super::lifecycle::audit;
use super::state::{Action, JobStatus, StepStatus};
use super::tracking::StepEvents;
use crate::model::{LogLevel, ObjectStatus, PlanStep, StepOutcome};
use crate::store::StoreError;
use chrono::Utc;
use std::collections::HashSet;

/// How many object names one `execute` call of a retry receives.
pub const RETRY_CHUNK: usize = 1000;

/// Results read from the store per page while collecting names.
const PAGE: usize = 1000;

impl Engine {
    /// Run again, in the background, only the failed objects of the job's partial steps (or
    /// of `step` alone).
    pub fn retry_objects(
        &self,
        id: &str,
        actor: &str,
        step: Option<&str>,
    ) -> Result<JobSnapshot, EngineError> {
        let (handle, lease) = self.owned(id)?;
        self.wait_for_run_end(&handle);
        handle.update(|rec| {
            if let Err(e) = self.check(rec, Action::RetryObjects) {
                return (vec![], Err(e));
            }
            if let Some(wanted) = step {
                match rec.step(wanted) {
                    None => {
                        let e = EngineError::InvalidRequest(format!(
                            "the plan has no step '{}'",
                            crate::model::truncated(wanted, 64)
                        ));
                        return (vec![], Err(e));
                    }
                    Some(s) if s.outcome != StepOutcome::Partial => {
                        let e = EngineError::Refused(format!(
                            "step '{wanted}' has no failed objects to retry (it ended complete)"
                        ));
                        return (vec![], Err(e));
                    }
                    Some(_) => {}
                }
            }
            let to = rec.object_index;
            let mut retried = vec![];
            for s in rec
                .steps
                .iter_mut()
                .filter(|s| s.outcome == StepOutcome::Partial && step.is_none_or(|w| s.id == w))
            {
                s.retry = Some(ObjectRetry {
                    from: s.round_from,
                    to,
                    recounted: false,
                });
                s.round_from = to;
                s.status = StepStatus::Pending;
                s.outcome = StepOutcome::Complete;
                s.attempts = 0;
                s.error = None;
                s.ended_at = None;
                retried.push(format!("'{}'", s.id));
            }
            rec.ended_at = None;
            rec.run_started_at = Some(Utc::now());
            let reason = format!("retrying the failed objects of step {}", retried.join(", "));
            let events = vec![
                move_to(rec, JobStatus::Executing, reason),
                audit(actor, Action::RetryObjects, "started"),
            ];
            (events, Ok(()))
        })??;
        executor::spawn_execution(&self.inner, &handle, lease.share());
        self.snapshot(id)
    }
}

/// Names of the results of step `ordinal` at positions `from..to` (to the end when `None`),
/// only those with `status` when given; each name once, in result order.
fn names(
    setup: &RunSetupRef,
    job: &str,
    ordinal: u32,
    (from, to): (u64, Option<u64>),
    status: Option<ObjectStatus>,
) -> Result<Vec<String>, StoreError> {
    let (mut found, mut seen, mut at) = (vec![], HashSet::new(), from);
    loop {
        let page = setup.store.objects_from(job, at, PAGE)?;
        let Some(last) = page.last() else {
            return Ok(found);
        };
        at = last.index + 1;
        for o in page {
            if to.is_some_and(|to| o.index >= to) {
                return Ok(found);
            }
            if o.step == ordinal
                && status.is_none_or(|s| o.result.status == s)
                && seen.insert(o.result.name.clone())
            {
                found.push(o.result.name);
            }
        }
    }
}

/// Run `retry` of `step`: the failed names not yet redone, a chunk per `execute` call.
pub(super) fn run(setup: &RunSetupRef, step: &PlanStep, retry: ObjectRetry) -> StepEnd {
    let handle = &setup.handle;
    let (job, ordinal) = {
        let rec = handle.lock();
        let ordinal = rec.steps.iter().position(|s| s.id == step.id).unwrap_or(0);
        (rec.id.clone(), ordinal as u32)
    };
    let collected = names(
        setup,
        &job,
        ordinal,
        (retry.from, Some(retry.to)),
        Some(ObjectStatus::Error),
    )
    .and_then(|failed| {
        let done: HashSet<String> = names(setup, &job, ordinal, (retry.to, None), None)?
            .into_iter()
            .collect();
        Ok((failed, done))
    });
    let (failed, done) = match collected {
        Ok(c) => c,
        Err(e) => {
            let events = StepEvents::new(handle.clone(), setup.control.clone(), &step.id);
            let kind = if e.is_corruption() {
                "data-corruption"
            } else {
                "dependency-unavailable"
            };
            return executor::fail_step(
                setup,
                step,
                &events,
                0,
                StepFailure {
                    phase: "execute",
                    kind,
                    message: &format!("the failed objects to retry could not be read: {e}"),
                    recovery: &[],
                },
            );
        }
    };
    if !retry.recounted {
        // The failures being redone are pending again; their new results count instead.
        let recounted = handle.update(|rec| {
            rec.counts.failed = rec.counts.failed.saturating_sub(failed.len() as u64);
            if let Some(r) = rec.step_mut(&step.id).and_then(|s| s.retry.as_mut()) {
                r.recounted = true;
            }
            let line = EventBody::Log {
                level: LogLevel::Info,
                source: LogSource::Host,
                step: Some(step.id.clone()),
                message: format!(
                    "retrying {} failed objects of step '{}'",
                    failed.len(),
                    step.id
                ),
            };
            (vec![line], ())
        });
        if recounted.is_err() {
            return StepEnd::Failed;
        }
    }
    let remaining: Vec<String> = failed.into_iter().filter(|n| !done.contains(n)).collect();
    // With nothing left the handler still gets its (empty) call, which completes the step.
    let chunks: Vec<&[String]> = if remaining.is_empty() {
        vec![&[]]
    } else {
        remaining.chunks(RETRY_CHUNK).collect()
    };
    let count = chunks.len();
    for (i, chunk) in chunks.into_iter().enumerate() {
        let end = run_call(setup, step, Some(chunk), i + 1 == count);
        if end != StepEnd::Completed {
            return end;
        }
    }
    StepEnd::Completed
}
