//! Group commit for sled: a writer that must not go on before its writes are on disk calls
//! [`GroupFlush::sync`]. One caller at a time runs sled's flush (which writes and fsyncs
//! everything logged so far); callers that arrive meanwhile wait for the next flush and share
//! it, so many concurrent commits cost one fsync, not one each.
//!
//! Lost writes are detected. sled recovers a damaged log by cutting it at the damage, silently
//! dropping everything after. So every flush also writes its number into the database, and
//! once that flush is durable, into a small file beside it (the *stamp*). At start-up, a
//! database whose flush number is below the stamp's lost writes it had acknowledged: it is
//! reported as damaged instead of served.

use super::super::StoreError;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};

pub struct GroupFlush {
    db: sled::Db,
    meta: sled::Tree,
    stamp: Option<PathBuf>,
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
    /// Flushes made durable, over the database's life.
    flushes: u64,
}

const FLUSHES_KEY: &[u8] = b"flushes";

impl GroupFlush {
    /// Group commit over `db`, without lost-write detection.
    pub fn new(db: sled::Db) -> Self {
        let meta = db
            .open_tree("plover/meta")
            .expect("opening a tree of an open database");
        let flushes = read_flushes(&meta).unwrap_or(0);
        GroupFlush {
            db,
            meta,
            stamp: None,
            state: Mutex::new(FlushState {
                flushes,
                ..Default::default()
            }),
            flushed: Condvar::new(),
        }
    }

    /// Group commit over `db`, checking it against the stamp at `stamp` (see the module
    /// documentation) and keeping that stamp from now on.
    pub fn with_stamp(db: sled::Db, stamp: &Path) -> Result<Self, StoreError> {
        let mut flush = GroupFlush::new(db);
        let recovered = flush.state.lock().expect("flush lock").flushes;
        if let Ok(text) = std::fs::read_to_string(stamp) {
            let acknowledged: u64 = text.trim().parse().unwrap_or(0);
            if recovered < acknowledged {
                return Err(StoreError::corrupt(format!(
                    "the database is damaged: it recovered {recovered} flushes, but {acknowledged} were acknowledged as on disk, so acknowledged writes were lost. Restore it from a backup (or, to accept the data as it is, remove {})",
                    stamp.display()
                )));
            }
        }
        flush.stamp = Some(stamp.to_path_buf());
        Ok(flush)
    }

    pub fn db(&self) -> &sled::Db {
        &self.db
    }

    /// Return once everything this thread wrote before the call is durable.
    pub fn sync(&self) -> Result<(), StoreError> {
        let started = std::time::Instant::now();
        let result = self.sync_inner();
        crate::metrics::get()
            .store_seconds
            .with_label_values(&["sled"])
            .observe(started.elapsed().as_secs_f64());
        result
    }

    fn sync_inner(&self) -> Result<(), StoreError> {
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
            let number = state.flushes + 1;
            drop(state);
            let result = self
                .meta
                .insert(FLUSHES_KEY, &number.to_be_bytes()[..])
                .and_then(|_| self.db.flush());
            if result.is_ok() {
                self.write_stamp(number);
            }
            state = self.state.lock().expect("flush lock");
            state.running = false;
            if result.is_ok() {
                state.durable = state.durable.max(covers);
                state.flushes = number;
            }
            self.flushed.notify_all();
            if let Err(e) = result {
                return Err(super::sled_error("flushing to disk", e));
            }
        }
    }

    /// Record that flush `number` is durable. Not fsynced: a stamp lost to a machine crash is
    /// only older, which never makes a sound database look damaged.
    fn write_stamp(&self, number: u64) {
        if let Some(path) = &self.stamp
            && let Err(e) = std::fs::write(path, number.to_string())
        {
            tracing::warn!(path = %path.display(), error = %e, "could not write the flush stamp");
        }
    }
}

fn read_flushes(meta: &sled::Tree) -> Option<u64> {
    let v = meta.get(FLUSHES_KEY).ok()??;
    Some(super::keys::tail_number(&v))
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
        assert!(state.flushes >= 1 && state.flushes <= 400);
    }

    #[test]
    fn a_database_behind_its_stamp_is_reported_as_damaged() {
        let dir = tempfile::tempdir().unwrap();
        let stamp = dir.path().join("stamp");
        {
            let db = sled::open(dir.path().join("db")).unwrap();
            let flush = GroupFlush::with_stamp(db.clone(), &stamp).unwrap();
            for i in 0..3u32 {
                db.insert(i.to_be_bytes(), &b"x"[..]).unwrap();
                flush.sync().unwrap();
            }
        }
        assert_eq!(std::fs::read_to_string(&stamp).unwrap(), "3");
        let db = sled::open(dir.path().join("db")).unwrap();
        assert!(
            GroupFlush::with_stamp(db.clone(), &stamp).is_ok(),
            "in step"
        );
        // As if the database had lost its last flushes.
        std::fs::write(&stamp, "7").unwrap();
        let err = GroupFlush::with_stamp(db, &stamp).err().unwrap();
        assert!(err.is_corruption());
        assert!(err.message.contains("recovered 3 flushes, but 7"), "{err}");
    }
}
