//! What a running step reports, made durable cheaply and consistently.
//!
//! Invariant: object results become visible (and counted) only together with the checkpoint
//! that follows them, or with the step's completion. They are *staged* in the store in
//! batches ([`STAGE_BATCH_RESULTS`]) and always before the commit that shows them, so host
//! memory does not grow with their number; a step resumed after a crash or
//! retried after a failure stages again from its last committed count, overwriting what was
//! staged and never committed. So no result is lost or counted twice.
//!
//! Every commit waits for the disk, so commits are batched: logs and progress at most every
//! [`FLUSH_EVERY`] (or sooner when [`MAX_PENDING_LOG_BYTES`] of log text wait), checkpoints at
//! most every [`CHECKPOINT_EVERY`] — a checkpoint arriving sooner waits in memory, replaced by
//! the next, and is committed by that one, by the next commit of logs or progress, or when the
//! step is stopped. A crash then resumes
//! from the last committed checkpoint, redoing at most that much work; handlers make batches
//! idempotent for exactly this (the SDK documents it).

use super::handle::{JobHandle, RunControl};
use super::job::{EventBody, JobRecord, LogSource, eta_seconds, progress_of};
use crate::model::{LogLevel, ObjectResult, ObjectStatus};
use crate::runtime::JobEvents;
use crate::store::{ObjectSegment, Reported, StoreError};
use chrono::Utc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Longest time logs and progress wait in memory before they are written.
pub const FLUSH_EVERY: Duration = Duration::from_millis(250);

/// Shortest time between two checkpoint commits of one step. Each commit waits for the disk:
/// at 100 ms tracking cost sled 4 points more of a copy's throughput (BENCHMARKS.md).
pub const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);

/// Log text that waits in memory before it is written regardless of [`FLUSH_EVERY`].
pub const MAX_PENDING_LOG_BYTES: usize = 1 << 20;

/// Reported object results wait in memory until this many (or [`STAGE_BATCH_BYTES`] of them)
/// gather, or a commit is to show them, and are then staged in one write: a write per report
/// made tracking cost 15-20 % of a copy's throughput, a write per batch of them 3-4 %
/// (BENCHMARKS.md).
pub const STAGE_BATCH_RESULTS: u64 = 10_000;
/// About how many bytes of reported results wait in memory at most.
pub const STAGE_BATCH_BYTES: usize = 4 << 20;

/// How many of a commit's object results its feed event carries (the rest are paged from
/// `/objects`): enough for a live view, bounded whatever the batch size.
pub const OBJECTS_PER_EVENT: usize = 100;

/// Object results staged and not yet committed.
#[derive(Default, Clone)]
struct Staged {
    count: u64,
    /// Success, error, skipped.
    by_status: [u64; 3],
    /// The first few, for the feed event.
    sample: Vec<ObjectResult>,
    last_object: Option<String>,
}

#[derive(Default)]
struct Pending {
    logs: Vec<(LogLevel, String)>,
    log_bytes: usize,
    staged: Staged,
    /// The newest checkpoint not yet committed, with what was staged when it was saved.
    checkpoint: Option<(Vec<u8>, Staged)>,
    last_checkpoint_commit: Option<Instant>,
    progress: Option<(u64, Option<u64>, Option<String>)>,
    progress_dirty: bool,
    last_flush: Option<Instant>,
    /// A staging write or a commit failed: the step's results are not all recorded, so it
    /// must not complete.
    failure: Option<StoreError>,
    /// Results reported and counted in `staged` but not written to the store yet, with the
    /// time of their report.
    unstaged: Vec<(chrono::DateTime<Utc>, Vec<ObjectResult>)>,
    unstaged_count: u64,
    unstaged_bytes: usize,
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
    /// The most object results the step may record.
    max_results: u64,
    /// Told of the job's progress when it asks for notices (`webhook_progress_secs`).
    progress_hooks: Option<Arc<Mutex<Vec<super::FinalHook>>>>,
    /// Who the step's log lines come from: the plugin, or the worker running the step.
    log_source: LogSource,
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
            max_results: crate::runtime::bounds::DEFAULT_MAX_RESULTS_PER_STEP,
            progress_hooks: None,
            log_source: LogSource::Plugin,
        }
    }

    /// Tell `hooks` of the job's progress after commits, as often as the job asks.
    pub fn with_progress_hooks(mut self, hooks: Arc<Mutex<Vec<super::FinalHook>>>) -> Self {
        self.progress_hooks = Some(hooks);
        self
    }

    /// Send a progress notice if the job asks for them and the last one is old enough.
    fn maybe_notify_progress(&self) {
        let Some(hooks) = &self.progress_hooks else {
            return;
        };
        let every = self.handle.lock().options.webhook_progress_secs;
        if every == 0 || !self.handle.progress_notice_due(Duration::from_secs(every)) {
            return;
        }
        let snap = super::job::snapshot(&self.handle.record(), Utc::now());
        for hook in hooks.lock().expect("hooks lock").iter() {
            hook(&snap);
        }
    }

    /// Log lines come from `source` (a worker, for a step on a queue).
    pub fn with_log_source(mut self, source: LogSource) -> Self {
        self.log_source = source;
        self
    }

    /// At most `n` object results for the step (the host's `max_object_results_per_step`).
    pub fn with_max_results(mut self, n: u64) -> Self {
        self.max_results = n;
        self
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
        self.commit(&mut p, CommitObjects::None);
    }

    /// The step stops without completing (paused, cancelled, failed): commit the newest
    /// checkpoint still waiting in memory, with the results staged before it, so a resume
    /// redoes as little as possible; results staged after it are dropped (a resume stages
    /// them again), as are logs and progress, which are written.
    pub fn stop(&self) -> u64 {
        let mut p = self.pending();
        let objects = Self::riders(&p);
        self.commit(&mut p, objects);
        p.unstaged.clear();
        p.unstaged_count = 0;
        p.unstaged_bytes = 0;
        std::mem::take(&mut p.staged).count
    }

    /// Commit now what waits in memory (the newest checkpoint with the results before it, or
    /// else logs and progress), regardless of [`CHECKPOINT_EVERY`]: a worker's report is
    /// answered only once it is durable.
    pub fn commit_now(&self) -> Result<(), StoreError> {
        let mut p = self.pending();
        let objects = Self::riders(&p);
        self.commit(&mut p, objects);
        p.failure.clone().map_or(Ok(()), Err)
    }

    /// Why the step's results could not be recorded, if they could not.
    pub fn failure(&self) -> Option<StoreError> {
        self.pending().failure.clone()
    }

    /// At step completion, inside the engine's own update of `rec`: everything pending,
    /// objects included, so they commit with the step's new status. Call
    /// [`StepEvents::write_staged`] before (outside the update).
    pub fn drain_for_completion(
        &self,
        rec: &mut JobRecord,
    ) -> (Vec<EventBody>, Vec<ObjectSegment>) {
        let mut p = self.pending();
        if !self.tracking {
            return (vec![], vec![]);
        }
        p.checkpoint = None;
        self.drain_into(&mut p, CommitObjects::All, rec)
    }

    /// Write the reported results still in memory to the store (before any commit that
    /// shows them). Call without the record's lock held.
    pub fn write_staged(&self) {
        let mut p = self.pending();
        self.write_unstaged(&mut p);
    }

    fn write_unstaged(&self, p: &mut Pending) {
        if p.unstaged.is_empty() {
            return;
        }
        let committed = *self.committed.lock().expect("committed lock");
        let first = committed + p.staged.count - p.unstaged_count;
        let reports: Vec<Reported<'_>> = p
            .unstaged
            .iter()
            .map(|(at, objects)| Reported { at: *at, objects })
            .collect();
        let id = self.handle.id();
        let written = self.handle.store().stage_reports(
            id,
            self.handle.fence(),
            self.ordinal,
            first,
            &reports,
        );
        drop(reports);
        if let Err(e) = written {
            tracing::error!(job = %id, error = %e, "could not stage object results");
            p.failure.get_or_insert(e);
        }
        p.unstaged.clear();
        p.unstaged_count = 0;
        p.unstaged_bytes = 0;
    }

    fn commit(&self, p: &mut Pending, objects: CommitObjects) {
        if !self.tracking {
            return;
        }
        if objects != CommitObjects::None {
            self.write_unstaged(p);
        }
        let step = self.step.clone();
        let checkpoint = match objects {
            CommitObjects::AtCheckpoint => p.checkpoint.as_ref().map(|(data, _)| data.clone()),
            _ => None,
        };
        let result = self.handle.update_with_objects(|rec| {
            let (mut events, segments) = self.drain_into(p, objects, rec);
            if let (Some(cp), Some(s)) = (checkpoint, rec.step_mut(&step)) {
                s.checkpoint = Some(cp);
            }
            events.shrink_to_fit();
            (events, segments, ())
        });
        match result {
            Ok(()) => {
                if objects == CommitObjects::AtCheckpoint {
                    p.last_checkpoint_commit = Some(Instant::now());
                }
                self.maybe_notify_progress();
            }
            Err(e) => {
                tracing::error!(job = %self.handle.id(), error = %e, "could not record step events");
                p.failure.get_or_insert(e);
            }
        }
    }

    /// Move pending events into `rec`, returning the feed events and the object segment.
    fn drain_into(
        &self,
        p: &mut Pending,
        objects: CommitObjects,
        rec: &mut JobRecord,
    ) -> (Vec<EventBody>, Vec<ObjectSegment>) {
        let mut events = Vec::new();
        let mut segments = Vec::new();
        p.log_bytes = 0;
        for (level, message) in p.logs.drain(..) {
            events.push(EventBody::Log {
                level,
                source: self.log_source,
                step: Some(self.step.clone()),
                message,
            });
        }
        if objects != CommitObjects::None && !p.unstaged.is_empty() {
            // The caller did not write them first: showing them would point at nothing.
            p.failure.get_or_insert(StoreError::unavailable(
                "object results were not staged before the commit meant to show them",
            ));
            return (events, segments);
        }
        let done = match objects {
            CommitObjects::None => None,
            CommitObjects::All => Some(std::mem::take(&mut p.staged)),
            CommitObjects::AtCheckpoint => p.checkpoint.take().map(|(_, at)| {
                // What was staged after the checkpoint stays pending.
                p.staged.count -= at.count;
                for (rest, then) in p.staged.by_status.iter_mut().zip(at.by_status) {
                    *rest -= then;
                }
                p.staged.sample.clear();
                at
            }),
        };
        if let Some(done) = done.filter(|d| d.count > 0) {
            let mut committed = self.committed.lock().expect("committed lock");
            let [ok, failed, skipped] = done.by_status;
            rec.counts.completed += ok;
            rec.counts.failed += failed;
            rec.counts.skipped += skipped;
            crate::metrics::objects_recorded(ok, failed, skipped);
            if let Some(last) = done.last_object {
                rec.current_object = Some(last);
            }
            let first_index = rec.object_index;
            rec.object_index += done.count;
            if let Some(s) = rec.step_mut(&self.step) {
                s.objects += done.count;
            }
            segments.push(ObjectSegment {
                first_index,
                step: self.ordinal,
                first_staged: *committed,
                count: done.count,
            });
            *committed += done.count;
            events.push(EventBody::Objects {
                step: self.step.clone(),
                first_index,
                count: done.count,
                results: done.sample,
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

    /// What a commit of logs and progress takes with it: the checkpoint waiting in memory
    /// (and the results before it), if there is one. The commit waits for the disk anyway, and
    /// a handler that reports progress just before each checkpoint would otherwise pay two
    /// such waits back to back, one for the progress, one for the checkpoint.
    fn riders(p: &Pending) -> CommitObjects {
        if p.checkpoint.is_some() {
            CommitObjects::AtCheckpoint
        } else {
            CommitObjects::None
        }
    }

    /// Count `results` after those staged so far; they are written to the store in batches.
    fn stage(&self, p: &mut Pending, results: Vec<ObjectResult>) {
        let staged = &mut p.staged;
        staged.count += results.len() as u64;
        if let Some(last) = results.last() {
            staged.last_object = Some(last.name.clone());
        }
        for o in &results {
            staged.by_status[match o.status {
                ObjectStatus::Success => 0,
                ObjectStatus::Error => 1,
                ObjectStatus::Skipped => 2,
            }] += 1;
            if staged.sample.len() < OBJECTS_PER_EVENT {
                staged.sample.push(o.clone());
            }
        }
        p.unstaged_count += results.len() as u64;
        p.unstaged_bytes += results
            .iter()
            .map(|o| o.name.len() + o.error.as_ref().map_or(0, String::len) + 64)
            .sum::<usize>();
        p.unstaged.push((Utc::now(), results));
        if p.unstaged_count >= STAGE_BATCH_RESULTS || p.unstaged_bytes >= STAGE_BATCH_BYTES {
            self.write_unstaged(p);
        }
    }
}

/// Which staged object results a commit makes visible.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CommitObjects {
    None,
    /// Those staged before the pending checkpoint, with it.
    AtCheckpoint,
    /// Every one (the step completed).
    All,
}

impl JobEvents for StepEvents {
    fn log(&self, level: LogLevel, message: String) {
        let mut p = self.pending();
        p.log_bytes += message.len();
        p.logs.push((level, message));
        if Self::due(&p) {
            let riders = Self::riders(&p);
            self.commit(&mut p, riders);
        }
    }

    fn progress(&self, done: u64, total: Option<u64>, current_object: Option<String>) {
        let mut p = self.pending();
        p.progress = Some((done, total, current_object));
        p.progress_dirty = true;
        if Self::due(&p) {
            let riders = Self::riders(&p);
            self.commit(&mut p, riders);
        }
    }

    fn objects(&self, results: Vec<ObjectResult>) -> Result<(), String> {
        if !self.tracking {
            return Ok(());
        }
        let mut p = self.pending();
        let total =
            *self.committed.lock().expect("committed lock") + p.staged.count + results.len() as u64;
        if total > self.max_results {
            crate::metrics::limit_hit("results-per-step");
            return Err(format!(
                "step '{}' would hold {total} object results; this host allows {} per step",
                self.step, self.max_results
            ));
        }
        self.stage(&mut p, results);
        Ok(())
    }

    fn checkpoint(&self, data: Vec<u8>) {
        let mut p = self.pending();
        let at = p.staged.clone();
        p.checkpoint = Some((data, at));
        let due = p
            .last_checkpoint_commit
            .is_none_or(|t| t.elapsed() >= CHECKPOINT_EVERY);
        if due {
            self.commit(&mut p, CommitObjects::AtCheckpoint);
        }
    }

    fn is_cancelled(&self) -> bool {
        self.control.is_stopping()
    }
}
