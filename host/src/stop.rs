//! The signal that stops a call by force, shared by the runtime (which interrupts the guest)
//! and the connectors (which cancel what the guest waits on: a SQL statement, an HTTP
//! exchange). Its own module, so imports flow one way.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// A flag the driver raises to stop a call by force: the plugin is interrupted at its next
/// epoch tick (within about 10 ms) whatever it is doing.
#[derive(Clone, Default)]
pub struct ForceStop(Arc<AtomicBool>);

impl ForceStop {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn trigger(&self) {
        self.0.store(true, Ordering::SeqCst)
    }
    pub fn is_triggered(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}
