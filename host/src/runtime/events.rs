//! What a running plugin reports to whoever drives it (the engine, a test harness).

use crate::model::{LogLevel, ObjectResult};

/// Receives everything a plugin reports during one call. The engine implements it to record
/// progress durably; calls arrive on the thread running the plugin, in the order made.
pub trait JobEvents: Send + Sync {
    fn log(&self, level: LogLevel, message: String);
    fn progress(&self, done: u64, total: Option<u64>, current_object: Option<String>);
    /// Object results; `Err` (with the reason) when the job may record no more.
    fn objects(&self, results: Vec<ObjectResult>) -> Result<(), String>;
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
    fn objects(&self, _: Vec<ObjectResult>) -> Result<(), String> {
        Ok(())
    }
    fn checkpoint(&self, _: Vec<u8>) {}
    fn is_cancelled(&self) -> bool {
        false
    }
}

pub use crate::stop::ForceStop;
