//! What a checked plugin reports, kept as the engine would keep it: object results count
//! only once a checkpoint (or the step's end) commits them, and a simulated crash drops the
//! ones reported after the last checkpoint.

use crate::model::{LogLevel, ObjectResult};
use crate::runtime::{ForceStop, JobEvents};
use std::sync::Mutex;

/// The events of one lifecycle run.
#[derive(Default)]
pub(super) struct CheckEvents {
    state: Mutex<EventState>,
}

#[derive(Default)]
struct EventState {
    logs: Vec<(LogLevel, String)>,
    objects: Vec<ObjectResult>,
    /// How many of `objects` the last checkpoint committed.
    committed: usize,
    checkpoints: u64,
    last_checkpoint: Option<Vec<u8>>,
    /// Crash after this checkpoint of the run (counting from 1).
    crash_at: Option<u64>,
    crashed: bool,
    /// The stop of the call running now, raised to simulate the crash.
    stop: ForceStop,
}

impl CheckEvents {
    pub(super) fn crashing_at(crash_at: Option<u64>) -> Self {
        CheckEvents {
            state: Mutex::new(EventState {
                crash_at,
                ..Default::default()
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, EventState> {
        self.state.lock().expect("check events lock")
    }

    /// A fresh stop for the next call (a stop, once raised, stays raised).
    pub(super) fn new_call(&self) -> ForceStop {
        let stop = ForceStop::new();
        self.state().stop = stop.clone();
        stop
    }

    /// A step's call ended and the step completed: its results are committed.
    pub(super) fn commit(&self) {
        let mut s = self.state();
        s.committed = s.objects.len();
    }

    /// The crash happened during the call that just ended: drop what the last checkpoint
    /// did not commit, and give the checkpoint to resume from. `None` if no crash happened.
    pub(super) fn take_crash(&self) -> Option<Option<Vec<u8>>> {
        let mut s = self.state();
        if !s.crashed || s.crash_at.is_none() {
            return None;
        }
        s.crash_at = None;
        let committed = s.committed;
        s.objects.truncate(committed);
        Some(s.last_checkpoint.clone())
    }

    /// A retryable error ended the call: like the engine, drop the uncommitted results and
    /// resume from the step's last checkpoint.
    pub(super) fn retry_point(&self) -> Option<Vec<u8>> {
        let mut s = self.state();
        let committed = s.committed;
        s.objects.truncate(committed);
        s.last_checkpoint.clone()
    }

    /// Whether the crash asked for has not happened (the run saved too few checkpoints).
    pub(super) fn crash_pending(&self) -> bool {
        self.state().crash_at.is_some()
    }

    /// A step starts: its checkpoints so far belong to no other step.
    pub(super) fn start_step(&self) {
        self.state().last_checkpoint = None;
    }

    pub(super) fn checkpoints(&self) -> u64 {
        self.state().checkpoints
    }

    pub(super) fn objects(&self) -> Vec<ObjectResult> {
        self.state().objects.clone()
    }

    pub(super) fn object_count(&self) -> usize {
        self.state().objects.len()
    }

    pub(super) fn logs(&self) -> Vec<(LogLevel, String)> {
        self.state().logs.clone()
    }
}

impl JobEvents for CheckEvents {
    fn log(&self, level: LogLevel, message: String) {
        self.state().logs.push((level, message));
    }
    fn progress(&self, _done: u64, _total: Option<u64>, _current: Option<String>) {}
    fn objects(&self, results: Vec<ObjectResult>) -> Result<(), String> {
        self.state().objects.extend(results);
        Ok(())
    }
    fn checkpoint(&self, data: Vec<u8>) {
        let mut s = self.state();
        if s.crashed && s.crash_at.is_some() {
            // Past the crash: nothing more is recorded.
            return;
        }
        s.checkpoints += 1;
        s.committed = s.objects.len();
        s.last_checkpoint = Some(data);
        if s.crash_at == Some(s.checkpoints) {
            s.crashed = true;
            s.stop.trigger();
        }
    }
    fn is_cancelled(&self) -> bool {
        false
    }
}
