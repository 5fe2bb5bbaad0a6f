//! The signal that stops a call by force, shared by the runtime (which interrupts the guest)
//! and the connectors (which cancel what the guest waits on: a SQL statement, an HTTP
//! exchange). Its own module, so imports flow one way.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

/// A flag the driver raises to stop a call by force: the plugin is interrupted at its next
/// epoch tick (within about 10 ms) whatever it is doing. A stop bound to a [`LeaseClock`] is
/// also raised the moment that clock runs out.
#[derive(Clone, Default)]
pub struct ForceStop {
    flag: Arc<AtomicBool>,
    lease: Option<LeaseClock>,
}

impl ForceStop {
    pub fn new() -> Self {
        Self::default()
    }

    /// A stop that also holds once `lease` runs out.
    pub fn bounded_by(lease: LeaseClock) -> Self {
        ForceStop {
            flag: Default::default(),
            lease: Some(lease),
        }
    }

    pub fn trigger(&self) {
        self.flag.store(true, Ordering::SeqCst)
    }

    pub fn is_triggered(&self) -> bool {
        self.flag.load(Ordering::SeqCst) || self.lease_ran_out()
    }

    /// The lease this stop is bound to ran out (the node may no longer act for the job).
    pub fn lease_ran_out(&self) -> bool {
        self.lease.as_ref().is_some_and(|l| !l.is_valid())
    }
}

/// Until when this node may act for a job, by its own monotonic clock: the right to write that
/// a lease gives, checked locally. Renewals move it on; once it has passed, every call bound to
/// it stops at once, whatever the database says, so a node that was frozen (or cut off) past
/// its lease does not go on writing when it wakes.
#[derive(Clone, Default)]
pub struct LeaseClock(Arc<AtomicU64>);

/// The origin of [`LeaseClock`] readings.
static ORIGIN: LazyLock<Instant> = LazyLock::new(Instant::now);

fn ticks(at: Instant) -> u64 {
    at.saturating_duration_since(*ORIGIN).as_nanos() as u64 + 1
}

impl LeaseClock {
    /// A clock valid until `until`.
    pub fn until(until: Instant) -> Self {
        LeaseClock(Arc::new(AtomicU64::new(ticks(until))))
    }

    /// Valid until `until`, if that is later and the clock is still valid; whether it is.
    /// A clock that ran out or was expired stays so, even if the renewal that would have
    /// kept it arrives a moment later: calls bound to it were already stopped, so the run
    /// must hand the job over rather than carry on as if nothing happened (a lease claimed
    /// again gets a clock of its own).
    pub fn extend_to(&self, until: Instant) -> bool {
        let until = ticks(until);
        self.0
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |deadline| {
                let valid = ticks(Instant::now()) < deadline;
                (valid && until > deadline).then_some(until)
            })
            .is_ok()
            || self.is_valid()
    }

    /// No longer valid, for good.
    pub fn expire(&self) {
        self.0.store(0, Ordering::SeqCst)
    }

    pub fn is_valid(&self) -> bool {
        ticks(Instant::now()) < self.0.load(Ordering::SeqCst)
    }

    /// How long it stays valid from now.
    pub fn remaining(&self) -> Duration {
        let until = self.0.load(Ordering::SeqCst);
        Duration::from_nanos(until.saturating_sub(ticks(Instant::now())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stop_bound_to_a_lease_holds_once_the_lease_runs_out() {
        let lease = LeaseClock::until(Instant::now() + Duration::from_millis(30));
        let stop = ForceStop::bounded_by(lease.clone());
        assert!(!stop.is_triggered());
        assert!(lease.extend_to(Instant::now() + Duration::from_millis(60)));
        assert!(
            lease.remaining() > Duration::from_millis(40),
            "renewed in time"
        );
        std::thread::sleep(Duration::from_millis(80));
        assert!(stop.is_triggered(), "the lease ran out");
        assert!(
            !lease.extend_to(Instant::now() + Duration::from_secs(5)),
            "a renewal that comes too late does not revive the lease"
        );
        assert!(stop.is_triggered(), "a lease that ran out stays so");
        let lease = LeaseClock::until(Instant::now() + Duration::from_secs(5));
        let stop = ForceStop::bounded_by(lease.clone());
        lease.expire();
        assert!(stop.is_triggered());
        assert!(!lease.extend_to(Instant::now() + Duration::from_secs(5)));
        assert!(stop.is_triggered(), "an expired lease stays expired");
        let unbound = ForceStop::new();
        assert!(!unbound.is_triggered());
        unbound.trigger();
        assert!(unbound.is_triggered());
    }
}
