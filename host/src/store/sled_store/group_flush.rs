//! Group commit for sled: a writer that must not go on before its writes are on disk calls
//! [`GroupFlush::sync`]. One caller at a time runs sled's flush (which writes and fsyncs
//! everything logged so far); callers that arrive meanwhile wait for the next flush and share
//! it, so many concurrent commits cost one fsync, not one each.

use super::super::StoreError;
use std::sync::{Condvar, Mutex};

pub struct GroupFlush {
    db: sled::Db,
    state: Mutex<FlushState>,
    flushed: Condvar,
}

#[derive(Default)]
struct FlushState {
    /// Tickets handed out: ticket `n` is taken after the caller's writes were applied.
    issued: u64,
    /// Every ticket up to this one is on disk.
    durable: u64,
    /// A flush is running (its leader is outside the lock).
    running: bool,
}

impl GroupFlush {
    pub fn new(db: sled::Db) -> Self {
        GroupFlush {
            db,
            state: Mutex::new(FlushState::default()),
            flushed: Condvar::new(),
        }
    }

    pub fn db(&self) -> &sled::Db {
        &self.db
    }

    /// Return once everything this thread wrote before the call is durable.
    pub fn sync(&self) -> Result<(), StoreError> {
        let mut state = self.state.lock().expect("flush lock");
        state.issued += 1;
        let ticket = state.issued;
        loop {
            if state.durable >= ticket {
                return Ok(());
            }
            if state.running {
                state = self.flushed.wait(state).expect("flush lock");
                continue;
            }
            // Lead a flush covering every ticket issued so far.
            state.running = true;
            let covers = state.issued;
            drop(state);
            let result = self.db.flush();
            state = self.state.lock().expect("flush lock");
            state.running = false;
            if result.is_ok() {
                state.durable = state.durable.max(covers);
            }
            self.flushed.notify_all();
            if let Err(e) = result {
                return Err(super::sled_error("flushing to disk", e));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn concurrent_writers_each_return_after_their_write_is_flushed() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let flush = Arc::new(GroupFlush::new(db.clone()));
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let (db, flush) = (db.clone(), flush.clone());
                std::thread::spawn(move || {
                    for i in 0..50u32 {
                        db.insert(format!("{t}/{i}"), &i.to_be_bytes()).unwrap();
                        flush.sync().unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let state = flush.state.lock().unwrap();
        assert_eq!(state.issued, 400);
        assert_eq!(state.durable, 400, "every ticket was covered by a flush");
        assert!(!state.running);
    }
}
