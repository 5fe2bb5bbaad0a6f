//! What a running plugin reports to whoever drives it (the engine, a test harness).

use crate::model::{LogLevel, ObjectResult};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Receives everything a plugin reports during one call. The engine implements it to record
/// progress durably; calls arrive on the thread running the plugin, in the order made.
pub trait JobEvents: Send + Sync {
    fn log(&self, level: LogLevel, message: String);
    fn progress(&self, done: u64, total: Option<u64>, current_object: Option<String>);
    fn objects(&self, results: Vec<ObjectResult>);
    /// A checkpoint for the current step. Everything reported before it belongs with it.
    fn checkpoint(&self, data: Vec<u8>);
    /// Whether the plugin should stop at its next safe point.
    fn is_cancelled(&self) -> bool;
}

/// Discards every event; for calls that report nothing worth keeping.
pub struct NoEvents;

impl JobEvents for NoEvents {
    fn log(&self, _: LogLevel, _: String) {}
    fn progress(&self, _: u64, _: Option<u64>, _: Option<String>) {}
    fn objects(&self, _: Vec<ObjectResult>) {}
    fn checkpoint(&self, _: Vec<u8>) {}
    fn is_cancelled(&self) -> bool {
        false
    }
}

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
