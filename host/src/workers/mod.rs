//! External workers: plan steps that name a queue run in a tool outside the host, which
//! claims them over the API, reports like a plugin does, and completes or fails them.
//!
//! A *task* is one attempt of one step (execute or rollback) of one job, offered by the node
//! running the job while the step's thread waits for its end. Invariants:
//! - A task is held by at most one worker at a time, under a *lease* (a random token) that
//!   lasts [`WorkerQueues::lease`] unless renewed by a heartbeat or report. A lease that runs
//!   out ends the attempt (a retryable failure: the step's next attempt is a new task, offered
//!   again with the last committed checkpoint).
//! - Only the current lease's holder reports: anything sent under another lease, or after
//!   its task ended, is refused ("fenced"). Reports are applied under the task's lock, and the
//!   step's thread ends the attempt under the same lock, so no report of a fenced worker is
//!   recorded after its attempt ended.
//! - Leases live in memory only. After a restart the step's attempt is new, so every lease
//!   handed out before it is fenced.
//!
//! This module knows nothing of jobs or stores: what a worker reports goes to a
//! [`TaskSink`] the engine gives with the task.

mod protocol;

pub use protocol::{Beat, ClaimedTask, TaskKind, TaskOffer, WorkerReport};

use crate::model::{ErrorKind, MigrationError, StepReport};
use crate::runtime::JobEvents;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Where a task's reports go: the step's event tracking, plus a commit that makes what was
/// reported durable before the worker is answered.
pub trait TaskSink: JobEvents {
    /// Commit what was reported so far (a checkpoint with the results before it).
    fn commit_now(&self) -> Result<(), String>;
    /// A line in the job's log from the host (who claimed the task, a lease that ran out).
    fn host_note(&self, message: String);
}

/// What the step's thread sees of its run while it waits for a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStop {
    Running,
    /// The operator or the engine asked the run to stop (`pause`, `cancel`, `timeout`,
    /// `halt`, `handoff`): heartbeats tell the worker, which should stop and fail the task
    /// with kind `cancelled`.
    Asked(&'static str),
    /// The grace period ran out: the task is taken from its worker.
    Forced,
}

/// Why a worker's request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorkerError {
    #[error(
        "task '{0}' is not held by this lease: the lease ran out, the task ended, or the step was stopped"
    )]
    Fenced(String),
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    NotRecorded(String),
}

struct Holder {
    worker: String,
    lease: String,
    expires: Instant,
}

#[derive(Default)]
struct TaskState {
    holder: Option<Holder>,
    /// What the worker said at the end: its report, or its error.
    end: Option<Result<StepReport, MigrationError>>,
    /// Why the run is stopping, for heartbeats.
    stop: Option<&'static str>,
    /// The engine recorded the task's end (the worker's complete/fail is answered then).
    settled: bool,
    /// The task left the queues (ended, ran out, stopped).
    gone: bool,
}

struct Task {
    offer: TaskOffer,
    sink: Arc<dyn TaskSink>,
    state: Mutex<TaskState>,
    changed: Condvar,
}

impl Task {
    fn lock(&self) -> MutexGuard<'_, TaskState> {
        self.state.lock().expect("task lock")
    }
}

#[derive(Default)]
struct Queues {
    /// Task ids waiting for a worker, oldest first, by queue.
    open: HashMap<String, VecDeque<String>>,
    tasks: HashMap<String, Arc<Task>>,
}

/// The tasks this node offers, by queue.
pub struct WorkerQueues {
    queues: Mutex<Queues>,
    /// Woken whenever a task is offered: claims long-poll on it.
    offered: tokio::sync::Notify,
    lease_ms: std::sync::atomic::AtomicU64,
}

/// Marks the task settled when dropped: the engine has recorded its end.
pub struct Settle(Option<Arc<Task>>);

impl Drop for Settle {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.lock().settled = true;
            task.changed.notify_all();
        }
    }
}

impl Default for WorkerQueues {
    fn default() -> Self {
        WorkerQueues {
            queues: Mutex::default(),
            offered: tokio::sync::Notify::new(),
            lease_ms: 15_000.into(),
        }
    }
}

impl WorkerQueues {
    pub fn lease(&self) -> Duration {
        Duration::from_millis(self.lease_ms.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// How long a lease lasts without a heartbeat (at least 100 ms).
    pub fn set_lease(&self, lease: Duration) {
        let ms = lease.as_millis().max(100) as u64;
        self.lease_ms
            .store(ms, std::sync::atomic::Ordering::Relaxed);
    }

    fn queues(&self) -> MutexGuard<'_, Queues> {
        self.queues.lock().expect("queues lock")
    }

    /// Offer `offer` on its queue and wait (blocking) until the task ends: the worker's
    /// report or error, a lease that ran out (retryable), or a stop `run_stop` reports. The
    /// returned [`Settle`] is to be dropped once the engine has recorded the end.
    pub fn run(
        &self,
        offer: TaskOffer,
        sink: Arc<dyn TaskSink>,
        run_stop: &dyn Fn() -> RunStop,
    ) -> (Result<StepReport, MigrationError>, Settle) {
        let id = offer.task_id();
        let queue = offer.step.queue.clone().unwrap_or_default();
        let task = Arc::new(Task {
            offer,
            sink,
            state: Mutex::default(),
            changed: Condvar::new(),
        });
        {
            let mut q = self.queues();
            q.tasks.insert(id.clone(), task.clone());
            q.open.entry(queue).or_default().push_back(id.clone());
        }
        self.offered.notify_waiters();
        let end = self.wait_for_end(&task, run_stop);
        self.remove(&id);
        let event = match &end {
            Ok(_) => "completed",
            Err(e) if e.kind == ErrorKind::Cancelled => "stopped",
            Err(e) if e.retryable && e.message.contains("did not renew its lease") => "lease-lost",
            Err(_) => "failed",
        };
        crate::metrics::worker_task(task.offer.step.queue.as_deref().unwrap_or(""), event);
        (end, Settle(Some(task)))
    }

    fn wait_for_end(
        &self,
        task: &Task,
        run_stop: &dyn Fn() -> RunStop,
    ) -> Result<StepReport, MigrationError> {
        let cancelled = |m: &str| MigrationError::new(ErrorKind::Cancelled, m, false);
        let mut st = task.lock();
        loop {
            if let Some(end) = st.end.take() {
                st.gone = true;
                return end;
            }
            match run_stop() {
                RunStop::Running => {}
                RunStop::Forced => {
                    st.gone = true;
                    return Err(cancelled("the worker did not stop within the grace period"));
                }
                RunStop::Asked(why) if st.holder.is_none() => {
                    st.gone = true;
                    return Err(cancelled(&format!(
                        "{why} before a worker claimed the task"
                    )));
                }
                RunStop::Asked(why) => st.stop = Some(why),
            }
            if let Some(h) = st.holder.as_ref().filter(|h| h.expires <= Instant::now()) {
                let message = format!(
                    "worker '{}' did not renew its lease on task '{}' within {} ms",
                    h.worker,
                    task.offer.task_id(),
                    self.lease().as_millis()
                );
                st.gone = true;
                task.sink.host_note(message.clone());
                return Err(MigrationError::new(
                    ErrorKind::DependencyUnavailable,
                    message,
                    true,
                ));
            }
            st = task
                .changed
                .wait_timeout(st, Duration::from_millis(50))
                .expect("task lock")
                .0;
        }
    }

    fn remove(&self, id: &str) {
        let mut q = self.queues();
        if let Some(task) = q.tasks.remove(id) {
            let queue = task.offer.step.queue.clone().unwrap_or_default();
            if let Some(open) = q.open.get_mut(&queue) {
                open.retain(|t| t != id);
                if open.is_empty() {
                    q.open.remove(&queue);
                }
            }
        }
    }

    /// Give the oldest open task of any of `queues` to `worker`, if there is one.
    pub fn try_claim(&self, queues: &[String], worker: &str) -> Option<ClaimedTask> {
        let task = {
            let mut q = self.queues();
            let mut found = None;
            for name in queues {
                if let Some(id) = q.open.get_mut(name).and_then(VecDeque::pop_front) {
                    found = q.tasks.get(&id).cloned();
                    break;
                }
            }
            q.open.retain(|_, v| !v.is_empty());
            found?
        };
        let lease = uuid::Uuid::new_v4().simple().to_string();
        {
            let mut st = task.lock();
            if st.gone {
                return None;
            }
            st.holder = Some(Holder {
                worker: worker.to_string(),
                lease: lease.clone(),
                expires: Instant::now() + self.lease(),
            });
        }
        crate::metrics::worker_task(task.offer.step.queue.as_deref().unwrap_or(""), "claimed");
        task.sink.host_note(format!(
            "worker '{worker}' claimed task '{}' (attempt {})",
            task.offer.task_id(),
            task.offer.attempt
        ));
        Some(task.offer.claimed(lease, self.lease()))
    }

    /// Wait up to `wait` for a task of `queues` (a long poll).
    pub async fn claim(
        self: &Arc<Self>,
        queues: &[String],
        worker: &str,
        wait: Duration,
    ) -> Option<ClaimedTask> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = self.offered.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(t) = self.try_claim_off_thread(queues, worker).await {
                return Some(t);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return None;
            }
        }
    }

    async fn try_claim_off_thread(
        self: &Arc<Self>,
        queues: &[String],
        worker: &str,
    ) -> Option<ClaimedTask> {
        // The claim writes a line to the job's log (durable before the worker hears of it).
        let (me, queues, worker) = (self.clone(), queues.to_vec(), worker.to_string());
        tokio::task::spawn_blocking(move || me.try_claim(&queues, &worker))
            .await
            .ok()
            .flatten()
    }

    /// The queue of task `id`, if this node offers it.
    pub fn queue_of(&self, id: &str) -> Option<String> {
        self.queues()
            .tasks
            .get(id)
            .and_then(|t| t.offer.step.queue.clone())
    }

    /// The task `id` held under `lease`, with its state locked, lease renewed.
    fn held<'a>(
        &self,
        task: &'a Task,
        id: &str,
        lease: &str,
    ) -> Result<MutexGuard<'a, TaskState>, WorkerError> {
        let mut st = task.lock();
        let now = Instant::now();
        let ok = !st.gone
            && st.end.is_none()
            && st
                .holder
                .as_ref()
                .is_some_and(|h| h.lease == lease && h.expires > now);
        if !ok {
            return Err(WorkerError::Fenced(id.to_string()));
        }
        if let Some(h) = st.holder.as_mut() {
            h.expires = now + self.lease();
        }
        Ok(st)
    }

    fn task(&self, id: &str) -> Result<Arc<Task>, WorkerError> {
        self.queues()
            .tasks
            .get(id)
            .cloned()
            .ok_or_else(|| WorkerError::Fenced(id.to_string()))
    }

    fn beat(&self, st: &TaskState) -> Beat {
        Beat {
            lease_ms: self.lease().as_millis() as u64,
            stop: st.stop.map(str::to_string),
        }
    }

    /// Renew the lease; the answer says whether the worker is to stop.
    pub fn heartbeat(&self, id: &str, lease: &str) -> Result<Beat, WorkerError> {
        let task = self.task(id)?;
        let st = self.held(&task, id, lease)?;
        Ok(self.beat(&st))
    }

    /// Record what the worker reports (logs, progress, results, a checkpoint), durably before
    /// this returns; renews the lease.
    pub fn report(&self, id: &str, lease: &str, report: WorkerReport) -> Result<Beat, WorkerError> {
        let task = self.task(id)?;
        // Held while the report is applied: the attempt cannot end (and a next one start)
        // halfway through a fenced worker's report.
        let st = self.held(&task, id, lease)?;
        report.apply(task.sink.as_ref())?;
        task.sink.commit_now().map_err(WorkerError::NotRecorded)?;
        Ok(self.beat(&st))
    }

    /// End the task with the worker's report or error; returns once the engine recorded it.
    pub fn finish(
        &self,
        id: &str,
        lease: &str,
        end: Result<StepReport, MigrationError>,
        wait: Duration,
    ) -> Result<(), WorkerError> {
        let task = self.task(id)?;
        let mut st = self.held(&task, id, lease)?;
        st.end = Some(end);
        task.changed.notify_all();
        let deadline = Instant::now() + wait;
        while !st.settled {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(WorkerError::NotRecorded(format!(
                    "task '{id}' ended but the host did not record it within {} ms",
                    wait.as_millis()
                )));
            }
            st = task.changed.wait_timeout(st, left).expect("task lock").0;
        }
        Ok(())
    }

    /// How many tasks wait for a worker, by queue (for metrics and the API).
    pub fn open_counts(&self) -> Vec<(String, usize)> {
        let mut v: Vec<_> = self
            .queues()
            .open
            .iter()
            .map(|(q, t)| (q.clone(), t.len()))
            .collect();
        v.sort();
        v
    }
}

#[cfg(test)]
mod tests;
