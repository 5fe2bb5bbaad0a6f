//! Which node may write for a job, when several share one store. The engine asks an
//! [`Ownership`] (the `cluster` module) before it changes a job: it claims the job's lease,
//! or learns which node holds it (and forwards the request there). The lease a node holds
//! lives on the job's [`JobHandle`] with its epoch, which every commit carries as its fence,
//! and a [`LeaseClock`] that stops the job's plugin calls the moment the lease would lapse.
//!
//! With the embedded store there is one node and no `Ownership`: every job is this node's.

use super::handle::JobHandle;
use super::remote::Request;
use crate::stop::LeaseClock;
use crate::store::StoreError;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a claim found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This node holds the lease now, at this epoch, until about `until` by its own clock.
    Mine { epoch: u64, until: Instant },
    /// Another node holds it.
    Elsewhere { owner: String },
}

/// How an action sent to another node ended.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Forwarded {
    /// The owner carried it out.
    Done,
    /// The owner refused it, as the API would have answered.
    Refused(RemoteRefusal),
    /// Nobody took it up in time (the owner is gone or frozen); it was withdrawn, so it will
    /// not happen later.
    NotTaken,
}

/// An error answer from the node that owns a job, as the API shows errors.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RemoteRefusal {
    pub status: u16,
    pub code: String,
    pub message: String,
    #[serde(default)]
    pub details: serde_json::Value,
}

pub trait Ownership: Send + Sync {
    /// This node's id, as leases name it.
    fn node(&self) -> &str;
    /// Take the lease of job `job` (creating it for a new job), or learn who holds it.
    fn claim(&self, job: &str) -> Result<Claim, StoreError>;
    /// Give the lease back: nobody works on the job here any more.
    fn release(&self, job: &str, epoch: u64);
    /// Ask `owner` to carry out `request` on `job` for `actor`, waiting at most `wait`.
    fn forward(
        &self,
        job: &str,
        owner: &str,
        request: Request,
        actor: &str,
        wait: Duration,
    ) -> Result<Forwarded, StoreError>;
    /// How long a lease lasts without renewal.
    fn lease_time(&self) -> Duration;
}

/// The lease this node holds on a job, with how many users (a run, requests) rely on it.
pub(super) struct HeldLease {
    pub epoch: u64,
    pub clock: LeaseClock,
    /// When it was claimed (a renewal asked before then does not know of it).
    claimed: Instant,
    holders: usize,
}

/// A reason to keep a job's lease: while any guard lives, the lease is kept (and renewed);
/// when the last one goes, it is given back.
pub struct LeaseGuard {
    handle: Arc<JobHandle>,
    ownership: Option<Arc<dyn Ownership>>,
    /// The epoch of the lease this guard keeps (a guard of a lease since lost and claimed
    /// again must not give the new one back).
    epoch: u64,
}

/// Whether this node may write for a job.
pub(super) enum Hold {
    Held(LeaseGuard),
    Elsewhere(String),
}

impl JobHandle {
    /// Keep the job's lease for a user: taken from the database unless this node holds it
    /// already. A lease newly taken re-reads the record (`reload`; not for a job being
    /// created), which another node may have moved.
    pub(super) fn hold(
        self: &Arc<Self>,
        ownership: &Option<Arc<dyn Ownership>>,
        reload: bool,
    ) -> Result<Hold, StoreError> {
        let Some(own) = ownership else {
            return Ok(Hold::Held(LeaseGuard {
                handle: self.clone(),
                ownership: None,
                epoch: 0,
            }));
        };
        let mut lease = self.lease.lock().expect("lease lock");
        if let Some(held) = lease.as_mut()
            && held.clock.is_valid()
        {
            held.holders += 1;
            return Ok(Hold::Held(LeaseGuard {
                handle: self.clone(),
                ownership: Some(own.clone()),
                epoch: held.epoch,
            }));
        }
        // Lock order: the lease, then the record (commits read the fence before they lock
        // the record).
        let id = self.id().to_string();
        match own.claim(&id)? {
            Claim::Elsewhere { owner } => Ok(Hold::Elsewhere(owner)),
            Claim::Mine { epoch, until } => {
                if let Some(old) = lease.take() {
                    // Whatever still works under the lapsed lease stops without writing.
                    old.clock.expire();
                    if let Some(run) = self.run.lock().expect("run lock").as_ref() {
                        run.hand_off();
                    }
                }
                if reload {
                    match self.store().get(&id) {
                        Ok(Some(fresh)) => self.replace_record(fresh),
                        Ok(None) => {
                            own.release(&id, epoch);
                            return Err(StoreError::gone(&id));
                        }
                        Err(e) => {
                            own.release(&id, epoch);
                            return Err(e);
                        }
                    }
                }
                *lease = Some(HeldLease {
                    epoch,
                    clock: LeaseClock::until(until),
                    claimed: Instant::now(),
                    holders: 1,
                });
                Ok(Hold::Held(LeaseGuard {
                    handle: self.clone(),
                    ownership: Some(own.clone()),
                    epoch,
                }))
            }
        }
    }

    /// The fence a commit carries: the epoch of the lease held, if any.
    pub fn fence(&self) -> Option<u64> {
        self.lease
            .lock()
            .expect("lease lock")
            .as_ref()
            .map(|l| l.epoch)
    }

    /// The clock of the lease held now (a run's plugin calls stop when it runs out).
    pub(super) fn lease_clock(&self) -> Option<LeaseClock> {
        self.lease
            .lock()
            .expect("lease lock")
            .as_ref()
            .map(|l| l.clock.clone())
    }

    /// The epoch of the lease held, if it was claimed before `asked`.
    pub(super) fn lease_claimed_before(&self, asked: Instant) -> Option<u64> {
        self.lease
            .lock()
            .expect("lease lock")
            .as_ref()
            .filter(|l| l.claimed < asked)
            .map(|l| l.epoch)
    }

    /// The lease at `epoch` was renewed in the database: valid here until `until`, unless
    /// its clock ran out before the renewal arrived (then this node's calls for the job were
    /// already stopped, and it must hand the job over). Whether it is still valid.
    pub(super) fn renewed(&self, epoch: u64, until: Instant) -> bool {
        match self.lease.lock().expect("lease lock").as_ref() {
            Some(l) if l.epoch == epoch => l.clock.extend_to(until),
            _ => true,
        }
    }

    /// The lease at `epoch` is gone (another node took the job, or it could not be renewed
    /// in time): stop everything this node does for the job, at once and without writing.
    pub(super) fn lease_lost(&self, epoch: u64) {
        let lost = {
            let mut lease = self.lease.lock().expect("lease lock");
            if lease.as_ref().is_none_or(|l| l.epoch != epoch) {
                return;
            }
            lease.take()
        };
        if let Some(l) = lost {
            l.clock.expire();
        }
        if let Some(run) = self.run.lock().expect("run lock").as_ref() {
            run.hand_off();
        }
    }

    /// Whether this node holds the job's lease (with the embedded store: always).
    pub fn held_here(&self) -> bool {
        self.lease.lock().expect("lease lock").is_some()
    }
}

impl LeaseGuard {
    /// One more user of the same lease (a run started by a request keeps it after the
    /// request is answered).
    pub fn share(&self) -> LeaseGuard {
        if self.ownership.is_some()
            && let Some(l) = self.handle.lease.lock().expect("lease lock").as_mut()
            && l.epoch == self.epoch
        {
            l.holders += 1;
        }
        LeaseGuard {
            handle: self.handle.clone(),
            ownership: self.ownership.clone(),
            epoch: self.epoch,
        }
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        let Some(own) = &self.ownership else {
            return;
        };
        let mut lease = self.handle.lease.lock().expect("lease lock");
        let Some(held) = lease.as_mut().filter(|l| l.epoch == self.epoch) else {
            return;
        };
        held.holders = held.holders.saturating_sub(1);
        if held.holders == 0 {
            held.clock.expire();
            *lease = None;
            drop(lease);
            own.release(self.handle.id(), self.epoch);
        }
    }
}
