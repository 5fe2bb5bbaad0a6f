//! [`JobStore`] on sled. One tree holds everything, so one `apply_batch` is one atomic commit.
//!
//! Keys (job ids contain no `/`; numbers are big-endian so byte order is numeric order):
//! - `j/<job>`: the [`JobRecord`] as JSON
//! - `e/<job>/<seq>`: a [`FeedEvent`] as JSON
//! - `l/<job>/<seq>`: index of log events (empty value)
//! - `o/<job>/<first-index>`: index of object-result events (value: the event's seq)

use super::{Commit, JobStore, StoreError};
use crate::engine::job::{EventBody, FeedEvent, JobRecord};

pub struct SledJobStore {
    tree: sled::Tree,
}

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError(e.to_string())
}

fn key(prefix: &str, job: &str, n: Option<u64>) -> Vec<u8> {
    let mut k = format!("{prefix}/{job}/").into_bytes();
    if let Some(n) = n {
        k.extend_from_slice(&n.to_be_bytes());
    }
    k
}

fn job_key(job: &str) -> Vec<u8> {
    format!("j/{job}").into_bytes()
}

fn tail_number(k: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&k[k.len() - 8..]);
    u64::from_be_bytes(b)
}

impl SledJobStore {
    pub fn open(db: &sled::Db) -> Result<Self, StoreError> {
        Ok(SledJobStore {
            tree: db.open_tree("plover/jobs").map_err(err)?,
        })
    }

    fn event(&self, job: &str, seq: u64) -> Result<Option<FeedEvent>, StoreError> {
        match self.tree.get(key("e", job, Some(seq))).map_err(err)? {
            Some(v) => Ok(Some(serde_json::from_slice(&v).map_err(err)?)),
            None => Ok(None),
        }
    }
}

impl JobStore for SledJobStore {
    fn commit(&self, c: Commit<'_>) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        let id = &c.record.id;
        batch.insert(job_key(id), serde_json::to_vec(c.record).map_err(err)?);
        for e in c.append {
            batch.insert(
                key("e", id, Some(e.seq)),
                serde_json::to_vec(e).map_err(err)?,
            );
            match &e.body {
                EventBody::Log { .. } => batch.insert(key("l", id, Some(e.seq)), &[][..]),
                EventBody::Objects { first_index, .. } => {
                    batch.insert(key("o", id, Some(*first_index)), &e.seq.to_be_bytes()[..])
                }
                _ => {}
            }
        }
        for &seq in c.drop_logs {
            batch.remove(key("e", id, Some(seq)));
            batch.remove(key("l", id, Some(seq)));
        }
        self.tree.apply_batch(batch).map_err(err)
    }

    fn get(&self, id: &str) -> Result<Option<JobRecord>, StoreError> {
        match self.tree.get(job_key(id)).map_err(err)? {
            Some(v) => Ok(Some(serde_json::from_slice(&v).map_err(err)?)),
            None => Ok(None),
        }
    }

    fn all(&self) -> Result<Vec<JobRecord>, StoreError> {
        let mut jobs: Vec<JobRecord> = self
            .tree
            .scan_prefix(b"j/")
            .values()
            .map(|v| {
                v.map_err(err)
                    .and_then(|v| serde_json::from_slice(&v).map_err(err))
            })
            .collect::<Result<_, _>>()?;
        jobs.sort_by(|a, b| {
            a.created_at
                .cmp(&b.created_at)
                .then_with(|| a.id.cmp(&b.id))
        });
        Ok(jobs)
    }

    fn events_after(
        &self,
        id: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<FeedEvent>, StoreError> {
        let start = key("e", id, Some(after.saturating_add(1)));
        let prefix = key("e", id, None);
        self.tree
            .range(start..)
            .take_while(|r| {
                r.as_ref()
                    .map(|(k, _)| k.starts_with(&prefix))
                    .unwrap_or(true)
            })
            .take(limit)
            .map(|r| {
                r.map_err(err)
                    .and_then(|(_, v)| serde_json::from_slice(&v).map_err(err))
            })
            .collect()
    }

    fn logs_after(&self, id: &str, after: u64, limit: usize) -> Result<Vec<FeedEvent>, StoreError> {
        let start = key("l", id, Some(after.saturating_add(1)));
        let prefix = key("l", id, None);
        let mut out = vec![];
        for r in self.tree.range(start..) {
            let (k, _) = r.map_err(err)?;
            if !k.starts_with(&prefix) || out.len() == limit {
                break;
            }
            if let Some(e) = self.event(id, tail_number(&k))? {
                out.push(e);
            }
        }
        Ok(out)
    }

    fn objects_from(
        &self,
        id: &str,
        from: u64,
        limit_events: usize,
    ) -> Result<Vec<FeedEvent>, StoreError> {
        let prefix = key("o", id, None);
        // The batch holding index `from` starts at or before it.
        let start = match self
            .tree
            .range(prefix.clone()..=key("o", id, Some(from)))
            .next_back()
        {
            Some(r) => r.map_err(err)?.0.to_vec(),
            None => prefix.clone(),
        };
        let mut out = vec![];
        for r in self.tree.range(start..) {
            let (k, v) = r.map_err(err)?;
            if !k.starts_with(&prefix) || out.len() == limit_events {
                break;
            }
            if let Some(e) = self.event(id, tail_number(&v))? {
                out.push(e);
            }
        }
        Ok(out)
    }

    fn delete(&self, id: &str) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        batch.remove(job_key(id));
        for prefix in ["e", "l", "o"] {
            for k in self.tree.scan_prefix(key(prefix, id, None)).keys() {
                batch.remove(k.map_err(err)?);
            }
        }
        self.tree.apply_batch(batch).map_err(err)
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.tree.flush().map(|_| ()).map_err(err)
    }
}
