//! The key layout of the job tree. Job ids are UUIDs (no `/` or NUL); numbers are big-endian
//! so byte order is numeric order; creation times are biased so that order is time order.
//!
//! - `j/<job>`: the record's changing part (JSON); `p/<job>`: the part that rarely changes
//!   (spec, plan, options, grants, dry run, approval), written only when it does;
//!   `m/<job>`: what its index entries are ([`IndexMeta`]); `s/<job>`: its summary as lists
//!   show it.
//! - `e/<job>/<seq>`: a feed event not packed yet; `l/<job>/<seq>`: index of those that are
//!   log events. `L/<job>/<first seq>`, `E/<job>/<first seq>`: packed chunks of log events
//!   and of the others (see `event_chunks`).
//! - `r/<job>/<step><n>`: a chunk of the step's staged object results from its `n`-th;
//!   `g/<job>/<first>`: a segment of them made visible from position `first`.
//! - `ic/<created><job>`, `is/<status>\0<created><job>`, `ip/<plugin>\0<created><job>`,
//!   `ips/<plugin>\0<status>\0<created><job>`: the list indexes (empty values).
//! - `n/<plugin>\0<status>`: how many jobs of that plugin are in that status.
//! - `q/<job>`: why a record was quarantined; `qr/<job>`: its bytes as they were.
//! - `d/<job>`: a deletion whose bulk (events, results, state) is still being removed.

use crate::engine::state::JobStatus;
use serde::{Deserialize, Serialize};

pub fn record(job: &str) -> Vec<u8> {
    format!("j/{job}").into_bytes()
}

pub fn definition(job: &str) -> Vec<u8> {
    format!("p/{job}").into_bytes()
}

pub fn meta(job: &str) -> Vec<u8> {
    format!("m/{job}").into_bytes()
}

pub fn summary(job: &str) -> Vec<u8> {
    format!("s/{job}").into_bytes()
}

/// `<prefix>/<job>/`, the start of one job's numbered keys.
pub fn numbered_prefix(prefix: &str, job: &str) -> Vec<u8> {
    format!("{prefix}/{job}/").into_bytes()
}

pub fn numbered(prefix: &str, job: &str, n: u64) -> Vec<u8> {
    let mut k = numbered_prefix(prefix, job);
    k.extend_from_slice(&n.to_be_bytes());
    k
}

pub fn staged(job: &str, step: u32, n: u64) -> Vec<u8> {
    let mut k = numbered_prefix("r", job);
    k.extend_from_slice(&step.to_be_bytes());
    k.extend_from_slice(&n.to_be_bytes());
    k
}

pub fn counter(plugin: &str, status: JobStatus) -> Vec<u8> {
    format!("n/{plugin}\0{}", status.as_str()).into_bytes()
}

pub const COUNTERS: &[u8] = b"n/";

pub fn quarantine(job: &str) -> Vec<u8> {
    format!("q/{job}").into_bytes()
}

pub fn quarantined_bytes(job: &str) -> Vec<u8> {
    format!("qr/{job}").into_bytes()
}

pub const QUARANTINE: &[u8] = b"q/";

pub fn tombstone(job: &str) -> Vec<u8> {
    format!("d/{job}").into_bytes()
}

pub const TOMBSTONES: &[u8] = b"d/";

/// The last 8 bytes of a key, as a number.
pub fn tail_number(k: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&k[k.len() - 8..]);
    u64::from_be_bytes(b)
}

/// What a job's index entries are, so a commit can tell whether they move.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexMeta {
    pub status: JobStatus,
    pub plugin: String,
    /// Creation time, microseconds since 1970.
    pub created: i64,
}

impl IndexMeta {
    /// `<created><job>`: the suffix shared by every index key of the job (and the cursor).
    pub fn suffix(&self, job: &str) -> Vec<u8> {
        let mut s = created_bytes(self.created).to_vec();
        s.extend_from_slice(job.as_bytes());
        s
    }

    /// Every index key of the job.
    pub fn index_keys(&self, job: &str) -> [Vec<u8>; 4] {
        let suffix = self.suffix(job);
        [
            [index_prefix(None, None), suffix.clone()].concat(),
            [index_prefix(Some(self.status), None), suffix.clone()].concat(),
            [index_prefix(None, Some(&self.plugin)), suffix.clone()].concat(),
            [index_prefix(Some(self.status), Some(&self.plugin)), suffix].concat(),
        ]
    }
}

/// The prefix of the index that serves a filter on `status` and/or `plugin`.
pub fn index_prefix(status: Option<JobStatus>, plugin: Option<&str>) -> Vec<u8> {
    match (status, plugin) {
        (None, None) => b"ic/".to_vec(),
        (Some(s), None) => format!("is/{}\0", s.as_str()).into_bytes(),
        (None, Some(p)) => format!("ip/{p}\0").into_bytes(),
        (Some(s), Some(p)) => format!("ips/{p}\0{}\0", s.as_str()).into_bytes(),
    }
}

/// Biased so that byte order is time order, negative times included.
fn created_bytes(micros: i64) -> [u8; 8] {
    ((micros as u64) ^ (1 << 63)).to_be_bytes()
}

/// The smallest key greater than every key starting with `prefix`.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0xff; prefix.len() + 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creation_order_is_byte_order_and_prefix_end_bounds_the_prefix() {
        assert!(created_bytes(-5) < created_bytes(0));
        assert!(created_bytes(0) < created_bytes(1_700_000_000_000_000));
        assert_eq!(prefix_end(b"is/a\0"), b"is/a\x01".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        let m = IndexMeta {
            status: JobStatus::Planned,
            plugin: "kv-copy".into(),
            created: 7,
        };
        for k in m.index_keys("x") {
            assert!(k.ends_with(b"x"));
        }
    }
}
