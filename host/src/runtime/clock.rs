//! The guest's monotonic clock, with sleeps the sandbox can cut short.
//!
//! Epoch interruption stops wasm code, but not a guest blocked inside a host call. The only
//! host call a guest can block in is a clock wait (`wasi:io/poll` on a pollable from
//! `subscribe-duration` or `subscribe-instant`): files, sockets and stdin are not granted. So
//! this replaces wasmtime-wasi's monotonic clock with one whose waits also end at the call's
//! deadline or on a force stop; the guest then resumes, and the epoch check stops it at once.

use super::events::ForceStop;
use super::host_imports::CallState;
use std::sync::LazyLock;
use std::time::{Duration, Instant};
use wasmtime::component::{HasData, Linker, Resource, ResourceTable};
use wasmtime_wasi::p2::bindings::clocks::monotonic_clock;
use wasmtime_wasi::p2::{DynPollable, Pollable, subscribe};

/// The clock's zero: process start, so guests cannot learn the host's uptime.
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

/// When waits in this call must end regardless of what the guest asked.
#[derive(Clone)]
pub(crate) struct WaitLimit {
    pub deadline: Instant,
    pub force_stop: ForceStop,
}

pub(crate) struct GuestClock<'a> {
    table: &'a mut ResourceTable,
    limit: &'a WaitLimit,
}

struct HasGuestClock;

impl HasData for HasGuestClock {
    type Data<'a> = GuestClock<'a>;
}

/// Put this clock in place of wasmtime-wasi's (which must be linked already).
pub(crate) fn shadow_monotonic_clock(linker: &mut Linker<CallState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    monotonic_clock::add_to_linker::<CallState, HasGuestClock>(linker, |s| GuestClock {
        table: &mut s.table,
        limit: &s.wait_limit,
    })?;
    linker.allow_shadowing(false);
    Ok(())
}

fn now_nanos() -> u64 {
    EPOCH.elapsed().as_nanos() as u64
}

impl GuestClock<'_> {
    fn wait(&mut self, duration: Duration) -> wasmtime::Result<Resource<DynPollable>> {
        let now = Instant::now();
        let wait = BoundedWait {
            until: now.checked_add(duration),
            limit: self.limit.clone(),
            yielded: !duration.is_zero(),
        };
        let resource = self.table.push(wait)?;
        subscribe(self.table, resource)
    }
}

impl monotonic_clock::Host for GuestClock<'_> {
    fn now(&mut self) -> wasmtime::Result<u64> {
        Ok(now_nanos())
    }

    fn resolution(&mut self) -> wasmtime::Result<u64> {
        Ok(1)
    }

    fn subscribe_instant(&mut self, when: u64) -> wasmtime::Result<Resource<DynPollable>> {
        self.wait(Duration::from_nanos(when.saturating_sub(now_nanos())))
    }

    fn subscribe_duration(&mut self, duration: u64) -> wasmtime::Result<Resource<DynPollable>> {
        self.wait(Duration::from_nanos(duration))
    }
}

/// A wait that ends at `until`, at the call's deadline, or on a force stop, whichever is first.
struct BoundedWait {
    /// `None`: further away than the clock can say; only the limit ends it.
    until: Option<Instant>,
    limit: WaitLimit,
    /// A zero wait yields once to the runtime, so a guest polling in a loop cannot starve it.
    yielded: bool,
}

/// How often a wait checks for a force stop.
const CHECK_EVERY: Duration = Duration::from_millis(10);

#[wasmtime_wasi::async_trait]
impl Pollable for BoundedWait {
    async fn ready(&mut self) {
        if !self.yielded {
            self.yielded = true;
            tokio::task::yield_now().await;
            return;
        }
        loop {
            let now = Instant::now();
            let end = self
                .until
                .map_or(self.limit.deadline, |u| u.min(self.limit.deadline));
            if now >= end || self.limit.force_stop.is_triggered() {
                return;
            }
            tokio::time::sleep((end - now).min(CHECK_EVERY)).await;
        }
    }
}
