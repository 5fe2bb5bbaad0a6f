//! The engine's side of sharing a store with other nodes: an operator's request is carried
//! out by whichever node holds the job's lease (forwarded there when that is not this one),
//! changes committed elsewhere reach this node's readers, and leases are renewed, lost or
//! handed back.

use super::handle::StateChange;
use super::job::JobSnapshot;
use super::lifecycle::DeleteMode;
use super::ownership::Forwarded;
use super::state::Action;
use super::{Engine, EngineError};
use crate::store::FeedNotice;
use std::time::{Duration, Instant};

/// What an operator asks of one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Act(Action),
    Delete(DeleteMode),
    /// Run again the failed objects of the job's partial steps, or of the one step named.
    RetryObjects(Option<String>),
}

impl Request {
    /// The request as it travels between nodes: its action, and for `retry-objects` the
    /// step after a colon.
    pub fn as_str(&self) -> String {
        match self {
            Request::Act(a) => a.as_str().to_string(),
            Request::Delete(DeleteMode::Safe) => "delete".into(),
            Request::Delete(DeleteMode::Force) => "delete-force".into(),
            Request::RetryObjects(None) => "retry-objects".into(),
            Request::RetryObjects(Some(step)) => format!("retry-objects:{step}"),
        }
    }

    pub fn parse(text: &str) -> Option<Request> {
        if let Some(step) = text.strip_prefix("retry-objects:") {
            return Some(Request::RetryObjects(Some(step.to_string())));
        }
        Some(match text {
            "retry-objects" => Request::RetryObjects(None),
            "validate" => Request::Act(Action::Validate),
            "replan" => Request::Act(Action::Replan),
            "execute" => Request::Act(Action::Execute),
            "approve" => Request::Act(Action::Approve),
            "pause" => Request::Act(Action::Pause),
            "resume" => Request::Act(Action::Resume),
            "cancel" => Request::Act(Action::Cancel),
            "retry" => Request::Act(Action::Retry),
            "rollback" => Request::Act(Action::Rollback),
            "delete" => Request::Delete(DeleteMode::Safe),
            "delete-force" => Request::Delete(DeleteMode::Force),
            _ => return None,
        })
    }
}

/// The longest an operator's request waits for the node that owns its job.
const FORWARD_BUDGET: Duration = Duration::from_secs(30);

impl Engine {
    /// Carry out `request` on job `id` for `actor`, on whichever node holds the job's lease.
    /// The snapshot after it (none after a delete).
    pub fn act(
        &self,
        id: &str,
        request: Request,
        actor: &str,
    ) -> Result<Option<JobSnapshot>, EngineError> {
        let started = Instant::now();
        loop {
            let owner = match self.act_here(id, request.clone(), actor) {
                Err(EngineError::OwnedElsewhere { owner, .. }) => owner,
                done => return done,
            };
            let own = self
                .inner
                .ownership()
                .expect("only a shared store has other owners");
            let left = FORWARD_BUDGET.saturating_sub(started.elapsed());
            if left.is_zero() {
                return Err(EngineError::Unreachable(format!(
                    "node {owner} holds migration {id} and did not answer within {}s",
                    FORWARD_BUDGET.as_secs()
                )));
            }
            // Wait about a lease: by then the owner answered, or its lease ran out and the
            // next round claims the job here.
            let wait = left.min(own.lease_time() + Duration::from_secs(1));
            match own.forward(id, &owner, request.clone(), actor, wait)? {
                Forwarded::Done => {
                    return match request {
                        Request::Delete(_) => Ok(None),
                        Request::Act(_) | Request::RetryObjects(_) => self.snapshot(id).map(Some),
                    };
                }
                Forwarded::Refused(refusal) => return Err(EngineError::Remote(refusal)),
                Forwarded::NotTaken => continue,
            }
        }
    }

    /// Carry out `request` here, if this node holds (or can take) the job's lease.
    pub fn act_here(
        &self,
        id: &str,
        request: Request,
        actor: &str,
    ) -> Result<Option<JobSnapshot>, EngineError> {
        let snapshot = match request {
            Request::Delete(mode) => return self.delete(id, actor, mode).map(|()| None),
            Request::RetryObjects(step) => self.retry_objects(id, actor, step.as_deref())?,
            Request::Act(Action::RetryObjects) => self.retry_objects(id, actor, None)?,
            Request::Act(Action::Validate) => self.validate(id, actor)?,
            Request::Act(Action::Replan) => self.replan(id, actor)?,
            Request::Act(Action::Execute) => self.execute(id, actor)?,
            Request::Act(Action::Approve) => self.approve(id, actor)?,
            Request::Act(Action::Pause) => self.pause(id, actor)?,
            Request::Act(Action::Resume) => self.resume(id, actor)?,
            Request::Act(Action::Cancel) => self.cancel(id, actor)?,
            Request::Act(Action::Retry) => self.retry(id, actor)?,
            Request::Act(Action::Rollback) => self.rollback(id, actor)?,
            Request::Act(Action::Delete) => {
                return self.delete(id, actor, DeleteMode::Safe).map(|()| None);
            }
        };
        Ok(Some(snapshot))
    }

    /// Another node committed changes of a job: followers of every job hear of its state
    /// changes, and readers of that job here read what they missed.
    pub fn observe_remote(&self, notice: &FeedNotice) {
        for change in &notice.changes {
            let _ = self.inner.changes.send(StateChange::clone(change));
        }
        if let Some(handle) = self.inner.jobs.live_handle(&notice.job)
            && !handle.held_here()
            && handle.status_and_last_seq().1 < notice.seq
            && let Ok(Some(record)) = self.inner.store.get(&notice.job)
        {
            handle.replace_record(record);
        }
    }

    /// Read again every job someone follows here that another node works on (after this
    /// node may have missed notices).
    pub fn resync_remote(&self) {
        for handle in self.inner.jobs.live() {
            if !handle.held_here()
                && let Ok(Some(record)) = self.inner.store.get(handle.id())
            {
                handle.replace_record(record);
            }
        }
    }

    /// The leases this node holds: (job, epoch).
    pub fn leases_held(&self) -> Vec<(String, u64)> {
        self.inner
            .jobs
            .live()
            .iter()
            .filter_map(|h| h.fence().map(|epoch| (h.id().to_string(), epoch)))
            .collect()
    }

    /// A renewal asked at `asked` renewed the leases in `renewed` until about `until`; every
    /// other lease this node held then is lost: what it did for those jobs stops at once.
    pub fn leases_renewed(&self, renewed: &[(String, u64)], asked: Instant, until: Instant) {
        for handle in self.inner.jobs.live() {
            let Some(epoch) = handle.lease_claimed_before(asked) else {
                continue;
            };
            if renewed
                .iter()
                .any(|(id, e)| id == handle.id() && *e == epoch)
            {
                if !handle.renewed(epoch, until) {
                    // The database still says the lease is ours, but its clock here ran out
                    // first and the run stopped: give it back so a node (this one, too)
                    // resumes the job from its checkpoints, rather than renewing a lease
                    // nobody works under.
                    tracing::warn!(
                        job = handle.id(),
                        epoch,
                        "the job's lease ran out here before it was renewed; handing the job over"
                    );
                    handle.lease_lost(epoch);
                    if let Some(own) = self.inner.ownership() {
                        own.release(handle.id(), epoch);
                    }
                }
            } else {
                tracing::warn!(
                    job = handle.id(),
                    epoch,
                    "lost the job's lease; stopping here"
                );
                handle.lease_lost(epoch);
            }
        }
    }

    /// This node stops: every run hands its job over (stops at once, changes nothing) and its
    /// lease is given back, so another node resumes the job without waiting for the lease to
    /// run out. Waits at most `within` for the runs to end.
    pub fn hand_off_all(&self, within: Duration) {
        let handles = self.inner.jobs.live();
        for h in &handles {
            if let Some(run) = h.run.lock().expect("run lock").as_ref() {
                run.hand_off();
            }
        }
        let started = Instant::now();
        while started.elapsed() < within && !handles.iter().all(|h| super::handle_idle(h)) {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_request_survives_its_trip_between_nodes() {
        let mut requests: Vec<Request> = Action::ALL
            .into_iter()
            .filter(|a| *a != Action::Delete && *a != Action::RetryObjects)
            .map(Request::Act)
            .collect();
        requests.extend([
            Request::Delete(DeleteMode::Safe),
            Request::Delete(DeleteMode::Force),
            Request::RetryObjects(None),
            Request::RetryObjects(Some("copy:with-colon".into())),
        ]);
        for r in requests {
            assert_eq!(Request::parse(&r.as_str()), Some(r.clone()), "{r:?}");
        }
        assert_eq!(Request::parse("explode"), None);
    }
}
