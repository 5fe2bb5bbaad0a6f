//! The in-memory side of one job: its record behind a lock, the commit path that writes it
//! durably with its events, and the watch channel live readers follow.

use super::job::{EventBody, FeedEvent, JobRecord, LogSource};
use super::ownership::HeldLease;
use super::state::JobStatus;
use crate::model::LogLevel;
use crate::runtime::ForceStop;
use crate::stop::LeaseClock;
use crate::store::{Commit, JobStore, ObjectSegment, StoreError};
use chrono::Utc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{broadcast, watch};

/// A job's state changed; sent to everyone following all jobs.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct StateChange {
    pub job: String,
    pub seq: u64,
    pub from: Option<JobStatus>,
    pub to: JobStatus,
    pub reason: String,
}

/// Why a run is asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    Pause,
    Cancel,
    /// The job ran past its own time limit.
    Timeout,
    /// A sibling step failed; the others stop at their next safe point.
    Halt,
    /// This node gives the job up (its lease is gone, or the node stops): stop at once and
    /// change nothing, so that the node that takes the job over resumes it.
    Handoff,
}

/// Control of one background run (execution or rollback).
#[derive(Default)]
pub struct RunControl {
    stop: Mutex<Option<StopReason>>,
    pub force: ForceStop,
    finished: AtomicBool,
}

impl RunControl {
    /// Control of a run whose plugin calls stop by force once `lease` runs out (several
    /// nodes on one store), or only when asked (`None`).
    pub fn bounded_by(lease: Option<LeaseClock>) -> Self {
        RunControl {
            force: lease.map(ForceStop::bounded_by).unwrap_or_default(),
            ..Default::default()
        }
    }

    /// The run is handing the job to another node (asked to, or its lease ran out): it must
    /// change nothing more.
    /// Once true it stays true: a lease that ran out stopped the run's calls, and a renewal
    /// arriving afterwards must not make the stopped steps look failed.
    pub fn is_handing_off(&self) -> bool {
        if self.stop_reason() == Some(StopReason::Handoff) {
            return true;
        }
        if self.force.lease_ran_out() {
            self.hand_off();
            return true;
        }
        false
    }

    pub fn stop_reason(&self) -> Option<StopReason> {
        *self.stop.lock().expect("run control lock")
    }

    pub fn is_stopping(&self) -> bool {
        self.stop_reason().is_some()
    }

    /// Stop the run at once for [`StopReason::Handoff`], whatever it was asked before.
    pub fn hand_off(&self) {
        *self.stop.lock().expect("run control lock") = Some(StopReason::Handoff);
        self.force.trigger();
    }

    /// Ask the run to stop at its next safe point; after `grace` it is stopped by force. A
    /// cancel or timeout overrides an earlier pause or halt.
    pub fn request_stop(self: &Arc<Self>, reason: StopReason, grace: Duration) {
        {
            let mut stop = self.stop.lock().expect("run control lock");
            match (*stop, reason) {
                (Some(StopReason::Handoff), _) => return,
                (None, _) => *stop = Some(reason),
                (
                    Some(StopReason::Pause | StopReason::Halt),
                    StopReason::Cancel | StopReason::Timeout,
                ) => *stop = Some(reason),
                _ => return,
            }
        }
        let me = self.clone();
        std::thread::spawn(move || {
            let step = Duration::from_millis(20);
            let mut waited = Duration::ZERO;
            while waited < grace {
                if me.finished.load(Ordering::SeqCst) {
                    return;
                }
                std::thread::sleep(step);
                waited += step;
            }
            if !me.finished.load(Ordering::SeqCst) {
                me.force.trigger();
            }
        });
    }

    pub fn finish(&self) {
        self.finished.store(true, Ordering::SeqCst)
    }

    pub fn is_finished(&self) -> bool {
        self.finished.load(Ordering::SeqCst)
    }
}

/// A committed event, serialised once for every live reader; or word that events up to
/// `seq` were committed by another node (`json` is `None`): read them from the store.
#[derive(Debug)]
pub struct LiveEvent {
    pub seq: u64,
    pub kind: &'static str,
    /// The event as one line of JSON.
    pub json: Option<String>,
}

/// How many committed events live readers may fall behind before they re-read the store.
const LIVE_BACKLOG: usize = 4096;

pub struct JobHandle {
    id: String,
    record: Mutex<JobRecord>,
    store: Arc<dyn JobStore>,
    seq: watch::Sender<u64>,
    live: broadcast::Sender<Arc<LiveEvent>>,
    changes: broadcast::Sender<StateChange>,
    /// The background run working on the job, if any.
    pub run: Mutex<Option<Arc<RunControl>>>,
    /// Set (under the record's lock) when the job is deleted: later updates fail.
    deleted: AtomicBool,
    /// The lease this node holds on the job, when several nodes share the store.
    pub(super) lease: Mutex<Option<HeldLease>>,
    /// Held while a run is resumed, so two resumers (start-up recovery and the cluster's
    /// sweep) never start two runs of one job.
    pub(super) resuming: Mutex<()>,
    /// When the last progress notice was sent (`webhook_progress_secs`).
    last_progress_notice: Mutex<Option<std::time::Instant>>,
}

impl JobHandle {
    pub fn new(
        record: JobRecord,
        store: Arc<dyn JobStore>,
        changes: broadcast::Sender<StateChange>,
    ) -> Arc<Self> {
        let last = record.next_seq.saturating_sub(1);
        Arc::new(JobHandle {
            id: record.id.clone(),
            record: Mutex::new(record),
            store,
            seq: watch::channel(last).0,
            live: broadcast::channel(LIVE_BACKLOG).0,
            changes,
            run: Mutex::new(None),
            deleted: AtomicBool::new(false),
            lease: Mutex::new(None),
            resuming: Mutex::new(()),
            last_progress_notice: Mutex::new(None),
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Whether a progress notice may go now (none for `every`); if so, it counts as sent.
    pub(super) fn progress_notice_due(&self, every: Duration) -> bool {
        let mut last = self.last_progress_notice.lock().expect("notice lock");
        let now = std::time::Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < every) {
            return false;
        }
        *last = Some(now);
        true
    }

    pub fn store(&self) -> &Arc<dyn JobStore> {
        &self.store
    }

    pub fn is_deleted(&self) -> bool {
        self.deleted.load(Ordering::SeqCst)
    }

    /// Delete the job from the store; every later update of this handle fails. `check` runs
    /// first under the record's lock and may refuse.
    pub fn delete<E: From<StoreError>>(
        &self,
        check: impl FnOnce(&JobRecord) -> Result<(), E>,
    ) -> Result<(), E> {
        let fence = self.fence();
        let record = self.lock();
        check(&record)?;
        self.store.delete(&record.id, fence)?;
        self.deleted.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// A copy of the record as it is now.
    pub fn record(&self) -> JobRecord {
        self.lock().clone()
    }

    pub fn lock(&self) -> MutexGuard<'_, JobRecord> {
        self.record.lock().expect("job record lock")
    }

    pub fn status(&self) -> JobStatus {
        self.lock().status
    }

    /// Follow the job's latest event sequence number.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.seq.subscribe()
    }

    /// Receive every event committed from now on, serialised once for all readers. A reader
    /// that lags behind by more than the backlog gets `Lagged` and must re-read the store.
    pub fn subscribe_live(&self) -> broadcast::Receiver<Arc<LiveEvent>> {
        self.live.subscribe()
    }

    /// The job's status and its last committed event's sequence number, without a copy of the
    /// record.
    pub fn status_and_last_seq(&self) -> (JobStatus, u64) {
        let r = self.lock();
        (r.status, r.next_seq.saturating_sub(1))
    }

    /// Apply `change` to the record and commit it with the events it returns, atomically. If
    /// the store refuses, the record is left as it was and the error returned.
    pub fn update<R>(
        &self,
        change: impl FnOnce(&mut JobRecord) -> (Vec<EventBody>, R),
    ) -> Result<R, StoreError> {
        self.update_with_objects(|rec| {
            let (events, result) = change(rec);
            (events, vec![], result)
        })
    }

    /// [`JobHandle::update`] that also makes staged object results visible.
    pub fn update_with_objects<R>(
        &self,
        change: impl FnOnce(&mut JobRecord) -> (Vec<EventBody>, Vec<ObjectSegment>, R),
    ) -> Result<R, StoreError> {
        // Read before the record is locked (lock order: lease, then record).
        let fence = self.fence();
        let mut record = self.lock();
        if self.is_deleted() {
            return Err(StoreError::gone(&record.id));
        }
        let before = record.clone();
        let (bodies, segments, result) = change(&mut record);
        let now = Utc::now();
        record.updated_at = now;
        // The log window: the newest `max_log_lines` lines are kept. Lines past it are dropped
        // oldest first: stored ones by the store, new ones by never being written.
        let new_logs = bodies
            .iter()
            .filter(|b| matches!(b, EventBody::Log { .. }))
            .count() as u64;
        let max = record.options.max_log_lines as u64;
        let excess = (record.logs_kept + new_logs).saturating_sub(max);
        let drop_stored = excess.min(record.logs_kept);
        let mut skip_new = excess - drop_stored;
        record.logs_kept = (record.logs_kept + new_logs).min(max);
        record.logs_dropped += excess;
        let mut events = Vec::with_capacity(bodies.len());
        let mut state_changes = vec![];
        for body in bodies {
            if matches!(body, EventBody::Log { .. }) && skip_new > 0 {
                skip_new -= 1;
                continue;
            }
            let seq = record.next_seq;
            record.next_seq += 1;
            if let EventBody::Audit {
                actor,
                action,
                outcome,
            } = &body
            {
                record.audit.push(super::job::AuditNote {
                    at: now,
                    actor: actor.clone(),
                    action: action.clone(),
                    outcome: outcome.clone(),
                });
                let excess = record.audit.len().saturating_sub(super::job::AUDIT_NOTES);
                record.audit.drain(..excess);
            }
            if let EventBody::State { from, to, reason } = &body {
                state_changes.push(StateChange {
                    job: record.id.clone(),
                    seq,
                    from: *from,
                    to: *to,
                    reason: reason.clone(),
                });
            }
            events.push(FeedEvent { seq, at: now, body });
        }
        if let Err(e) = self.store.commit(Commit {
            record: &record,
            append: &events,
            drop_oldest_logs: drop_stored,
            segments: &segments,
            fence,
        }) {
            *record = before;
            return Err(e);
        }
        let last = record.next_seq.saturating_sub(1);
        // Published under the record's lock, so live readers see events in commit order.
        if self.live.receiver_count() > 0 {
            for e in &events {
                if let Ok(json) = serde_json::to_string(e) {
                    let _ = self.live.send(Arc::new(LiveEvent {
                        seq: e.seq,
                        kind: e.body.kind(),
                        json: Some(json),
                    }));
                }
            }
        }
        drop(record);
        self.seq.send_replace(last);
        for c in state_changes {
            let _ = self.changes.send(c);
        }
        Ok(result)
    }

    /// Put `record`, read from the store, in place of the one held (another node moved the
    /// job); live readers are told to read what they missed from the store.
    pub(super) fn replace_record(&self, record: JobRecord) {
        let mut held = self.lock();
        if record.next_seq < held.next_seq {
            return; // older than what this node saw
        }
        let last = record.next_seq.saturating_sub(1);
        let moved = record.next_seq > held.next_seq;
        *held = record;
        if moved && self.live.receiver_count() > 0 {
            let _ = self.live.send(Arc::new(LiveEvent {
                seq: last,
                kind: "elsewhere",
                json: None,
            }));
        }
        drop(held);
        if moved {
            self.seq.send_replace(last);
        }
    }

    /// Record a host log line.
    pub fn host_log(
        &self,
        level: LogLevel,
        step: Option<&str>,
        message: impl Into<String>,
    ) -> Result<(), StoreError> {
        let body = EventBody::Log {
            level,
            source: LogSource::Host,
            step: step.map(String::from),
            message: message.into(),
        };
        self.update(|_| (vec![body], ()))
    }
}

/// A state change event, moving the record. The caller checked the move is legal.
pub fn move_to(record: &mut JobRecord, to: JobStatus, reason: impl Into<String>) -> EventBody {
    let from = record.status;
    record.status = to;
    EventBody::State {
        from: Some(from),
        to,
        reason: reason.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn a_run_whose_lease_ran_out_keeps_handing_off_after_a_late_renewal() {
        let lease = LeaseClock::until(Instant::now() + Duration::from_millis(20));
        let control = RunControl::bounded_by(Some(lease.clone()));
        assert!(!control.is_handing_off());
        std::thread::sleep(Duration::from_millis(30));
        assert!(control.is_handing_off(), "the lease ran out");
        lease.extend_to(Instant::now() + Duration::from_secs(5));
        assert!(
            control.is_handing_off(),
            "a renewal arriving after the run was stopped does not make it carry on"
        );
        assert_eq!(control.stop_reason(), Some(StopReason::Handoff));
    }
}
