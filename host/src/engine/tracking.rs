//! What a running step reports, made durable cheaply and consistently.
//!
//! Invariant: object results become visible (and counted) only together with the checkpoint
//! that follows them, or with the step's completion. They are *staged* in the store as they
//! arrive, so host memory does not grow with their number; a step resumed after a crash or
//! retried after a failure stages again from its last committed count, overwriting what was
//! staged and never committed. So no result is lost or counted twice.
//! Logs and progress are batched and flushed at most every [`FLUSH_EVERY`] (or sooner when
//! [`MAX_PENDING_LOG_BYTES`] of log text wait).

use super::handle::{JobHandle, RunControl};
use super::job::{EventBody, JobRecord, LogSource, eta_seconds, progress_of};
use crate::model::{LogLevel, ObjectResult, ObjectStatus};
use crate::runtime::JobEvents;
use crate::store::{ObjectSegment, StagedObject, StoreError};
use chrono::Utc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Longest time logs and progress wait in memory before they are written.
pub const FLUSH_EVERY: Duration = Duration::from_millis(250);

/// Log text that waits in memory before it is written regardless of [`FLUSH_EVERY`].
pub const MAX_PENDING_LOG_BYTES: usize = 1 << 20;

/// How many of a commit's object results its feed event carries (the rest are paged from
/// `/objects`): enough for a live view, bounded whatever the batch size.
pub const OBJECTS_PER_EVENT: usize = 100;

#[derive(Default)]
struct Pending {
    logs: Vec<(LogLevel, String)>,
    log_bytes: usize,
    /// Results staged since the last commit, by status.
    staged: u64,
    by_status: [u64; 3],
    /// The first few staged results, for the feed event.
    sample: Vec<ObjectResult>,
    last_object: Option<String>,
    progress: Option<(u64, Option<u64>, Option<String>)>,
    progress_dirty: bool,
    last_flush: Option<Instant>,
    /// A staging write failed: the step cannot record its results, so it must not complete.
    failure: Option<StoreError>,
}

/// Receives a step's events from the plugin (see [`JobEvents`]).
pub struct StepEvents {
    handle: Arc<JobHandle>,
    control: Arc<RunControl>,
    step: String,
    /// The step's position in the plan (how staged results are keyed).
    ordinal: u32,
    /// Results of this step committed so far: staging continues from here.
    committed: Mutex<u64>,
    pending: Mutex<Pending>,
    /// When false, events are only recorded (tracking disabled, for the benchmark).
    tracking: bool,
}

impl StepEvents {
    pub fn new(handle: Arc<JobHandle>, control: Arc<RunControl>, step: &str) -> Self {
        let (ordinal, committed) = {
            let rec = handle.lock();
            let ordinal = rec.steps.iter().position(|s| s.id == step).unwrap_or(0);
            (
                ordinal as u32,
                rec.steps.get(ordinal).map_or(0, |s| s.objects),
            )
        };
        StepEvents {
            handle,
            control,
            step: step.to_string(),
            ordinal,
            committed: Mutex::new(committed),
            pending: Mutex::new(Pending::default()),
            tracking: true,
        }
    }

    /// A sink that keeps nothing (used to measure what tracking costs).
    pub fn untracked(handle: Arc<JobHandle>, control: Arc<RunControl>, step: &str) -> Self {
        StepEvents {
            tracking: false,
            ..Self::new(handle, control, step)
        }
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().expect("pending events lock")
    }

    /// Write logs and progress now (objects wait for a checkpoint).
    pub fn flush_logs(&self) {
        let mut p = self.pending();
        self.commit(&mut p, None, false);
    }

    /// Why the step's results could not be recorded, if they could not.
    pub fn failure(&self) -> Option<StoreError> {
        self.pending().failure.clone()
    }

    /// At step completion, inside the engine's own update of `rec`: everything pending,
    /// objects included, so they commit with the step's new status.
    pub fn drain_for_completion(
        &self,
        rec: &mut JobRecord,
    ) -> (Vec<EventBody>, Vec<ObjectSegment>) {
        let mut p = self.pending();
        if !self.tracking {
            return (vec![], vec![]);
        }
        self.drain_into(&mut p, true, rec)
    }

    /// Objects staged since the last checkpoint, discarded when a step fails: a retry or
    /// resume starts from that checkpoint, stages them again and overwrites these.
    pub fn discard_objects(&self) -> u64 {
        let mut p = self.pending();
        let n = p.staged;
        p.staged = 0;
        p.by_status = [0; 3];
        p.sample.clear();
        p.last_object = None;
        n
    }

    fn commit(&self, p: &mut Pending, checkpoint: Option<Vec<u8>>, with_objects: bool) {
        if !self.tracking {
            return;
        }
        let step = self.step.clone();
        let result = self.handle.update_with_objects(|rec| {
            let (mut events, segments) =
                self.drain_into(p, with_objects || checkpoint.is_some(), rec);
            if let (Some(cp), Some(s)) = (checkpoint, rec.step_mut(&step)) {
                s.checkpoint = Some(cp);
            }
            events.shrink_to_fit();
            (events, segments, ())
        });
        if let Err(e) = result {
            tracing::error!(job = %self.handle.lock().id, error = %e, "could not record step events");
            p.failure.get_or_insert(e);
        }
    }

    /// Move pending events into `rec`, returning the feed events and the object segment.
    fn drain_into(
        &self,
        p: &mut Pending,
        with_objects: bool,
        rec: &mut JobRecord,
    ) -> (Vec<EventBody>, Vec<ObjectSegment>) {
        let mut events = Vec::new();
        let mut segments = Vec::new();
        p.log_bytes = 0;
        for (level, message) in p.logs.drain(..) {
            events.push(EventBody::Log {
                level,
                source: LogSource::Plugin,
                step: Some(self.step.clone()),
                message,
            });
        }
        if with_objects && p.staged > 0 {
            let mut committed = self.committed.lock().expect("committed lock");
            let count = p.staged;
            let [ok, failed, skipped] = std::mem::take(&mut p.by_status);
            rec.counts.completed += ok;
            rec.counts.failed += failed;
            rec.counts.skipped += skipped;
            crate::metrics::objects_recorded(ok, failed, skipped);
            if let Some(last) = p.last_object.take() {
                rec.current_object = Some(last);
            }
            let first_index = rec.object_index;
            rec.object_index += count;
            if let Some(s) = rec.step_mut(&self.step) {
                s.objects += count;
            }
            segments.push(ObjectSegment {
                first_index,
                step: self.ordinal,
                first_staged: *committed,
                count,
            });
            *committed += count;
            p.staged = 0;
            events.push(EventBody::Objects {
                step: self.step.clone(),
                first_index,
                count,
                results: std::mem::take(&mut p.sample),
            });
        }
        if p.progress_dirty {
            p.progress_dirty = false;
            if let Some((done, total, current)) = p.progress.clone() {
                if let Some(s) = rec.step_mut(&self.step) {
                    s.progress_done = done;
                    s.progress_total = total;
                }
                rec.current_step = Some(self.step.clone());
                if current.is_some() {
                    rec.current_object = current.clone();
                }
                let (percentage, _) = progress_of(rec);
                events.push(EventBody::Progress {
                    step: self.step.clone(),
                    done,
                    total,
                    current_object: current,
                    percentage,
                    eta_seconds: eta_seconds(rec, Utc::now()),
                });
            }
        }
        p.last_flush = Some(Instant::now());
        (events, segments)
    }

    fn due(p: &Pending) -> bool {
        p.log_bytes >= MAX_PENDING_LOG_BYTES
            || p.last_flush.is_none_or(|t| t.elapsed() >= FLUSH_EVERY)
    }

    /// Stage `results` after those staged so far.
    fn stage(&self, p: &mut Pending, results: Vec<ObjectResult>) {
        let first = *self.committed.lock().expect("committed lock") + p.staged;
        let at = Utc::now();
        let staged: Vec<StagedObject> = results
            .into_iter()
            .map(|result| StagedObject { at, result })
            .collect();
        let id = self.handle.lock().id.clone();
        if let Err(e) = self
            .handle
            .store()
            .stage_objects(&id, self.ordinal, first, &staged)
        {
            tracing::error!(job = %id, error = %e, "could not stage object results");
            p.failure.get_or_insert(e);
            return;
        }
        for o in staged {
            p.by_status[match o.result.status {
                ObjectStatus::Success => 0,
                ObjectStatus::Error => 1,
                ObjectStatus::Skipped => 2,
            }] += 1;
            p.staged += 1;
            p.last_object = Some(o.result.name.clone());
            if p.sample.len() < OBJECTS_PER_EVENT {
                p.sample.push(o.result);
            }
        }
    }
}

impl JobEvents for StepEvents {
    fn log(&self, level: LogLevel, message: String) {
        let mut p = self.pending();
        p.log_bytes += message.len();
        p.logs.push((level, message));
        if Self::due(&p) {
            self.commit(&mut p, None, false);
        }
    }

    fn progress(&self, done: u64, total: Option<u64>, current_object: Option<String>) {
        let mut p = self.pending();
        p.progress = Some((done, total, current_object));
        p.progress_dirty = true;
        if Self::due(&p) {
            self.commit(&mut p, None, false);
        }
    }

    fn objects(&self, results: Vec<ObjectResult>) {
        if self.tracking {
            let mut p = self.pending();
            self.stage(&mut p, results);
        }
    }

    fn checkpoint(&self, data: Vec<u8>) {
        let mut p = self.pending();
        self.commit(&mut p, Some(data), true);
    }

    fn is_cancelled(&self) -> bool {
        self.control.is_stopping()
    }
}
