//! A job's change feed as sled keeps it. Events are written one key each as they are
//! committed (`e/<job>/<seq>`, with `l/<job>/<seq>` indexing the log lines), then packed into
//! compressed chunks, `L/<job>/<first seq>` for log lines and `E/<job>/<first seq>` for every
//! other event, once [`PACK_AT`] loose events have gathered or the job stops running.
//!
//! Why: sled keeps in-memory metadata for every page it has, and a leaf page holds at most 16
//! keys, so a key per event made each finished job cost the node about 1.4 KiB of memory for
//! as long as it ran (BENCHMARKS.md). Packed, a finished job's history is a few keys.
//!
//! Invariants: every packed event is older than every loose one (packing takes the oldest
//! loose events; the newest chunk of a series only ever grows at its end). A commit that
//! moves events between loose keys and chunks is applied under [`PackLock`]'s write side and
//! every read of several keys holds its read side, so a reader never sees an event in
//! neither place, or in both.

use super::keys;
use super::sled_error;
use crate::engine::job::{EventBody, FeedEvent};
use crate::store::StoreError;
use crate::store::records::{compress, decompress, json_error};
use std::collections::{HashSet, VecDeque};

/// Loose events of a running job that are packed together.
pub(super) const PACK_AT: usize = 64;
/// The most events one chunk holds: the newest chunk takes new events until it is full.
const CHUNK_EVENTS: usize = 128;
/// The most loose events one commit packs, so a commit's cost stays bounded even over a
/// database written before packing existed (its jobs' events are all loose).
const MAX_PACKED_PER_COMMIT: usize = 4096;

/// Orders reads of a job's feed against commits that move events into chunks.
pub(super) type PackLock = std::sync::RwLock<()>;

const LOGS: &str = "L";
const OTHERS: &str = "E";

fn encode(events: &[FeedEvent]) -> Result<Vec<u8>, StoreError> {
    compress(&serde_json::to_vec(events).map_err(|e| json_error("events", e))?)
}

fn decode(bytes: &[u8]) -> Result<Vec<FeedEvent>, StoreError> {
    let json = decompress("a chunk of events", bytes)?;
    serde_json::from_slice(&json).map_err(|e| json_error("a chunk of events", e))
}

fn decode_loose(bytes: &[u8]) -> Result<FeedEvent, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| json_error("an event", e))
}

fn is_log(e: &FeedEvent) -> bool {
    matches!(e.body, EventBody::Log { .. })
}

/// Put into `batch` what one commit does to job `id`'s feed: drop its `drop_oldest_logs`
/// oldest log lines, add `append`, and pack loose events when [`PACK_AT`] have gathered or
/// `settled` (the job stops running with this commit). Call under the job's own lock (no
/// other commit of the job runs meanwhile). Returns whether chunks change: the batch must
/// then be applied under the [`PackLock`]'s write side.
pub(super) fn write(
    tree: &sled::Tree,
    batch: &mut sled::Batch,
    id: &str,
    append: &[FeedEvent],
    drop_oldest_logs: u64,
    settled: bool,
) -> Result<bool, StoreError> {
    let err = |e| sled_error("committing a job's events", e);
    let mut chunks_change = false;
    // The oldest log lines are in the log chunks first, then loose.
    let mut to_drop = drop_oldest_logs;
    // A log chunk this commit removes must not be extended below (that would bring it back).
    let mut log_chunks_removed = false;
    for item in tree.scan_prefix(keys::numbered_prefix(LOGS, id)) {
        if to_drop == 0 {
            break;
        }
        let (k, v) = item.map_err(err)?;
        let lines = decode(&v)?;
        batch.remove(k);
        chunks_change = true;
        log_chunks_removed = true;
        if lines.len() as u64 <= to_drop {
            to_drop -= lines.len() as u64;
        } else {
            let rest = &lines[to_drop as usize..];
            batch.insert(keys::numbered(LOGS, id, rest[0].seq), encode(rest)?);
            to_drop = 0;
        }
    }
    let mut dropped_loose = HashSet::new();
    for k in tree
        .scan_prefix(keys::numbered_prefix("l", id))
        .keys()
        .take(to_drop as usize)
    {
        let k = k.map_err(err)?;
        let seq = keys::tail_number(&k);
        batch.remove(keys::numbered("e", id, seq));
        batch.remove(k);
        dropped_loose.insert(seq);
    }

    let loose_keys: Vec<sled::IVec> = tree
        .scan_prefix(keys::numbered_prefix("e", id))
        .keys()
        // One more than a commit packs, to tell whether more are left.
        .take(MAX_PACKED_PER_COMMIT + dropped_loose.len() + 1)
        .collect::<Result<_, _>>()
        .map_err(err)?;
    let loose: Vec<sled::IVec> = loose_keys
        .into_iter()
        .filter(|k| !dropped_loose.contains(&keys::tail_number(k)))
        .collect();
    let pack = (settled && !(loose.is_empty() && append.is_empty()))
        || loose.len() + append.len() >= PACK_AT;
    if !pack {
        write_loose(batch, id, append)?;
        return Ok(chunks_change);
    }
    // All loose events are taken unless a database written before packing holds more than one
    // commit packs; then the newest stay loose, and so does what this commit appends.
    let all_loose_taken = loose.len() <= MAX_PACKED_PER_COMMIT;
    let mut packed = Vec::with_capacity(loose.len() + append.len());
    for k in loose.iter().take(MAX_PACKED_PER_COMMIT) {
        let Some(v) = tree.get(k).map_err(err)? else {
            continue;
        };
        let event = decode_loose(&v)?;
        if is_log(&event) {
            batch.remove(keys::numbered("l", id, event.seq));
        }
        batch.remove(k);
        packed.push(event);
    }
    if all_loose_taken {
        packed.extend(append.iter().cloned());
    } else {
        write_loose(batch, id, append)?;
    }
    let (logs, others): (Vec<FeedEvent>, Vec<FeedEvent>) = packed.into_iter().partition(is_log);
    add_to_series(tree, batch, id, LOGS, logs, !log_chunks_removed)?;
    add_to_series(tree, batch, id, OTHERS, others, true)?;
    Ok(true)
}

fn write_loose(batch: &mut sled::Batch, id: &str, events: &[FeedEvent]) -> Result<(), StoreError> {
    for e in events {
        batch.insert(
            keys::numbered("e", id, e.seq),
            serde_json::to_vec(e).map_err(|e| json_error("an event", e))?,
        );
        if is_log(e) {
            batch.insert(keys::numbered("l", id, e.seq), &[][..]);
        }
    }
    Ok(())
}

/// Append `events` (newer than every chunk of the series) to `series`: into its newest chunk
/// while it has room (unless `may_extend` is false), then into new chunks.
fn add_to_series(
    tree: &sled::Tree,
    batch: &mut sled::Batch,
    id: &str,
    series: &str,
    events: Vec<FeedEvent>,
    may_extend: bool,
) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    let mut rest = &events[..];
    if may_extend
        && let Some(item) = tree
            .scan_prefix(keys::numbered_prefix(series, id))
            .next_back()
    {
        let (k, v) = item.map_err(|e| sled_error("committing a job's events", e))?;
        let mut newest = decode(&v)?;
        let room = CHUNK_EVENTS.saturating_sub(newest.len()).min(rest.len());
        if room > 0 {
            newest.extend(rest[..room].iter().cloned());
            batch.insert(k, encode(&newest)?);
            rest = &rest[room..];
        }
    }
    for chunk in rest.chunks(CHUNK_EVENTS) {
        batch.insert(keys::numbered(series, id, chunk[0].seq), encode(chunk)?);
    }
    Ok(())
}

/// Events of job `id` with `seq > after` in order, at most `limit`; only log lines when
/// `logs_only`. Call under the [`PackLock`]'s read side.
pub(super) fn read(
    tree: &sled::Tree,
    id: &str,
    after: u64,
    limit: usize,
    logs_only: bool,
) -> Result<Vec<FeedEvent>, StoreError> {
    if after == u64::MAX || limit == 0 {
        return Ok(vec![]);
    }
    let mut sources: Vec<Box<dyn Source + '_>> = vec![
        Box::new(Chunks::new(tree, LOGS, id, after)?),
        Box::new(Loose::new(tree, id, after, logs_only)),
    ];
    if !logs_only {
        sources.push(Box::new(Chunks::new(tree, OTHERS, id, after)?));
    }
    let mut out = Vec::with_capacity(limit.min(1000));
    while out.len() < limit {
        let mut next: Option<(usize, u64)> = None;
        for (i, s) in sources.iter_mut().enumerate() {
            if let Some(seq) = s.peek()?
                && next.is_none_or(|(_, best)| seq < best)
            {
                next = Some((i, seq));
            }
        }
        let Some((i, _)) = next else { break };
        out.push(sources[i].pop().expect("peeked"));
    }
    Ok(out)
}

/// One ordered source of events.
trait Source {
    /// The sequence number of the next event, if there is one.
    fn peek(&mut self) -> Result<Option<u64>, StoreError>;
    fn pop(&mut self) -> Option<FeedEvent>;
}

/// The events after a position in one series of chunks, decoded a chunk at a time.
struct Chunks {
    iter: sled::Iter,
    after: u64,
    buffered: VecDeque<FeedEvent>,
}

impl Chunks {
    fn new(tree: &sled::Tree, series: &str, id: &str, after: u64) -> Result<Self, StoreError> {
        let prefix = keys::numbered_prefix(series, id);
        // The chunk holding `after + 1`, if any, starts at or before it.
        let holding = tree
            .range(prefix.clone()..=keys::numbered(series, id, after + 1))
            .next_back()
            .transpose()
            .map_err(|e| sled_error("reading events", e))?;
        let from = match holding {
            Some((k, _)) => k.to_vec(),
            None => keys::numbered(series, id, after + 1),
        };
        Ok(Chunks {
            iter: tree.range(from..keys::prefix_end(&prefix)),
            after,
            buffered: VecDeque::new(),
        })
    }
}

impl Source for Chunks {
    fn peek(&mut self) -> Result<Option<u64>, StoreError> {
        while self.buffered.is_empty() {
            let Some(item) = self.iter.next() else {
                return Ok(None);
            };
            let (_, v) = item.map_err(|e| sled_error("reading events", e))?;
            let after = self.after;
            self.buffered
                .extend(decode(&v)?.into_iter().filter(|e| e.seq > after));
        }
        Ok(self.buffered.front().map(|e| e.seq))
    }

    fn pop(&mut self) -> Option<FeedEvent> {
        self.buffered.pop_front()
    }
}

/// The loose events after a position: every one, or the log lines through their index.
struct Loose<'a> {
    tree: &'a sled::Tree,
    id: String,
    iter: sled::Iter,
    logs_only: bool,
    peeked: Option<FeedEvent>,
}

impl<'a> Loose<'a> {
    fn new(tree: &'a sled::Tree, id: &str, after: u64, logs_only: bool) -> Self {
        let prefix = if logs_only { "l" } else { "e" };
        let end = keys::prefix_end(&keys::numbered_prefix(prefix, id));
        Loose {
            tree,
            id: id.to_string(),
            iter: tree.range(keys::numbered(prefix, id, after + 1)..end),
            logs_only,
            peeked: None,
        }
    }
}

impl Source for Loose<'_> {
    fn peek(&mut self) -> Result<Option<u64>, StoreError> {
        let err = |e| sled_error("reading events", e);
        while self.peeked.is_none() {
            let Some(item) = self.iter.next() else {
                return Ok(None);
            };
            let (k, v) = item.map_err(err)?;
            if !self.logs_only {
                self.peeked = Some(decode_loose(&v)?);
                break;
            }
            let seq = keys::tail_number(&k);
            // A line dropped from the window meanwhile is skipped.
            if let Some(v) = self
                .tree
                .get(keys::numbered("e", &self.id, seq))
                .map_err(err)?
            {
                self.peeked = Some(decode_loose(&v)?);
            }
        }
        Ok(self.peeked.as_ref().map(|e| e.seq))
    }

    fn pop(&mut self) -> Option<FeedEvent> {
        self.peeked.take()
    }
}
