//! A counting semaphore for blocking threads: how many `plan`/`validate` calls may run at once,
//! so a burst of looping plugins cannot take every core.

use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

pub(crate) struct Permits {
    state: Mutex<(usize, usize)>,
    freed: Condvar,
}

/// A held permit; dropping it frees it.
pub(crate) struct Permit<'a>(&'a Permits);

impl Permits {
    pub fn new(limit: usize) -> Self {
        Permits {
            state: Mutex::new((0, limit.max(1))),
            freed: Condvar::new(),
        }
    }

    pub fn set_limit(&self, limit: usize) {
        self.state.lock().expect("permits lock").1 = limit.max(1);
        self.freed.notify_all();
    }

    pub fn limit(&self) -> usize {
        self.state.lock().expect("permits lock").1
    }

    /// A permit, waiting up to `wait` for one; `None` if none was free in time.
    pub fn acquire(&self, wait: Duration) -> Option<Permit<'_>> {
        let until = Instant::now() + wait;
        let mut state = self.state.lock().expect("permits lock");
        while state.0 >= state.1 {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            state = self
                .freed
                .wait_timeout(state, left)
                .expect("permits lock")
                .0;
        }
        state.0 += 1;
        Some(Permit(self))
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.0.state.lock().expect("permits lock").0 -= 1;
        self.0.freed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_the_limit_are_held_and_a_freed_one_is_reused() {
        let p = Permits::new(2);
        let a = p.acquire(Duration::ZERO).unwrap();
        let _b = p.acquire(Duration::ZERO).unwrap();
        assert!(p.acquire(Duration::from_millis(20)).is_none());
        drop(a);
        assert!(p.acquire(Duration::ZERO).is_some());
        p.set_limit(3);
        assert_eq!(p.limit(), 3);
    }
}
