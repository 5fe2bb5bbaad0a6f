//! What a running step reports, made durable cheaply and consistently.
//!
//! Invariant: object results are committed only together with the checkpoint that follows
//! them (or with the step's completion). After a crash the step resumes from its last
//! committed checkpoint and reports the rest again, so no result is lost or counted twice.
//! Logs and progress are batched and flushed at most every [`FLUSH_EVERY`].

use super::handle::{JobHandle, RunControl};
use super::job::{EventBody, JobRecord, LogSource, eta_seconds, progress_of};
use crate::model::{LogLevel, ObjectResult, ObjectStatus};
use crate::runtime::JobEvents;
use chrono::Utc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Longest time logs and progress wait in memory before they are written.
pub const FLUSH_EVERY: Duration = Duration::from_millis(250);

#[derive(Default)]
struct Pending {
    logs: Vec<(LogLevel, String)>,
    objects: Vec<ObjectResult>,
    progress: Option<(u64, Option<u64>, Option<String>)>,
    progress_dirty: bool,
    last_flush: Option<Instant>,
}

/// Receives a step's events from the plugin (see [`JobEvents`]).
pub struct StepEvents {
    handle: Arc<JobHandle>,
    control: Arc<RunControl>,
    step: String,
    pending: Mutex<Pending>,
    /// When false, events are only recorded (tracking disabled, for the benchmark).
    tracking: bool,
}

impl StepEvents {
    pub fn new(handle: Arc<JobHandle>, control: Arc<RunControl>, step: &str) -> Self {
        StepEvents {
            handle,
            control,
            step: step.to_string(),
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

    /// At step completion, inside the engine's own update of `rec`: everything pending,
    /// objects included, so they commit with the step's new status.
    pub fn drain_for_completion(&self, rec: &mut JobRecord) -> Vec<EventBody> {
        let mut p = self.pending();
        self.drain(&mut p, true, rec)
    }

    /// Objects reported since the last checkpoint, discarded when a step fails: a retry or
    /// resume starts from that checkpoint and reports them again.
    pub fn discard_objects(&self) -> usize {
        let mut p = self.pending();
        let n = p.objects.len();
        p.objects.clear();
        n
    }

    fn commit(&self, p: &mut Pending, checkpoint: Option<Vec<u8>>, with_objects: bool) {
        if !self.tracking {
            return;
        }
        let step = self.step.clone();
        let result = self.handle.update(|rec| {
            let mut events = self.drain_into(p, with_objects || checkpoint.is_some(), rec);
            if let (Some(cp), Some(s)) = (checkpoint, rec.step_mut(&step)) {
                s.checkpoint = Some(cp);
            }
            events.shrink_to_fit();
            (events, ())
        });
        if let Err(e) = result {
            tracing::error!(job = %self.handle.lock().id, error = %e, "could not record step events");
        }
    }

    fn drain(&self, p: &mut Pending, with_objects: bool, rec: &mut JobRecord) -> Vec<EventBody> {
        if !self.tracking {
            return vec![];
        }
        self.drain_into(p, with_objects, rec)
    }

    /// Move pending events into `rec`, returning the feed events for them.
    fn drain_into(
        &self,
        p: &mut Pending,
        with_objects: bool,
        rec: &mut JobRecord,
    ) -> Vec<EventBody> {
        let mut events = Vec::new();
        for (level, message) in p.logs.drain(..) {
            events.push(EventBody::Log {
                level,
                source: LogSource::Plugin,
                step: Some(self.step.clone()),
                message,
            });
        }
        if with_objects && !p.objects.is_empty() {
            let results = std::mem::take(&mut p.objects);
            for o in &results {
                match o.status {
                    ObjectStatus::Success => rec.counts.completed += 1,
                    ObjectStatus::Error => rec.counts.failed += 1,
                    ObjectStatus::Skipped => rec.counts.skipped += 1,
                }
            }
            if let Some(last) = results.last() {
                rec.current_object = Some(last.name.clone());
            }
            let first_index = rec.object_index;
            rec.object_index += results.len() as u64;
            if let Some(s) = rec.step_mut(&self.step) {
                s.objects += results.len() as u64;
            }
            events.push(EventBody::Objects {
                step: self.step.clone(),
                first_index,
                results,
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
        events
    }

    fn due(p: &Pending) -> bool {
        p.last_flush.is_none_or(|t| t.elapsed() >= FLUSH_EVERY)
    }
}

impl JobEvents for StepEvents {
    fn log(&self, level: LogLevel, message: String) {
        let mut p = self.pending();
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
            self.pending().objects.extend(results);
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
