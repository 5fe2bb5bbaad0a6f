//! The plugins a node loads in the background at start-up, so an 18 MB component compiling for
//! half a minute blocks neither the API nor the plugins that are ready: what each one is doing
//! (for `/readyz/plugins`), and a way to wait for them (for jobs that need one).

use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// Where one start-up load stands.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum LoadState {
    /// Not started yet (plugins load one at a time, smallest first).
    Waiting,
    Compiling,
    /// Loaded as `plugin` (`name@version`).
    Loaded {
        plugin: String,
        took_ms: u64,
    },
    Failed {
        error: String,
    },
}

/// One plugin being loaded at start-up, named by where it comes from (a file, or an upload).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StartupLoad {
    pub source: String,
    #[serde(flatten)]
    pub state: LoadState,
}

#[derive(Default)]
struct Loads {
    /// True from [`PluginLoads::begin`] until [`PluginLoads::end`].
    in_progress: bool,
    entries: Vec<StartupLoad>,
    generation: u64,
}

/// The start-up loads of one node.
#[derive(Default)]
pub struct PluginLoads {
    loads: Mutex<Loads>,
    changed: Condvar,
}

impl PluginLoads {
    /// Loading starts: `sources` are known and waiting (more may join with [`Self::add`]).
    pub fn begin(&self, sources: impl IntoIterator<Item = String>) {
        let mut loads = self.lock();
        loads.in_progress = true;
        loads
            .entries
            .extend(sources.into_iter().map(|source| StartupLoad {
                source,
                state: LoadState::Waiting,
            }));
    }

    /// A source found while loading (an uploaded plugin read from the store).
    pub fn add(&self, source: String) {
        self.lock().entries.push(StartupLoad {
            source,
            state: LoadState::Waiting,
        });
    }

    pub fn set(&self, source: &str, state: LoadState) {
        let mut loads = self.lock();
        if let Some(entry) = loads.entries.iter_mut().find(|e| e.source == source) {
            entry.state = state;
        }
        loads.generation += 1;
        drop(loads);
        self.changed.notify_all();
    }

    /// Every start-up load is over (each loaded or failed).
    pub fn end(&self) {
        let mut loads = self.lock();
        loads.in_progress = false;
        for entry in &mut loads.entries {
            if matches!(entry.state, LoadState::Waiting | LoadState::Compiling) {
                entry.state = LoadState::Failed {
                    error: "loading stopped before this plugin's turn".into(),
                };
            }
        }
        loads.generation += 1;
        drop(loads);
        self.changed.notify_all();
    }

    pub fn in_progress(&self) -> bool {
        self.lock().in_progress
    }

    /// Every start-up load and where it stands, and whether loading still goes on.
    pub fn statuses(&self) -> (bool, Vec<StartupLoad>) {
        let loads = self.lock();
        (loads.in_progress, loads.entries.clone())
    }

    /// The sources still waiting or compiling.
    pub fn unfinished(&self) -> Vec<String> {
        self.lock()
            .entries
            .iter()
            .filter(|e| matches!(e.state, LoadState::Waiting | LoadState::Compiling))
            .map(|e| e.source.clone())
            .collect()
    }

    /// A number that grows with every change, to wait for the next one with
    /// [`Self::wait_after`] without missing one that happens in between.
    pub fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// Block until something changed since `seen` (a load started or finished, or loading
    /// ended) or `deadline` passes. False when there is nothing more to wait for: loading is
    /// over, or the deadline passed.
    pub fn wait_after(&self, seen: u64, deadline: Option<Instant>) -> bool {
        let mut loads = self.lock();
        while loads.in_progress && loads.generation == seen {
            let left = match deadline {
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => left,
                    _ => return false,
                },
                None => Duration::from_secs(3600),
            };
            loads = self
                .changed
                .wait_timeout(loads, left)
                .expect("plugin loads lock")
                .0;
        }
        loads.generation != seen
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Loads> {
        self.loads.lock().expect("plugin loads lock")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_waiter_wakes_when_a_load_finishes_and_stops_waiting_when_loading_ends() {
        let loads = Arc::new(PluginLoads::default());
        assert!(!loads.wait_after(0, None), "nothing to wait for yet");
        loads.begin(["a.wasm".to_string()]);
        let seen = loads.generation();
        let other = loads.clone();
        let finisher = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            other.set(
                "a.wasm",
                LoadState::Loaded {
                    plugin: "a@1.0.0".into(),
                    took_ms: 1,
                },
            );
            other.end();
        });
        assert!(loads.wait_after(seen, None), "woken by the load");
        finisher.join().unwrap();
        let (in_progress, entries) = loads.statuses();
        assert!(!in_progress);
        assert!(matches!(entries[0].state, LoadState::Loaded { .. }));
    }

    #[test]
    fn a_deadline_ends_the_wait_and_end_fails_what_never_ran() {
        let loads = PluginLoads::default();
        loads.begin(["big.wasm".to_string()]);
        assert!(!loads.wait_after(loads.generation(), Some(Instant::now())));
        assert_eq!(loads.unfinished(), ["big.wasm"]);
        loads.end();
        assert!(loads.unfinished().is_empty());
        assert!(matches!(
            loads.statuses().1[0].state,
            LoadState::Failed { .. }
        ));
    }
}
