//! The jobs in memory. A job's [`JobHandle`] is loaded from the store when someone needs it
//! and shared by everyone working on it (a background run, an SSE watcher, a request); it is
//! dropped when the last of them lets go. So memory follows the jobs in use, not the history,
//! and there is never more than one handle (one lock, one sequence counter) per job.

use super::handle::{JobHandle, StateChange};
use crate::store::{JobStore, StoreError};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use tokio::sync::broadcast;

pub(crate) struct JobTable {
    store: Arc<dyn JobStore>,
    changes: broadcast::Sender<StateChange>,
    handles: Mutex<Handles>,
}

#[derive(Default)]
struct Handles {
    by_id: HashMap<String, Weak<JobHandle>>,
    /// Entries at the last pruning of dropped handles.
    after_prune: usize,
}

impl JobTable {
    pub fn new(store: Arc<dyn JobStore>, changes: broadcast::Sender<StateChange>) -> Self {
        JobTable {
            store,
            changes,
            handles: Mutex::new(Handles::default()),
        }
    }

    /// The job's handle: the one in use, or one loaded from the store. `None` if there is no
    /// such job. The table's lock is held while loading, so two callers never make two handles.
    pub fn get(&self, id: &str) -> Result<Option<Arc<JobHandle>>, StoreError> {
        let mut handles = self.handles.lock().expect("job table lock");
        if let Some(h) = handles.by_id.get(id).and_then(Weak::upgrade)
            && !h.is_deleted()
        {
            return Ok(Some(h));
        }
        let Some(record) = self.store.get(id)? else {
            handles.by_id.remove(id);
            return Ok(None);
        };
        let handle = JobHandle::new(record, self.store.clone(), self.changes.clone());
        handles.insert(id, &handle);
        Ok(Some(handle))
    }

    /// A handle for a job just created (its first commit made).
    pub fn insert(&self, handle: &Arc<JobHandle>) {
        let id = handle.lock().id.clone();
        self.handles
            .lock()
            .expect("job table lock")
            .insert(&id, handle);
    }

    /// The job's handle if someone holds it now (never read from the store).
    pub fn live_handle(&self, id: &str) -> Option<Arc<JobHandle>> {
        self.handles
            .lock()
            .expect("job table lock")
            .by_id
            .get(id)
            .and_then(Weak::upgrade)
            .filter(|h| !h.is_deleted())
    }

    /// Every handle someone holds now (running jobs among them).
    pub fn live(&self) -> Vec<Arc<JobHandle>> {
        self.handles
            .lock()
            .expect("job table lock")
            .by_id
            .values()
            .filter_map(Weak::upgrade)
            .filter(|h| !h.is_deleted())
            .collect()
    }
}

impl Handles {
    fn insert(&mut self, id: &str, handle: &Arc<JobHandle>) {
        self.by_id.insert(id.to_string(), Arc::downgrade(handle));
        // Forget dropped handles once the map has doubled since the last time: amortised O(1).
        if self.by_id.len() > 2 * self.after_prune + 64 {
            self.by_id.retain(|_, w| w.strong_count() > 0);
            self.after_prune = self.by_id.len();
        }
    }
}
